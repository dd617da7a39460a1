//! Topology and redirect parsing on replies captured from a real Redis 7.0
//! cluster (3 primaries + 3 replicas on 127.0.0.1; regenerate with
//! `cargo test --test cluster_support -- --ignored capture_testdata`).

use super::*;

macro_rules! captured {
    ($name:literal) => {
        include_bytes!(concat!("testdata/", $name))
    };
}

/// Each scenario's `CLUSTER SHARDS` and `CLUSTER SLOTS`, RESP2 then RESP3,
/// captured from one node at one moment.
const SCENARIOS: [(&str, [&[u8]; 4]); 7] = [
    (
        "ip",
        [
            captured!("shards_ip.resp2"),
            captured!("shards_ip.resp3"),
            captured!("slots_ip.resp2"),
            captured!("slots_ip.resp3"),
        ],
    ),
    (
        "hostname",
        [
            captured!("shards_hostname.resp2"),
            captured!("shards_hostname.resp3"),
            captured!("slots_hostname.resp2"),
            captured!("slots_hostname.resp3"),
        ],
    ),
    (
        "no_hostname",
        [
            captured!("shards_no_hostname.resp2"),
            captured!("shards_no_hostname.resp3"),
            captured!("slots_no_hostname.resp2"),
            captured!("slots_no_hostname.resp3"),
        ],
    ),
    (
        "unknown_endpoint",
        [
            captured!("shards_unknown_endpoint.resp2"),
            captured!("shards_unknown_endpoint.resp3"),
            captured!("slots_unknown_endpoint.resp2"),
            captured!("slots_unknown_endpoint.resp3"),
        ],
    ),
    (
        "primary_failed",
        [
            captured!("shards_primary_failed.resp2"),
            captured!("shards_primary_failed.resp3"),
            captured!("slots_primary_failed.resp2"),
            captured!("slots_primary_failed.resp3"),
        ],
    ),
    (
        "failed_over",
        [
            captured!("shards_failed_over.resp2"),
            captured!("shards_failed_over.resp3"),
            captured!("slots_failed_over.resp2"),
            captured!("slots_failed_over.resp3"),
        ],
    ),
    (
        "single_node",
        [
            captured!("shards_single_node.resp2"),
            captured!("shards_single_node.resp3"),
            captured!("slots_single_node.resp2"),
            captured!("slots_single_node.resp3"),
        ],
    ),
];

fn maps(name: &str) -> [SlotMap; 4] {
    let (_, [s2, s3, l2, l3]) = SCENARIOS.iter().find(|s| s.0 == name).unwrap();
    let shards = |b: &[u8]| SlotMap::from_cluster_shards(b).unwrap();
    let slots = |b: &[u8]| SlotMap::from_cluster_slots(b).unwrap();
    [shards(s2), shards(s3), slots(l2), slots(l3)]
}

/// Per slot: the primary's id and address, and the replicas' addresses.
type Route<'a> = Option<(Option<&'a str>, &'a NodeAddress, Vec<&'a NodeAddress>)>;

/// What both commands report, slot by slot.
fn routing(map: &SlotMap) -> Vec<Route<'_>> {
    (0..16384)
        .map(|slot| {
            let shard = map.shard_for_slot(slot)?;
            let replicas = shard.replicas.iter().map(|r| &r.addr).collect();
            Some((shard.primary.id.as_deref(), &shard.primary.addr, replicas))
        })
        .collect()
}

fn name(host: &str, port: u16) -> NodeAddress {
    NodeAddress {
        host: Host::Name(host.into()),
        port,
    }
}

#[test]
fn resp2_and_resp3_agree_and_shards_agree_with_slots() {
    for (scenario, _) in SCENARIOS {
        let [s2, s3, l2, l3] = maps(scenario);
        assert_eq!(s2, s3, "{scenario}: CLUSTER SHARDS RESP2 vs RESP3");
        assert_eq!(l2, l3, "{scenario}: CLUSTER SLOTS RESP2 vs RESP3");
        assert_eq!(routing(&s2), routing(&l2), "{scenario}: SHARDS vs SLOTS");
        for (a, b) in s2.shards().iter().zip(l2.shards()) {
            assert_eq!(a.slots, b.slots, "{scenario}");
            assert_eq!(
                (&a.primary.ip, &a.primary.hostname),
                (&b.primary.ip, &b.primary.hostname)
            );
        }
    }
}

