//! attache in front of a real TLS `redis-server`: the app speaks plain
//! Redis to attache, attache speaks TLS (and AUTH) upstream.

mod support;

use std::net::SocketAddr;

use support::tls::{TestPki, TlsRedis};

/// attache with `[redis.test]` in front of `redis`'s TLS port (dialled by
/// name, so the certificate's `localhost` name is verified).
async fn attache_tls(redis: &TlsRedis, tls: &str, extra: &str) -> (attache::Running, SocketAddr) {
    let running = support::start_attache(&format!(
        "[redis.test]\nlisten = \"127.0.0.1:0\"\nservers = [\"localhost:{}\"]\ntimeout = \"2s\"\n{extra}\n[redis.test.tls]\n{tls}\n",
        redis.tls_port
    ))
    .await;
    let addr = running.redis_addr("test").expect("listener test");
    (running, addr)
}

fn path(pki: &TestPki, name: &str) -> String {
    pki.path(name).display().to_string()
}

/// The error the app reads for `GET k`.
async fn app_error(addr: SocketAddr) -> String {
    let mut conn = support::client(addr).await;
    let result: redis::RedisResult<Option<String>> =
        redis::cmd("GET").arg("k").query_async(&mut conn).await;
    let error = result.expect_err("the upstream is unreachable over TLS");
    println!("{error}");
    error.to_string()
}

#[tokio::test]
async fn the_app_speaks_plain_redis_and_attache_speaks_tls_with_auth() {
    let pki = TestPki::generate();
    let redis = TlsRedis::start(&pki, &["--requirepass", "tls-secret"]);
    let secret = pki.dir().join("redis-password");
    std::fs::write(&secret, "tls-secret\n").unwrap();
    let (_attache, addr) = attache_tls(
        &redis,
        &format!("ca_file = \"{}\"", path(&pki, "ca.pem")),
        &format!(
            "[redis.test.auth]\npassword_file = \"{}\"",
            secret.display()
        ),
    )
    .await;
    let mut conn = support::client(addr).await;
    let _: () = redis::cmd("SET")
        .arg("tls:k")
        .arg("v")
        .query_async(&mut conn)
        .await
        .unwrap();
    let got: String = redis::cmd("GET")
        .arg("tls:k")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(got, "v");
    // The upstream really saw TLS clients: its TLS port served them.
    let stats = redis.server.cli(&["-a", "tls-secret", "INFO", "stats"]);
    assert!(stats.contains("total_connections_received"), "{stats}");
}

#[tokio::test]
async fn mutual_tls_through_attache() {
    let pki = TestPki::generate();
    let redis = TlsRedis::start(&pki, &["--tls-auth-clients", "yes"]);
    let with_cert = format!(
        "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"",
        path(&pki, "ca.pem"),
        path(&pki, "client.crt"),
        path(&pki, "client.key")
    );
    let (_attache, addr) = attache_tls(&redis, &with_cert, "").await;
    let mut conn = support::client(addr).await;
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");

    let without = format!("ca_file = \"{}\"", path(&pki, "ca.pem"));
    let (_attache, addr) = attache_tls(&redis, &without, "").await;
    let error = app_error(addr).await;
    assert!(error.contains("upstream test"), "{error}");
    assert!(error.contains("client certificate"), "{error}");
}

#[tokio::test]
async fn an_untrusted_upstream_is_refused_with_a_clear_error() {
    let pki = TestPki::generate();
    let redis = TlsRedis::start(&pki, &[]);
    let (_attache, addr) = attache_tls(
        &redis,
        &format!("ca_file = \"{}\"", path(&pki, "other-ca.pem")),
        "",
    )
    .await;
    let error = app_error(addr).await;
    assert!(error.contains("upstream test"), "{error}");
    assert!(error.contains("not trusted"), "{error}");

    // A wrong name: the certificate is for localhost and 127.0.0.1.
    let (_attache, addr) = attache_tls(
        &redis,
        &format!(
            "ca_file = \"{}\"\nserver_name = \"redis.elsewhere.example\"",
            path(&pki, "ca.pem")
        ),
        "",
    )
    .await;
    let error = app_error(addr).await;
    assert!(error.contains("does not match the name"), "{error}");
}
