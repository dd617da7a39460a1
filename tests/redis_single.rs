//! attache in front of one real `redis-server`, driven by the `redis` crate
//! and by raw RESP bytes: what works (failures are in `redis_failures.rs`).

mod support;

use std::time::Duration;

use redis::AsyncCommands;
use support::*;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_data_type_round_trips() {
    let server = RedisServer::start();
    let (_attache, addr) = attache_for(&server, "").await;
    let mut c = client(addr).await;

    let _: () = c.set("s", "v").await.unwrap();
    let v: String = c.get("s").await.unwrap();
    assert_eq!(v, "v");
    let n: i64 = c.incr("counter", 5).await.unwrap();
    assert_eq!(n, 5);
    let _: () = c.rpush("l", &["a", "b", "c"]).await.unwrap();
    let l: Vec<String> = c.lrange("l", 0, -1).await.unwrap();
    assert_eq!(l, ["a", "b", "c"]);
    let _: () = c
        .hset_multiple("h", &[("f1", "1"), ("f2", "2")])
        .await
        .unwrap();
    let h: std::collections::BTreeMap<String, String> = c.hgetall("h").await.unwrap();
    assert_eq!(h.len(), 2);
    let _: () = c.sadd("set", &["x", "y", "x"]).await.unwrap();
    let card: i64 = c.scard("set").await.unwrap();
    assert_eq!(card, 2);
    let _: () = c
        .zadd_multiple("z", &[(1.0, "one"), (2.0, "two")])
        .await
        .unwrap();
    let z: Vec<(String, f64)> = c.zrange_withscores("z", 0, -1).await.unwrap();
    assert_eq!(z, [("one".to_string(), 1.0), ("two".to_string(), 2.0)]);
    let id: String = redis::cmd("XADD")
        .arg("st")
        .arg("*")
        .arg("k")
        .arg("v")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(id.contains('-'));
    let len: i64 = redis::cmd("XLEN")
        .arg("st")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(len, 1);
    let _: () = redis::cmd("PFADD")
        .arg("hll")
        .arg("a")
        .arg("b")
        .query_async(&mut c)
        .await
        .unwrap();
    let count: i64 = redis::cmd("PFCOUNT")
        .arg("hll")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(count, 2);
    let _: () = redis::cmd("GEOADD")
        .arg("g")
        .arg(13.36)
        .arg(38.11)
        .arg("palermo")
        .query_async(&mut c)
        .await
        .unwrap();
    let pos: Vec<Option<(f64, f64)>> = redis::cmd("GEOPOS")
        .arg("g")
        .arg("palermo")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(pos[0].is_some());
    let _: () = redis::cmd("SETBIT")
        .arg("bits")
        .arg(7)
        .arg(1)
        .query_async(&mut c)
        .await
        .unwrap();
    let bits: i64 = redis::cmd("BITCOUNT")
        .arg("bits")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(bits, 1);
    let _: () = c.expire("s", 100).await.unwrap();
    let ttl: i64 = c.ttl("s").await.unwrap();
    assert!(ttl > 0 && ttl <= 100);

    // Admin and test-suite commands other proxies refuse.
    let enc: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg("l")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(!enc.is_empty());
    let cfg: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(cfg[0], "maxmemory");
    let _: () = redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query_async(&mut c)
        .await
        .unwrap();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(info.contains("redis_version"));
    let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
    let size: i64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
    assert_eq!(size, 0);
    // Unknown commands get Redis's own answer.
    let err = redis::cmd("NOSUCHCOMMAND")
        .query_async::<()>(&mut c)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown command"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pipelines_get_exactly_their_own_replies() {
    let server = RedisServer::start();
    let (_attache, addr) = attache_for(&server, "").await;
    let mut tasks = Vec::new();
    for client_id in 0..200 {
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let mut request = Vec::new();
            for i in 0..500 {
                request.extend(cmd(&["ECHO", &format!("c{client_id}-{i}")]));
            }
            let replies = raw_exchange(&mut stream, &request, 500).await;
            let mut expected = Vec::new();
            for i in 0..500 {
                let s = format!("c{client_id}-{i}");
                expected.extend(format!("${}\r\n{s}\r\n", s.len()).into_bytes());
            }
            assert_eq!(replies, expected, "client {client_id}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // The shared connections carried it: far fewer upstream clients than apps.
    let clients = server.cli(&["CLIENT", "LIST"]).lines().count();
    assert!(clients <= 5, "{clients} upstream connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_commands_without_reading() {
    let server = RedisServer::start();
    let (_attache, addr) = attache_for(&server, "").await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = Vec::new();
    for i in 0..1000 {
        request.extend(cmd(&["INCR", "n"]));
        let _ = i;
    }
    let replies = raw_exchange(&mut stream, &request, 1000).await;
    let expected: Vec<u8> = (1..=1000)
        .flat_map(|i| format!(":{i}\r\n").into_bytes())
        .collect();
    assert_eq!(replies, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_exec_and_blpop_from_two_clients() {
    let server = RedisServer::start();
    let (_attache, addr) = attache_for(&server, "").await;
    let blocker = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        raw_exchange(&mut s, &cmd(&["BLPOP", "queue", "0"]), 1).await
    });
    // Another client's traffic flows while BLPOP blocks.
    let mut other = client(addr).await;
    for _ in 0..50 {
        let _: () = other.set("busy", "yes").await.unwrap();
    }
    let mut tx = TcpStream::connect(addr).await.unwrap();
    let mut request = cmd(&["MULTI"]);
    request.extend(cmd(&["SET", "k", "1"]));
    request.extend(cmd(&["RPUSH", "queue", "job"]));
    request.extend(cmd(&["EXEC"]));
    let replies = raw_exchange(&mut tx, &request, 4).await;
    assert_eq!(replies, b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n:1\r\n");
    let popped = tokio::time::timeout(Duration::from_secs(5), blocker)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(popped, b"*2\r\n$5\r\nqueue\r\n$3\r\njob\r\n");
    // After EXEC the client is back on the shared connection and consistent.
    let after = raw_exchange(&mut tx, &cmd(&["GET", "k"]), 1).await;
    assert_eq!(after, b"$1\r\n1\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_aborts_exec_when_the_key_changes() {
    let server = RedisServer::start();
    let (_attache, addr) = attache_for(&server, "").await;
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = client(addr).await;
    assert_eq!(
        raw_exchange(&mut a, &cmd(&["WATCH", "w"]), 1).await,
        b"+OK\r\n"
    );
    let _: () = b.set("w", "changed").await.unwrap();
    let mut request = cmd(&["MULTI"]);
    request.extend(cmd(&["SET", "w", "mine"]));
    request.extend(cmd(&["EXEC"]));
    let replies = raw_exchange(&mut a, &request, 3).await;
    assert_eq!(replies, b"+OK\r\n+QUEUED\r\n*-1\r\n");
    let w: String = b.get("w").await.unwrap();
    assert_eq!(w, "changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_receives_publish() {
    let server = RedisServer::start();
    let (_attache, addr) = attache_for(&server, "").await;
    let mut sub = TcpStream::connect(addr).await.unwrap();
    let confirm = raw_exchange(&mut sub, &cmd(&["SUBSCRIBE", "news"]), 1).await;
    assert_eq!(confirm, b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n");
    let mut publisher = client(addr).await;
    let receivers: i64 = publisher.publish("news", "hello").await.unwrap();
    assert_eq!(receivers, 1);
    let message = read_replies(&mut sub, 1).await;
    assert_eq!(
        message,
        b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n"
    );
    // PING in subscribed mode answers the RESP2 subscriber way.
    let pong = raw_exchange(&mut sub, &cmd(&["PING"]), 1).await;
    assert_eq!(pong, b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_hello_then_map_replies() {
    let server = RedisServer::start();
    let (_attache, addr) = attache_for(&server, "").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let hello = raw_exchange(&mut s, &cmd(&["HELLO", "3", "SETNAME", "app"]), 1).await;
    assert!(
        hello.starts_with(b"%"),
        "{}",
        String::from_utf8_lossy(&hello)
    );
    assert!(String::from_utf8_lossy(&hello).contains("proto"));
    let mut request = cmd(&["HSET", "h", "a", "1"]);
    request.extend(cmd(&["HGETALL", "h"]));
    request.extend(cmd(&["CLIENT", "GETNAME"]));
    request.extend(cmd(&["GET", "missing"]));
    let replies = raw_exchange(&mut s, &request, 4).await;
    assert_eq!(
        replies,
        b":1\r\n%1\r\n$1\r\na\r\n$1\r\n1\r\n$3\r\napp\r\n_\r\n"
    );
    // And the redis crate's RESP3 mode works end to end.
    let mut c = redis::Client::open(format!("redis://{addr}/?protocol=resp3"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let h: std::collections::HashMap<String, String> = c.hgetall("h").await.unwrap();
    assert_eq!(h["a"], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_client_handshakes_just_work() {
    let server = RedisServer::start();
    // attache holds the credential: whatever password the app still sends
    // is answered (without one of attache's, AUTH is Redis's own).
    let (_attache, addr) = attache_for(&server, &credential_toml(&server)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // What redis-py 5+/go-redis/Lettuce send on connect.
    let mut request = cmd(&["HELLO", "3", "AUTH", "default", "whatever"]);
    request.extend(cmd(&["CLIENT", "SETINFO", "LIB-NAME", "redis-py"]));
    request.extend(cmd(&["CLIENT", "SETINFO", "LIB-VER", "8.0.0"]));
    request.extend(cmd(&["SELECT", "0"]));
    request.extend(cmd(&["AUTH", "secret"]));
    request.extend(cmd(&["PING"]));
    request.extend(cmd(&["ECHO", "hi"]));
    request.extend(cmd(&["COMMAND", "COUNT"]));
    request.extend(cmd(&["QUIT"]));
    let replies = raw_exchange(&mut s, &request, 9).await;
    let text = String::from_utf8_lossy(&replies);
    assert!(replies.starts_with(b"%"), "{text}");
    // After HELLO's map: SETINFO ×2, SELECT 0, AUTH, PING, ECHO, COMMAND
    // COUNT (an integer), QUIT — each answered, in order.
    let after_hello = "+OK\r\n+OK\r\n+OK\r\n+OK\r\n+PONG\r\n$2\r\nhi\r\n:";
    let tail =
        &text[text.find(after_hello).unwrap_or_else(|| panic!("{text}")) + after_hello.len()..];
    let (count, quit) = tail.split_once("\r\n").unwrap_or_else(|| panic!("{text}"));
    assert!(
        count.parse::<u32>().is_ok_and(|n| n > 100),
        "COMMAND COUNT: {text}"
    );
    assert_eq!(quit, "+OK\r\n", "{text}");
    // QUIT closed the connection.
    let rest = read_replies(&mut s, 1).await;
    assert!(rest.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_pins_and_is_reset_for_the_next_client() {
    let server = RedisServer::start();
    let (_attache, addr) = attache_for(&server, "max_dedicated_connections = 1").await;
    {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut request = cmd(&["SELECT", "3"]);
        request.extend(cmd(&["SET", "where", "db3"]));
        let replies = raw_exchange(&mut s, &request, 2).await;
        assert_eq!(replies, b"+OK\r\n+OK\r\n");
    }
    assert_eq!(server.cli(&["-n", "3", "GET", "where"]), "db3");
    assert_eq!(server.cli(&["GET", "where"]), "");
    // The single dedicated connection comes back RESET: db 0 again.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut request = cmd(&["MULTI"]);
    request.extend(cmd(&["GET", "where"]));
    request.extend(cmd(&["EXEC"]));
    let replies = raw_exchange(&mut s, &request, 3).await;
    assert_eq!(replies, b"+OK\r\n+QUEUED\r\n*1\r\n$-1\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_commands_work() {
    let server = RedisServer::start();
    let (_attache, addr) = attache_for(&server, "").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let replies = raw_exchange(&mut s, b"SET inline yes\r\n\r\nGET inline\r\n", 2).await;
    assert_eq!(replies, b"+OK\r\n$3\r\nyes\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_auth_from_a_password_file() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret"]);
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let (_attache, addr) = attache_for(
        &server,
        &format!("[redis.test.auth]\npassword_file = \"{}\"", pw.display()),
    )
    .await;
    let mut c = client(addr).await;
    let _: () = c.set("authed", "yes").await.unwrap();
    // Dedicated and RESP3 connections authenticate too.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut request = cmd(&["HELLO", "3"]);
    request.extend(cmd(&["MULTI"]));
    request.extend(cmd(&["GET", "authed"]));
    request.extend(cmd(&["EXEC"]));
    let replies = raw_exchange(&mut s, &request, 4).await;
    assert!(
        replies.ends_with(b"+OK\r\n+QUEUED\r\n*1\r\n$3\r\nyes\r\n"),
        "{}",
        String::from_utf8_lossy(&replies)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_listeners_in_one_process() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    let running = start_attache(&format!(
        "[redis.one]\nlisten = \"127.0.0.1:0\"\nservers = [\"{}\"]\n[redis.two]\nlisten = \"127.0.0.1:0\"\nservers = [\"{}\"]\n",
        a.addr(),
        b.addr()
    ))
    .await;
    let mut one = client(running.redis_addr("one").unwrap()).await;
    let mut two = client(running.redis_addr("two").unwrap()).await;
    let _: () = one.set("k", "one").await.unwrap();
    let _: () = two.set("k", "two").await.unwrap();
    assert_eq!(a.cli(&["GET", "k"]), "one");
    assert_eq!(b.cli(&["GET", "k"]), "two");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tracking_invalidations_reach_a_resp3_app() {
    let server = RedisServer::start();
    let (_attache, addr) = attache_for(&server, "").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut request = cmd(&["HELLO", "3"]);
    request.extend(cmd(&["CLIENT", "TRACKING", "on"]));
    request.extend(cmd(&["GET", "tracked"]));
    let replies = raw_exchange(&mut s, &request, 3).await;
    assert!(
        replies.ends_with(b"+OK\r\n_\r\n"),
        "{}",
        String::from_utf8_lossy(&replies)
    );
    let mut writer = client(addr).await;
    let _: () = writer.set("tracked", "new").await.unwrap();
    let push = read_replies(&mut s, 1).await;
    assert!(
        push.starts_with(b">2\r\n$10\r\ninvalidate\r\n"),
        "{}",
        String::from_utf8_lossy(&push)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_returns_to_a_fresh_connection_state() {
    let server = RedisServer::start();
    let (_attache, addr) = attache_for(&server, "").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut request = cmd(&["SELECT", "2"]);
    request.extend(cmd(&["SET", "r", "in-db2"]));
    request.extend(cmd(&["RESET"]));
    request.extend(cmd(&["GET", "r"]));
    let replies = raw_exchange(&mut s, &request, 4).await;
    assert_eq!(replies, b"+OK\r\n+OK\r\n+RESET\r\n$-1\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_replies_before_a_pin_are_delivered_in_order() {
    let server = RedisServer::start();
    let (_attache, addr) = attache_for(&server, "").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut request = cmd(&["CLIENT", "SETNAME", "worker"]);
    request.extend(cmd(&["MULTI"]));
    request.extend(cmd(&["CLIENT", "GETNAME"]));
    request.extend(cmd(&["EXEC"]));
    let replies = raw_exchange(&mut s, &request, 4).await;
    // As from Redis: CLIENT GETNAME is queued, answered in EXEC's array.
    assert_eq!(replies, b"+OK\r\n+OK\r\n+QUEUED\r\n*1\r\n$6\r\nworker\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_leaves_leaves_no_subscription_behind() {
    let server = RedisServer::start();
    let (_attache, addr) = attache_for(&server, "").await;
    {
        let mut sub = TcpStream::connect(addr).await.unwrap();
        let confirm = raw_exchange(&mut sub, &cmd(&["SUBSCRIBE", "ghost"]), 1).await;
        assert!(confirm.starts_with(b"*3\r\n$9\r\nsubscribe"));
        assert_eq!(server.cli(&["PUBSUB", "NUMSUB", "ghost"]), "ghost\n1");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.cli(&["PUBSUB", "NUMSUB", "ghost"]) != "ghost\n0" {
        assert!(
            std::time::Instant::now() < deadline,
            "the upstream is still subscribed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
