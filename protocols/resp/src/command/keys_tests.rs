//! Key extraction, checked against what Redis 7.0's `COMMAND GETKEYS`
//! answers for the same arguments.

use super::keys::COMMAND_SPECIFIC;
use super::*;

/// The key positions of `line` (split on spaces; `""` is an empty argument).
fn keys(line: &str) -> Vec<usize> {
    let args: Vec<&[u8]> = line
        .split(' ')
        .map(|a| if a == "\"\"" { &b""[..] } else { a.as_bytes() })
        .collect();
    let spec = resolve(&args).unwrap_or_else(|| panic!("{line}: unknown command"));
    let mut out = vec![99]; // key_indices clears it
    key_indices(spec, &args, &mut out);
    out
}

#[test]
fn single_and_fixed_keys() {
    assert_eq!(keys("GET k"), [1]);
    assert_eq!(keys("SET k v"), [1]);
    assert_eq!(keys("set k v GET EX 10"), [1]);
    assert_eq!(keys("RENAME a b"), [1, 2]);
    assert_eq!(keys("SMOVE a b member"), [1, 2]);
    assert_eq!(keys("LMOVE a b LEFT RIGHT"), [1, 2]);
    assert_eq!(keys("BLMOVE a b LEFT RIGHT 0"), [1, 2]);
    assert_eq!(keys("BRPOPLPUSH a b 0"), [1, 2]);
    assert_eq!(keys("LCS a b LEN"), [1, 2]);
}

#[test]
fn commands_without_keys() {
    for line in [
        "PING",
        "PING hello",
        "INFO",
        "INFO server",
        "DBSIZE",
        "MULTI",
        "CLIENT SETNAME x",
    ] {
        assert_eq!(keys(line), [0usize; 0], "{line}");
    }
    // Channels are not keys, sharded or not.
    assert!(keys("SUBSCRIBE a b").is_empty());
    assert!(keys("PUBLISH a msg").is_empty());
    assert!(keys("SSUBSCRIBE a b").is_empty());
    assert!(keys("SPUBLISH a msg").is_empty());
}

#[test]
fn sharded_channels_are_found_when_asked_for() {
    let find = |line: &str| {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        let mut out = Vec::new();
        key_indices_including_not_keys(resolve(&args).expect("known"), &args, &mut out);
        out
    };
    assert_eq!(find("SSUBSCRIBE a b"), [1, 2]);
    assert_eq!(find("SPUBLISH a msg"), [1]);
    assert_eq!(find("SUNSUBSCRIBE"), [0usize; 0]);
    assert_eq!(find("GET k"), [1]);
    assert!(find("SUBSCRIBE a").is_empty());
}

#[test]
fn ranges_with_steps_and_negative_ends() {
    assert_eq!(keys("MGET a b c"), [1, 2, 3]);
    assert_eq!(keys("MSET a 1 b 2"), [1, 3]);
    assert_eq!(keys("MSETNX a 1 b 2 c 3"), [1, 3, 5]);
    assert_eq!(keys("DEL a b c"), [1, 2, 3]);
    assert_eq!(keys("EXISTS a"), [1]);
    assert_eq!(keys("EXISTS a b"), [1, 2]);
    // The last argument is the timeout.
    assert_eq!(keys("BLPOP a b 0"), [1, 2]);
    assert_eq!(keys("BRPOP a 1.5"), [1]);
    assert_eq!(keys("BZPOPMIN a b 0"), [1, 2]);
    assert_eq!(keys("BITOP AND dest a b"), [2, 3, 4]);
    assert_eq!(keys("BITOP NOT dest a"), [2, 3]);
    assert_eq!(keys("PFMERGE dest a b"), [1, 2, 3]);
    assert_eq!(keys("PFCOUNT a b"), [1, 2]);
}

