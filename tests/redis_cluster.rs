//! attache in front of a real Redis Cluster (3 primaries + 3 replicas):
//! routing by slot, commands across slots, a slot migrated under load, and
//! a primary failing over.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use attache_resp::hash::key_slot;
use redis::AsyncCommands;
use support::cluster::{attache_for_cluster, start_cluster, start_cluster_attache, RedisCluster};
use support::*;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_land_on_their_slot_owner_and_multi_key_commands_span_slots() {
    let cluster = start_cluster().await;
    let (_attache, addr) = attache_for_cluster(&cluster, "").await;
    let mut c = client(addr).await;
    let keys: Vec<String> = (0..300).map(|i| format!("user:{i}")).collect();
    for k in &keys {
        let _: () = c.set(k, format!("v-{k}")).await.unwrap();
    }
    for k in keys.iter().step_by(37) {
        let owner = cluster.primary_for_slot(key_slot(k.as_bytes()));
        assert_eq!(
            cluster.cli(owner, &["GET", k]),
            format!("v-{k}"),
            "{k} on its slot's primary"
        );
    }
    // Across slots: split, merged in order.
    let values: Vec<Option<String>> = c.mget(&keys[..50]).await.unwrap();
    assert!(values
        .iter()
        .zip(&keys)
        .all(|(v, k)| v.as_deref() == Some(&format!("v-{k}"))));
    let pairs: Vec<(String, String)> = keys[..20]
        .iter()
        .map(|k| (k.clone(), "m".to_string()))
        .collect();
    let _: () = c.mset(&pairs).await.unwrap();
    let deleted: i64 = c.del(&keys[..20]).await.unwrap();
    assert_eq!(deleted, 20);
    let size: i64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
    assert_eq!(size, 281, "280 keys + the probe");
    // SCAN over every primary, each key exactly once.
    let mut seen = std::collections::HashSet::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(50)
            .query_async(&mut c)
            .await
            .unwrap();
        for k in batch {
            assert!(seen.insert(k.clone()), "{k} returned twice");
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    assert_eq!(seen.len(), 281);
    // Atomic commands across slots are refused; a hash tag keeps them together.
    let err = redis::cmd("RENAME")
        .arg("user:1")
        .arg("user:2")
        .query_async::<()>(&mut c)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("same slot"), "{err}");
    let _: () = redis::cmd("MSET")
        .arg("{t}a")
        .arg(1)
        .arg("{t}b")
        .arg(2)
        .query_async(&mut c)
        .await
        .unwrap();
    let _: () = redis::cmd("RENAME")
        .arg("{t}a")
        .arg("{t}c")
        .query_async(&mut c)
        .await
        .unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut request = cmd(&["MULTI"]);
    request.extend(cmd(&["INCR", "{t}n"]));
    request.extend(cmd(&["INCR", "{t}n"]));
    request.extend(cmd(&["EXEC"]));
    assert_eq!(
        raw_exchange(&mut s, &request, 4).await,
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:1\r\n:2\r\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migrated_under_load_costs_the_app_no_error() {
    let cluster = Arc::new(start_cluster().await);
    let (_attache, addr) = attache_for_cluster(&cluster, "").await;
    // Keys that all live in one slot, written before the move.
    let keys: Vec<String> = (0..200).map(|i| format!("{{hot}}:{i}")).collect();
    let slot = key_slot(keys[0].as_bytes());
    let mut c = client(addr).await;
    for k in &keys {
        let _: () = c.set(k, k).await.unwrap();
    }
    let (from, to) = cluster.owner_and_another(slot);
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for worker in 0..4 {
        let (keys, stop, ops) = (keys.clone(), stop.clone(), ops.clone());
        load.push(tokio::spawn(async move {
            let mut c = client(addr).await;
            let mut errors = Vec::new();
            let mut i = worker;
            while !stop.load(Ordering::Relaxed) {
                let k = &keys[i % keys.len()];
                match c.get::<_, Option<String>>(k).await {
                    Ok(Some(v)) if &v == k => {}
                    other => errors.push(format!("GET {k}: {other:?}")),
                }
                if let Err(e) = c.set::<_, _, ()>(format!("{{hot}}:new:{i}"), i).await {
                    errors.push(format!("SET: {e}"));
                }
                ops.fetch_add(2, Ordering::Relaxed);
                i += 4;
            }
            errors
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mover = cluster.clone();
    tokio::task::spawn_blocking(move || {
        mover.begin_migration(slot, from, to);
        while mover.migrate_keys_batch(slot, from, to, 10) > 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        mover.finish_migration(slot, from, to);
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for l in load {
        errors.extend(l.await.unwrap());
    }
    assert!(ops.load(Ordering::Relaxed) > 100, "the load ran");
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    assert_eq!(cluster.primary_for_slot(slot), to);
    // The app saw nothing, but attache did follow ASK redirects mid-move.
    let stats = cluster.cli(to, &["INFO", "commandstats"]);
    assert!(
        stats.contains("cmdstat_asking:calls="),
        "no ASKING reached {to}: {stats}"
    );
    assert_eq!(cluster.cli(to, &["GET", &keys[0]]), keys[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_primary_is_followed_to_its_promoted_replica() {
    let mut cluster = start_cluster().await;
    let (_attache, addr) =
        attache_for_cluster(&cluster, "timeout = \"1s\"\nconnect_timeout = \"300ms\"").await;
    let key = "failover:key";
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        raw_exchange(&mut s, &cmd(&["SET", key, "before"]), 1).await,
        b"+OK\r\n"
    );
    let old = cluster.primary_for_slot(key_slot(key.as_bytes()));
    cluster.kill_node(old);
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.wait_for_failover(old);
        cluster
    })
    .await
    .unwrap();
    // Commands in between get clear errors (none hang); then it serves again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let started = Instant::now();
        let reply = raw_exchange(&mut s, &cmd(&["GET", key]), 1).await;
        assert!(started.elapsed() < Duration::from_secs(3), "a command hung");
        if reply == b"$6\r\nbefore\r\n" {
            break;
        }
        assert!(
            reply.starts_with(b"-"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
        assert!(
            Instant::now() < deadline,
            "never followed: {}",
            String::from_utf8_lossy(&reply)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_replicas_when_asked() {
    let cluster = start_cluster().await;
    let (_attache, addr) = attache_for_cluster(&cluster, "read_from = \"replica\"").await;
    let mut c = client(addr).await;
    let key = "replicated";
    let _: () = c.set(key, "v").await.unwrap();
    // Replication is asynchronous: the replica has it shortly.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v: Option<String> = c.get(key).await.unwrap();
        if v.as_deref() == Some("v") {
            break;
        }
        assert!(Instant::now() < deadline, "the read never saw the write");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let primary = cluster.primary_for_slot(key_slot(key.as_bytes()));
    let replica = cluster.replicas_of(primary)[0];
    let stats = cluster.cli(replica, &["INFO", "commandstats"]);
    assert!(
        stats.contains("cmdstat_get:calls="),
        "GET served by the replica: {stats}"
    );
    assert!(
        stats.contains("cmdstat_readonly:calls="),
        "READONLY sent: {stats}"
    );
    let primary_stats = cluster.cli(primary, &["INFO", "commandstats"]);
    assert!(
        !primary_stats.contains("cmdstat_get:"),
        "no GET on the primary: {primary_stats}"
    );
    // Writes still go to the primary.
    let _: () = c.set(key, "w").await.unwrap();
    assert_eq!(cluster.cli(primary, &["GET", key]), "w");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_hear_messages_published_on_any_node() {
    let cluster = start_cluster().await;
    let (_attache, addr) = attache_for_cluster(&cluster, "").await;
    let mut sub = TcpStream::connect(addr).await.unwrap();
    let confirm = raw_exchange(&mut sub, &cmd(&["SUBSCRIBE", "events"]), 1).await;
    assert_eq!(confirm, b"*3\r\n$9\r\nsubscribe\r\n$6\r\nevents\r\n:1\r\n");
    for (i, port) in cluster.primaries().into_iter().enumerate() {
        cluster.cli(port, &["PUBLISH", "events", &format!("m{i}")]);
    }
    let messages = read_replies(&mut sub, 3).await;
    let text = String::from_utf8_lossy(&messages);
    for m in ["m0", "m1", "m2"] {
        assert_eq!(
            text.matches(&format!("\r\n{m}\r\n")).count(),
            1,
            "{m} exactly once: {text}"
        );
    }
    // QUIT ends the subscription and the connection: it does not move to
    // another node as a lost one would.
    assert_eq!(raw_exchange(&mut sub, &cmd(&["QUIT"]), 1).await, b"+OK\r\n");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut sub, &mut rest),
    )
    .await;
    assert!(matches!(closed, Ok(Ok(0))), "{closed:?} {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_survives_its_node_going_away() {
    let mut cluster = start_cluster().await;
    let (_attache, addr) = attache_for_cluster(&cluster, "").await;
    let mut sub = TcpStream::connect(addr).await.unwrap();
    let mut request = cmd(&["SUBSCRIBE", "alerts"]);
    request.extend(cmd(&["PSUBSCRIBE", "alert.*"]));
    let confirms = raw_exchange(&mut sub, &request, 2).await;
    assert!(
        confirms.ends_with(b"$7\r\nalert.*\r\n:2\r\n"),
        "{}",
        String::from_utf8_lossy(&confirms)
    );
    // The node attache subscribed on: the only one with a subscriber.
    let relay = cluster
        .primaries()
        .into_iter()
        .find(|&p| {
            cluster
                .cli(p, &["PUBSUB", "NUMSUB", "alerts"])
                .ends_with('1')
        })
        .expect("a node holds the subscription");
    cluster.kill_node(relay);
    let other = cluster
        .primaries()
        .into_iter()
        .find(|&p| p != relay)
        .unwrap();
    let text = publish_until_heard(&mut sub, &["after"], || {
        cluster.cli(other, &["PUBLISH", "alerts", "after"]);
    })
    .await;
    // Only messages reach the app: no stray subscribe confirmations.
    assert!(
        text.starts_with("*3\r\n$7\r\nmessage\r\n") || text.starts_with("*4\r\n$8\r\npmessage\r\n"),
        "{text}"
    );
    assert!(!text.contains("subscribe"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_follows_its_slot_when_it_moves() {
    let cluster = Arc::new(start_cluster().await);
    let (_attache, addr) = attache_for_cluster(&cluster, "").await;
    let key = "{moving}:counter";
    let slot = key_slot(key.as_bytes());
    let mut s = TcpStream::connect(addr).await.unwrap();
    let transaction = || {
        let mut request = cmd(&["MULTI"]);
        request.extend(cmd(&["INCR", key]));
        request.extend(cmd(&["INCR", key]));
        request.extend(cmd(&["EXEC"]));
        request
    };
    let replies = raw_exchange(&mut s, &transaction(), 4).await;
    assert_eq!(replies, b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:1\r\n:2\r\n");
    // Move the slot; attache's map is now stale until its next refresh.
    let (from, to) = cluster.owner_and_another(slot);
    cluster
        .off_runtime(move |c| c.migrate_slot(slot, from, to))
        .await;
    let replies = raw_exchange(&mut s, &transaction(), 4).await;
    assert_eq!(replies, b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:3\r\n:4\r\n");
    assert_eq!(cluster.cli(to, &["GET", key]), "4");
    // Keys of two slots in one transaction: refused, and nothing runs.
    let mut request = cmd(&["MULTI"]);
    request.extend(cmd(&["INCR", key]));
    request.extend(cmd(&["INCR", "elsewhere"]));
    request.extend(cmd(&["EXEC"]));
    let replies = raw_exchange(&mut s, &request, 4).await;
    let text = String::from_utf8_lossy(&replies);
    assert!(
        text.contains("-CROSSSLOT") && text.contains("-EXECABORT"),
        "{text}"
    );
    assert_eq!(cluster.cli(to, &["GET", key]), "4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_channels_follow_their_slot() {
    let cluster = start_cluster().await;
    let (_attache, addr) = attache_for_cluster(&cluster, "").await;
    let channel = "orders:eu";
    let owner = cluster.primary_for_slot(key_slot(channel.as_bytes()));
    let mut sub = TcpStream::connect(addr).await.unwrap();
    let confirm = raw_exchange(&mut sub, &cmd(&["SSUBSCRIBE", channel]), 1).await;
    assert_eq!(
        confirm,
        b"*3\r\n$10\r\nssubscribe\r\n$9\r\norders:eu\r\n:1\r\n"
    );
    assert_eq!(
        cluster.cli(owner, &["PUBSUB", "SHARDNUMSUB", channel]),
        format!("{channel}\n1")
    );
    let mut c = client(addr).await;
    let receivers: i64 = redis::cmd("SPUBLISH")
        .arg(channel)
        .arg("o1")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(receivers, 1);
    let message = read_replies(&mut sub, 1).await;
    assert_eq!(
        message,
        b"*3\r\n$8\r\nsmessage\r\n$9\r\norders:eu\r\n$2\r\no1\r\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_command_waits_for_the_topology() {
    let cluster = start_cluster().await;
    let running = start_cluster_attache(&cluster, "").await;
    // No probing first: an app that connects the moment attache listens.
    let mut s = TcpStream::connect(running.redis_addr("c").unwrap())
        .await
        .unwrap();
    assert_eq!(
        raw_exchange(&mut s, &cmd(&["SET", "early", "1"]), 1).await,
        b"+OK\r\n"
    );
}

/// A sharded subscription (SSUBSCRIBE) is not among those renewed with the
/// credential: across a rotation it keeps its session and its messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_subscription_keeps_its_messages_across_a_rotation() {
    let cluster = start_cluster().await;
    for port in cluster.ports() {
        cluster.cli(
            port,
            &["ACL", "SETUSER", "app", "on", ">t1", "~*", "&*", "+@all"],
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t1").unwrap();
    let auth = format!(
        "[redis.c.auth]\nusername = \"app\"\ntoken = \"file\"\n\n[tokens.file]\n\
         provider = \"static\"\ntoken_file = \"{}\"\n",
        token.display()
    );
    let (_attache, addr) = attache_for_cluster(&cluster, &auth).await;
    let channel = "orders:eu";
    let owner = cluster.primary_for_slot(key_slot(channel.as_bytes()));
    let mut sub = TcpStream::connect(addr).await.unwrap();
    let confirm = raw_exchange(&mut sub, &cmd(&["SSUBSCRIBE", channel]), 1).await;
    assert!(String::from_utf8_lossy(&confirm).contains("ssubscribe"));
    for port in cluster.ports() {
        cluster.cli(port, &["ACL", "SETUSER", "app", ">t2"]);
    }
    std::fs::write(&token, "t2").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let receivers = cluster.cli(owner, &["SPUBLISH", channel, "o1"]);
    assert_eq!(receivers, "1", "the subscription was lost at the rotation");
    let message = read_replies(&mut sub, 1).await;
    assert!(String::from_utf8_lossy(&message).contains("o1"));
}

/// Sharded channels are heard only from their slot's primary: when it
/// fails, the session subscribes again on the promoted replica, with the
/// plain channels it had beside them, and the app hears both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_subscription_follows_its_slot_through_a_failover() {
    let cluster = start_cluster().await;
    let (_attache, addr) = attache_for_cluster(&cluster, "connect_timeout = \"300ms\"").await;
    let channel = "orders:eu";
    let mut sub = TcpStream::connect(addr).await.unwrap();
    let mut request = cmd(&["SSUBSCRIBE", channel]);
    request.extend(cmd(&["SUBSCRIBE", "alerts"]));
    let confirms = raw_exchange(&mut sub, &request, 2).await;
    assert!(
        confirms.ends_with(b"$6\r\nalerts\r\n:1\r\n"),
        "{}",
        String::from_utf8_lossy(&confirms)
    );
    let old = cluster.primary_for_slot(key_slot(channel.as_bytes()));
    let (cluster, new) = fail_over(cluster, old).await;
    let text = publish_until_heard(&mut sub, &["sharded-after", "plain-after"], || {
        cluster.cli(new, &["SPUBLISH", channel, "sharded-after"]);
        cluster.cli(new, &["PUBLISH", "alerts", "plain-after"]);
    })
    .await;
    // Only messages reach the app: no stray subscribe confirmations.
    assert!(!text.contains("subscribe"), "{text}");
}

/// A sharded channel of another node's slot, sent on a sharded
/// subscription, is refused by the node (`-MOVED`) and not remembered: after
/// a failover the session still follows its one slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_sharded_channel_does_not_hold_back_the_failover() {
    let cluster = start_cluster().await;
    let (_attache, addr) = attache_for_cluster(&cluster, "connect_timeout = \"300ms\"").await;
    let channel = "orders:eu";
    let old = cluster.primary_for_slot(key_slot(channel.as_bytes()));
    let elsewhere = (0..)
        .map(|i| format!("orders:{i}"))
        .find(|c| cluster.primary_for_slot(key_slot(c.as_bytes())) != old)
        .unwrap();
    let mut sub = TcpStream::connect(addr).await.unwrap();
    raw_exchange(&mut sub, &cmd(&["SSUBSCRIBE", channel]), 1).await;
    let refused = raw_exchange(&mut sub, &cmd(&["SSUBSCRIBE", &elsewhere]), 1).await;
    assert!(
        refused.starts_with(b"-MOVED"),
        "{}",
        String::from_utf8_lossy(&refused)
    );
    let (cluster, new) = fail_over(cluster, old).await;
    let text = publish_until_heard(&mut sub, &["sharded-after"], || {
        cluster.cli(new, &["SPUBLISH", channel, "sharded-after"]);
    })
    .await;
    assert!(!text.contains("subscribe"), "{text}");
}

/// Kills primary `old` and waits for a replica to take its slots; returns
/// the cluster and the new primary.
async fn fail_over(mut cluster: RedisCluster, old: u16) -> (RedisCluster, u16) {
    cluster.kill_node(old);
    tokio::task::spawn_blocking(move || {
        let new = cluster.wait_for_failover(old);
        (cluster, new)
    })
    .await
    .unwrap()
}

/// Publishes (with `publish`) until the subscriber `sub` heard every one of
/// `wanted`, within 20 s: a resubscription takes a failover to resume.
/// Returns what it read.
async fn publish_until_heard(sub: &mut TcpStream, wanted: &[&str], publish: impl Fn()) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = Vec::new();
    loop {
        publish();
        let mut chunk = [0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::io::AsyncReadExt::read(sub, &mut chunk),
        )
        .await
        {
            assert!(n > 0, "the app's connection was closed");
            buf.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        if wanted.iter().all(|w| text.contains(w)) {
            return text;
        }
        assert!(Instant::now() < deadline, "never resubscribed: {text}");
    }
}
