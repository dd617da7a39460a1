//! The HTTP ambassador's tokens: an in-process OAuth2 endpoint issues
//! short-lived tokens and an in-process upstream accepts each one only
//! while it is valid. attache refreshes ahead of expiry (no request ever
//! carries an expired token), forces a refresh on a 401, and answers 503
//! when it has no token at all.

mod support;
#[allow(dead_code)] // shared with tests/tokens.rs, which uses all of it
mod token_endpoint;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::Request;
use support::http::{empty, full, handler, send, text, AppClient, Handler, TestUpstream};
use token_endpoint::{Mode, TokenEndpoint};

/// Tokens live 4 s, so attache (refreshing at half the lifetime) rotates
/// them about every 2 s.
const LIFETIME: Duration = Duration::from_secs(4);

/// The tokens the upstream accepts, each until it expires.
#[derive(Default)]
struct Valid {
    until: Mutex<HashMap<String, Instant>>,
    rejected: AtomicU64,
    /// Refuse every token (the client's access was revoked).
    revoked: AtomicBool,
}

impl Valid {
    fn issue(&self, token: &str) {
        let until = Instant::now() + LIFETIME;
        self.until.lock().unwrap().insert(token.to_owned(), until);
    }

    fn accepts(&self, header: Option<&hyper::header::HeaderValue>) -> bool {
        let token = header
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let until = token.and_then(|t| self.until.lock().unwrap().get(t).copied());
        until.is_some_and(|until| Instant::now() < until) && !self.revoked.load(Ordering::SeqCst)
    }

    /// An upstream handler: 200 with a valid token, 401 otherwise.
    fn upstream(self: &Arc<Self>) -> Handler {
        let valid = self.clone();
        handler(move |request| {
            let ok = valid.accepts(request.headers().get("authorization"));
            if !ok {
                valid.rejected.fetch_add(1, Ordering::SeqCst);
            }
            async move {
                let body = request.into_body().collect().await.unwrap().to_bytes();
                if ok {
                    text(200, &format!("ok {}", String::from_utf8_lossy(&body)))
                } else {
                    text(401, "invalid token")
                }
            }
        })
    }
}

async fn attache_with_token(
    upstream: &TestUpstream,
    endpoint: &TokenEndpoint,
) -> (attache::Running, std::net::SocketAddr) {
    std::env::set_var("ATTACHE_TEST_CLIENT_SECRET", "client-secret");
    let running = support::start_attache(&format!(
        r#"
[http.api]
listen = "127.0.0.1:0"
upstream = "http://{}"
token = "api"

[tokens.api]
provider = "oauth2_client_credentials"
token_url = "{}"
client_id = "attache"
client_secret_env = "ATTACHE_TEST_CLIENT_SECRET"
"#,
        upstream.addr,
        endpoint.url("/token")
    ))
    .await;
    let addr = running.http_addr("api").unwrap();
    (running, addr)
}

/// Waits until attache answers with a token (its first fetch done).
async fn wait_for_token(addr: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, _) = send(addr, Request::get("/ping").body(empty()).unwrap()).await;
        if status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no token after 10 s (status {status})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_see_no_failure_while_tokens_rotate() {
    let valid = Arc::new(Valid::default());
    let endpoint = TokenEndpoint::start(LIFETIME.as_secs()).await;
    let issued = valid.clone();
    endpoint.on_issue(Arc::new(move |token| issued.issue(token)));
    let upstream = TestUpstream::plain(valid.upstream()).await;
    let (_attache, addr) = attache_with_token(&upstream, &endpoint).await;
    wait_for_token(addr).await;

    let run_for = Duration::from_secs(20);
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let done = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for i in 0..50 {
        let (failures, done) = (failures.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let mut client = AppClient::connect(addr).await;
            let started = Instant::now();
            while started.elapsed() < run_for {
                let (status, _, body) = client.get(&format!("/c/{i}")).await;
                if status == 200 {
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    failures.lock().unwrap().push(format!("{status} {body}"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        done.load(Ordering::Relaxed) > 1000,
        "too few requests: {done:?}"
    );
    let fetches = endpoint.seen().len();
    assert!(fetches >= 8, "tokens rotated only {fetches} times in 20 s");
    // Refreshed ahead of expiry: no request needed the 401 path.
    assert_eq!(valid.rejected.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_401_forces_one_token_refresh_and_one_retry_with_the_body() {
    let valid = Arc::new(Valid::default());
    let endpoint = TokenEndpoint::start(3600).await;
    let issued = valid.clone();
    let first = Arc::new(AtomicU64::new(0));
    // The upstream has not heard of the first token (e.g. revoked).
    endpoint.on_issue(Arc::new(move |token| {
        if first.fetch_add(1, Ordering::SeqCst) > 0 {
            issued.issue(token);
        }
    }));
    let upstream = TestUpstream::plain(valid.upstream()).await;
    let (_attache, addr) = attache_with_token(&upstream, &endpoint).await;
    // The first fetch, then past the window in which a forced refresh
    // would reuse it (1 s).
    while endpoint.seen().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let post = Request::post("/orders").body(full("order-1")).unwrap();
    let (status, _, body) = send(addr, post).await;
    assert_eq!((status, body.as_str()), (200, "ok order-1"));
    assert_eq!(endpoint.seen().len(), 2, "one forced refresh");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2, "one retry");
    assert_ne!(
        seen[0].headers["authorization"],
        seen[1].headers["authorization"]
    );

    // A token the upstream keeps refusing: one refresh, then the 401 is
    // the app's.
    valid.revoked.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, _, _) = send(addr, Request::get("/x").body(empty()).unwrap()).await;
    assert_eq!(status, 401);
    assert_eq!(upstream.seen().len(), 4);
    assert_eq!(endpoint.seen().len(), 3);
}

#[tokio::test]
async fn without_a_token_the_app_gets_503_naming_the_source() {
    let endpoint = TokenEndpoint::start(3600).await;
    endpoint.set_mode(Mode::Down).await;
    let upstream = TestUpstream::plain(handler(|_| async { text(200, "ok") })).await;
    let (_attache, addr) = attache_with_token(&upstream, &endpoint).await;
    let (status, headers, body) = send(addr, Request::get("/x").body(empty()).unwrap()).await;
    assert_eq!(status, 503);
    assert_eq!(headers["x-attache-error"], "no-token");
    assert_eq!(headers["retry-after"], "1");
    assert!(body.contains("no token from source \"api\""), "{body}");
    assert!(upstream.seen().is_empty());
}
