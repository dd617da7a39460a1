//! The Redis command table and what the router asks of it.
//!
//! The table ([`commands`]) is generated from a real Redis 7 server's
//! `COMMAND INFO` and `COMMAND DOCS` by `scripts/gen-command-table.py`, so
//! attache knows exactly what its upstream knows: arity, flags, key specs,
//! cluster routing tips and subcommands. Everything here is `'static` data
//! and nothing on the lookup path allocates.
//!
//! - [`lookup`] / [`resolve`]: a command (or subcommand) by name.
//! - [`key_indices`]: which arguments are keys, found the way Redis's own
//!   `getKeysFromCommandWithSpecs` finds them.
//! - [`is_blocking`], [`is_pubsub_subscribe`]: commands that must not share a
//!   multiplexed upstream connection.
//!
//! # Layout
//!
//! - `spec`: the entry types ([`CommandSpec`], [`KeySpec`], tips, groups).
//! - `keys`: key extraction from key specs, and the few commands whose keys
//!   only command-specific code can find (`SORT`, `MIGRATE`).
//! - `table`: the generated table; do not edit it by hand.

mod keys;
#[cfg(test)]
mod keys_tests;
mod spec;
mod table;
#[cfg(test)]
mod tests;

pub use keys::{key_indices, key_indices_including_not_keys};
pub use spec::{
    acl, key_flag, tip, BeginSearch, CommandSpec, FindKeys, Group, KeySpec, RequestPolicy,
    ResponsePolicy,
};

// Command flags ([`CommandSpec::flags`]), as `COMMAND INFO` names them.

/// Writes data (`write`).
pub const WRITE: u32 = 1 << 0;
/// Only reads data (`readonly`).
pub const READONLY: u32 = 1 << 1;
/// May grow memory: refused when Redis is out of memory (`denyoom`).
pub const DENY_OOM: u32 = 1 << 2;
/// Implemented by a module (`module`).
pub const MODULE: u32 = 1 << 3;
/// Administrative, possibly dangerous (`admin`).
pub const ADMIN: u32 = 1 << 4;
/// Pub/sub related (`pubsub`).
pub const PUBSUB: u32 = 1 << 5;
/// Not allowed from scripts (`noscript`).
pub const NOSCRIPT: u32 = 1 << 6;
/// May block the client (`blocking`); see [`is_blocking`] for XREAD.
pub const BLOCKING: u32 = 1 << 7;
/// Allowed while the dataset is loading (`loading`).
pub const LOADING: u32 = 1 << 8;
/// Allowed on a replica with stale data (`stale`).
pub const STALE: u32 = 1 << 9;
/// Not propagated to `MONITOR` (`skip_monitor`).
pub const SKIP_MONITOR: u32 = 1 << 10;
/// Not logged to the slow log (`skip_slowlog`).
pub const SKIP_SLOWLOG: u32 = 1 << 11;
/// Allowed on an importing slot after `ASKING` (`asking`).
pub const ASKING: u32 = 1 << 12;
/// O(1) or O(log N), never delays the server (`fast`).
pub const FAST: u32 = 1 << 13;
/// Allowed before authentication (`no_auth`).
pub const NO_AUTH: u32 = 1 << 14;
/// May be replicated even if it doesn't write (`may_replicate`).
pub const MAY_REPLICATE: u32 = 1 << 15;
/// Keys are optional: may be called with none (`no_mandatory_keys`).
pub const NO_MANDATORY_KEYS: u32 = 1 << 16;
/// Refused during async loading (`no_async_loading`).
pub const NO_ASYNC_LOADING: u32 = 1 << 17;
/// Not allowed inside `MULTI` (`no_multi`).
pub const NO_MULTI: u32 = 1 << 18;
/// Key positions depend on the arguments (`movablekeys`).
pub const MOVABLE_KEYS: u32 = 1 << 19;
/// Allowed while a script or function is busy (`allow_busy`).
pub const ALLOW_BUSY: u32 = 1 << 20;
/// A module command that refuses to run in cluster mode (`module_no_cluster`).
pub const MODULE_NO_CLUSTER: u32 = 1 << 21;

/// Longest command or subcommand name [`lookup`] accepts; the longest Redis
/// 7.0 name is 20 bytes, so anything longer is unknown.
pub const MAX_NAME_LEN: usize = 64;

/// The Redis version the table was generated from (`7.0.15`).
pub const TABLE_REDIS_VERSION: &str = table::REDIS_VERSION;

/// Every top-level command, sorted by name. Subcommands hang off their
/// parent ([`CommandSpec::subcommands`]).
pub fn commands() -> &'static [CommandSpec] {
    &table::COMMANDS
}

