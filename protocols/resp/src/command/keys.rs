//! Which arguments of a request are keys.
//!
//! This follows Redis 7's `getKeysFromCommandWithSpecs` (`src/db.c`): walk
//! the command's key specs; if any spec can't be followed (an `unknown` or
//! `incomplete` spec, a key count that isn't a number, positions past the
//! end), the whole answer comes from the command's own key-finding code
//! instead. Only three commands need that code for a different answer
//! (`SORT`, `SORT_RO`, `MIGRATE`); for the others Redis's fallback finds no
//! keys in exactly the cases where the specs fail, and so do we.
//!
//! Deliberate differences, none of which change the answer for a request
//! Redis would accept: a key count must be a plain integer (Redis's fallback
//! also takes `3abc` as 3, then rejects the command), and out-of-range
//! positions never panic.

use super::{key_flag, BeginSearch, CommandSpec, FindKeys, KeySpec};

/// The positions in `args` of the keys of the request `args` (`args[0]` is
/// the command name, `spec` comes from [`super::resolve`]), in key-spec
/// order, appended to `out` after clearing it.
///
/// Sharded pub/sub channels (`SSUBSCRIBE`, `SPUBLISH`) are not keys here, as
/// in Redis; use [`key_indices_including_not_keys`] to route them. Malformed
/// or short requests give the keys Redis would find, usually none; never a
/// panic. Allocates only if `out` must grow.
pub fn key_indices(spec: &CommandSpec, args: &[&[u8]], out: &mut Vec<usize>) {
    out.clear();
    // Redis uses the specs only if one of them names real keys.
    let has_real_keys = spec
        .key_specs
        .iter()
        .any(|ks| ks.flags & key_flag::NOT_KEY == 0);
    if has_real_keys && from_key_specs(spec, args, false, out).is_ok() {
        return;
    }
    out.clear();
    command_specific(spec, args, out);
}

/// Like [`key_indices`], but also returns the arguments that are hashed like
/// keys without being keys: the channels of `SSUBSCRIBE`, `SUNSUBSCRIBE` and
/// `SPUBLISH`, which Redis Cluster routes by their slot.
pub fn key_indices_including_not_keys(spec: &CommandSpec, args: &[&[u8]], out: &mut Vec<usize>) {
    out.clear();
    if from_key_specs(spec, args, true, out).is_err() {
        out.clear();
        command_specific(spec, args, out);
    }
}

/// A key spec that can't be followed for these arguments.
struct InvalidSpec;

/// Redis's `getKeysUsingKeySpecs`. On `Err`, `out` holds partial results.
fn from_key_specs(
    spec: &CommandSpec,
    args: &[&[u8]],
    include_not_keys: bool,
    out: &mut Vec<usize>,
) -> Result<(), InvalidSpec> {
    // i64 arithmetic: positions come from the table and the request, and
    // nothing the client sends may overflow or index out of bounds.
    let argc = i64::try_from(args.len()).map_err(|_| InvalidSpec)?;
    for ks in spec.key_specs {
        if ks.flags & key_flag::NOT_KEY != 0 && !include_not_keys {
            continue;
        }
        let Some(first) = begin_search(ks, args, argc)? else {
            continue; // keyword not found: this spec has no keys here
        };
        let (first, last, step) = find_keys(ks, args, argc, first)?;
        if last >= argc || last < first || first >= argc || first < 1 || step < 1 {
            return Err(InvalidSpec);
        }
        let mut i = first;
        while i <= last {
            out.push(usize::try_from(i).map_err(|_| InvalidSpec)?);
            i += step;
        }
        if ks.flags & key_flag::INCOMPLETE != 0 {
            return Err(InvalidSpec);
        }
    }
    Ok(())
}

/// The position where the keys start, `None` if the keyword isn't there.
fn begin_search(ks: &KeySpec, args: &[&[u8]], argc: i64) -> Result<Option<i64>, InvalidSpec> {
    match ks.begin_search {
        BeginSearch::Index { index } => Ok(Some(i64::from(index))),
        BeginSearch::Keyword { keyword, startfrom } => {
            let startfrom = i64::from(startfrom);
            // Forwards up to (not including) the last argument, or backwards
            // down to (not including) argument 1, exactly as Redis does.
            let (start, end) = if startfrom > 0 {
                (startfrom, argc - 1)
            } else {
                (argc + startfrom, 1)
            };
            let mut i = start;
            while i != end {
                let Some(arg) = usize::try_from(i)
                    .ok()
                    .filter(|&i| i >= 1)
                    .and_then(|i| args.get(i))
                else {
                    break;
                };
                if arg.eq_ignore_ascii_case(keyword.as_bytes()) {
                    return Ok(Some(i + 1));
                }
                i = if start <= end { i + 1 } else { i - 1 };
            }
            Ok(None)
        }
        BeginSearch::Unknown => Err(InvalidSpec),
    }
}

