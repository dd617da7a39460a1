//! The Redis session's state machine at its edges: dedicated connections
//! released when their state ends, an app leaving in each state, the
//! upstream going away while pinned, shutdown in each state, and replies
//! that must keep their order around a subscription (attache's own answers
//! in a stream: tests/redis_stream_answers.rs).

mod support;

use std::time::Duration;

use support::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// attache with a ketama listener `shards` over two servers.
async fn ketama_attache(
    servers: &[RedisServer; 2],
    extra: &str,
) -> (attache::Running, std::net::SocketAddr) {
    let attache = start_attache(&format!(
        "[redis.shards]\nlisten = \"127.0.0.1:0\"\nmode = \"ketama\"\n\
         servers = [\"{}:1 a\", \"{}:1 b\"]\n{extra}",
        servers[0].addr(),
        servers[1].addr()
    ))
    .await;
    let addr = attache.redis_addr("shards").unwrap();
    (attache, addr)
}

/// Also with a command pipelined behind the pop (ioredis, Lettuce and
/// node-redis pipeline on one connection): attache waited for the pop's
/// reply before reading on, missed the app's close, and the orphaned pop
/// took the next job (and kept its dedicated connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_pop_whose_app_left_pops_nothing() {
    let server = RedisServer::start();
    let (_attache, addr) = attache_for(&server, "").await;
    for behind in [&[][..], &["PING"], &["GET", "jobs"], &["QUIT"]] {
        let mut pipeline = cmd(&["BLPOP", "jobs", "0"]);
        if !behind.is_empty() {
            pipeline.extend(cmd(behind));
        }
        a_blocking_pop_whose_app_left(&server, addr, &pipeline, behind).await;
    }
}

