//! attache in front of three real `redis-server`s in twemproxy's hashed
//! modes: placement, commands across shards, transactions, ejection.

mod support;

use std::time::Duration;

use attache_resp::hash::{Distribution, Distributor, HashFunction, HashTag};
use redis::AsyncCommands;
use support::shards::Shards;
use support::*;
use tokio::net::TcpStream;

async fn placement_matches(
    mode: &str,
    distribution: Distribution,
    hash: HashFunction,
    tag: Option<&str>,
) {
    let shards = Shards::start();
    let mut extra = format!("hash = \"{hash}\"\n");
    if let Some(tag) = tag {
        extra.push_str(&format!("hash_tag = \"{tag}\"\n"));
    }
    let (_attache, addr) = shards.attache(mode, &extra).await;
    let mut c = client(addr).await;
    let keys: Vec<String> = (0..10_000)
        .map(|i| format!("{{user:{}}}:key:{i}", i % 700))
        .collect();
    for chunk in keys.chunks(500) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.set(k, "v").ignore();
        }
        let _: () = pipe.query_async(&mut c).await.unwrap();
    }
    let tag = tag.map(|t| t.parse::<HashTag>().unwrap());
    let ring = Distributor::new(distribution, hash, tag, &shards.specs()).unwrap();
    let mut total = 0;
    for i in 0..3 {
        let on_server = shards.keys_on(i);
        total += on_server.len();
        for key in &on_server {
            assert_eq!(
                ring.server_for_key(key.as_bytes()),
                i,
                "{key} found on server {i}"
            );
        }
    }
    assert_eq!(total, 10_000, "every key stored exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ketama_places_10000_keys_where_twemproxy_would() {
    placement_matches("ketama", Distribution::Ketama, HashFunction::Fnv1a_64, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modula_with_a_hash_tag_places_keys_where_twemproxy_would() {
    placement_matches(
        "modula",
        Distribution::Modula,
        HashFunction::Murmur,
        Some("{}"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_key_commands_split_and_merge_in_order() {
    let shards = Shards::start();
    let (_attache, addr) = shards.attache("ketama", "").await;
    let mut c = client(addr).await;
    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    let pairs: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), format!("v-{k}"))).collect();
    let _: () = c.mset(&pairs).await.unwrap();
    // The keys really are spread, each where the ring says.
    let ring = shards.ketama(None);
    let mut used = std::collections::BTreeSet::new();
    for i in 0..3 {
        for key in shards.keys_on(i) {
            assert_eq!(ring.server_for_key(key.as_bytes()), i, "{key}");
            used.insert(i);
        }
    }
    assert!(used.len() >= 2, "the keys span servers: {used:?}");
    let mut asked = keys.clone();
    asked.insert(50, "missing".into());
    let values: Vec<Option<String>> = c.mget(&asked).await.unwrap();
    for (k, v) in asked.iter().zip(&values) {
        let expected = (k != "missing").then(|| format!("v-{k}"));
        assert_eq!(v, &expected, "{k}");
    }
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&keys[..10])
        .arg("missing")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(exists, 10);
    let touched: i64 = redis::cmd("TOUCH")
        .arg(&keys[..20])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(touched, 20);
    let deleted: i64 = c.del(&keys[..30]).await.unwrap();
    assert_eq!(deleted, 30);
    let unlinked: i64 = redis::cmd("UNLINK")
        .arg(&keys[30..])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(unlinked, 70);
    let size: i64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
    assert_eq!(size, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_commands_across_shards_get_crossslot_and_work_on_one_shard() {
    let shards = Shards::start();
    let (_attache, addr) = shards.attache("ketama", "hash_tag = \"{}\"").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Find two keys on different shards.
    let ring = shards.ketama(Some("{}"));
    let a = "a0".to_string();
    let b = (1..)
        .map(|i| format!("b{i}"))
        .find(|k| ring.server_for_key(k.as_bytes()) != ring.server_for_key(a.as_bytes()))
        .unwrap();
    for request in [
        cmd(&["MSETNX", &a, "1", &b, "2"]),
        cmd(&["RENAME", &a, &b]),
        cmd(&["SMOVE", &a, &b, "m"]),
        cmd(&["SINTERSTORE", &a, &b]),
        cmd(&["EVAL", "return 1", "2", &a, &b]),
    ] {
        let reply = raw_exchange(&mut s, &request, 1).await;
        assert!(
            reply.starts_with(b"-CROSSSLOT"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
    }
    // With a hash tag the same commands stay on one shard and just work.
    let mut request = cmd(&["MSETNX", "{t}a", "1", "{t}b", "2"]);
    request.extend(cmd(&["RENAME", "{t}a", "{t}c"]));
    request.extend(cmd(&[
        "EVAL",
        "return redis.call('GET', KEYS[1])",
        "1",
        "{t}c",
    ]));
    let replies = raw_exchange(&mut s, &request, 3).await;
    assert_eq!(replies, b":1\r\n+OK\r\n$1\r\n1\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_commands_fan_out_or_answer_locally() {
    let shards = Shards::start();
    let (_attache, addr) = shards.attache("ketama", "").await;
    let mut c = client(addr).await;
    for i in 0..300 {
        let _: () = c.set(format!("key:{i}"), i).await.unwrap();
    }
    let size: i64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
    assert_eq!(size, 300);
    let mut all: Vec<String> = c.keys("key:*").await.unwrap();
    all.sort();
    assert_eq!(all.len(), 300);
    let info: String = redis::cmd("INFO")
        .arg("keyspace")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(info.matches("# attache_server:").count(), 3, "{info}");
    let pong: String = redis::cmd("PING").query_async(&mut c).await.unwrap();
    assert_eq!(pong, "PONG");
    let echo: String = redis::cmd("ECHO")
        .arg("hi")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(echo, "hi");
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return 7")
        .query_async(&mut c)
        .await
        .unwrap();
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(exists, [1], "loaded on every shard");
    for i in 0..10 {
        let seven: i64 = redis::cmd("EVALSHA")
            .arg(&sha)
            .arg(1)
            .arg(format!("k{i}"))
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(seven, 7);
    }
    // A write with no key would hit one shard at random: refused instead.
    let err = redis::cmd("SWAPDB")
        .arg(0)
        .arg(1)
        .query_async::<()>(&mut c)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no key to pick a shard by"),
        "{err}"
    );
    // WAIT counts one connection's writes: refused, saying why.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let wait = raw_exchange(&mut s, &cmd(&["WAIT", "0", "0"]), 1).await;
    assert!(
        wait.starts_with(b"-ERR attache: WAIT waits for one connection's writes"),
        "{}",
        String::from_utf8_lossy(&wait)
    );
    let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
    assert!((0..3).all(|i| shards.keys_on(i).is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_visits_every_key_exactly_once() {
    let shards = Shards::start();
    let (_attache, addr) = shards.attache("ketama", "").await;
    let mut c = client(addr).await;
    for i in 0..1000 {
        let _: () = c.set(format!("scan:{i}"), i).await.unwrap();
    }
    let mut seen = std::collections::HashMap::new();
    let mut cursor: u64 = 0;
    let mut steps = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(37)
            .query_async(&mut c)
            .await
            .unwrap();
        for k in keys {
            *seen.entry(k).or_insert(0) += 1;
        }
        steps += 1;
        cursor = next;
        if cursor == 0 {
            break;
        }
        assert!(steps < 10_000, "SCAN never ends");
    }
    assert_eq!(seen.len(), 1000);
    assert!(seen.values().all(|&n| n == 1), "a key was returned twice");
    // Without a cursor, Redis's own arity error.
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        raw_exchange(&mut s, &cmd(&["SCAN"]), 1).await,
        b"-ERR wrong number of arguments for 'scan' command\r\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejected_server_s_keys_move_to_the_next_one_and_come_back() {
    let mut shards = Shards::start();
    let (_attache, addr) = shards
        .attache(
            "ketama",
            "auto_eject_hosts = true\nserver_failure_limit = 1\nserver_retry_timeout = \"1s\"\ntimeout = \"500ms\"\nconnect_timeout = \"300ms\"",
        )
        .await;
    let ring = shards.ketama(None);
    let key = (0..)
        .map(|i| format!("victim:{i}"))
        .find(|k| ring.server_for_key(k.as_bytes()) == 1)
        .unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        raw_exchange(&mut s, &cmd(&["SET", &key, "before"]), 1).await,
        b"+OK\r\n"
    );
    shards.servers[1].kill();
    // Errors until the failure is noticed, then the key is served elsewhere.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = raw_exchange(&mut s, &cmd(&["SET", &key, "during"]), 1).await;
        if reply == b"+OK\r\n" {
            break;
        }
        assert!(
            reply.starts_with(b"-ERR attache: upstream shards"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
        assert!(std::time::Instant::now() < deadline, "never ejected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let holders: Vec<usize> = [0, 2]
        .into_iter()
        .filter(|&i| shards.keys_on(i).contains(&key))
        .collect();
    assert_eq!(holders.len(), 1, "the key moved to exactly one live server");
    // The server comes back; after the retry timeout its keys go home.
    shards.servers[1].restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let reply = raw_exchange(&mut s, &cmd(&["SET", &key, "after"]), 1).await;
        if reply == b"+OK\r\n" && shards.servers[1].cli(&["GET", &key]) == "after" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server never came back: {}",
            String::from_utf8_lossy(&reply)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_hear_every_shard() {
    let shards = Shards::start();
    let (_attache, addr) = shards.attache("ketama", "").await;
    let mut sub = TcpStream::connect(addr).await.unwrap();
    // One confirmation, as from a single server.
    let confirm = raw_exchange(&mut sub, &cmd(&["SUBSCRIBE", "news"]), 1).await;
    assert_eq!(confirm, b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n");
    // Publishers that talk to any shard directly, and one through attache.
    for (i, server) in shards.servers.iter().enumerate() {
        let receivers = server.cli(&["PUBLISH", "news", &format!("from-{i}")]);
        assert_eq!(receivers, "1", "server {i} has the subscription");
    }
    let mut c = client(addr).await;
    let _: i64 = c.publish("news", "via-attache").await.unwrap();
    let messages = read_replies(&mut sub, 4).await;
    let text = String::from_utf8_lossy(&messages);
    for m in ["from-0", "from-1", "from-2", "via-attache"] {
        assert!(text.contains(m), "{m} missing: {text}");
    }
    // PING is answered once, and the stream stays clean.
    let pong = raw_exchange(&mut sub, &cmd(&["PING"]), 1).await;
    assert_eq!(pong, b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    let unsub = raw_exchange(&mut sub, &cmd(&["UNSUBSCRIBE", "news"]), 1).await;
    assert_eq!(unsub, b"*3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:0\r\n");
}

/// A sharded subscription is pinned to its channel's server: an
/// `SSUBSCRIBE` on it for a channel another server serves is refused (its
/// `SPUBLISH` goes to that server and would never be heard); one for the
/// same server is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_subscription_refuses_a_channel_of_another_server() {
    let shards = Shards::start();
    let (_attache, addr) = shards.attache("ketama", "").await;
    let ring = shards.ketama(None);
    let server_of = |c: &String| ring.server_for_key(c.as_bytes());
    let channels: Vec<String> = (0..50).map(|i| format!("{i}:orders")).collect();
    let home = server_of(&channels[0]);
    let same = channels[1..].iter().find(|c| server_of(c) == home).unwrap();
    let other = channels.iter().find(|c| server_of(c) != home).unwrap();
    let mut sub = TcpStream::connect(addr).await.unwrap();
    raw_exchange(&mut sub, &cmd(&["SSUBSCRIBE", &channels[0]]), 1).await;
    let refused = raw_exchange(&mut sub, &cmd(&["SSUBSCRIBE", other]), 1).await;
    assert!(
        refused.starts_with(b"-CROSSSLOT"),
        "{}",
        String::from_utf8_lossy(&refused)
    );
    let taken = raw_exchange(&mut sub, &cmd(&["SSUBSCRIBE", same]), 1).await;
    assert!(
        taken.ends_with(b":2\r\n"),
        "{}",
        String::from_utf8_lossy(&taken)
    );
    let mut c = client(addr).await;
    let receivers: i64 = redis::cmd("SPUBLISH")
        .arg(same)
        .arg("m1")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(receivers, 1);
    let message = read_replies(&mut sub, 1).await;
    assert!(String::from_utf8_lossy(&message).contains("m1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_mode_sends_a_multi_key_command_to_one_server() {
    let shards = Shards::start();
    let (_attache, addr) = shards.attache("random", "").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Any one server may take it; drawn per key, most got CROSSSLOT.
    for _ in 0..30 {
        assert_eq!(
            raw_exchange(&mut s, &cmd(&["SINTERSTORE", "dst", "a", "b"]), 1).await,
            b":0\r\n"
        );
        assert_eq!(
            raw_exchange(&mut s, &cmd(&["EVAL", "return 1", "2", "a", "b"]), 1).await,
            b":1\r\n"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mset_missing_a_value_writes_nothing() {
    let shards = Shards::start();
    let (_attache, addr) = shards.attache("ketama", "").await;
    let ring = shards.ketama(None);
    let other = (1..)
        .map(|i| format!("k{i}"))
        .find(|k| ring.server_for_key(k.as_bytes()) != ring.server_for_key(b"k0"))
        .unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let reply = raw_exchange(&mut s, &cmd(&["MSET", "k0", "v", &other]), 1).await;
    assert!(
        reply.starts_with(b"-ERR wrong number of arguments"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert_eq!(
        raw_exchange(&mut s, &cmd(&["EXISTS", "k0"]), 1).await,
        b":0\r\n",
        "nothing written, as Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_subscription_does_not_send_key_commands_to_the_wrong_servers() {
    let shards = Shards::start();
    let (_attache, addr) = shards.attache("ketama", "").await;
    let ring = shards.ketama(None);
    let (elsewhere, _) = key_off_server_zero(&shards, &ring);
    let mut s = TcpStream::connect(addr).await.unwrap();
    raw_exchange(&mut s, &cmd(&["HELLO", "3"]), 1).await;
    assert_eq!(
        raw_exchange(&mut s, &cmd(&["SUBSCRIBE", "ch"]), 1).await,
        b">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"
    );
    // RESP3 allows commands while subscribed. Before, the GET was asked of
    // server 0 (nil) and the INCR ran on every server.
    let get = raw_exchange(&mut s, &cmd(&["GET", &elsewhere]), 1).await;
    assert!(
        get.starts_with(b"-ERR attache: only"),
        "{}",
        String::from_utf8_lossy(&get)
    );
    let incr = raw_exchange(&mut s, &cmd(&["INCR", "counter"]), 1).await;
    assert!(
        incr.starts_with(b"-ERR attache: only"),
        "{}",
        String::from_utf8_lossy(&incr)
    );
    assert!((0..3).all(|i| !shards.keys_on(i).contains(&"counter".to_string())));
    // Pub/sub itself still works.
    assert_eq!(
        raw_exchange(&mut s, &cmd(&["UNSUBSCRIBE", "ch"]), 1).await,
        b">3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n"
    );
}

/// After its last UNSUBSCRIBE (or SUNSUBSCRIBE) a connection is an ordinary
/// one again, as in Redis (ioredis, for one, then sends commands on it):
/// its key commands go to their servers, and its subscription connections
/// are gone from every server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_unsubscribed_from_everything_is_an_ordinary_one_again() {
    let shards = Shards::start();
    let (_attache, addr) = shards.attache("ketama", "").await;
    let ring = shards.ketama(None);
    let (elsewhere, home) = key_off_server_zero(&shards, &ring);
    for resp3 in [false, true] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if resp3 {
            raw_exchange(&mut s, &cmd(&["HELLO", "3"]), 1).await;
        }
        let kind = if resp3 { ">" } else { "*" };
        let confirm = raw_exchange(&mut s, &cmd(&["SUBSCRIBE", "a", "b"]), 2).await;
        assert_eq!(
            String::from_utf8_lossy(&confirm),
            format!(
                "{kind}3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n\
                 {kind}3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"
            )
        );
        // The last UNSUBSCRIBE and a GET for another server, in one write:
        // the confirmations, then the value.
        let mut both = cmd(&["UNSUBSCRIBE"]);
        both.extend(cmd(&["GET", &elsewhere]));
        let replies = raw_exchange(&mut s, &both, 3).await;
        let text = String::from_utf8_lossy(&replies);
        assert!(text.ends_with(":0\r\n$1\r\nv\r\n"), "{text}");
        assert_eq!(text.matches("unsubscribe").count(), 2, "{text}");
        let incr = raw_exchange(&mut s, &cmd(&["INCR", "counter"]), 1).await;
        assert_eq!(incr, b":1\r\n", "{}", String::from_utf8_lossy(&incr));
        let at = ring.server_for_key(b"counter");
        assert_eq!(shards.servers[at].cli(&["GET", "counter"]), "1");
        shards.servers[at].cli(&["DEL", "counter"]);
        // No server keeps a subscriber for it (closing takes a moment).
        for server in &shards.servers {
            let mut numsub = String::new();
            for _ in 0..100 {
                numsub = server.cli(&["PUBSUB", "NUMSUB", "a"]);
                if numsub == "a\n0" {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(numsub, "a\n0");
        }
        // And it can subscribe again.
        let again = raw_exchange(&mut s, &cmd(&["SUBSCRIBE", "c"]), 1).await;
        assert_eq!(
            String::from_utf8_lossy(&again),
            format!("{kind}3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n")
        );
    }
    // A sharded channel's subscription (on its server alone) too.
    let channel = (0..)
        .map(|i| format!("s{i}"))
        .find(|c| ring.server_for_key(c.as_bytes()) != home)
        .unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    raw_exchange(&mut s, &cmd(&["SSUBSCRIBE", &channel]), 1).await;
    let mut both = cmd(&["SUNSUBSCRIBE"]);
    both.extend(cmd(&["GET", &elsewhere]));
    let replies = raw_exchange(&mut s, &both, 2).await;
    let text = String::from_utf8_lossy(&replies);
    assert!(text.starts_with("*3\r\n$12\r\nsunsubscribe"), "{text}");
    assert!(text.ends_with(":0\r\n$1\r\nv\r\n"), "{text}");
}

/// A key ketama places on another server than server 0 (where a
/// subscription's stream is relayed from), set to `v` there; and that
/// server.
fn key_off_server_zero(shards: &Shards, ring: &Distributor) -> (String, usize) {
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| ring.server_for_key(k.as_bytes()) != 0)
        .unwrap();
    let home = ring.server_for_key(key.as_bytes());
    shards.servers[home].cli(&["SET", &key, "v"]);
    (key, home)
}
