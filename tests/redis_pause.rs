//! `CLIENT PAUSE` sent through attache (single mode), against a real
//! `redis-server`. Redis holds a paused command, and everything after it,
//! on the connection that sent it: on a shared upstream connection one
//! app's held write would hold other apps' reads, and a pause longer than
//! `timeout` would fail them. A pause sent to Redis directly, which attache
//! cannot see, still times out (`redis_failures.rs`).

mod support;

use std::time::Duration;

use support::*;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_held_by_a_pause_holds_no_other_apps_reads() {
    let server = RedisServer::start();
    // One shared connection: every app's commands would share it.
    let (_attache, addr) = attache_for(&server, "server_connections = 1\ntimeout = \"1s\"").await;
    let mut admin = TcpStream::connect(addr).await.unwrap();
    let mut writer = TcpStream::connect(addr).await.unwrap();
    let mut reader = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        raw_exchange(&mut admin, &cmd(&["CLIENT", "PAUSE", "20000", "WRITE"]), 1).await,
        b"+OK\r\n"
    );
    tokio::io::AsyncWriteExt::write_all(&mut writer, &cmd(&["SET", "k", "v"]))
        .await
        .unwrap();
    // Held by Redis, as with Redis alone.
    for _ in 0..200 {
        if blocked_clients(&server) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(blocked_clients(&server), 1);
    // Reads (the writer's own connection aside) go on, past `timeout`.
    for _ in 0..3 {
        assert_eq!(
            raw_exchange(&mut reader, &cmd(&["GET", "k"]), 1).await,
            b"$-1\r\n"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        raw_exchange(&mut admin, &cmd(&["CLIENT", "UNPAUSE"]), 1).await,
        b"+OK\r\n"
    );
    // The held write ran once the pause ended, though it waited > timeout.
    assert_eq!(read_replies(&mut writer, 1).await, b"+OK\r\n");
    assert_eq!(
        raw_exchange(&mut reader, &cmd(&["GET", "k"]), 1).await,
        b"$1\r\nv\r\n"
    );
    // After the pause, writes pipeline on the shared connection again.
    assert_eq!(
        raw_exchange(&mut writer, &cmd(&["SET", "k", "w"]), 1).await,
        b"+OK\r\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_longer_than_the_timeout_fails_no_command() {
    let server = RedisServer::start();
    let (_attache, addr) = attache_for(&server, "timeout = \"500ms\"").await;
    let mut admin = TcpStream::connect(addr).await.unwrap();
    let mut app = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        raw_exchange(&mut app, &cmd(&["SET", "k", "v"]), 1).await,
        b"+OK\r\n"
    );
    assert_eq!(
        raw_exchange(&mut admin, &cmd(&["CLIENT", "PAUSE", "1500", "ALL"]), 1).await,
        b"+OK\r\n"
    );
    // Held for the whole pause (three timeouts), then answered.
    assert_eq!(
        raw_exchange(&mut app, &cmd(&["GET", "k"]), 1).await,
        b"$1\r\nv\r\n"
    );
    // A pause Redis refuses gets Redis's own error (and is not noted:
    // `policy::tests::pauses_redis_accepts_are_noted_others_forwarded`).
    let refused = raw_exchange(&mut admin, &cmd(&["CLIENT", "PAUSE", "-1"]), 1).await;
    assert!(
        refused.starts_with(b"-ERR"),
        "{}",
        String::from_utf8_lossy(&refused)
    );
}

fn blocked_clients(server: &RedisServer) -> usize {
    let info = server.cli(&["INFO", "clients"]);
    info.lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}
