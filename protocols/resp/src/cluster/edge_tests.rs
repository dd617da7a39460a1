//! Hand-made topology replies: what a real cluster rarely shows (missing
//! fields, failed replicas, overlaps) and what it never sends (garbage).
//! Each is encoded both as RESP2 (maps as flat lists) and as RESP3.

use super::*;

/// A reply tree to encode.
enum T {
    S(&'static str),
    I(i64),
    A(Vec<T>),
    M(Vec<(&'static str, T)>),
    Nil,
}
use T::*;

fn encode(t: &T, resp3: bool, out: &mut Vec<u8>) {
    match t {
        S(s) => out.extend(format!("${}\r\n{s}\r\n", s.len()).bytes()),
        I(i) => out.extend(format!(":{i}\r\n").bytes()),
        A(items) => {
            out.extend(format!("*{}\r\n", items.len()).bytes());
            items.iter().for_each(|i| encode(i, resp3, out));
        }
        M(fields) => {
            let header = match resp3 {
                true => format!("%{}\r\n", fields.len()),
                false => format!("*{}\r\n", fields.len() * 2),
            };
            out.extend(header.bytes());
            for (k, v) in fields {
                encode(&S(k), resp3, out);
                encode(v, resp3, out);
            }
        }
        Nil if resp3 => out.extend(b"_\r\n"),
        Nil => out.extend(b"$-1\r\n"),
    }
}

/// Parses `t` as `CLUSTER SHARDS` (or `SLOTS`) in both protocols; both
/// must give the same answer.
fn parse(t: &T, shards: bool) -> Result<SlotMap, TopologyError> {
    let [two, three] = [false, true].map(|resp3| {
        let mut bytes = Vec::new();
        encode(t, resp3, &mut bytes);
        match shards {
            true => SlotMap::from_cluster_shards(&bytes),
            false => SlotMap::from_cluster_slots(&bytes),
        }
    });
    assert_eq!(two, three);
    two
}

fn node(port: i64, role: &'static str, health: &'static str) -> Vec<(&'static str, T)> {
    vec![
        ("id", S(if port == 7000 { "a" } else { "b" })),
        ("port", I(port)),
        ("ip", S("10.0.0.1")),
        ("endpoint", S("10.0.0.1")),
        ("role", S(role)),
        ("replication-offset", I(42)),
        ("health", S(health)),
    ]
}

fn shard(slots: &[i64], nodes: Vec<Vec<(&'static str, T)>>) -> T {
    M(vec![
        ("slots", A(slots.iter().map(|&s| I(s)).collect())),
        ("nodes", A(nodes.into_iter().map(M).collect())),
    ])
}

fn malformed(result: Result<SlotMap, TopologyError>) -> String {
    match result {
        Err(TopologyError::Malformed { what, .. }) => what,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn replicas_that_are_not_online_are_skipped() {
    let reply = A(vec![shard(
        &[0, 16383],
        vec![
            node(7000, "master", "online"),
            node(7001, "replica", "online"),
            node(7002, "replica", "loading"),
            node(7003, "replica", "fail"),
            node(7004, "replica", "something-new"),
        ],
    )]);
    let map = parse(&reply, true).unwrap();
    let replicas: Vec<u16> = map.shards()[0]
        .replicas
        .iter()
        .map(|r| r.addr.port)
        .collect();
    assert_eq!(replicas, [7001]);
}

#[test]
fn endpoint_choice() {
    let with = |fields: Vec<(&'static str, T)>| {
        let mut n = vec![("role", S("master")), ("health", S("online"))];
        if !fields.iter().any(|f| f.0.ends_with("port")) {
            n.push(("port", I(7000)));
        }
        n.extend(fields);
        let map = parse(&A(vec![shard(&[0, 1], vec![n])]), true).unwrap();
        map.shards()[0].primary.clone()
    };
    let host = |fields| with(fields).addr.host;
    let named = |h: &str| Host::Name(h.into());
    // The server's choice wins.
    let both = || vec![("ip", S("10.0.0.1")), ("hostname", S("r0.example"))];
    let mut fields = both();
    fields.push(("endpoint", S("10.0.0.1")));
    assert_eq!(host(fields), named("10.0.0.1"));
    let mut fields = both();
    fields.push(("endpoint", S("r0.example")));
    assert_eq!(host(fields), named("r0.example"));
    // No endpoint field: hostname, then ip.
    assert_eq!(host(both()), named("r0.example"));
    assert_eq!(
        host(vec![("ip", S("10.0.0.1")), ("hostname", S(""))]),
        named("10.0.0.1")
    );
    assert_eq!(host(vec![]), Host::Unknown);
    // "?" falls back to the ip; "" does not.
    assert_eq!(
        host(vec![("endpoint", S("?")), ("ip", S("10.0.0.1"))]),
        named("10.0.0.1")
    );
    assert_eq!(
        host(vec![("endpoint", S("?")), ("ip", S(""))]),
        Host::Unknown
    );
    assert_eq!(
        host(vec![("endpoint", S("")), ("ip", S("10.0.0.1"))]),
        Host::Unknown
    );
    // tls-port only: it is the port to dial.
    let tls = with(vec![("tls-port", I(7443)), ("port", I(0)), ("id", S("x"))]);
    assert_eq!(
        (tls.addr.port, tls.tls_port, tls.id.as_deref()),
        (7443, Some(7443), Some("x"))
    );
    assert_eq!(tls.health, Health::Online);
}

#[test]
fn shards_errors() {
    let one = |n| A(vec![shard(&[0, 100], vec![n])]);
    let mut no_port = node(7000, "master", "online");
    no_port.retain(|f| f.0 != "port");
    assert!(malformed(parse(&one(no_port), true)).contains("neither port nor tls-port"));
    let mut no_role = node(7000, "master", "online");
    no_role.retain(|f| f.0 != "role");
    assert!(malformed(parse(&one(no_role), true)).contains("no role"));
    let mut bad_port = node(7000, "master", "online");
    bad_port[1].1 = I(70000);
    assert!(malformed(parse(&one(bad_port), true)).contains("70000"));
    let mut text_port = node(7000, "master", "online");
    text_port[1].1 = S("seven");
    assert!(malformed(parse(&one(text_port), true)).contains("port"));

    let orphan = A(vec![shard(
        &[0, 100],
        vec![node(7001, "replica", "online")],
    )]);
    assert!(malformed(parse(&orphan, true)).contains("no primary"));
    let two = vec![
        node(7000, "master", "online"),
        node(7001, "master", "online"),
    ];
    assert!(malformed(parse(&A(vec![shard(&[0, 1], two)]), true)).contains("two primaries"));
    let odd = A(vec![shard(
        &[0, 100, 200],
        vec![node(7000, "master", "online")],
    )]);
    assert!(malformed(parse(&odd, true)).contains("bad slots"));
    let backwards = A(vec![shard(&[100, 0], vec![node(7000, "master", "online")])]);
    assert!(malformed(parse(&backwards, true)).contains("100-0"));
    let too_high = A(vec![shard(
        &[0, 16384],
        vec![node(7000, "master", "online")],
    )]);
    assert!(malformed(parse(&too_high, true)).contains("16384"));
    let overlap = A(vec![
        shard(&[0, 100], vec![node(7000, "master", "online")]),
        shard(&[100, 200], vec![node(7001, "master", "online")]),
    ]);
    assert!(malformed(parse(&overlap, true)).contains("two shards"));
    assert!(malformed(parse(&A(vec![M(vec![("nodes", A(vec![]))])]), true)).contains("no slots"));
    assert!(malformed(parse(&A(vec![I(1)]), true)).contains("not a map"));
    assert!(malformed(parse(&S("x"), true)).contains("not a list"));
}

#[test]
fn empty_and_slotless() {
    // A fresh node: no shards. A primary without slots: dropped.
    assert_eq!(parse(&A(vec![]), true).unwrap().shards(), []);
    let empty = A(vec![shard(&[], vec![node(7000, "master", "online")])]);
    let map = parse(&empty, true).unwrap();
    assert!(map.shards().is_empty() && map.shard_for_slot(0).is_none() && !map.is_complete());
}

#[test]
fn slots_edge_cases() {
    let n = |host: &'static str, port: i64| A(vec![S(host), I(port), S("id-of-node")]);
    // Redis 3 nodes are [ip, port]; one primary over two ranges is one shard.
    let old = A(vec![
        A(vec![I(0), I(99), A(vec![S("10.0.0.1"), I(7000)])]),
        A(vec![I(100), I(16383), A(vec![S("10.0.0.2"), I(7000)])]),
        A(vec![I(200), I(300), A(vec![S("10.0.0.1"), I(7000)])]),
    ]);
    assert!(malformed(parse(&old, false)).contains("two shards"));
    let redis3 = A(vec![
        A(vec![
            I(0),
            I(99),
            A(vec![S("10.0.0.1"), I(7000)]),
            A(vec![S("10.0.0.3"), I(7001)]),
        ]),
        A(vec![
            I(200),
            I(300),
            A(vec![S("10.0.0.1"), I(7000)]),
            A(vec![S("10.0.0.3"), I(7001)]),
        ]),
        A(vec![I(100), I(199), A(vec![S("10.0.0.2"), I(7000)])]),
    ]);
    let map = parse(&redis3, false).unwrap();
    assert_eq!(map.shards().len(), 2);
    assert_eq!(map.shards()[0].slots, [(0, 99), (200, 300)]);
    assert_eq!(map.shards()[0].replicas.len(), 1);
    assert_eq!(map.shards()[0].primary.id, None);
    assert_eq!(map.shard_index(150), Some(1));
    assert_eq!(map.shard_for_slot(301), None);
    // Null endpoint, hostname metadata.
    let meta = A(vec![A(vec![
        I(0),
        I(10),
        A(vec![
            Nil,
            I(7000),
            S("x"),
            M(vec![("ip", S("10.0.0.1")), ("hostname", S("r0"))]),
        ]),
    ])]);
    let primary = parse(&meta, false).unwrap().shards()[0].primary.clone();
    assert_eq!(primary.addr.host, Host::Unknown);
    assert_eq!(
        (primary.ip.as_deref(), primary.hostname.as_deref()),
        (Some("10.0.0.1"), Some("r0"))
    );

    for (bad, what) in [
        (A(vec![A(vec![I(0), I(10)])]), "not [start, end, primary"),
        (A(vec![A(vec![I(0), S("x"), n("h", 1)])]), "bad slot range"),
        (
            A(vec![A(vec![I(0), I(1), A(vec![S("h")])])]),
            "not [endpoint, port",
        ),
        (
            A(vec![A(vec![I(0), I(1), A(vec![I(1), I(1)])])]),
            "endpoint is not a string",
        ),
        (A(vec![A(vec![I(0), I(1), n("h", 0)])]), "port 0"),
        (A(vec![A(vec![I(0), I(1), n("h", -1)])]), "out of range"),
        (
            A(vec![A(vec![I(0), I(1), A(vec![S("h"), I(1), I(5)])])]),
            "id is not a string",
        ),
        (
            A(vec![A(vec![
                I(0),
                I(1),
                A(vec![S("h"), I(1), S("i"), I(5)]),
            ])]),
            "metadata",
        ),
    ] {
        let got = malformed(parse(&bad, false));
        assert!(got.contains(what), "{got} should mention {what}");
    }
}

#[test]
fn garbage_is_an_error() {
    let cases: [(&[u8], &str); 8] = [
        (b"", "incomplete"),
        (b"*3\r\n", "incomplete"),
        (b"hello\r\n", "not RESP"),
        (b"*1\r\n*0\r\n+OK\r\n", "followed by 5 more bytes"),
        (
            b"-ERR unknown subcommand 'SHARDS'\r\n",
            "failed: ERR unknown subcommand",
        ),
        (b"!10\r\nERR broken\r\n", "failed: ERR broken"),
        (b"#t\r\n", "not a list"),
        (b"*1\r\n,1.5\r\n", "not a map"),
    ];
    for (bytes, message) in cases {
        let err = SlotMap::from_cluster_shards(bytes).unwrap_err().to_string();
        assert!(err.contains(message), "{err:?} should say {message:?}");
        assert!(
            err.starts_with("CLUSTER SHARDS") || err.contains("CLUSTER SHARDS"),
            "{err}"
        );
    }
    let deep = b"*1\r\n".repeat(100_000);
    let err = SlotMap::from_cluster_slots(&deep).unwrap_err();
    assert!(matches!(err, TopologyError::TooDeep { .. }), "{err}");
    let huge = b"*4294967295\r\n*99999999999\r\n$99999999999\r\n";
    assert!(SlotMap::from_cluster_slots(huge).is_err());
}
