//! Lookup, flags, tips and the table's own invariants. Key extraction is
//! tested in `keys_tests.rs`.

use super::*;

fn spec(name: &str) -> &'static CommandSpec {
    lookup(name.as_bytes()).unwrap_or_else(|| panic!("{name} is in the table"))
}

fn sub(parent: &str, name: &str) -> &'static CommandSpec {
    spec(parent)
        .subcommand(name.as_bytes())
        .unwrap_or_else(|| panic!("{parent} {name} is in the table"))
}

#[test]
fn lookup_ignores_ascii_case() {
    for name in [&b"get"[..], b"GET", b"GeT", b"gEt"] {
        assert_eq!(lookup(name).map(|s| s.name), Some("get"));
    }
    assert_eq!(
        lookup(b"GEORADIUSBYMEMBER_RO").map(|s| s.name),
        Some("georadiusbymember_ro")
    );
    assert_eq!(lookup(b"client").map(|s| s.name), Some("client"));
}

#[test]
fn lookup_rejects_unknown_names() {
    for name in [
        &b""[..],
        b"nope",
        b"ge",
        b"gett",
        b"get ",
        b" get",
        b"get\0",
        b"G\xc3\x89T",
        b"client|setname", // subcommands hang off their parent
        b"config get",
    ] {
        assert_eq!(lookup(name), None, "{:?}", String::from_utf8_lossy(name));
    }
}

#[test]
fn lookup_rejects_names_longer_than_the_buffer() {
    let long = [b'a'; MAX_NAME_LEN + 1];
    assert_eq!(lookup(&long), None);
    assert_eq!(lookup(&long[..MAX_NAME_LEN]), None);
    let mut padded = b"get".to_vec();
    padded.resize(10_000, b' ');
    assert_eq!(lookup(&padded), None);
    assert_eq!(spec("client").subcommand(&long), None);
}

#[test]
fn subcommands_are_found_case_insensitively() {
    assert_eq!(sub("client", "SETNAME").name, "client|setname");
    assert_eq!(sub("CONFIG", "get").name, "config|get");
    assert_eq!(sub("object", "Encoding").name, "object|encoding");
    assert_eq!(sub("xinfo", "STREAM").name, "xinfo|stream");
    assert_eq!(sub("client", "no-evict").name, "client|no-evict");
    let client = spec("client");
    assert_eq!(client.subcommand(b"client|setname"), None);
    assert_eq!(client.subcommand(b""), None);
    assert_eq!(client.subcommand(b"nope"), None);
    assert_eq!(spec("get").subcommand(b"get"), None);
}

#[test]
fn resolve_picks_the_subcommand_when_there_is_one() {
    let name = |args: &[&[u8]]| resolve(args).map(|s| s.name);
    assert_eq!(name(&[b"CONFIG", b"GET", b"maxmemory"]), Some("config|get"));
    assert_eq!(
        name(&[b"client", b"setname", b"app"]),
        Some("client|setname")
    );
    assert_eq!(
        name(&[b"OBJECT", b"ENCODING", b"k"]),
        Some("object|encoding")
    );
    assert_eq!(name(&[b"config", b"nope"]), Some("config"));
    assert_eq!(name(&[b"config"]), Some("config"));
    assert_eq!(name(&[b"get", b"setname"]), Some("get"));
    assert_eq!(name(&[b"GET", b"k"]), Some("get"));
    assert_eq!(name(&[b"nope", b"get"]), None);
    assert_eq!(name(&[]), None);
}

#[test]
fn every_entry_is_found_by_its_name() {
    assert_eq!(TABLE_REDIS_VERSION, "7.0.15");
    assert!(commands().len() >= 200, "{} commands", commands().len());
    let mut subcommands = 0;
    for cmd in commands() {
        assert_eq!(lookup(cmd.name.as_bytes()), Some(cmd));
        assert_eq!(lookup(cmd.name.to_ascii_uppercase().as_bytes()), Some(cmd));
        assert!(cmd.name.len() <= MAX_NAME_LEN);
        for sub in cmd.subcommands {
            let (parent, name) = sub.name.split_once('|').expect("parent|name");
            assert_eq!(parent, cmd.name);
            assert_eq!(cmd.subcommand(name.as_bytes()), Some(sub));
            assert_eq!(resolve(&[cmd.name.as_bytes(), name.as_bytes()]), Some(sub));
            assert!(
                sub.subcommands.is_empty(),
                "{}: Redis nests one level",
                sub.name
            );
            subcommands += 1;
        }
    }
    assert!(subcommands >= 100, "{subcommands} subcommands");
}

#[test]
fn table_is_sorted_lowercase_and_unique() {
    let sorted = |specs: &[CommandSpec]| specs.windows(2).all(|w| w[0].name < w[1].name);
    assert!(sorted(commands()));
    for cmd in commands() {
        assert_eq!(cmd.name, cmd.name.to_ascii_lowercase());
        assert!(sorted(cmd.subcommands), "{}", cmd.name);
    }
}

