//! The HTTP ambassador and an upstream's addresses: a name that resolves
//! to several (the in-process DNS server), balancing over them, ejection of
//! one that keeps failing, and the keep-alive pool per address.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::Request;
use support::dns::TestDns;
use support::http::{attache_for, echo_path, full, handler, text, AppClient, TestUpstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// attache whose `[http.api]` upstream is `http://NAME.attache.test:port`,
/// resolved by `dns`; the app-side address.
async fn attache_for_name(
    dns: &TestDns,
    name: &str,
    port: u16,
) -> (attache::Running, std::net::SocketAddr) {
    let running = support::start_attache(&format!(
        "[dns]\nnameservers = [\"{}\"]\n\n[http.api]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{name}.attache.test:{port}\"\n",
        dns.addr
    ))
    .await;
    let addr = running.http_addr("api").unwrap();
    (running, addr)
}

/// `api.attache.test` resolving to 127.0.0.2 and 127.0.0.3, and an echo
/// upstream on the first only; its port.
async fn api_on_first_of_two() -> (TestDns, TestUpstream, u16) {
    let dns = TestDns::start().await;
    dns.set_a("api", 30, &[[127, 0, 0, 2], [127, 0, 0, 3]])
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (dns, TestUpstream::on(listener, None, echo_path()), port)
}

#[tokio::test]
async fn two_addresses_behind_one_name_with_one_down_serve_every_request() {
    // The upstream listens on 127.0.0.2 only; 127.0.0.3 refuses.
    let (dns, upstream, port) = api_on_first_of_two().await;
    let (_attache, addr) = attache_for_name(&dns, "api", port).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(tokio::spawn(async move {
            let mut client = AppClient::connect(addr).await;
            for i in 0..25 {
                let (status, _, body) = client.get(&format!("/n/{i}")).await;
                assert_eq!((status, body), (200, format!("upstream saw /n/{i}")));
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(upstream.seen().len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_spread_over_every_address_of_a_name() {
    let dns = TestDns::start().await;
    dns.set_a("pair", 30, &[[127, 0, 0, 2], [127, 0, 0, 3]])
        .await;
    // The same port on both addresses (retrying if .3's is taken).
    let (first, second) = loop {
        let first = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
        let port = first.local_addr().unwrap().port();
        if let Ok(second) = tokio::net::TcpListener::bind(("127.0.0.3", port)).await {
            break (first, second);
        }
    };
    let port = first.local_addr().unwrap().port();
    let slow = || {
        handler(|_| async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            text(200, "ok")
        })
    };
    let a = TestUpstream::on(first, None, slow());
    let b = TestUpstream::on(second, None, slow());
    let (_attache, addr) = attache_for_name(&dns, "pair", port).await;
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(tokio::spawn(async move {
            let mut client = AppClient::connect(addr).await;
            for _ in 0..25 {
                assert_eq!(client.get("/").await.0, 200);
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    let (on_a, on_b) = (a.seen().len(), b.seen().len());
    assert_eq!(on_a + on_b, 200);
    assert!(on_a > 20 && on_b > 20, "unbalanced: {on_a} vs {on_b}");
}

#[tokio::test]
async fn upstream_connections_are_reused_and_closed_when_idle() {
    let upstream = TestUpstream::plain(handler(|_| async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        text(200, "ok")
    }))
    .await;
    let (_attache, addr) = attache_for(
        &format!("http://{}", upstream.addr),
        "idle_timeout = \"400ms\"\nmax_idle_per_host = 2",
    )
    .await;
    // One app connection, one request at a time: one upstream connection.
    let mut client = AppClient::connect(addr).await;
    for _ in 0..10 {
        assert_eq!(client.get("/").await.0, 200);
    }
    assert_eq!(upstream.accepted(), 1, "keep-alive reuse");

    // Five at once need five; only two stay idle afterwards.
    let mut parallel = Vec::new();
    for _ in 0..5 {
        parallel.push(tokio::spawn(async move {
            AppClient::connect(addr).await.get("/").await.0
        }));
    }
    for request in parallel {
        assert_eq!(request.await.unwrap(), 200);
    }
    let settled = tokio::time::Instant::now() + Duration::from_secs(5);
    while upstream.open() > 2 && tokio::time::Instant::now() < settled {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        upstream.open() <= 2,
        "{} idle connections kept",
        upstream.open()
    );
    // Past idle_timeout, none.
    while upstream.open() > 0 && tokio::time::Instant::now() < settled {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(upstream.open(), 0, "idle connections outlived idle_timeout");
}

#[tokio::test]
async fn an_address_that_keeps_failing_is_ejected() {
    // 127.0.0.2 serves; 127.0.0.3 accepts and hangs up at once (a lost
    // connection every time), counting how often it is tried.
    let (dns, upstream, port) = api_on_first_of_two().await;
    let bad = tokio::net::TcpListener::bind(("127.0.0.3", port))
        .await
        .unwrap();
    let tried = Arc::new(AtomicU64::new(0));
    let counter = tried.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = bad.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            drop(stream);
        }
    });
    let (_attache, addr) = attache_for_name(&dns, "api", port).await;
    let mut client = AppClient::connect(addr).await;
    for i in 0..60 {
        let (status, _, body) = client.get(&format!("/e/{i}")).await;
        assert_eq!((status, body), (200, format!("upstream saw /e/{i}")));
    }
    assert_eq!(upstream.seen().len(), 60);
    // Three failures in a row take it out of rotation for 5 s (then 10 s):
    // far fewer tries than requests, whatever the pace of this machine.
    let tried = tried.load(Ordering::Relaxed);
    assert!(
        (1..=9).contains(&tried),
        "the bad address was tried {tried} times"
    );
}

/// An upstream that answers the first request of each connection (keep-
/// alive, `ok`) and closes the connection 50 ms later, as one with a short
/// keep-alive timeout would; the requests it read, in full.
fn one_request_per_connection(listener: tokio::net::TcpListener) -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let recorded = recorded.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // The head, and a POST's body (`hi`).
                let complete = |r: &[u8]| {
                    let text = String::from_utf8_lossy(r);
                    text.contains("\r\n\r\n") && (!text.starts_with("POST") || text.ends_with("hi"))
                };
                while !complete(&request) {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                recorded
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&request).into_owned());
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            });
        }
    });
    seen
}

