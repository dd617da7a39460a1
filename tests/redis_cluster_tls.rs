//! Redis Cluster over TLS, as managed services run it (ElastiCache with
//! in-transit encryption, Memorystore): a real 3 + 3 cluster whose nodes
//! take TLS on a client port of their own and talk TLS on the cluster bus
//! (`tls-cluster yes`), so `CLUSTER SHARDS` lists each node's `tls-port`.
//! attache is seeded with one node's TLS address and must dial every node
//! it discovers on its TLS port, trusting the test CA.

mod support;

use std::time::{Duration, Instant};

use attache_resp::hash::key_slot;
use redis::AsyncCommands;
use support::cluster::{tls_port, RedisCluster};
use support::tls::TestPki;

/// Keys that land on every primary (one per 512-slot stride).
fn spread_keys() -> Vec<String> {
    let mut keys = Vec::new();
    let mut slots_seen = std::collections::BTreeSet::new();
    for i in 0.. {
        let key = format!("tls:{i}");
        if slots_seen.insert(key_slot(key.as_bytes()) / 512) {
            keys.push(key);
        }
        if slots_seen.len() == 32 {
            break;
        }
    }
    keys
}

/// App connections a node serves on its TLS port (from `CLIENT LIST`).
fn tls_clients(cluster: &RedisCluster, port: u16) -> usize {
    let laddr = format!("laddr=127.0.0.1:{}", tls_port(port));
    let list = cluster.cli(port, &["CLIENT", "LIST"]);
    list.lines().filter(|l| l.contains(&laddr)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_of_a_tls_cluster_is_reached_over_tls() {
    let pki = TestPki::generate();
    let files = [
        "server.crt",
        "server.key",
        "ca.pem",
        "client.crt",
        "client.key",
    ]
    .map(|f| pki.path(f).display().to_string());
    let args = vec![
        "--tls-port".to_string(),
        "{tls_port}".to_string(),
        "--tls-cluster".into(),
        "yes".into(),
        "--tls-replication".into(),
        "yes".into(),
        "--tls-cert-file".into(),
        files[0].clone(),
        "--tls-key-file".into(),
        files[1].clone(),
        "--tls-ca-cert-file".into(),
        files[2].clone(),
        "--tls-auth-clients".into(),
        "no".into(),
        // The cluster bus always asks for a client certificate: nodes dial
        // each other with one made for client auth.
        "--tls-client-cert-file".into(),
        files[3].clone(),
        "--tls-client-key-file".into(),
        files[4].clone(),
    ];
    let cluster = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        RedisCluster::start_with(&args)
    })
    .await
    .expect("the TLS cluster starts");

    // One seed, its TLS port: the rest is discovered.
    let seed = tls_port(cluster.primaries()[0]);
    let attache = support::start_attache(&format!(
        "[redis.c]\nlisten = \"127.0.0.1:0\"\nmode = \"cluster\"\n\
         servers = [\"127.0.0.1:{seed}\"]\n\
         [redis.c.tls]\nca_file = \"{}\"\n",
        files[2]
    ))
    .await;
    let addr = attache.redis_addr("c").unwrap();
    let mut conn = support::client(addr).await;

    let keys = spread_keys();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        // The first commands may race the first topology.
        match conn.set::<_, _, ()>(&keys[0], "0").await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no reply through attache: {e}"),
        }
    }
    for key in &keys {
        let _: () = conn.set(key, key).await.unwrap();
    }
    // A multi-key command split across every primary and merged back.
    let got: Vec<String> = redis::cmd("MGET")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(got, keys);

    // Each primary holds its keys and served attache on its TLS port.
    for port in cluster.primaries() {
        let dbsize: u64 = cluster.cli(port, &["DBSIZE"]).parse().unwrap();
        assert!(dbsize > 0, "primary {port} got no key");
        assert!(
            tls_clients(&cluster, port) > 0,
            "primary {port} has no client on its TLS port {}",
            tls_port(port)
        );
    }
    attache.shutdown().await;
}