#[test]
fn healthy_cluster() {
    let [map, ..] = maps("ip");
    assert!(map.is_complete());
    let ranges: Vec<_> = map.shards().iter().map(|s| s.slots.clone()).collect();
    assert_eq!(
        ranges,
        [vec![(0, 5460)], vec![(5461, 10922)], vec![(10923, 16383)]]
    );
    let mut ports = Vec::new();
    for shard in map.shards() {
        assert_eq!(shard.primary.health, Health::Online);
        assert_eq!(shard.primary.id.as_ref().map(String::len), Some(40));
        assert_eq!(shard.replicas.len(), 1);
        for node in std::iter::once(&shard.primary).chain(&shard.replicas) {
            assert_eq!(node.addr.host, Host::Name("127.0.0.1".into()));
            assert_eq!(node.ip.as_deref(), Some("127.0.0.1"));
            assert_eq!((node.hostname.as_deref(), node.tls_port), (None, None));
            ports.push(node.addr.port);
        }
    }
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 6);
    assert_eq!(map.shard_index(0), Some(0));
    assert_eq!(map.shard_index(5461), Some(1));
    assert_eq!(map.shard_for_slot(16383), map.shards().get(2));
    assert_eq!(map.shard_for_slot(16384), None);
    assert_eq!(map.shard_for_slot(u16::MAX), None);
}

#[test]
fn announced_hostnames_are_preferred() {
    for map in maps("hostname") {
        for node in map
            .shards()
            .iter()
            .flat_map(|s| std::iter::once(&s.primary).chain(&s.replicas))
        {
            let port = node.addr.port;
            assert_eq!(node.addr, name(&format!("node-{port}.attache.test"), port));
            assert_eq!(node.hostname, Some(format!("node-{port}.attache.test")));
            assert_eq!(node.ip.as_deref(), Some("127.0.0.1"));
        }
    }
}

#[test]
fn hostname_preferred_but_unset_falls_back_to_ip() {
    // The node says "?" as the endpoint; both commands still give the ip.
    for map in maps("no_hostname") {
        let primary = &map.shards()[0].primary;
        assert_eq!(primary.addr.host, Host::Name("127.0.0.1".into()));
        assert_eq!(primary.hostname, None);
    }
}

#[test]
fn unknown_endpoint_means_the_host_asked() {
    // `cluster-preferred-endpoint-type unknown-endpoint`: SHARDS says
    // endpoint "", SLOTS sends a null endpoint.
    for map in maps("unknown_endpoint") {
        for shard in map.shards() {
            assert_eq!(shard.primary.addr.host, Host::Unknown);
            assert_eq!(shard.primary.addr.host_or("10.1.2.3"), "10.1.2.3");
            assert_eq!(shard.primary.ip.as_deref(), Some("127.0.0.1"));
        }
    }
}

#[test]
fn failed_primary_keeps_its_slots_until_failover() {
    let [shards, _, slots, _] = maps("primary_failed");
    let failed = shards.shard_for_slot(0).unwrap();
    assert_eq!(failed.primary.health, Health::Failed);
    assert_eq!(failed.replicas.len(), 1);
    // CLUSTER SLOTS does not say; it still lists the failed primary.
    assert_eq!(
        slots.shard_for_slot(0).unwrap().primary.health,
        Health::Online
    );

    // Captured from the same cluster after the failover: the replica took
    // the failed primary's slots, and the failed node (a primary without
    // slots, listed as its own shard by Redis 7.0) is left out.
    let [after, ..] = maps("failed_over");
    assert_eq!(after.shards().len(), 3);
    let promoted = &after.shard_for_slot(0).unwrap().primary;
    assert_eq!(promoted.id, failed.replicas[0].id);
    assert_eq!(promoted.health, Health::Online);
    assert_eq!(after.shard_for_slot(0).unwrap().replicas, []);
    assert_eq!(after.shard_for_slot(0).unwrap().slots, failed.slots);
    assert!(after.is_complete());
}

