//! The cluster test harness against a real Redis Cluster, without attache:
//! creation, slot owners, migration and failover, and attache-resp's slot
//! map and redirect parsing on the live replies.

mod support;

use std::time::{Duration, Instant};

use attache_resp::cluster::{
    is_redirect, parse_redirect, retryable_cluster_error, Host, NodeAddress, Redirect,
    RetryableClusterError, SlotMap,
};
use attache_resp::hash::key_slot;
use support::cluster::{raw_reply, RedisCluster};
use support::RedisServer;

fn local(port: u16) -> NodeAddress {
    NodeAddress {
        host: Host::Name("127.0.0.1".into()),
        port,
    }
}

fn set(port: u16, key: &str, value: &str) {
    assert_eq!(raw_reply(port, false, &["SET", key, value]), b"+OK\r\n");
}

/// A key whose slot the primary on `port` owns.
fn key_on(cluster: &RedisCluster, port: u16, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|k| cluster.primary_for_slot(key_slot(k.as_bytes())) == port)
        .unwrap()
}

#[test]
fn starts_and_serves_every_slot_where_key_slot_says() {
    let started = Instant::now();
    let cluster = RedisCluster::start();
    let elapsed = started.elapsed();
    eprintln!("cluster ready in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");

    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3);
    assert_eq!(cluster.seeds().len(), 6);
    for &p in &primaries {
        assert_eq!(cluster.replicas_of(p).len(), 1);
        assert!(cluster
            .cli(p, &["CLUSTER", "INFO"])
            .contains("cluster_state:ok"));
    }

    // attache-resp's map, from every node in both protocols, names the same
    // owners and replicas as CLUSTER NODES, with every replica online.
    for port in cluster.live_ports() {
        for resp3 in [false, true] {
            let shards = raw_reply(port, resp3, &["CLUSTER", "SHARDS"]);
            let slots = raw_reply(port, resp3, &["CLUSTER", "SLOTS"]);
            for map in [
                SlotMap::from_cluster_shards(&shards),
                SlotMap::from_cluster_slots(&slots),
            ] {
                let map = map.unwrap();
                assert!(map.is_complete());
                assert_eq!(map.shards().len(), 3);
                for shard in map.shards() {
                    let primary = shard.primary.addr.port;
                    assert_eq!(shard.primary.addr, local(primary));
                    for &(start, end) in &shard.slots {
                        assert_eq!(cluster.primary_for_slot(start), primary);
                        assert_eq!(cluster.primary_for_slot(end), primary);
                    }
                    let replicas: Vec<u16> = shard.replicas.iter().map(|r| r.addr.port).collect();
                    assert_eq!(replicas, cluster.replicas_of(primary));
                }
            }
        }
    }

    // Each key is served by the owner of key_slot(key); the others redirect.
    for i in 0..100 {
        let key = format!("key:{i}");
        let slot = key_slot(key.as_bytes());
        let owner = cluster.primary_for_slot(slot);
        set(owner, &key, "v");
        for &other in primaries.iter().filter(|&&p| p != owner) {
            let reply = raw_reply(other, false, &["GET", &key]);
            assert!(is_redirect(&reply));
            let moved = Redirect::Moved {
                slot,
                addr: local(owner),
            };
            assert_eq!(parse_redirect(&reply), Some(moved));
        }
    }

    let ports = cluster.ports();
    drop(cluster);
    for port in ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "{port} still up"
        );
    }
}

