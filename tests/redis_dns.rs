//! attache follows an upstream host name: a real (in-process) DNS server
//! answers for `redis.attache.test`, first with 127.0.0.2 and then with
//! 127.0.0.3, where two real redis-servers listen on the same port.
//! Traffic moves to the new address with no error for the app, and the
//! connections to the old address are drained and closed.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::dns::TestDns;
use support::RedisServer;

fn keys(server: &RedisServer, host: &str) -> u64 {
    let out = std::process::Command::new("redis-cli")
        .args(["-h", host, "-p", &server.port.to_string(), "DBSIZE"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

fn clients(server: &RedisServer, host: &str) -> usize {
    let out = std::process::Command::new("redis-cli")
        .args(["-h", host, "-p", &server.port.to_string(), "CLIENT", "LIST"])
        .output()
        .unwrap();
    // Every connection but redis-cli's own.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .count()
        .saturating_sub(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_follows_a_changed_dns_answer_without_errors() {
    let dns = TestDns::start().await;
    dns.set_a("redis", 1, &[[127, 0, 0, 2]]).await;
    let old = RedisServer::start_with(&["--bind", "127.0.0.1 127.0.0.2"]);
    let new = RedisServer::start_on(old.port, &["--bind", "127.0.0.3"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.3", new.port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "second redis-server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let attache = support::start_attache(&format!(
        r#"
[dns]
nameservers = ["{}"]
min_ttl = "1s"
max_ttl = "2s"

[redis.test]
listen = "127.0.0.1:0"
servers = ["redis.attache.test:{}"]
"#,
        dns.addr, old.port
    ))
    .await;
    let addr = attache.redis_addr("test").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let done = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for i in 0..20 {
        let (stop, errors, done) = (stop.clone(), errors.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut conn = support::client(addr).await;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let result: redis::RedisResult<()> = redis::cmd("SET")
                    .arg(format!("dns:{i}:{n}"))
                    .arg(n)
                    .exec_async(&mut conn)
                    .await;
                match result {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => errors.lock().unwrap().push(e.to_string()),
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        keys(&old, "127.0.0.2") > 0,
        "traffic reaches the first address"
    );
    assert_eq!(keys(&new, "127.0.0.3"), 0);

    dns.set_a("redis", 1, &[[127, 0, 0, 3]]).await;
    let moved_by = Instant::now() + Duration::from_secs(20);
    loop {
        // Moved: the new server takes writes and the old one has no
        // connection from attache left (drained, then closed).
        if keys(&new, "127.0.0.3") > 0 && clients(&old, "127.0.0.2") == 0 {
            break;
        }
        assert!(
            Instant::now() < moved_by,
            "traffic did not move to the new address"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let old_keys = keys(&old, "127.0.0.2");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        keys(&old, "127.0.0.2"),
        old_keys,
        "writes still reach the old address"
    );

    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let errors = errors.lock().unwrap().clone();
    println!(
        "{} commands, {} errors; old server {} keys, new server {} keys",
        done.load(Ordering::Relaxed),
        errors.len(),
        keys(&old, "127.0.0.2"),
        keys(&new, "127.0.0.3")
    );
    assert!(
        errors.is_empty(),
        "{} errors, first {:?}",
        errors.len(),
        errors.first()
    );
    attache.shutdown().await;
}