#[test]
fn lone_node_without_ip_and_with_unassigned_slots() {
    // One node that knows no IP for itself (ip "", endpoint ""), serving
    // 0-5000 and 6000-16383.
    for map in maps("single_node") {
        assert_eq!(map.shards().len(), 1);
        assert_eq!(map.shards()[0].slots, [(0, 5000), (6000, 16383)]);
        assert_eq!(map.shards()[0].primary.addr.host, Host::Unknown);
        assert_eq!(map.shards()[0].primary.ip, None);
        assert!(map.shard_for_slot(5000).is_some());
        assert!((5001..6000).all(|slot| map.shard_for_slot(slot).is_none()));
        assert!(map.shard_for_slot(6000).is_some());
        assert!(!map.is_complete());
    }
}

#[test]
fn captured_redirects() {
    let moved = parse_redirect(captured!("moved.resp2")).unwrap();
    assert!(matches!(moved, Redirect::Moved { .. }));
    assert_eq!(moved.addr().host, Host::Name("127.0.0.1".into()));
    let ask = parse_redirect(captured!("ask.resp2")).unwrap();
    assert!(matches!(ask, Redirect::Ask { .. }));
    assert_eq!(ask.slot(), crate::hash::key_slot(b"{mig}"));
    let hostname = parse_redirect(captured!("moved_hostname.resp2")).unwrap();
    let port = hostname.addr().port;
    assert_eq!(
        hostname.addr(),
        &name(&format!("node-{port}.attache.test"), port)
    );
    for unknown in [
        &captured!("moved_no_hostname.resp2")[..],
        captured!("moved_unknown_endpoint.resp2"),
    ] {
        assert_eq!(parse_redirect(unknown).unwrap().addr().host, Host::Unknown);
    }
    for reply in [
        &captured!("moved.resp2")[..],
        captured!("ask.resp2"),
        captured!("moved_hostname.resp2"),
    ] {
        assert!(is_redirect(reply));
        assert_eq!(retryable_cluster_error(reply), None);
    }
    let tryagain = captured!("tryagain.resp2");
    let clusterdown = captured!("clusterdown.resp2");
    assert!(!is_redirect(tryagain) && parse_redirect(tryagain).is_none());
    assert_eq!(
        retryable_cluster_error(tryagain),
        Some(RetryableClusterError::TryAgain)
    );
    assert_eq!(
        retryable_cluster_error(clusterdown),
        Some(RetryableClusterError::ClusterDown)
    );
}

/// Every prefix of a capture is an error; replacing a byte with one of a
/// few troublemakers never panics. (Three scenarios, every third byte, and
/// the troublemakers taken in turn: a debug run stays around a second.)
#[test]
fn damaged_captures_never_panic() {
    const FLIPS: [u8; 9] = [b'*', b'%', b':', b'$', b'_', b'-', b'9', b'\r', 0xff];
    let fuzzed = ["ip", "unknown_endpoint", "single_node"];
    for (scenario, replies) in SCENARIOS.iter().filter(|s| fuzzed.contains(&s.0)) {
        for reply in replies {
            for len in 0..reply.len() {
                let cut = &reply[..len];
                assert!(
                    SlotMap::from_cluster_shards(cut).is_err(),
                    "{scenario} cut at {len}"
                );
                assert!(
                    SlotMap::from_cluster_slots(cut).is_err(),
                    "{scenario} cut at {len}"
                );
            }
            let mut bytes = reply.to_vec();
            for i in (0..bytes.len()).step_by(3) {
                let saved = std::mem::replace(&mut bytes[i], FLIPS[i / 3 % FLIPS.len()]);
                let _ = SlotMap::from_cluster_shards(&bytes);
                let _ = SlotMap::from_cluster_slots(&bytes);
                bytes[i] = saved;
            }
        }
    }
}