#[test]
fn migrates_a_slot_step_by_step() {
    let cluster = RedisCluster::start();
    let slot = key_slot(b"{moving}");
    let from = cluster.primary_for_slot(slot);
    let to = *cluster.primaries().iter().find(|&&p| p != from).unwrap();
    for i in 0..250 {
        set(from, &format!("{{moving}}:{i}"), &i.to_string());
    }
    let count = |port: u16| cluster.cli(port, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]);

    cluster.begin_migration(slot, from, to);
    assert_eq!(cluster.migrate_keys_batch(slot, from, to, 100), 100);
    assert_eq!((count(from), count(to)), ("150".into(), "100".into()));
    // Mid-migration: a moved key gets ASK, a key left behind is still
    // served, and a command spanning both gets TRYAGAIN.
    let moved = cluster.cli(to, &["CLUSTER", "GETKEYSINSLOT", &slot.to_string(), "1"]);
    let stayed = cluster.cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot.to_string(), "1"]);
    let ask = raw_reply(from, false, &["GET", &moved]);
    assert_eq!(
        parse_redirect(&ask),
        Some(Redirect::Ask {
            slot,
            addr: local(to)
        })
    );
    assert_eq!(cluster.cli(from, &["EXISTS", &stayed]), "1");
    let tryagain = raw_reply(from, false, &["MGET", &moved, &stayed]);
    assert_eq!(
        retryable_cluster_error(&tryagain),
        Some(RetryableClusterError::TryAgain)
    );
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{to}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    let ((), value): ((), String) = redis::pipe()
        .cmd("ASKING")
        .cmd("GET")
        .arg(&moved)
        .query(&mut conn)
        .unwrap();
    assert_eq!(format!("{{moving}}:{value}"), moved);

    cluster.finish_migration(slot, from, to);
    assert_eq!((count(from), count(to)), ("0".into(), "250".into()));
    assert_eq!(cluster.primary_for_slot(slot), to);
    let reply = raw_reply(from, false, &["GET", "{moving}:7"]);
    assert_eq!(
        parse_redirect(&reply),
        Some(Redirect::Moved {
            slot,
            addr: local(to)
        })
    );
    assert_eq!(cluster.cli(to, &["GET", "{moving}:7"]), "7");
    let map = SlotMap::from_cluster_shards(&raw_reply(from, true, &["CLUSTER", "SHARDS"])).unwrap();
    assert_eq!(map.shard_for_slot(slot).unwrap().primary.addr.port, to);

    // And back in one call.
    cluster.migrate_slot(slot, to, from);
    assert_eq!((count(from), count(to)), ("250".into(), "0".into()));
    assert_eq!(cluster.primary_for_slot(slot), from);
}

#[test]
fn a_replica_takes_over_from_a_killed_primary() {
    let mut cluster = RedisCluster::start();
    let old = cluster.primary_for_slot(0);
    let replica = cluster.replicas_of(old)[0];
    let key = key_on(&cluster, old, "survivor");
    set(old, &key, "still here");
    assert_eq!(cluster.cli(old, &["WAIT", "1", "5000"]), "1");

    let started = Instant::now();
    cluster.kill_node(old);
    let new = cluster.wait_for_failover(old);
    eprintln!("failover in {:?}", started.elapsed());
    assert_eq!(new, replica);
    assert_eq!(cluster.primary_for_slot(0), new);
    assert_eq!(cluster.cli(new, &["GET", &key]), "still here");
    let shards = raw_reply(new, false, &["CLUSTER", "SHARDS"]);
    let map = SlotMap::from_cluster_shards(&shards).unwrap();
    assert!(map.is_complete());
    assert_eq!(map.shard_for_slot(0).unwrap().primary.addr, local(new));
    assert!(map.shards().iter().all(|s| s.primary.addr.port != old));

    // The old primary comes back as the new one's replica.
    cluster.restart_node(old);
    cluster.wait_stable();
    assert_eq!(cluster.replicas_of(new), [old]);
    assert_eq!(cluster.cli(old, &["ROLE"]).lines().next(), Some("slave"));
}