#[test]
fn key_counts() {
    assert_eq!(keys("EVAL script 2 a b arg"), [3, 4]);
    assert_eq!(keys("EVAL script 0 arg"), [0usize; 0]);
    assert_eq!(keys("EVALSHA sha 1 a arg arg"), [3]);
    assert_eq!(keys("EVAL_RO script 1 a"), [3]);
    assert_eq!(keys("EVALSHA_RO sha 2 a b"), [3, 4]);
    assert_eq!(keys("FCALL f 2 a b arg"), [3, 4]);
    assert_eq!(keys("FCALL_RO f 1 a"), [3]);
    assert_eq!(keys("ZUNIONSTORE dest 2 a b WEIGHTS 1 2"), [1, 3, 4]);
    assert_eq!(keys("ZINTERSTORE dest 1 a"), [1, 3]);
    assert_eq!(keys("ZDIFFSTORE dest 2 a b"), [1, 3, 4]);
    assert_eq!(keys("ZUNION 2 a b WITHSCORES"), [2, 3]);
    assert_eq!(keys("ZINTER 3 a b c"), [2, 3, 4]);
    assert_eq!(keys("ZDIFF 2 a b"), [2, 3]);
    assert_eq!(keys("ZINTERCARD 2 a b LIMIT 5"), [2, 3]);
    assert_eq!(keys("SINTERCARD 2 a b LIMIT 1"), [2, 3]);
    assert_eq!(keys("LMPOP 2 a b LEFT COUNT 3"), [2, 3]);
    assert_eq!(keys("BLMPOP 0 2 a b LEFT"), [3, 4]);
    assert_eq!(keys("ZMPOP 1 z MIN"), [2]);
    assert_eq!(keys("BZMPOP 1.5 2 y z MAX COUNT 2"), [3, 4]);
}

#[test]
fn bad_key_counts_give_no_keys() {
    for line in [
        "EVAL script 3 a b", // more keys than arguments
        "EVAL script -1 a",  // negative
        "EVAL script x a",   // not a number
        "EVAL script 01 a",  // Redis's string2ll refuses leading zeros
        "EVAL script 1a a",  // trailing junk
        "EVAL script 99999999999999999999999 a",
        "ZUNIONSTORE dest 0 a", // no sources: not even the destination
        "ZUNIONSTORE dest 3 a b",
        "LMPOP 0 LEFT",
        "EVAL script",
    ] {
        assert!(keys(line).is_empty(), "{line}: {:?}", keys(line));
    }
}

#[test]
fn stream_keys_are_the_first_half_after_streams() {
    assert_eq!(keys("XREAD STREAMS a 0"), [2]);
    assert_eq!(keys("XREAD COUNT 2 BLOCK 0 STREAMS a b c 0 0 0"), [6, 7, 8]);
    assert_eq!(keys("xread streams a b $ $"), [2, 3]);
    assert_eq!(keys("XREADGROUP GROUP g c COUNT 1 STREAMS a b > >"), [7, 8]);
    // The keyword search starts at 4, past a group called STREAMS.
    assert_eq!(keys("XREADGROUP GROUP STREAMS c STREAMS s >"), [5]);
    // Odd count after STREAMS: the spec's arithmetic, as in Redis.
    assert_eq!(keys("XREAD STREAMS a b 0"), [2]);
    assert!(keys("XREAD STREAMS a").is_empty());
    assert!(keys("XREAD COUNT 1 STREAMS").is_empty());
    assert!(keys("XREAD COUNT 1").is_empty());
}

#[test]
fn migrate_single_key_and_keys_forms() {
    assert_eq!(keys("MIGRATE host 6379 k 0 5000"), [3]);
    assert_eq!(keys("MIGRATE host 6379 k 0 5000 COPY REPLACE"), [3]);
    assert_eq!(keys("MIGRATE host 6379 \"\" 0 5000 KEYS a b c"), [7, 8, 9]);
    assert_eq!(
        keys("MIGRATE host 6379 \"\" 0 5000 COPY REPLACE AUTH2 user keys AUTH keys KEYS a b"),
        [14, 15]
    );
    // A key and KEYS both is a syntax error: no keys.
    assert!(keys("MIGRATE host 6379 k 0 5000 KEYS a").is_empty());
    assert!(keys("MIGRATE host 6379").is_empty());
}

#[test]
fn sort_finds_the_store_destination() {
    assert_eq!(keys("SORT k"), [1]);
    assert_eq!(keys("SORT k ALPHA DESC"), [1]);
    assert_eq!(keys("SORT k STORE dest"), [1, 3]);
    assert_eq!(
        keys("SORT k BY w_* GET store LIMIT 0 10 STORE dest"),
        [1, 10]
    );
    assert_eq!(keys("SORT k STORE a STORE b"), [1, 5]);
    assert_eq!(keys("SORT k STORE"), [1]);
    assert_eq!(keys("SORT_RO k BY w_* GET #"), [1]);
    assert!(keys("SORT").is_empty());
    assert!(keys("SORT_RO").is_empty());
}

