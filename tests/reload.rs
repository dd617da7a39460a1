//! Hot reload in process (`Running::reload`, what the file watcher calls):
//! under continuous load, an upstream change moves traffic with zero app
//! errors and without dropping app connections; listeners are added and
//! removed; a change that needs a restart is refused and the old config
//! keeps running.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::RedisServer;

fn config(toml: &str) -> attache::config::Config {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("attache.toml");
    std::fs::write(&path, toml).unwrap();
    attache::config::load(&path).expect("valid config")
}

fn one_listener(server: &RedisServer) -> String {
    format!(
        "[redis.test]\nlisten = \"127.0.0.1:0\"\nservers = [\"{}\"]\n",
        server.addr()
    )
}

fn keys(server: &RedisServer) -> u64 {
    server.cli(&["DBSIZE"]).parse().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_change_moves_traffic_without_errors_or_dropped_connections() {
    let old = RedisServer::start();
    let new = RedisServer::start();
    let attache = attache::start(config(&one_listener(&old))).await.unwrap();
    let addr = attache.redis_addr("test").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let done = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for i in 0..20 {
        let (stop, errors, done) = (stop.clone(), errors.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            // One connection each, for the whole test: a reload must not
            // drop it.
            let mut conn = support::client(addr).await;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let key = format!("reload:{i}:{n}");
                let set: redis::RedisResult<()> = redis::cmd("SET")
                    .arg(&key)
                    .arg(n)
                    .exec_async(&mut conn)
                    .await;
                // Across the switch the GET may reach the new upstream, which
                // never saw this SET (a different Redis): nil is fine there,
                // an error is not.
                let got: redis::RedisResult<Option<u64>> =
                    redis::cmd("GET").arg(&key).query_async(&mut conn).await;
                match (set, got) {
                    (Ok(()), Ok(_)) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    (Err(e), _) | (_, Err(e)) => errors.lock().unwrap().push(e.to_string()),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(keys(&old) > 0);

    attache.reload(config(&one_listener(&new))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = keys(&old);
        tokio::time::sleep(Duration::from_millis(300)).await;
        if keys(&new) > 0 && keys(&old) == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "traffic did not move to the new upstream"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let errors = errors.lock().unwrap().clone();
    println!(
        "{} round trips, {} errors; old {} keys, new {} keys",
        done.load(Ordering::Relaxed),
        errors.len(),
        keys(&old),
        keys(&new)
    );
    assert!(
        errors.is_empty(),
        "{} errors, first {:?}",
        errors.len(),
        errors.first()
    );
    // The old upstream has no connection from attache left.
    let clients = old.cli(&["CLIENT", "LIST"]);
    assert_eq!(clients.lines().count(), 1, "{clients}");
    attache.shutdown().await;
}

#[tokio::test]
async fn listeners_are_added_and_removed_and_restart_only_changes_are_refused() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    let attache = attache::start(config(&one_listener(&a))).await.unwrap();
    let both = format!(
        "{}\n[redis.extra]\nlisten = \"127.0.0.1:0\"\nservers = [\"{}\"]\n",
        one_listener(&a),
        b.addr()
    );
    attache.reload(config(&both)).unwrap();
    let extra = attache.redis_addr("extra").expect("the added listener");
    let mut conn = support::client(extra).await;
    let _: () = redis::cmd("SET")
        .arg("extra")
        .arg("b")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(b.cli(&["GET", "extra"]), "b");
    // The first listener kept serving.
    let mut first = support::client(attache.redis_addr("test").unwrap()).await;
    let pong: String = redis::cmd("PING").query_async(&mut first).await.unwrap();
    assert_eq!(pong, "PONG");

    // Removed again: it stops accepting; its idle app connection closes.
    attache.reload(config(&one_listener(&a))).unwrap();
    assert!(attache.redis_addr("extra").is_none());
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(extra).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the removed listener still accepts"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // [tokens] and the like need a restart: refused, the running config stays.
    let with_tokens = format!(
        "{}\n[tokens.t]\nprovider = \"static\"\ntoken_env = \"NOPE\"\n",
        one_listener(&a)
    );
    let refused = attache.reload(config(&with_tokens)).unwrap_err();
    assert!(refused.to_string().contains("[tokens]"), "{refused}");
    let pong: String = redis::cmd("PING").query_async(&mut first).await.unwrap();
    assert_eq!(pong, "PONG");
    attache.shutdown().await;
}

/// Sends PING on a fresh connection and returns everything read until the
/// reply or the close (a refused connection is answered, then closed).
async fn ping_fresh(addr: std::net::SocketAddr) -> (tokio::net::TcpStream, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let got = support::raw_exchange(&mut s, &support::cmd(&["PING"]), 1).await;
    (s, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_refuses_with_an_error_and_follows_a_reload() {
    const REFUSED: &[u8] = b"-ERR max number of clients reached\r\n";
    let a = RedisServer::start();
    let limited = |max: usize| format!("{}max_connections = {max}\n", one_listener(&a));
    let attache = attache::start(config(&limited(2))).await.unwrap();
    let addr = attache.redis_addr("test").unwrap();
    let mut held = Vec::new();
    for _ in 0..2 {
        let (s, got) = ping_fresh(addr).await;
        assert_eq!(got, b"+PONG\r\n");
        held.push(s);
    }
    // At the limit: the app is told why, as Redis itself would.
    let (_, got) = ping_fresh(addr).await;
    assert_eq!(got, REFUSED, "{}", String::from_utf8_lossy(&got));
    let stats = attache.stats();
    assert_eq!(stats[0].refused(), 1);
    assert_eq!(stats[0].open(), 2);

    // Raised by a reload on the same socket: one more fits at once.
    attache.reload(config(&limited(3))).unwrap();
    let (s, got) = ping_fresh(addr).await;
    assert_eq!(got, b"+PONG\r\n");
    held.push(s);
    assert_eq!(attache.stats()[0].max(), 3);

    // Lowered to 1: nobody is cut off...
    attache.reload(config(&limited(1))).unwrap();
    for s in &mut held {
        assert_eq!(
            support::raw_exchange(s, &support::cmd(&["PING"]), 1).await,
            b"+PONG\r\n"
        );
    }
    // ...and once they left, one connection fits, not two.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    let _kept = loop {
        let (s, got) = ping_fresh(addr).await;
        if got == b"+PONG\r\n" {
            break s;
        }
        assert_eq!(got, REFUSED);
        assert!(Instant::now() < deadline, "no slot came free");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (_, got) = ping_fresh(addr).await;
    assert_eq!(got, REFUSED);
    attache.shutdown().await;
}

/// `[redis.NAME]` sections on fixed ports, in order.
fn on_ports(listeners: &[(&str, u16, &RedisServer)]) -> String {
    listeners
        .iter()
        .map(|(name, port, server)| {
            format!(
                "[redis.{name}]\nlisten = \"127.0.0.1:{port}\"\nservers = [\"{}\"]\n",
                server.addr()
            )
        })
        .collect()
}

#[tokio::test]
async fn a_renamed_listener_or_two_swapping_ports_keep_their_sockets() {
    let (a, b) = (RedisServer::start(), RedisServer::start());
    let (p1, p2) = (support::free_port(), support::free_port());
    let attache = attache::start(config(&on_ports(&[("one", p1, &a), ("two", p2, &b)])))
        .await
        .unwrap();
    let mut held = support::client(([127, 0, 0, 1], p1).into()).await;
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("1")
        .query_async(&mut held)
        .await
        .unwrap();

    // Renamed, same address: the socket is still open in this process, so
    // binding it again would fail with "address in use".
    attache
        .reload(config(&on_ports(&[("uno", p1, &a), ("two", p2, &b)])))
        .expect("a renamed listener keeps its address");
    assert_eq!(attache.redis_addr("uno").unwrap().port(), p1);
    assert!(attache.redis_addr("one").is_none());
    let mut fresh = support::client(([127, 0, 0, 1], p1).into()).await;
    let got: String = redis::cmd("GET")
        .arg("k")
        .query_async(&mut fresh)
        .await
        .unwrap();
    assert_eq!(got, "1");

    // Two listeners swap their ports: each takes the other's socket.
    attache
        .reload(config(&on_ports(&[("uno", p2, &a), ("two", p1, &b)])))
        .expect("two listeners swap their addresses");
    let mut on_p2 = support::client(([127, 0, 0, 1], p2).into()).await;
    let got: String = redis::cmd("GET")
        .arg("k")
        .query_async(&mut on_p2)
        .await
        .unwrap();
    assert_eq!(got, "1", "p2 now serves upstream a");
    let mut on_p1 = support::client(([127, 0, 0, 1], p1).into()).await;
    let got: Option<String> = redis::cmd("GET")
        .arg("k")
        .query_async(&mut on_p1)
        .await
        .unwrap();
    assert_eq!(got, None, "p1 now serves upstream b");
    attache.shutdown().await;
}

#[tokio::test]
async fn a_listener_removed_and_added_back_at_once_serves_again() {
    let (a, b) = (RedisServer::start(), RedisServer::start());
    let (p1, p2) = (support::free_port(), support::free_port());
    let both = config(&on_ports(&[("one", p1, &a), ("two", p2, &b)]));
    let attache = attache::start(both.clone()).await.unwrap();
    let mut held = support::client(([127, 0, 0, 1], p2).into()).await;
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("b")
        .query_async(&mut held)
        .await
        .unwrap();

    // Two reloads in quick succession: the worker has not yet let go of the
    // removed listener's socket when it comes back.
    attache
        .reload(config(&on_ports(&[("one", p1, &a)])))
        .unwrap();
    attache
        .reload(both)
        .expect("the listener comes back on its address");
    let mut fresh = support::client(([127, 0, 0, 1], p2).into()).await;
    let got: String = redis::cmd("GET")
        .arg("k")
        .query_async(&mut fresh)
        .await
        .unwrap();
    assert_eq!(got, "b");
    attache.shutdown().await;
}