#[test]
fn flags_come_from_command_info() {
    assert!(spec("get").has_flag(READONLY | FAST));
    assert!(!spec("get").has_flag(WRITE));
    assert!(spec("set").has_flag(WRITE | DENY_OOM));
    assert!(spec("flushall").has_flag(WRITE));
    assert!(spec("shutdown").has_flag(ADMIN | NOSCRIPT | LOADING | STALE | NO_MULTI | ALLOW_BUSY));
    assert!(spec("subscribe").has_flag(PUBSUB | NOSCRIPT));
    assert!(spec("blpop").has_flag(BLOCKING));
    assert!(spec("auth").has_flag(NO_AUTH));
    assert!(spec("hello").has_flag(NO_AUTH));
    assert!(spec("eval").has_flag(NOSCRIPT | SKIP_MONITOR | NO_MANDATORY_KEYS | MOVABLE_KEYS));
    assert!(spec("sort").has_flag(MOVABLE_KEYS));
    assert!(!spec("mget").has_flag(MOVABLE_KEYS));
    assert!(spec("asking").has_flag(FAST));
    assert!(sub("client", "setname").has_flag(NOSCRIPT | LOADING | STALE));
    assert!(sub("config", "set").has_flag(ADMIN));
    assert!(sub("object", "encoding").has_flag(READONLY));
    assert!(spec("get").has_flag(0));
    // A parent of subcommands has no flags of its own.
    assert_eq!(spec("client").flags, 0);
    assert_eq!(spec("client").arity, -2);
}

#[test]
fn acl_categories_and_groups_come_from_redis() {
    assert_eq!(
        spec("get").acl_categories,
        acl::READ | acl::STRING | acl::FAST
    );
    assert_ne!(spec("flushall").acl_categories & acl::DANGEROUS, 0);
    assert_eq!(spec("get").group, Group::String);
    assert_eq!(spec("zadd").group, Group::SortedSet);
    assert_eq!(spec("zadd").group.as_str(), "sorted-set");
    assert_eq!(spec("multi").group, Group::Transactions);
    assert_eq!(spec("eval").group, Group::Scripting);
    assert_eq!(spec("publish").group, Group::Pubsub);
    assert_eq!(spec("del").group, Group::Generic);
    assert_eq!(spec("ping").group, Group::Connection);
    assert_eq!(spec("cluster").group, Group::Cluster);
    assert_eq!(spec("pfadd").group, Group::Hyperloglog);
    assert_eq!(spec("xadd").group, Group::Stream);
    assert_eq!(spec("setbit").group, Group::Bitmap);
    assert_eq!(sub("client", "setname").group, Group::Connection);
    assert_eq!(sub("config", "get").group, Group::Server);
}

#[test]
fn tips_come_from_command_info() {
    let get = spec("get");
    assert_eq!(
        (get.request_policy, get.response_policy, get.tips),
        (None, None, 0)
    );
    let dbsize = spec("dbsize");
    assert_eq!(dbsize.request_policy, Some(RequestPolicy::AllShards));
    assert_eq!(dbsize.response_policy, Some(ResponsePolicy::AggSum));
    let mset = spec("mset");
    assert_eq!(mset.request_policy, Some(RequestPolicy::MultiShard));
    assert_eq!(mset.response_policy, Some(ResponsePolicy::AllSucceeded));
    assert_eq!(spec("del").response_policy, Some(ResponsePolicy::AggSum));
    assert_eq!(spec("keys").request_policy, Some(RequestPolicy::AllShards));
    assert!(spec("keys").has_tip(tip::NONDETERMINISTIC_OUTPUT_ORDER));
    assert_eq!(
        sub("config", "set").request_policy,
        Some(RequestPolicy::AllNodes)
    );
    assert_eq!(spec("wait").response_policy, Some(ResponsePolicy::AggMin));
    assert_eq!(
        spec("script")
            .subcommand(b"exists")
            .map(|s| s.response_policy),
        Some(Some(ResponsePolicy::AggLogicalAnd))
    );
    assert_eq!(spec("randomkey").response_policy, None);
    assert_eq!(
        spec("randomkey").request_policy,
        Some(RequestPolicy::AllShards)
    );
    assert!(spec("randomkey").has_tip(tip::NONDETERMINISTIC_OUTPUT));
    assert!(spec("smembers").has_tip(tip::NONDETERMINISTIC_OUTPUT_ORDER));
    assert!(!spec("smembers").has_tip(tip::NONDETERMINISTIC_OUTPUT));
    assert_eq!(
        sub("function", "kill").request_policy,
        Some(RequestPolicy::AllShards)
    );
    assert_eq!(
        sub("function", "kill").response_policy,
        Some(ResponsePolicy::OneSucceeded)
    );
}