/// Regenerates `protocols/resp/src/cluster/testdata/` from real clusters:
/// `cargo test --test cluster_support -- --ignored capture_testdata`.
#[test]
#[ignore = "rewrites checked-in test data"]
fn capture_testdata() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("protocols/resp/src/cluster/testdata");
    std::fs::create_dir_all(&dir).unwrap();
    let save = |name: &str, bytes: Vec<u8>| std::fs::write(dir.join(name), bytes).unwrap();
    let both = |port: u16, name: &str| {
        for (resp3, v) in [(false, "resp2"), (true, "resp3")] {
            save(
                &format!("shards_{name}.{v}"),
                raw_reply(port, resp3, &["CLUSTER", "SHARDS"]),
            );
            save(
                &format!("slots_{name}.{v}"),
                raw_reply(port, resp3, &["CLUSTER", "SLOTS"]),
            );
        }
    };

    // Announced hostnames, preferred as endpoints.
    let named = RedisCluster::start_with(&[
        "--cluster-announce-hostname",
        "node-{port}.attache.test",
        "--cluster-preferred-endpoint-type",
        "hostname",
    ]);
    let port = named.primaries()[0];
    both(port, "hostname");
    let foreign = named.primaries()[1];
    save(
        "moved_hostname.resp2",
        raw_reply(port, false, &["GET", &key_in(foreign, &named)]),
    );
    drop(named);

    let mut cluster = RedisCluster::start();
    let [p0, p1, p2] = cluster.primaries()[..] else {
        panic!("3 primaries")
    };
    both(p0, "ip");
    save(
        "moved.resp2",
        raw_reply(p0, false, &["GET", &key_in(p1, &cluster)]),
    );
    // Hostname preferred but none announced: Redis says "?".
    cluster.cli(
        p2,
        &[
            "CONFIG",
            "SET",
            "cluster-preferred-endpoint-type",
            "hostname",
        ],
    );
    both(p2, "no_hostname");
    save(
        "moved_no_hostname.resp2",
        raw_reply(p2, false, &["GET", &key_in(p0, &cluster)]),
    );
    cluster.cli(
        p2,
        &[
            "CONFIG",
            "SET",
            "cluster-preferred-endpoint-type",
            "unknown-endpoint",
        ],
    );
    both(p2, "unknown_endpoint");
    save(
        "moved_unknown_endpoint.resp2",
        raw_reply(p2, false, &["GET", &key_in(p0, &cluster)]),
    );
    cluster.cli(
        p2,
        &["CONFIG", "SET", "cluster-preferred-endpoint-type", "ip"],
    );

    // ASK and TRYAGAIN while a slot migrates.
    let slot = key_slot(b"{mig}");
    let owner = cluster.primary_for_slot(slot);
    let target = if owner == p0 { p1 } else { p0 };
    cluster.cli(owner, &["SET", "{mig}a", "1"]);
    cluster.cli(owner, &["SET", "{mig}b", "2"]);
    cluster.begin_migration(slot, owner, target);
    let moved = cluster.migrate_keys_batch(slot, owner, target, 1);
    assert_eq!(moved, 1);
    let gone = if cluster.cli(owner, &["EXISTS", "{mig}a"]) == "0" {
        "{mig}a"
    } else {
        "{mig}b"
    };
    save("ask.resp2", raw_reply(owner, false, &["GET", gone]));
    save(
        "tryagain.resp2",
        raw_reply(owner, false, &["MGET", "{mig}a", "{mig}b"]),
    );
    cluster.finish_migration(slot, owner, target);

    // A failed primary, before and after its replica takes over.
    let victim = cluster.primary_for_slot(0);
    let witness = cluster
        .primaries()
        .into_iter()
        .find(|&p| p != victim)
        .unwrap();
    cluster.kill_node(victim);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if cluster
            .cli(witness, &["CLUSTER", "NODES"])
            .contains("master,fail ")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "victim never flagged fail"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    save(
        "clusterdown.resp2",
        raw_reply(witness, false, &["GET", "x"]),
    );
    both(witness, "primary_failed");
    cluster.wait_for_failover(victim);
    both(witness, "failed_over");
    drop(cluster);

    // One node that knows no IP for itself, owning two ranges with a gap.
    let single = RedisServer::start_with(&["--cluster-enabled", "yes"]);
    single.cli(&["CLUSTER", "ADDSLOTSRANGE", "0", "5000", "6000", "16383"]);
    both(single.port, "single_node");
}

fn key_in(port: u16, cluster: &RedisCluster) -> String {
    (0..)
        .map(|i| format!("k{i}"))
        .find(|k| cluster.primary_for_slot(key_slot(k.as_bytes())) == port)
        .unwrap()
}
