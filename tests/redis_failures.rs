//! attache in front of one real `redis-server` when things go wrong: the
//! upstream down, killed, slow or refusing our password; bad input from the
//! app; an app that leaves mid-pipeline. The app always gets a clear error,
//! never a hang, and nothing leaks to other apps.

mod support;

use std::time::Duration;

use redis::AsyncCommands;
use support::*;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_killed_and_restarted() {
    let mut server = RedisServer::start();
    let (_attache, addr) =
        attache_for(&server, "timeout = \"1s\"\nconnect_timeout = \"500ms\"").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        raw_exchange(&mut s, &cmd(&["SET", "a", "1"]), 1).await,
        b"+OK\r\n"
    );
    server.kill();
    let started = std::time::Instant::now();
    let reply = raw_exchange(&mut s, &cmd(&["GET", "a"]), 1).await;
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.starts_with("-ERR attache: upstream test (127.0.0.1:"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "error took {:?}",
        started.elapsed()
    );
    // Pipelined commands each get their own error.
    let mut request = cmd(&["GET", "a"]);
    request.extend(cmd(&["GET", "b"]));
    let replies = raw_exchange(&mut s, &request, 2).await;
    assert_eq!(count_replies(&replies), 2);
    server.restart();
    // attache reconnects by itself; the same app connection works again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = raw_exchange(&mut s, &cmd(&["PING"]), 1).await;
        if reply == b"+PONG\r\n" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery: {}",
            String::from_utf8_lossy(&reply)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_from_the_start_errors_fast() {
    let down = refusing_port();
    let port = down.port;
    let running = start_attache(&format!(
        "[redis.down]\nlisten = \"127.0.0.1:0\"\nservers = [\"127.0.0.1:{port}\"]\ntimeout = \"1s\"\n"
    ))
    .await;
    let addr = running.redis_addr("down").unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let reply = raw_exchange(&mut s, &cmd(&["GET", "a"]), 1).await;
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.starts_with(&format!("-ERR attache: upstream down (127.0.0.1:{port})")),
        "{text}"
    );
    // A stateful command fails just as clearly.
    let reply = raw_exchange(&mut s, &cmd(&["MULTI"]), 1).await;
    assert!(String::from_utf8_lossy(&reply).starts_with("-ERR attache: upstream down"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_times_out_and_recovers() {
    let server = RedisServer::start();
    let (_attache, addr) = attache_for(&server, "timeout = \"300ms\"").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        raw_exchange(&mut s, &cmd(&["SET", "a", "1"]), 1).await,
        b"+OK\r\n"
    );
    // Stall the server directly (not through attache) for longer than the timeout.
    let mut staller = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut staller, &cmd(&["CLIENT", "PAUSE", "1500", "ALL"]))
        .await
        .unwrap();
    assert_eq!(read_replies(&mut staller, 1).await, b"+OK\r\n");
    let started = std::time::Instant::now();
    let reply = raw_exchange(&mut s, &cmd(&["GET", "a"]), 1).await;
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.starts_with("-ERR attache: upstream test") && text.contains("no reply within"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "{:?}",
        started.elapsed()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if raw_exchange(&mut s, &cmd(&["GET", "a"]), 1).await == b"$1\r\n1\r\n" {
            break;
        }
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_gets_a_protocol_error_and_a_close() {
    let server = RedisServer::start();
    let (_attache, addr) = attache_for(&server, "").await;
    let mut bystander = client(addr).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let reply = raw_exchange(&mut s, b"*2\r\n$3\r\nGET\r\n+oops\r\n", 1).await;
    assert!(
        reply.starts_with(b"-ERR Protocol error: expected '$'"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert!(
        read_replies(&mut s, 1).await.is_empty(),
        "connection closed"
    );
    // Replies before the bad frame are still delivered, in order.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut request = cmd(&["SET", "x", "1"]);
    request.extend(b"*1\r\n$abc\r\n");
    let replies = raw_exchange(&mut s, &request, 2).await;
    assert!(
        replies.starts_with(b"+OK\r\n-ERR Protocol error"),
        "{}",
        String::from_utf8_lossy(&replies)
    );
    let x: String = bystander.get("x").await.unwrap();
    assert_eq!(x, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_lengths_are_refused_before_buffering() {
    let server = RedisServer::start();
    let (_attache, addr) = attache_for(&server, "max_request_bytes = 65536").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let reply = raw_exchange(&mut s, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000000\r\n", 1).await;
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.starts_with(
            "-ERR Protocol error: invalid bulk length (1000000 bytes exceeds the limit of 65536"
        ),
        "{text}"
    );
    let mut s = TcpStream::connect(addr).await.unwrap();
    let reply = raw_exchange(&mut s, b"*99999999\r\n", 1).await;
    assert!(String::from_utf8_lossy(&reply).contains("multibulk length"));
    // A value under the limit is fine.
    let mut c = client(addr).await;
    let value = "v".repeat(60_000);
    let _: () = c.set("big", &value).await.unwrap();
    let got: String = c.get("big").await.unwrap();
    assert_eq!(got.len(), 60_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_pipeline_leaves_no_orphan_replies() {
    let server = RedisServer::start();
    let (_attache, addr) = attache_for(&server, "server_connections = 1").await;
    for round in 0..20 {
        let mut leaver = TcpStream::connect(addr).await.unwrap();
        let mut request = Vec::new();
        for i in 0..200 {
            request.extend(cmd(&["ECHO", &format!("leaver-{round}-{i}")]));
        }
        tokio::io::AsyncWriteExt::write_all(&mut leaver, &request)
            .await
            .unwrap();
        drop(leaver);
        let mut c = TcpStream::connect(addr).await.unwrap();
        let reply = raw_exchange(&mut c, &cmd(&["ECHO", "mine"]), 1).await;
        assert_eq!(reply, b"$4\r\nmine\r\n", "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_upstream_password_is_a_clear_error() {
    let server = RedisServer::start_with(&["--requirepass", "right"]);
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "wrong").unwrap();
    let (_attache, addr) = attache_for(
        &server,
        &format!("[redis.test.auth]\npassword_file = \"{}\"", pw.display()),
    )
    .await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let reply = raw_exchange(&mut s, &cmd(&["GET", "a"]), 1).await;
    let text = String::from_utf8_lossy(&reply);
    assert!(text.contains("handshake refused: WRONGPASS"), "{text}");
    assert!(
        !text.contains("wrong\r") && !text.contains(" wrong "),
        "no secret in errors: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_that_cannot_start_runs_nothing() {
    let mut server = RedisServer::start();
    let (_attache, addr) = attache_for(&server, "connect_timeout = \"500ms\"").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(raw_exchange(&mut s, &cmd(&["PING"]), 1).await, b"+PONG\r\n");
    server.kill();
    let mut request = cmd(&["MULTI"]);
    request.extend(cmd(&["SET", "never", "1"]));
    request.extend(cmd(&["EXEC"]));
    let replies = raw_exchange(&mut s, &request, 3).await;
    let text = String::from_utf8_lossy(&replies);
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert!(
        lines[0].starts_with("-ERR attache: upstream test"),
        "{text}"
    );
    assert!(lines[1].starts_with("-ERR attache: MULTI failed"), "{text}");
    assert!(lines[2].starts_with("-EXECABORT"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_value_written_whole_gets_the_error_not_a_broken_pipe() {
    let server = RedisServer::start();
    let (_attache, addr) = attache_for(&server, "max_request_bytes = 65536").await;
    // A client writes the whole command before it reads (16 MB: more than
    // the sockets buffer). attache refuses it from its declared length and
    // reads and drops the rest, so the client can finish writing and read
    // the error, rather than fail its write on a reset.
    let size = 16_000_000;
    let mut c = client(addr).await;
    let refused: redis::RedisResult<()> = c.set("k", "v".repeat(size)).await;
    let message = refused.unwrap_err().to_string();
    assert!(
        message.contains("invalid bulk length (16000000 bytes exceeds the limit of 65536"),
        "{message}"
    );
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${size}\r\n").into_bytes();
    request.resize(request.len() + size, b'v');
    request.extend_from_slice(b"\r\n");
    let reply = raw_exchange(&mut s, &request, 1).await;
    assert!(reply.starts_with(b"-ERR Protocol error: invalid bulk length"));
    // Then the connection closes.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut rest),
    )
    .await;
    assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");
    assert_eq!(server.cli(&["EXISTS", "k"]).trim(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_error_in_a_multi_lets_its_dedicated_connection_go_at_once() {
    let server = RedisServer::start();
    let (_attache, addr) = attache_for(
        &server,
        "max_dedicated_connections = 1\ntimeout = \"1s\"\nmax_request_bytes = 65536\n\
         [runtime]\nworkers = 1",
    )
    .await;
    // An app in a MULTI (pinned to the only dedicated connection) sends a
    // command over the limit: refused, and its connection is to close. It
    // goes on writing (the rest of its command), so attache lingers.
    let mut a = TcpStream::connect(addr).await.unwrap();
    assert_eq!(raw_exchange(&mut a, &cmd(&["MULTI"]), 1).await, b"+OK\r\n");
    let reply = raw_exchange(
        &mut a,
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000000\r\nvvvv",
        1,
    )
    .await;
    assert!(reply.starts_with(b"-ERR Protocol error"), "{reply:?}");
    let trickle = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while a.write_all(&[b'v'; 100]).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    // The refused app's transaction is over: another app gets the
    // dedicated connection without waiting for the lingering to end.
    let mut b = TcpStream::connect(addr).await.unwrap();
    let reply = raw_exchange(&mut b, &cmd(&["MULTI"]), 1).await;
    assert_eq!(String::from_utf8_lossy(&reply), "+OK\r\n");
    trickle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_error_while_subscribed_closes_the_connection() {
    let server = RedisServer::start();
    let (_attache, addr) = attache_for(&server, "max_request_bytes = 65536").await;
    let mut a = TcpStream::connect(addr).await.unwrap();
    let reply = raw_exchange(&mut a, &cmd(&["SUBSCRIBE", "ch"]), 1).await;
    assert!(reply.starts_with(b"*3\r\n$9\r\nsubscribe"), "{reply:?}");
    let reply = raw_exchange(&mut a, b"*2\r\n$4\r\nPING\r\n$100000000\r\nvvvv", 1).await;
    assert!(reply.starts_with(b"-ERR Protocol error"), "{reply:?}");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut a, &mut rest),
    )
    .await;
    assert!(matches!(closed, Ok(Ok(_))), "not closed: {closed:?}");
}

/// The token rotates while a new connection's handshake waits for a busy
/// server: once connected, that connection re-`AUTH`s with the new token
/// like the others (it was authenticated with the old one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_made_during_a_rotation_reauths() {
    let server = RedisServer::start_with(&["--enable-debug-command", "yes"]);
    let dir = tempfile::tempdir().unwrap();
    let (_attache, addr) = support::token_file::attache(&[&server], "single", dir.path()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(raw_exchange(&mut s, &cmd(&["PING"]), 1).await, b"+PONG\r\n");
    let clients = server.cli(&["CLIENT", "LIST"]);
    let shared = clients.lines().filter(|l| l.contains(" user=app ")).count();
    server.cli(&["ACL", "SETUSER", "app", ">t2"]);
    server.cli(&["CONFIG", "RESETSTAT"]);
    let mut sleep = std::process::Command::new("redis-cli")
        .args(["-p", &server.port.to_string(), "DEBUG", "SLEEP", "1.8"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A transaction: a new dedicated connection, its handshake held up.
    let multi = [&["MULTI"][..], &["SET", "k", "v"]].map(cmd).concat();
    tokio::io::AsyncWriteExt::write_all(&mut s, &multi)
        .await
        .unwrap();
    support::token_file::rotate(&[], dir.path(), "t2").await;
    let _ = sleep.wait();
    let reply = raw_exchange(&mut s, &cmd(&["EXEC"]), 3).await;
    assert!(
        String::from_utf8_lossy(&reply).ends_with("*1\r\n+OK\r\n"),
        "{reply:?}"
    );
    let stats = server.cli(&["INFO", "commandstats"]);
    let auths: usize = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_auth:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0);
    // Each shared connection's re-AUTH, the handshake, and its re-AUTH.
    assert_eq!(auths, shared + 2, "{shared} shared connections");
}

/// A `timeout` past what the clock can add parses; it means no timeout,
/// not a panic in every connection (the config check bounds order, not size).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_past_the_clock_serves_without_a_deadline() {
    let server = RedisServer::start();
    let (_attache, addr) = attache_for(&server, "timeout = \"500000000000years\"").await;
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut request = cmd(&["SET", "k", "v"]);
    request.extend(cmd(&["GET", "k"]));
    assert_eq!(
        String::from_utf8_lossy(&raw_exchange(&mut a, &request, 2).await),
        "+OK\r\n$1\r\nv\r\n"
    );
}