#[test]
fn key_specs_are_redis_7_key_specs() {
    let get = spec("get");
    assert_eq!((get.first_key, get.last_key, get.key_step), (1, 1, 1));
    assert_eq!(
        get.key_specs,
        [KeySpec {
            flags: key_flag::RO | key_flag::ACCESS,
            begin_search: BeginSearch::Index { index: 1 },
            find_keys: FindKeys::Range {
                lastkey: 0,
                keystep: 1,
                limit: 0
            },
        }]
    );
    let xread = spec("xread").key_specs;
    assert_eq!(
        xread[0].begin_search,
        BeginSearch::Keyword {
            keyword: "STREAMS",
            startfrom: 1
        }
    );
    assert_eq!(
        xread[0].find_keys,
        FindKeys::Range {
            lastkey: -1,
            keystep: 1,
            limit: 2
        }
    );
    let eval = spec("eval").key_specs;
    assert_eq!(eval[0].begin_search, BeginSearch::Index { index: 2 });
    assert_eq!(
        eval[0].find_keys,
        FindKeys::Keynum {
            keynumidx: 0,
            firstkey: 1,
            keystep: 1
        }
    );
    let migrate = spec("migrate").key_specs;
    assert_eq!(
        migrate[1].begin_search,
        BeginSearch::Keyword {
            keyword: "KEYS",
            startfrom: -2
        }
    );
    assert_ne!(migrate[1].flags & key_flag::INCOMPLETE, 0);
    assert_eq!(spec("sort").key_specs[1].begin_search, BeginSearch::Unknown);
    assert_ne!(spec("set").key_spec_flags() & key_flag::VARIABLE_FLAGS, 0);
    assert_eq!(spec("spublish").key_spec_flags(), key_flag::NOT_KEY);
    assert!(spec("ping").key_specs.is_empty());
    assert!(spec("subscribe").key_specs.is_empty());
}

#[test]
fn blocking_commands() {
    let blocking = |args: &[&[u8]]| resolve(args).is_some_and(|s| is_blocking(s, args));
    for cmd in [
        &[&b"BLPOP"[..], b"k", b"0"][..],
        &[b"brpop", b"a", b"b", b"1.5"],
        &[b"blmove", b"a", b"b", b"LEFT", b"RIGHT", b"0"],
        &[b"brpoplpush", b"a", b"b", b"0"],
        &[b"bzpopmin", b"z", b"0"],
        &[b"bzpopmax", b"z", b"0"],
        &[b"blmpop", b"0", b"1", b"l", b"LEFT"],
        &[b"bzmpop", b"0", b"1", b"z", b"MIN"],
        &[b"wait", b"1", b"0"],
        &[b"xread", b"BLOCK", b"0", b"STREAMS", b"s", b"$"],
        &[
            b"XREAD", b"count", b"1", b"block", b"100", b"STREAMS", b"s", b"$",
        ],
        &[
            b"xreadgroup",
            b"GROUP",
            b"g",
            b"c",
            b"BLOCK",
            b"0",
            b"STREAMS",
            b"s",
            b">",
        ],
        &[
            b"xreadgroup",
            b"GROUP",
            b"g",
            b"c",
            b"NOACK",
            b"block",
            b"0",
            b"STREAMS",
            b"s",
            b">",
        ],
    ] {
        assert!(blocking(cmd), "{cmd:?}");
    }
    for cmd in [
        &[&b"xread"[..], b"STREAMS", b"block", b"0"][..],
        &[b"xread", b"COUNT", b"block", b"STREAMS", b"s", b"0"],
        &[
            b"xreadgroup",
            b"GROUP",
            b"block",
            b"block",
            b"STREAMS",
            b"s",
            b">",
        ],
        &[b"xread"],
        &[b"get", b"k"],
        &[b"lpop", b"k"],
        &[b"subscribe", b"c"],
        &[b"client", b"pause", b"100"],
    ] {
        assert!(!blocking(cmd), "{cmd:?}");
    }
}

#[test]
fn pubsub_subscribe_commands() {
    for name in ["subscribe", "PSUBSCRIBE", "ssubscribe"] {
        assert!(is_pubsub_subscribe(spec(name)), "{name}");
    }
    for name in ["unsubscribe", "publish", "spublish", "pubsub", "get"] {
        assert!(!is_pubsub_subscribe(spec(name)), "{name}");
    }
}

#[test]
fn every_command_is_found_by_its_name_and_only_by_it() {
    for spec in table::COMMANDS.iter() {
        let upper = spec.name.to_ascii_uppercase();
        assert_eq!(lookup(upper.as_bytes()).map(|s| s.name), Some(spec.name));
        let mut longer = spec.name.as_bytes().to_vec();
        longer.push(b'x');
        assert_ne!(lookup(&longer).map(|s| s.name), Some(spec.name));
        let shorter = &spec.name.as_bytes()[..spec.name.len() - 1];
        assert_ne!(lookup(shorter).map(|s| s.name), Some(spec.name));
    }
}