/// The command called `name`, ASCII case-insensitive (`GET`, `get`, `GeT`).
///
/// Does not allocate: the name is lowercased into a stack buffer and binary
/// searched, comparing one integer per step (the names' first 8 bytes,
/// precomputed) and bytes only on a tie. Every command passes here. Names
/// longer than [`MAX_NAME_LEN`] are unknown. Subcommands are not found here
/// (`client|setname`): use [`resolve`] or [`CommandSpec::subcommand`].
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    let mut buf = [0; MAX_NAME_LEN];
    let name = lowercase(name, &mut buf)?;
    let key = prefix(name);
    // On a tie, what follows the first 8 bytes decides, then the length
    // (`get` before `get\0`): the order of the names themselves.
    let found = PREFIXES.binary_search_by(|&(probe, index, len)| {
        probe.cmp(&key).then_with(|| {
            let rest = &table::COMMANDS[index].name.as_bytes()[8.min(len)..];
            rest.cmp(&name[8.min(name.len())..])
                .then(len.cmp(&name.len()))
        })
    });
    found.ok().map(|i| &table::COMMANDS[i])
}

/// The first 8 bytes of a name as a big-endian integer, zero-padded: for
/// names of lowercase letters, integers order as the names do.
const fn prefix(name: &[u8]) -> u64 {
    let mut key = 0u64;
    let mut i = 0;
    while i < 8 {
        key <<= 8;
        if i < name.len() {
            key |= name[i] as u64;
        }
        i += 1;
    }
    key
}

/// Per command, in table order: its name's [`prefix`], its index and its
/// name's length.
static PREFIXES: [(u64, usize, usize); table::COMMANDS.len()] = {
    let mut out = [(0, 0, 0); table::COMMANDS.len()];
    let mut i = 0;
    while i < out.len() {
        let name = table::COMMANDS[i].name.as_bytes();
        out[i] = (prefix(name), i, name.len());
        i += 1;
    }
    out
};

/// The spec that governs a request `args` (`args[0]` is the command name):
/// the subcommand when the command has subcommands and `args[1]` names one
/// (`CONFIG GET …` → `config|get`), else the command itself.
pub fn resolve(args: &[&[u8]]) -> Option<&'static CommandSpec> {
    let spec = lookup(args.first()?)?;
    if spec.has_subcommands() {
        if let Some(sub) = args.get(1).and_then(|name| spec.subcommand(name)) {
            return Some(sub);
        }
    }
    Some(spec)
}

/// Whether the request `args` (for `spec`, from [`resolve`]) may block the
/// connection waiting for data, so it must not go over a shared connection.
///
/// Redis flags `XREAD` and `XREADGROUP` as blocking even without `BLOCK`;
/// here they block only when a `BLOCK` option comes before `STREAMS`. `WAIT`
/// (and `WAITAOF`, Redis 7.2) blocks too, though Redis doesn't flag it.
/// Otherwise, the table's [`BLOCKING`] flag decides (`BLPOP`, `BZMPOP`, …).
pub fn is_blocking(spec: &CommandSpec, args: &[&[u8]]) -> bool {
    match spec.name {
        "xread" | "xreadgroup" => has_block_option(args),
        "wait" | "waitaof" => true,
        _ => spec.has_flag(BLOCKING),
    }
}

/// Whether `spec` puts the connection in subscriber mode: `SUBSCRIBE`,
/// `PSUBSCRIBE` or `SSUBSCRIBE`.
pub fn is_pubsub_subscribe(spec: &CommandSpec) -> bool {
    matches!(spec.name, "subscribe" | "psubscribe" | "ssubscribe")
}

/// Scans `XREAD`/`XREADGROUP` options the way Redis's `xreadGetKeys` does,
/// so that a group or consumer named `block` is not mistaken for the option.
fn has_block_option(args: &[&[u8]]) -> bool {
    let mut i = 1;
    while let Some(arg) = args.get(i) {
        if arg.eq_ignore_ascii_case(b"block") {
            return true;
        } else if arg.eq_ignore_ascii_case(b"count") {
            i += 2;
        } else if arg.eq_ignore_ascii_case(b"group") {
            i += 3;
        } else if arg.eq_ignore_ascii_case(b"noack") {
            i += 1;
        } else {
            return false; // STREAMS, or a syntax error
        }
    }
    false
}

/// `name` lowercased into `buf`, or `None` if it doesn't fit.
fn lowercase<'a>(name: &[u8], buf: &'a mut [u8; MAX_NAME_LEN]) -> Option<&'a [u8]> {
    let out = buf.get_mut(..name.len())?;
    out.copy_from_slice(name);
    out.make_ascii_lowercase();
    Some(out)
}
