//! Credentials that rotate under load: an in-process OAuth2 endpoint issues
//! tokens that live 3 s; the upstream Redis accepts each token from the
//! moment it is issued until it expires (ACL passwords added, then
//! removed), as a managed Redis with token auth does. attache refreshes
//! ahead and re-`AUTH`s every live connection in-band.

mod support;
#[allow(dead_code)] // shared with tests/tokens.rs, which uses all of it
mod token_endpoint;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{token_file, RedisServer};
use token_endpoint::{Mode, TokenEndpoint};

const LIFETIME_SECS: u64 = 3;

/// Redis user `app`, whose passwords are the tokens currently valid.
struct RotatingAcl {
    admin: Mutex<redis::Connection>,
    /// Tokens added, with when they stop being valid.
    live: Mutex<Vec<(String, Instant)>>,
}

impl RotatingAcl {
    fn new(server: &RedisServer) -> Arc<Self> {
        let client = redis::Client::open(format!("redis://{}/", server.addr())).unwrap();
        let mut admin = client.get_connection().unwrap();
        redis::cmd("ACL")
            .arg(&["SETUSER", "app", "on", "resetpass", "~*", "&*", "+@all"][..])
            .exec(&mut admin)
            .unwrap();
        Arc::new(Self {
            admin: Mutex::new(admin),
            live: Mutex::new(Vec::new()),
        })
    }

    fn add(&self, token: &str) {
        // Lock order: `live`, then `admin`, as in `expire` (the two run on
        // different threads).
        let mut live = self.live.lock().unwrap();
        let mut admin = self.admin.lock().unwrap();
        redis::cmd("ACL")
            .arg(&["SETUSER", "app", &format!(">{token}")][..])
            .exec(&mut *admin)
            .unwrap();
        let expires = Instant::now() + Duration::from_secs(LIFETIME_SECS);
        live.push((token.to_owned(), expires));
    }

    /// Removes every token past its expiry; returns how many are left.
    fn expire(&self) -> usize {
        let now = Instant::now();
        let mut live = self.live.lock().unwrap();
        let mut admin = self.admin.lock().unwrap();
        live.retain(|(token, expires)| {
            if *expires > now {
                return true;
            }
            redis::cmd("ACL")
                .arg(&["SETUSER", "app", &format!("<{token}")][..])
                .exec(&mut *admin)
                .unwrap();
            false
        });
        live.len()
    }

    fn info(&self, section: &str) -> String {
        let mut admin = self.admin.lock().unwrap();
        redis::cmd("INFO").arg(section).query(&mut *admin).unwrap()
    }

    fn app_clients(&self) -> usize {
        let mut admin = self.admin.lock().unwrap();
        let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut *admin).unwrap();
        list.lines().filter(|l| l.contains(" user=app ")).count()
    }

    fn kill_app_clients(&self) {
        let mut admin = self.admin.lock().unwrap();
        let _: redis::RedisResult<i64> = redis::cmd("CLIENT")
            .arg(&["KILL", "USER", "app"][..])
            .query(&mut *admin);
    }
}