#[test]
fn geo_store_keywords() {
    assert_eq!(keys("GEORADIUS k 15 37 200 km"), [1]);
    assert_eq!(keys("GEORADIUS k 15 37 200 km STORE dest"), [1, 7]);
    assert_eq!(
        keys("GEORADIUS k 15 37 200 km WITHDIST COUNT 3 STOREDIST dest"),
        [1, 10]
    );
    assert_eq!(
        keys("GEORADIUS k 15 37 200 km STORE a STOREDIST b"),
        [1, 7, 9]
    );
    assert_eq!(keys("GEORADIUSBYMEMBER k m 200 km STORE dest"), [1, 6]);
    assert_eq!(
        keys("GEOSEARCHSTORE dest src FROMMEMBER m BYRADIUS 1 km"),
        [1, 2]
    );
}

#[test]
fn subcommand_keys() {
    assert_eq!(keys("OBJECT ENCODING k"), [2]);
    assert_eq!(keys("object freq k"), [2]);
    assert!(keys("OBJECT HELP").is_empty());
    assert_eq!(keys("MEMORY USAGE k SAMPLES 5"), [2]);
    assert_eq!(keys("XINFO STREAM s FULL"), [2]);
    assert_eq!(keys("XINFO GROUPS s"), [2]);
    assert_eq!(keys("XGROUP CREATE s g $"), [2]);
}

#[test]
fn key_indices_appends_nothing_stale() {
    let args: [&[u8]; 3] = [b"MGET", b"a", b"b"];
    let mut out = vec![7, 8, 9, 10];
    key_indices(resolve(&args).expect("mget"), &args, &mut out);
    assert_eq!(out, [1, 2]);
}

/// Commands Redis finds keys for with its own code are the ones `keys.rs`
/// knows: a new Redis with a new such command fails here, not in production.
#[test]
fn every_unknown_or_incomplete_spec_has_command_specific_code() {
    let all = commands()
        .iter()
        .chain(commands().iter().flat_map(|c| c.subcommands));
    for cmd in all {
        let opaque = cmd.key_specs.iter().any(|ks| {
            ks.flags & key_flag::INCOMPLETE != 0
                || ks.begin_search == BeginSearch::Unknown
                || ks.find_keys == FindKeys::Unknown
        });
        assert_eq!(opaque, COMMAND_SPECIFIC.contains(&cmd.name), "{}", cmd.name);
    }
}

/// A tiny deterministic generator, so the garbage is the same on every run.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn garbage_arguments_never_panic() {
    const WORDS: &[&[u8]] = &[
        b"",
        b"0",
        b"1",
        b"2",
        b"3",
        b"-1",
        b"-2",
        b"99",
        b"2147483648",
        b"99999999999999999999",
        b"1a",
        b"STREAMS",
        b"streams",
        b"KEYS",
        b"STORE",
        b"STOREDIST",
        b"BLOCK",
        b"GROUP",
        b"COUNT",
        b"LIMIT",
        b"GET",
        b"BY",
        b"AUTH",
        b"AUTH2",
        b"NOACK",
        b"k",
        b"\xff\x00",
    ];
    let mut rng = XorShift(0x5eed_cafe_f00d_d00d);
    let all: Vec<&CommandSpec> = commands()
        .iter()
        .chain(commands().iter().flat_map(|c| c.subcommands))
        .collect();
    let mut out = Vec::new();
    let mut args: Vec<&[u8]> = Vec::new();
    for spec in all {
        for _ in 0..300 {
            args.clear();
            args.push(spec.name.as_bytes());
            for _ in 0..rng.below(14) {
                args.push(WORDS[rng.below(WORDS.len())]);
            }
            key_indices(spec, &args, &mut out);
            assert!(
                out.iter().all(|&i| i >= 1 && i < args.len()),
                "{} {args:?}: {out:?}",
                spec.name
            );
            key_indices_including_not_keys(spec, &args, &mut out);
            assert!(
                out.iter().all(|&i| i >= 1 && i < args.len()),
                "{} {args:?}: {out:?}",
                spec.name
            );
            let _ = is_blocking(spec, &args);
            let _ = resolve(&args);
        }
        // No arguments at all, not even the name.
        key_indices(spec, &[], &mut out);
        assert!(out.is_empty(), "{}", spec.name);
        assert!(!is_blocking(spec, &[]) || spec.has_flag(BLOCKING) || spec.name == "wait");
    }
}
