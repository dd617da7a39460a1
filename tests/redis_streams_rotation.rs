//! Streams across a credential rotation (token read from a file that the
//! tests rotate): which are renewed on a fresh connection (subscriptions,
//! resubscribed quietly) and which keep the session they authenticated
//! (MONITOR, a sharded listener's fan-in).

mod support;

use std::time::{Duration, Instant};

use support::{token_file, RedisServer};

/// MONITOR is not renewed (README): it keeps the session it authenticated
/// across a rotation instead of the app's connection being closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_keeps_its_session_across_a_rotation() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (attache, addr) = token_file::attache(&[&server], "single", dir.path()).await;
    let mut monitor = tokio::net::TcpStream::connect(addr).await.unwrap();
    let ok = support::raw_exchange(&mut monitor, &support::cmd(&["MONITOR"]), 1).await;
    assert_eq!(ok, b"+OK\r\n");
    token_file::rotate(&[&server], dir.path(), "t2").await;
    server.cli(&["SET", "after-rotation", "1"]);
    token_file::read_until(&mut monitor, "after-rotation").await;
    attache.shutdown().await;
}

/// A sharded listener's fan-in subscription is not renewed (README): it
/// keeps hearing every server across a rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_subscriber_keeps_hearing_every_server_across_a_rotation() {
    let servers = [RedisServer::start(), RedisServer::start()];
    let servers: Vec<&RedisServer> = servers.iter().collect();
    let dir = tempfile::tempdir().unwrap();
    let (attache, addr) = token_file::attache(&servers, "ketama", dir.path()).await;
    let mut sub = tokio::net::TcpStream::connect(addr).await.unwrap();
    let confirmation =
        support::raw_exchange(&mut sub, &support::cmd(&["SUBSCRIBE", "ch"]), 1).await;
    assert!(String::from_utf8_lossy(&confirmation).contains("subscribe"));
    token_file::rotate(&servers, dir.path(), "t2").await;
    for (i, server) in servers.iter().enumerate() {
        server.cli(&["PUBLISH", "ch", &format!("from-{i}")]);
        token_file::read_until(&mut sub, &format!("from-{i}")).await;
    }
    attache.shutdown().await;
}

/// A SUBSCRIBE still unanswered when the token rotates (the server is
/// busy): the app gets its confirmation, then its messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_unanswered_at_a_rotation_is_confirmed() {
    let server = RedisServer::start_with(&["--enable-debug-command", "yes"]);
    let dir = tempfile::tempdir().unwrap();
    let (attache, addr) = token_file::attache(&[&server], "single", dir.path()).await;
    let mut sub = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A transaction leaves a dedicated connection in the pool, authenticated.
    let multi = [&["MULTI"][..], &["SET", "k", "v"], &["EXEC"]]
        .map(support::cmd)
        .concat();
    support::raw_exchange(&mut sub, &multi, 3).await;
    server.cli(&["ACL", "SETUSER", "app", ">t2"]);
    let mut sleep = std::process::Command::new("redis-cli")
        .args(["-p", &server.port.to_string(), "DEBUG", "SLEEP", "2.5"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    use tokio::io::AsyncWriteExt;
    sub.write_all(&support::cmd(&["SUBSCRIBE", "news"]))
        .await
        .unwrap();
    token_file::rotate(&[], dir.path(), "t2").await;
    let _ = sleep.wait();
    token_file::read_until(&mut sub, "subscribe").await;
    server.cli(&["PUBLISH", "news", "hello"]);
    token_file::read_until(&mut sub, "hello").await;
    attache.shutdown().await;
}

/// The same for a SUBSCRIBE sent while already subscribed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_subscribe_unanswered_at_a_rotation_is_confirmed() {
    let server = RedisServer::start_with(&["--enable-debug-command", "yes"]);
    let dir = tempfile::tempdir().unwrap();
    let (attache, addr) = token_file::attache(&[&server], "single", dir.path()).await;
    let mut sub = tokio::net::TcpStream::connect(addr).await.unwrap();
    support::raw_exchange(&mut sub, &support::cmd(&["SUBSCRIBE", "a"]), 1).await;
    server.cli(&["ACL", "SETUSER", "app", ">t2"]);
    let mut sleep = std::process::Command::new("redis-cli")
        .args(["-p", &server.port.to_string(), "DEBUG", "SLEEP", "1.8"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    use tokio::io::AsyncWriteExt;
    sub.write_all(&support::cmd(&["SUBSCRIBE", "b"]))
        .await
        .unwrap();
    token_file::rotate(&[], dir.path(), "t2").await;
    let _ = sleep.wait();
    token_file::read_until(&mut sub, "$1\r\nb\r\n").await;
    attache.shutdown().await;
}

/// A single Redis takes SUBSCRIBE and SSUBSCRIBE on one connection: the
/// renewed connection gets both back, not only the plain channels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_and_ssubscribe_both_come_back_after_a_rotation() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (attache, addr) = token_file::attache(&[&server], "single", dir.path()).await;
    let mut sub = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = support::cmd(&["SUBSCRIBE", "news"]);
    request.extend(support::cmd(&["SSUBSCRIBE", "orders"]));
    support::raw_exchange(&mut sub, &request, 2).await;
    let rotated = Instant::now();
    token_file::rotate(&[&server], dir.path(), "t2").await;
    // Wait for the renewal: the subscriber's upstream connection is younger
    // than the rotation.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = server.cli(&["CLIENT", "LIST"]);
        let renewed = list.lines().any(|l| {
            l.contains(" user=app ")
                && l.contains(" sub=1 ")
                && l.split(' ')
                    .find_map(|f| f.strip_prefix("age="))
                    .and_then(|a| a.parse::<u64>().ok())
                    .is_some_and(|age| age < rotated.elapsed().as_secs())
        });
        if renewed {
            break;
        }
        assert!(Instant::now() < deadline, "never renewed: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(server.cli(&["SPUBLISH", "orders", "o1"]), "1");
    token_file::read_until(&mut sub, "o1").await;
    assert_eq!(server.cli(&["PUBLISH", "news", "n1"]), "1");
    let seen = token_file::read_until(&mut sub, "n1").await;
    assert!(!seen.contains("subscribe"), "{seen}");
    attache.shutdown().await;
}