async fn a_blocking_pop_whose_app_left(
    server: &RedisServer,
    addr: std::net::SocketAddr,
    pipeline: &[u8],
    behind: &[&str],
) {
    {
        let mut a = TcpStream::connect(addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut a, pipeline)
            .await
            .unwrap();
        // Blocked on the server.
        for _ in 0..100 {
            if server
                .cli(&["INFO", "clients"])
                .contains("blocked_clients:1")
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(server
            .cli(&["INFO", "clients"])
            .contains("blocked_clients:1"));
    }
    // The app is gone: as with Redis itself, its pop is cancelled, and a
    // job pushed now stays in the list for the next consumer.
    for _ in 0..100 {
        if server
            .cli(&["INFO", "clients"])
            .contains("blocked_clients:0")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.cli(&["RPUSH", "jobs", "j1"]), "1");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        server.cli(&["LLEN", "jobs"]),
        "1",
        "the job was popped by nobody (then {behind:?})"
    );
    server.cli(&["DEL", "jobs"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_transaction_gives_its_dedicated_connection_back() {
    let server = RedisServer::start();
    let (_attache, addr) =
        attache_for(&server, "max_dedicated_connections = 1\ntimeout = \"1s\"").await;
    // A runs a transaction, then a blocking pop that is answered, and then
    // stays connected, idle: its state is over, the connection is free.
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut request = cmd(&["MULTI"]);
    request.extend(cmd(&["SET", "k", "1"]));
    request.extend(cmd(&["EXEC"]));
    let replies = raw_exchange(&mut a, &request, 3).await;
    assert_eq!(replies, b"+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n");
    let mut b = TcpStream::connect(addr).await.unwrap();
    let reply = raw_exchange(&mut b, &cmd(&["MULTI"]), 1).await;
    assert_eq!(String::from_utf8_lossy(&reply), "+OK\r\n");
    let reply = raw_exchange(&mut b, &cmd(&["DISCARD"]), 1).await;
    assert_eq!(String::from_utf8_lossy(&reply), "+OK\r\n");

    server.cli(&["RPUSH", "q", "x"]);
    let reply = raw_exchange(&mut b, &cmd(&["BLPOP", "q", "1"]), 1).await;
    assert_eq!(reply, b"*2\r\n$1\r\nq\r\n$1\r\nx\r\n");
    let reply = raw_exchange(&mut a, &cmd(&["WATCH", "k"]), 1).await;
    assert_eq!(String::from_utf8_lossy(&reply), "+OK\r\n");
    let reply = raw_exchange(&mut a, &cmd(&["UNWATCH"]), 1).await;
    assert_eq!(String::from_utf8_lossy(&reply), "+OK\r\n");
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lasting_state_whose_upstream_died_closes_the_app_connection() {
    let mut server = RedisServer::start();
    let (_attache, addr) = attache_for(&server, "connect_timeout = \"500ms\"").await;
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut request = cmd(&["SELECT", "3"]);
    request.extend(cmd(&["SET", "where", "db3"]));
    let replies = raw_exchange(&mut a, &request, 2).await;
    assert_eq!(replies, b"+OK\r\n+OK\r\n");
    // The server restarts: the connection that held SELECT 3 is gone, and
    // with it the app's database. Its next commands must not run in db 0,
    // nor fail forever: the app's connection ends, so it reconnects and
    // selects again (as it would with Redis itself).
    server.restart();
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::io::AsyncWriteExt::write_all(&mut a, &cmd(&["GET", "where"]))
        .await
        .ok();
    let rest = expect_closed(&mut a, Duration::from_secs(3)).await;
    let text = String::from_utf8_lossy(&rest);
    assert!(
        rest.is_empty() || text.starts_with("-ERR attache"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_an_idle_subscriber() {
    let server = RedisServer::start();
    let attache = start_attache(&format!(
        "[redis.test]\nlisten = \"127.0.0.1:0\"\nservers = [\"{}\"]\n\
         [runtime]\nshutdown_grace = \"30s\"\n",
        server.addr()
    ))
    .await;
    let addr = attache.redis_addr("test").unwrap();
    let mut a = TcpStream::connect(addr).await.unwrap();
    let reply = raw_exchange(&mut a, &cmd(&["SUBSCRIBE", "ch"]), 1).await;
    assert!(reply.starts_with(b"*3\r\n$9\r\nsubscribe"), "{reply:?}");
    // Nothing is owed to a subscriber waiting for messages: it is idle, and
    // is closed at once so that it reconnects to the next attache.
    let stopping = tokio::spawn(attache.shutdown());
    expect_closed(&mut a, Duration::from_secs(3)).await;
    tokio::time::timeout(Duration::from_secs(3), stopping)
        .await
        .expect("attache stopped")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_then_reset_in_one_write_gets_both_replies() {
    let (_server, _attache, _addr, mut a) = app_on_single().await;
    let mut request = cmd(&["SUBSCRIBE", "ch"]);
    request.extend(cmd(&["RESET"]));
    request.extend(cmd(&["PING"]));
    let replies = raw_exchange(&mut a, &request, 3).await;
    assert_eq!(
        String::from_utf8_lossy(&replies),
        "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n+RESET\r\n+PONG\r\n"
    );
}

/// A sharded listener subscribes on every server and relays one stream:
/// a message from one server never lands inside a large one from another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_subscription_keeps_large_messages_whole() {
    let servers = [RedisServer::start(), RedisServer::start()];
    let (_attache, addr) = ketama_attache(&servers, "").await;
    let mut a = TcpStream::connect(addr).await.unwrap();
    let confirmation = raw_exchange(&mut a, &cmd(&["SUBSCRIBE", "ch"]), 1).await;
    assert_eq!(confirmation, b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");
    const LARGE: usize = 20;
    const SMALL: usize = 400;
    let publish = |addr: String, messages: Vec<String>| async move {
        let mut p = TcpStream::connect(addr).await.unwrap();
        for message in messages {
            raw_exchange(&mut p, &cmd(&["PUBLISH", "ch", &message]), 1).await;
        }
    };
    let large = tokio::spawn(publish(
        servers[0].addr(),
        (0..LARGE)
            .map(|i| format!("{i}{}", "x".repeat(300_000)))
            .collect(),
    ));
    let small = tokio::spawn(publish(
        servers[1].addr(),
        (0..SMALL).map(|i| format!("small {i}")).collect(),
    ));
    let stream = read_replies(&mut a, LARGE + SMALL).await;
    large.await.unwrap();
    small.await.unwrap();
    // Every frame is a whole message: `*3 $7 message $2 ch $<n> <payload>`.
    let (mut large_seen, mut small_seen, mut rest) = (0, 0, &stream[..]);
    while !rest.is_empty() {
        let head = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$";
        assert!(
            rest.starts_with(head),
            "out of step at {:?}",
            String::from_utf8_lossy(&rest[..rest.len().min(80)])
        );
        rest = &rest[head.len()..];
        let eol = rest.iter().position(|&b| b == b'\r').unwrap();
        let n: usize = std::str::from_utf8(&rest[..eol]).unwrap().parse().unwrap();
        let payload = &rest[eol + 2..eol + 2 + n];
        if payload.starts_with(b"small ") {
            small_seen += 1;
        } else {
            assert!(payload[payload.len() - 100..].iter().all(|&b| b == b'x'));
            large_seen += 1;
        }
        assert_eq!(&rest[eol + 2 + n..eol + 4 + n], b"\r\n");
        rest = &rest[eol + 4 + n..];
    }
    assert_eq!((large_seen, small_seen), (LARGE, SMALL));
    // attache's own answer (Redis's refusal of AUTH to a RESP2
    // subscriber), then RESET, in one write: nothing is lost.
    let mut request = cmd(&["AUTH", "pw"]);
    request.extend(cmd(&["RESET"]));
    request.extend(cmd(&["PING"]));
    assert_eq!(
        String::from_utf8_lossy(&raw_exchange(&mut a, &request, 3).await),
        "-ERR Can't execute 'auth': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n+RESET\r\n+PONG\r\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_sharded_multi_to_end() {
    let servers = [RedisServer::start(), RedisServer::start()];
    let (attache, addr) = ketama_attache(&servers, "[runtime]\nshutdown_grace = \"30s\"\n").await;
    let mut a = TcpStream::connect(addr).await.unwrap();
    // MULTI is answered by attache; the transaction goes to the server of
    // its first key. The app is inside a MULTI all the same: shutting
    // down does not close it there.
    assert_eq!(raw_exchange(&mut a, &cmd(&["MULTI"]), 1).await, b"+OK\r\n");
    let stopping = tokio::spawn(attache.shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut request = cmd(&["SET", "k", "v"]);
    request.extend(cmd(&["EXEC"]));
    let replies = raw_exchange(&mut a, &request, 2).await;
    assert_eq!(
        String::from_utf8_lossy(&replies),
        "+QUEUED\r\n*1\r\n+OK\r\n"
    );
    // Then, idle, it is closed.
    expect_closed(&mut a, Duration::from_secs(3)).await;
    tokio::time::timeout(Duration::from_secs(3), stopping)
        .await
        .expect("attache stopped")
        .unwrap();
}

/// SYNC's stream is not RESP (the RDB file has no closing CRLF): it passes
/// as it comes, and the writes that follow reach the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replication_stream_passes_as_it_comes() {
    let (server, _attache, _addr, mut a) = app_on_single().await;
    tokio::io::AsyncWriteExt::write_all(&mut a, &cmd(&["SYNC"]))
        .await
        .unwrap();
    let mut stream = Vec::new();
    let mut chunk = [0u8; 65536];
    let mut set = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&stream).contains("replicated") {
        let n = tokio::time::timeout_at(deadline, a.read(&mut chunk))
            .await
            .expect("the write reached the replica stream")
            .unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&stream));
        stream.extend_from_slice(&chunk[..n]);
        if !set && String::from_utf8_lossy(&stream).contains("REDIS") {
            assert_eq!(server.cli(&["SET", "k", "replicated"]), "OK");
            set = true;
        }
    }
}

/// A sharded listener subscribes on every server: when one is down, the
/// SUBSCRIBE gets the error and the app goes on as before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_subscribe_that_failed_leaves_the_app_unsubscribed() {
    let mut servers = [RedisServer::start(), RedisServer::start()];
    let (_attache, addr) = ketama_attache(&servers, "").await;
    servers[1].kill();
    let mut a = TcpStream::connect(addr).await.unwrap();
    let refused = raw_exchange(&mut a, &cmd(&["SUBSCRIBE", "ch"]), 1).await;
    assert!(
        refused.starts_with(b"-"),
        "{}",
        String::from_utf8_lossy(&refused)
    );
    let mut request = cmd(&["PING"]);
    request.extend(cmd(&["ECHO", "still here"]));
    assert_eq!(
        String::from_utf8_lossy(&raw_exchange(&mut a, &request, 2).await),
        "+PONG\r\n$10\r\nstill here\r\n"
    );
    // Server 0 holds no subscriber for it.
    assert_eq!(servers[0].cli(&["PUBSUB", "NUMSUB", "ch"]), "ch\n0");
}

/// `REPLCONF rdb-only 1` then `SYNC` (what `redis-cli --rdb` sends): the
/// server sends the RDB (from disk: `$<length>`, then the file), whose first
/// bytes read as a bulk string's header but which has no `\r\n` after it,
/// and closes. The relay of the stream
/// REPLCONF started held it for the missing `\r\n` and dropped it at the
/// close: the app got nothing (Redis's test "Dumping an RDB" failed).
/// Without rdb-only the payload was held until the next bytes came.
#[tokio::test]
async fn an_rdb_dump_after_replconf_reaches_the_app_whole() {
    let args = [
        "--enable-debug-command",
        "yes",
        "--repl-diskless-sync",
        "no",
    ];
    let server = RedisServer::start_with(&args);
    let (_attache, addr) = attache_for(&server, "").await;
    assert_eq!(
        server.cli(&["DEBUG", "POPULATE", "20000", "key", "100"]),
        "OK"
    );
    let dump = |mut s: TcpStream| async move {
        let replconf = [
            cmd(&["REPLCONF", "capa", "eof"]),
            cmd(&["REPLCONF", "rdb-only", "1"]),
        ]
        .concat();
        assert_eq!(raw_exchange(&mut s, &replconf, 2).await, b"+OK\r\n+OK\r\n");
        tokio::io::AsyncWriteExt::write_all(&mut s, &cmd(&["SYNC"]))
            .await
            .unwrap();
        let mut all = Vec::new();
        let read = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut all);
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("the server closes after the RDB")
            .unwrap();
        all
    };
    let direct = dump(TcpStream::connect(server.addr()).await.unwrap()).await;
    let relayed = dump(TcpStream::connect(addr).await.unwrap()).await;
    // The same RDB, whole (its header line gives its length).
    let header = |d: &[u8]| d.split(|&b| b == b'\n').next().map(<[u8]>::to_vec);
    assert!(direct.len() > 100_000, "{}", direct.len());
    assert_eq!(relayed.len(), direct.len());
    assert_eq!(header(&relayed), header(&direct));
}