/// `(first, last, step)` of the keys, from the start position `first`.
fn find_keys(
    ks: &KeySpec,
    args: &[&[u8]],
    argc: i64,
    first: i64,
) -> Result<(i64, i64, i64), InvalidSpec> {
    match ks.find_keys {
        FindKeys::Range {
            lastkey,
            keystep,
            limit,
        } => {
            let (lastkey, limit) = (i64::from(lastkey), i64::from(limit));
            let last = if lastkey >= 0 {
                first + lastkey
            } else if limit == 0 {
                argc + lastkey
            } else {
                // Only `lastkey == -1` makes sense with a limit (Redis asserts it).
                first + ((argc - first) / limit + lastkey)
            };
            Ok((first, last, i64::from(keystep)))
        }
        FindKeys::Keynum {
            keynumidx,
            firstkey,
            keystep,
        } => {
            let at = first + i64::from(keynumidx);
            let numkeys = usize::try_from(at)
                .ok()
                .and_then(|at| args.get(at))
                .and_then(|arg| parse_count(arg))
                .ok_or(InvalidSpec)?;
            let first = first + i64::from(firstkey);
            Ok((first, first + numkeys - 1, i64::from(keystep)))
        }
        FindKeys::Unknown => Err(InvalidSpec),
    }
}

/// A non-negative key count as Redis's `string2ll` accepts it: decimal, no
/// sign, spaces or leading zeros. Longer than 10 digits is more keys than
/// any request holds, so invalid either way.
fn parse_count(arg: &[u8]) -> Option<i64> {
    let digits_ok = !arg.is_empty()
        && arg.len() <= 10
        && arg.iter().all(u8::is_ascii_digit)
        && (arg[0] != b'0' || arg.len() == 1);
    if !digits_ok {
        return None;
    }
    arg.iter().try_fold(0i64, |n, &d| {
        n.checked_mul(10)?.checked_add(i64::from(d - b'0'))
    })
}

/// The commands whose key specs can't say where the keys are (Redis's
/// `getkeys_proc` for them). Every other command's fallback finds nothing.
#[cfg(test)] // the match below is the real list; tests keep this one honest
pub(super) const COMMAND_SPECIFIC: [&str; 3] = ["migrate", "sort", "sort_ro"];

fn command_specific(spec: &CommandSpec, args: &[&[u8]], out: &mut Vec<usize>) {
    match spec.name {
        "sort" => sort_keys(args, out),
        // Only the sorted key: BY and GET patterns name keys Redis can't know.
        "sort_ro" if args.len() > 1 => out.push(1),
        "migrate" => migrate_keys(args, out),
        _ => {}
    }
}

/// `SORT key … [STORE destination] …` (Redis's `sortGetKeys`): the sorted
/// key, and the last `STORE` destination, skipping the arguments of `LIMIT`,
/// `GET` and `BY` so that a pattern named `store` isn't taken for the option.
fn sort_keys(args: &[&[u8]], out: &mut Vec<usize>) {
    if args.len() < 2 {
        return;
    }
    out.push(1);
    let mut store = None;
    let mut i = 2;
    while let Some(arg) = args.get(i) {
        if arg.eq_ignore_ascii_case(b"limit") {
            i += 2;
        } else if arg.eq_ignore_ascii_case(b"store") && i + 1 < args.len() {
            store = Some(i + 1);
        } else if arg.eq_ignore_ascii_case(b"get") || arg.eq_ignore_ascii_case(b"by") {
            i += 1;
        }
        i += 1;
    }
    out.extend(store);
}

/// `MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw]
/// [AUTH2 user pw] [KEYS key …]` (Redis's `migrateGetKeys`): the single key,
/// or with `KEYS` (and an empty key argument) every argument after `KEYS`.
fn migrate_keys(args: &[&[u8]], out: &mut Vec<usize>) {
    let (mut first, mut num) = (3, 1);
    let mut i = 6;
    while let Some(arg) = args.get(i) {
        if arg.eq_ignore_ascii_case(b"keys") {
            // `args.get(6)` exists, so `args[3]` does.
            if args[3].is_empty() {
                first = i + 1;
                num = args.len() - first;
            } else {
                num = 0; // a key and KEYS both: a syntax error for MIGRATE
            }
            break;
        } else if arg.eq_ignore_ascii_case(b"auth") {
            i += 1;
        } else if arg.eq_ignore_ascii_case(b"auth2") {
            i += 2;
        }
        i += 1;
    }
    out.extend((first..first + num).filter(|&i| i < args.len()));
}