#[tokio::test]
async fn an_idle_connection_closed_by_the_upstream_is_replaced_unseen_by_the_app() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let seen = one_request_per_connection(listener);
    let (_attache, addr) = attache_for(&format!("http://{upstream}"), "").await;
    let mut client = AppClient::connect(addr).await;
    // Each request finds the previous one's connection idle in the pool
    // but closed by the upstream: a POST, which attache never sends twice,
    // included.
    for i in 0..3 {
        let post = Request::post(format!("/p/{i}")).body(full("hi")).unwrap();
        let response = client.send(post).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
        assert_eq!(client.get(&format!("/g/{i}")).await.0, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 6, "one connection and one request each");
    for i in 0..3 {
        let posts = seen
            .iter()
            .filter(|r| r.starts_with(&format!("POST /p/{i} ")))
            .count();
        assert_eq!(posts, 1, "POST /p/{i} sent {posts} times");
    }
}

#[tokio::test]
async fn a_response_body_dropped_early_closes_its_upstream_connection() {
    let upstream = TestUpstream::plain(handler(|request| async move {
        if request.uri().path() == "/big" {
            let big = vec![b'x'; 8 << 20];
            return hyper::Response::new(full(big));
        }
        text(200, "ok")
    }))
    .await;
    let (_attache, addr) = attache_for(&format!("http://{}", upstream.addr), "").await;
    let mut client = AppClient::connect(addr).await;
    let big = Request::get("/big").body(support::http::empty()).unwrap();
    let response = client.send(big).await.unwrap();
    assert_eq!(response.status(), 200);
    // The app reads the head and hangs up mid-body.
    drop(response);
    drop(client);
    let settled = tokio::time::Instant::now() + Duration::from_secs(5);
    while upstream.open() > 0 && tokio::time::Instant::now() < settled {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(upstream.open(), 0, "a half-read connection was kept");
    // The next request gets a fresh connection, and that one is pooled.
    let mut client = AppClient::connect(addr).await;
    assert_eq!(client.get("/small").await.0, 200);
    assert_eq!(client.get("/small").await.0, 200);
    assert_eq!(upstream.accepted(), 2);
}

#[tokio::test]
async fn responses_without_a_body_return_their_connection_too() {
    let upstream = TestUpstream::plain(handler(|request| async move {
        if request.uri().path() == "/none" {
            return hyper::Response::builder()
                .status(204)
                .body(support::http::empty())
                .unwrap();
        }
        text(200, "ok")
    }))
    .await;
    let (_attache, addr) = attache_for(&format!("http://{}", upstream.addr), "").await;
    let mut client = AppClient::connect(addr).await;
    for _ in 0..3 {
        assert_eq!(client.get("/none").await.0, 204);
        let head = Request::head("/").body(support::http::empty()).unwrap();
        let response = client.send(head).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .len(),
            0
        );
    }
    assert_eq!(
        upstream.accepted(),
        1,
        "keep-alive reuse after 204 and HEAD"
    );
}