fn stat(info: &str, command: &str) -> u64 {
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn attache_with_tokens(server: &RedisServer, endpoint: &TokenEndpoint) -> attache::Running {
    support::start_attache(&format!(
        r#"
[redis.test]
listen = "127.0.0.1:0"
servers = ["{}"]
timeout = "2s"

[redis.test.auth]
username = "app"
token = "redis"

[tokens.redis]
provider = "oauth2_client_credentials"
token_url = "{}"
client_id = "attache"
client_secret_env = "ATTACHE_TEST_CLIENT_SECRET"
scopes = ["redis"]
"#,
        server.addr(),
        endpoint.url("/token")
    ))
    .await
}

/// A Redis whose user `app` accepts each token the endpoint issues, from
/// its issue until its expiry (expired tokens are removed every 100 ms).
struct Rotation {
    server: RedisServer,
    acl: Arc<RotatingAcl>,
    endpoint: TokenEndpoint,
    stop: Arc<AtomicBool>,
    expiry: tokio::task::JoinHandle<()>,
    /// Stops the expiry thread when a failed assertion unwinds the test:
    /// the runtime waits for blocking threads when it is dropped, so an
    /// expiry loop left running would turn the failure into a hang.
    _stop_on_drop: StopOnDrop,
}

struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Rotation {
    async fn start() -> Self {
        std::env::set_var("ATTACHE_TEST_CLIENT_SECRET", "client-secret");
        let server = RedisServer::start();
        let acl = RotatingAcl::new(&server);
        let endpoint = TokenEndpoint::start(LIFETIME_SECS).await;
        let hook_acl = acl.clone();
        endpoint.on_issue(Arc::new(move |token| hook_acl.add(token)));
        let stop = Arc::new(AtomicBool::new(false));
        let expiry = {
            let (acl, stop) = (acl.clone(), stop.clone());
            tokio::task::spawn_blocking(move || {
                while !stop.load(Ordering::Relaxed) {
                    acl.expire();
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Self {
            server,
            acl,
            endpoint,
            _stop_on_drop: StopOnDrop(stop.clone()),
            stop,
            expiry,
        }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.expiry.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_see_no_error_across_rotations() {
    let rotation = Rotation::start().await;
    let (server, acl, endpoint) = (&rotation.server, &rotation.acl, &rotation.endpoint);
    let attache = attache_with_tokens(server, endpoint).await;
    let addr = attache.redis_addr("test").unwrap();

    let run_for = Duration::from_secs(30);
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let done = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for i in 0..50 {
        let (errors, done) = (errors.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let mut conn = support::client(addr).await;
            let key = format!("rotation:{i}");
            let started = Instant::now();
            while started.elapsed() < run_for {
                // Most clients share the multiplexed connections; every
                // fifth runs transactions on a dedicated connection, where
                // re-AUTH must wait for EXEC.
                let result: redis::RedisResult<()> = if i % 5 == 0 {
                    redis::pipe()
                        .atomic()
                        .incr(&key, 1)
                        .incr(&key, 1)
                        .query_async::<(i64, i64)>(&mut conn)
                        .await
                        .map(drop)
                } else {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(i)
                        .exec_async(&mut conn)
                        .await
                };
                match result {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => errors.lock().unwrap().push(e.to_string()),
                }
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    let errors = errors.lock().unwrap().clone();
    let issued = endpoint
        .seen()
        .iter()
        .filter(|s| s.path == "/token")
        .count();
    let commandstats = acl.info("commandstats");
    let auths = stat(&commandstats, "auth");
    let connections = acl.app_clients();
    println!(
        "{} commands, {} errors, {issued} tokens issued, {auths} AUTH calls, {connections} upstream connections",
        done.load(Ordering::Relaxed),
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    // 30 s of 3 s tokens refreshed at about half their life.
    assert!(issued >= 12, "only {issued} tokens issued");
    // Every live connection re-authenticated at (nearly) every refresh:
    // AUTH calls beyond the first handshake of each connection.
    assert!(connections >= 2, "{connections} upstream connections");
    let rotations = issued as u64 - 1;
    assert!(
        auths >= connections as u64 * rotations * 8 / 10,
        "{auths} AUTH calls for {connections} connections and {rotations} rotations"
    );
    rotation.stop().await;
    attache.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_token_endpoint_keeps_the_current_token_then_names_the_credential() {
    let rotation = Rotation::start().await;
    let (server, acl, endpoint) = (&rotation.server, &rotation.acl, &rotation.endpoint);
    let attache = attache_with_tokens(server, endpoint).await;
    let addr = attache.redis_addr("test").unwrap();
    let mut conn = support::client(addr).await;
    let ping = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        async move { redis::cmd("PING").query_async::<String>(&mut conn).await }
    };
    assert_eq!(ping(&mut conn).await.unwrap(), "PONG");

    for mode in [Mode::Error500, Mode::Garbage, Mode::Down] {
        endpoint.set_mode(mode).await;
        // The token in hand is still valid: commands keep working.
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            assert_eq!(ping(&mut conn).await.unwrap(), "PONG", "{mode:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        endpoint.set_mode(Mode::Ok).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // Down for good: once the token expired, a new upstream connection has
    // no credential, and the app is told which one and why.
    endpoint.set_mode(Mode::Slow(Duration::from_secs(60))).await;
    tokio::time::sleep(Duration::from_secs(LIFETIME_SECS + 1)).await;
    acl.kill_app_clients();
    let deadline = Instant::now() + Duration::from_secs(10);
    let error = loop {
        match ping(&mut conn).await {
            // A PING that met the kill fails with it: not the answer looked for.
            Err(e) if !e.to_string().contains("connection closed") => break e.to_string(),
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("commands still succeed with an expired token: {other:?}"),
        }
    };
    println!("{error}");
    assert!(error.contains("credential \"redis\""), "{error}");
    assert!(error.contains("expired"), "{error}");

    // The endpoint is back: attache recovers without a restart.
    endpoint.set_mode(Mode::Ok).await;
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let mut conn = support::client(addr).await;
        if ping(&mut conn).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after the endpoint came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rotation.stop().await;
    attache.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resp2_subscriber_keeps_its_subscription_across_rotations() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rotation = Rotation::start().await;
    let (server, acl, endpoint) = (&rotation.server, &rotation.acl, &rotation.endpoint);
    let attache = attache_with_tokens(server, endpoint).await;
    let addr = attache.redis_addr("test").unwrap();

    let mut sub = tokio::net::TcpStream::connect(addr).await.unwrap();
    sub.write_all(&support::cmd(&["SUBSCRIBE", "news"]))
        .await
        .unwrap();
    let confirmation = support::read_replies(&mut sub, 1).await;
    assert!(
        String::from_utf8_lossy(&confirmation).contains("subscribe"),
        "{confirmation:?}"
    );

    // Publish for 9 s (three 3-second tokens), directly to the upstream.
    let publisher = {
        let url = format!("redis://{}/", server.addr());
        tokio::task::spawn_blocking(move || {
            let mut admin = redis::Client::open(url).unwrap().get_connection().unwrap();
            let started = Instant::now();
            let mut n = 0u64;
            while started.elapsed() < Duration::from_secs(9) {
                n += 1;
                redis::cmd("PUBLISH")
                    .arg("news")
                    .arg(format!("m{n}"))
                    .exec(&mut admin)
                    .unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
            n
        })
    };
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let read = tokio::time::timeout(Duration::from_millis(500), sub.read(&mut buf)).await;
        match read {
            Ok(Ok(0)) => panic!("attache closed the subscriber's connection"),
            Ok(Ok(n)) => pending.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("subscriber read failed: {e}"),
            Err(_) => continue,
        }
        let text = String::from_utf8_lossy(&pending).into_owned();
        let complete = text.rfind("*3\r\n").map(|i| &text[..i]).unwrap_or("");
        for frame in complete.split("*3\r\n").filter(|f| !f.is_empty()) {
            let parts: Vec<&str> = frame.split("\r\n").collect();
            assert_eq!(parts.get(1), Some(&"message"), "unexpected frame {frame:?}");
            seen.push(parts[5].trim_start_matches('m').parse::<u64>().unwrap());
        }
        pending.drain(..complete.len());
    }
    let published = publisher.await.unwrap();
    let clients: String = {
        let mut admin = acl.admin.lock().unwrap();
        redis::cmd("CLIENT").arg("LIST").query(&mut *admin).unwrap()
    };
    let subscriber_age: u64 = clients
        .lines()
        .find(|l| l.contains(" sub=1 "))
        .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("age=")))
        .and_then(|a| a.parse().ok())
        .expect("the subscription is on the upstream");
    println!(
        "published {published}, received {}, last {:?}, upstream subscriber age {subscriber_age}s",
        seen.len(),
        seen.last()
    );
    // Messages kept coming until the end, in order, across the renewals.
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "out of order");
    assert!(
        seen.last().is_some_and(|&last| last + 100 >= published),
        "the subscription stopped: last {:?} of {published}",
        seen.last()
    );
    assert!(seen.len() as u64 * 10 >= published * 8, "lost too many");
    // Its upstream connection was renewed with a fresh token.
    assert!(
        subscriber_age <= LIFETIME_SECS,
        "never renewed: {subscriber_age}s old"
    );
    rotation.stop().await;
    attache.shutdown().await;
}

/// A request queued behind a re-`AUTH` to a server that stopped answering
/// fails at its timeout (1 s) instead of waiting for the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_behind_a_reauth_to_a_stalled_server_times_out() {
    let server = RedisServer::start_with(&["--enable-debug-command", "yes"]);
    let dir = tempfile::tempdir().unwrap();
    let (attache, addr) = token_file::attache(&[&server], "single", dir.path()).await;
    let mut conn = support::client(addr).await;
    redis::cmd("SET")
        .arg("k")
        .arg("v")
        .exec_async(&mut conn)
        .await
        .unwrap();
    // The server stops answering for 6 s; meanwhile the token rotates, so
    // the re-AUTH is the first thing the connection waits for.
    server.cli(&["ACL", "SETUSER", "app", ">t2"]);
    let port = server.port.to_string();
    let mut sleep = std::process::Command::new("redis-cli")
        .args(["-p", &port, "DEBUG", "SLEEP", "6"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    token_file::rotate(&[], dir.path(), "t2").await;
    let started = Instant::now();
    let result = redis::cmd("GET")
        .arg("k")
        .query_async::<String>(&mut conn)
        .await;
    let waited = started.elapsed();
    println!("{result:?} after {waited:?}");
    assert!(result.is_err(), "answered only once the server resumed");
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    let _ = sleep.wait();
    attache.shutdown().await;
}

/// No token yet (the endpoint fails from the start): once the connect
/// has waited for one, the app is told which credential and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_first_token_names_the_credential() {
    let rotation = Rotation::start().await;
    rotation.endpoint.set_mode(Mode::Error500).await;
    let attache = attache_with_tokens(&rotation.server, &rotation.endpoint).await;
    let addr = attache.redis_addr("test").unwrap();
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let reply = support::raw_exchange(&mut s, &support::cmd(&["PING"]), 1).await;
        let text = String::from_utf8_lossy(&reply).into_owned();
        println!("{text}");
        assert!(text.contains("credential \"redis\""), "{text}");
    }
    rotation.stop().await;
    attache.shutdown().await;
}

/// A refused token and a token endpoint that hangs: the connect still
/// gives up within its timeouts (2 s) rather than the fetch's (10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_and_a_hanging_endpoint_fail_within_the_connect_timeout() {
    std::env::set_var("ATTACHE_TEST_CLIENT_SECRET", "client-secret");
    let (server, endpoint) = (RedisServer::start(), TokenEndpoint::start(60).await);
    let acl = RotatingAcl::new(&server);
    let hook_acl = acl.clone();
    endpoint.on_issue(Arc::new(move |token| hook_acl.add(token)));
    let attache = attache_with_tokens(&server, &endpoint).await;
    let mut conn = support::client(attache.redis_addr("test").unwrap()).await;
    redis::cmd("PING").exec_async(&mut conn).await.unwrap();
    // Past the 1 s in which a forced refresh reuses the last token.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    endpoint.set_mode(Mode::Slow(Duration::from_secs(60))).await;
    server.cli(&["ACL", "SETUSER", "app", "resetpass"]);
    acl.kill_app_clients();
    tokio::time::sleep(Duration::from_millis(300)).await; // attache reconnects
    let started = Instant::now();
    let result = redis::cmd("PING").exec_async(&mut conn).await;
    println!("{result:?} after {:?}", started.elapsed());
    assert!(result.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    attache.shutdown().await;
}
