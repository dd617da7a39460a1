//! The HTTP ambassador against in-process hyper upstreams: routing and
//! refusals, retries, local errors, TLS with HTTP/2 by ALPN, streaming,
//! WebSocket pass-through, reload, max_connections. Addresses, balancing,
//! ejection and the connection pool: `http_addresses.rs`; tokens:
//! `http_tokens.rs`.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response, Version};
use support::http::{
    attache_for, attache_for_tls, echo_path, empty, full, handler, send, text, AppClient, TestBody,
    TestUpstream,
};
use support::tls::TestPki;

#[tokio::test]
async fn requests_are_forwarded_with_host_rewritten_and_hop_by_hop_headers_stripped() {
    let upstream = TestUpstream::plain(echo_path()).await;
    let base = format!("http://{}/base", upstream.addr);
    let (_attache, addr) =
        attache_for(&base, "[http.api.headers]\nx-api-key = { value = \"k1\" }").await;
    let mut client = AppClient::connect(addr).await;
    for i in 0..3 {
        let request = Request::get(format!("/v1/items?page={i}"))
            .header("connection", "keep-alive, x-secret-hop")
            .header("x-secret-hop", "1")
            .header("authorization", "Bearer app-own")
            .body(empty())
            .unwrap();
        let (status, _, body) = support::http::read(client.send(request).await.unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(body, format!("upstream saw /base/v1/items?page={i}"));
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), 3);
    let headers = &seen[0].headers;
    assert_eq!(headers["host"], upstream.addr.to_string().as_str());
    assert!(headers.get("x-secret-hop").is_none());
    assert!(headers.get("connection").is_none());
    assert_eq!(headers["x-api-key"], "k1");
    // No token configured: the app's own Authorization passes through.
    assert_eq!(headers["authorization"], "Bearer app-own");
}

#[tokio::test]
async fn unknown_routes_get_404_and_proxy_requests_are_refused() {
    let upstream = TestUpstream::plain(echo_path()).await;
    let running = support::start_attache(&format!(
        "[http.api]\nlisten = \"127.0.0.1:0\"\n\
         [[http.api.routes]]\nprefix = \"/v1\"\nupstream = \"http://{}\"\n",
        upstream.addr
    ))
    .await;
    let addr = running.http_addr("api").unwrap();

    let (status, headers, body) = send(addr, Request::get("/v1/ok").body(empty()).unwrap()).await;
    assert_eq!((status, body.as_str()), (200, "upstream saw /v1/ok"));
    assert!(headers.get("x-attache-error").is_none());

    let (status, headers, body) = send(addr, Request::get("/v2/x").body(empty()).unwrap()).await;
    assert_eq!(status, 404);
    assert_eq!(headers["x-attache-error"], "no-route");
    assert_eq!(
        body,
        "attache: no route matches GET /v2/x (host localhost)\n"
    );

    // Absolute-form and CONNECT: never an open proxy; a Host that is not
    // this listener's: refused with the name.
    let refused = [
        (
            "GET",
            "http://evil.example/",
            "evil.example",
            "proxy-refused",
        ),
        (
            "CONNECT",
            "evil.example:443",
            "evil.example:443",
            "proxy-refused",
        ),
        ("GET", "/v1/ok", "evil.example", "host-refused"),
    ];
    for (method, target, host, kind) in refused {
        let request = Request::builder()
            .method(method)
            .uri(target)
            .header("host", host)
            .body(empty())
            .unwrap();
        let (status, headers, body) = send(addr, request).await;
        assert_eq!(
            (status, headers["x-attache-error"].to_str().unwrap()),
            (403, kind),
            "{method} {target}"
        );
        if kind == "host-refused" {
            assert!(body.contains("evil.example"), "{body}");
        }
    }
    assert_eq!(
        upstream.seen().len(),
        1,
        "only the routed request went upstream"
    );
}

#[tokio::test]
async fn a_503_is_retried_for_get_but_not_for_post() {
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let upstream = TestUpstream::plain(handler(move |request| {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            // Every path's first request gets a 503.
            let _ = request.into_body().collect().await;
            if n % 2 == 0 {
                text(503, "busy")
            } else {
                text(200, "ok")
            }
        }
    }))
    .await;
    let (_attache, addr) = attache_for(&format!("http://{}", upstream.addr), "").await;

    let (status, _, body) = send(addr, Request::get("/get").body(empty()).unwrap()).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert_eq!(upstream.seen().len(), 2, "the GET was retried once");

    let post = Request::post("/post").body(full("payload")).unwrap();
    let (status, headers, body) = send(addr, post).await;
    assert_eq!(
        (status, body.as_str()),
        (503, "busy"),
        "the app sees the upstream's 503"
    );
    assert!(headers.get("x-attache-error").is_none());
    assert_eq!(upstream.seen().len(), 3, "the POST was not retried");
}

#[tokio::test]
async fn a_dead_upstream_is_a_502_and_a_slow_one_a_504() {
    let mut dead = TestUpstream::plain(echo_path()).await;
    let dead_addr = dead.addr;
    dead.kill().await;
    let (_attache, addr) =
        attache_for(&format!("http://{dead_addr}"), "connect_timeout = \"1s\"").await;
    let (status, headers, body) = send(addr, Request::get("/x").body(empty()).unwrap()).await;
    assert_eq!(status, 502);
    assert_eq!(headers["x-attache-error"], "connect-failed");
    assert!(
        body.starts_with(&format!(
            "attache: cannot connect to upstream http://{dead_addr}"
        )),
        "{body}"
    );

    let slow = TestUpstream::plain(handler(|_| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        text(200, "late")
    }))
    .await;
    let (_attache, addr) =
        attache_for(&format!("http://{}", slow.addr), "timeout = \"300ms\"").await;
    let (status, headers, body) = send(addr, Request::get("/x").body(empty()).unwrap()).await;
    assert_eq!(status, 504);
    assert_eq!(headers["x-attache-error"], "upstream-timeout");
    assert!(body.contains("did not respond within 300ms"), "{body}");
}

#[tokio::test]
async fn an_https_upstream_is_reached_over_http2_by_alpn() {
    let pki = TestPki::generate();
    let upstream = TestUpstream::tls(&pki, &[b"h2", b"http/1.1"], echo_path()).await;
    let (_attache, addr) = attache_for_tls(&pki, &upstream).await;
    let mut client = AppClient::connect(addr).await;
    for _ in 0..5 {
        let (status, _, body) = client.get("/h2").await;
        assert_eq!(status, 200);
        // An HTTP/2 request carries the full URI.
        let port = upstream.addr.port();
        assert_eq!(body, format!("upstream saw https://localhost:{port}/h2"));
    }
    let seen = upstream.seen();
    assert!(
        seen.iter().all(|s| s.version == Version::HTTP_2),
        "{seen:?}"
    );

    // An HTTP/1.1-only upstream is reached over HTTP/1.1.
    let h1 = TestUpstream::tls(&pki, &[b"http/1.1"], echo_path()).await;
    let (_attache, addr) = attache_for_tls(&pki, &h1).await;
    let (status, _, body) = AppClient::connect(addr).await.get("/h1").await;
    assert_eq!((status, body.as_str()), (200, "upstream saw /h1"));
    assert_eq!(h1.seen()[0].version, Version::HTTP_11);
}

const MIB: usize = 1024 * 1024;
const BIG: usize = 100 * MIB;

/// A body of `total` bytes in 64 KiB chunks that, halfway, waits until
/// `seen` is set by the receiving end: it can only finish if what it sent
/// so far was streamed through, not buffered.
fn gated_body(total: usize, seen: Arc<AtomicBool>) -> TestBody {
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let stream = futures::stream::unfold(0usize, move |sent| {
        let (chunk, seen) = (chunk.clone(), seen.clone());
        async move {
            if sent >= total {
                return None;
            }
            if sent == total / 2 {
                let waited = tokio::time::timeout(Duration::from_secs(20), async {
                    while !seen.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
                .await;
                if waited.is_err() {
                    let e = std::io::Error::other("the other end saw nothing: buffered?");
                    return Some((Err(e), total));
                }
            }
            Some((Ok(Frame::data(chunk.clone())), sent + chunk.len()))
        }
    });
    StreamBody::new(stream).boxed()
}

/// Reads `body` to the end, setting `seen` after the first MiB; its length.
async fn drain(mut body: hyper::body::Incoming, seen: &AtomicBool) -> usize {
    let mut received = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("body frame").into_data() {
            received += data.len();
            if received >= MIB {
                seen.store(true, Ordering::SeqCst);
            }
        }
    }
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_upload_and_download_stream_through() {
    let upload_seen = Arc::new(AtomicBool::new(false));
    let download_seen = Arc::new(AtomicBool::new(false));
    let (up, down) = (upload_seen.clone(), download_seen.clone());
    let upstream = TestUpstream::plain(handler(move |request| {
        let (up, down) = (up.clone(), down.clone());
        async move {
            if request.method() == hyper::Method::PUT {
                let received = drain(request.into_body(), &up).await;
                text(200, &received.to_string())
            } else {
                Response::new(gated_body(BIG, down))
            }
        }
    }))
    .await;
    let (_attache, addr) =
        attache_for(&format!("http://{}", upstream.addr), "timeout = \"60s\"").await;

    let upload = Request::put("/upload")
        .header("content-length", BIG.to_string())
        .body(gated_body(BIG, upload_seen))
        .unwrap();
    let (status, _, body) = send(addr, upload).await;
    assert_eq!((status, body), (200, BIG.to_string()));

    let mut client = AppClient::connect(addr).await;
    let response = client
        .send(Request::get("/download").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(drain(response.into_body(), &download_seen).await, BIG);
}

#[tokio::test]
async fn a_websocket_upgrade_passes_through() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = TestUpstream::plain(handler(|mut request| async move {
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let mut io = hyper_util::rt::TokioIo::new(upgraded);
                let mut buf = [0u8; 64];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(empty())
            .unwrap()
    }))
    .await;
    let (_attache, addr) = attache_for(&format!("http://{}", upstream.addr), "").await;
    let mut client = AppClient::connect(addr).await;
    let request = Request::get("/ws")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(empty())
        .unwrap();
    let mut response = client.send(request).await.unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["upgrade"], "websocket");
    let upgraded = hyper::upgrade::on(&mut response).await.unwrap();
    let mut io = hyper_util::rt::TokioIo::new(upgraded);
    for message in ["hello", "over the tunnel"] {
        io.write_all(message.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; message.len()];
        io.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, message.as_bytes());
    }
    assert_eq!(upstream.seen()[0].headers["upgrade"], "websocket");
}

#[tokio::test]
async fn a_reload_moves_new_requests_to_the_new_upstream_on_open_connections() {
    let old = TestUpstream::plain(handler(|_| async { text(200, "old") })).await;
    let new = TestUpstream::plain(handler(|_| async { text(200, "new") })).await;
    let config = |upstream: &TestUpstream| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("attache.toml");
        std::fs::write(
            &path,
            format!(
                "[http.api]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{}\"\n",
                upstream.addr
            ),
        )
        .unwrap();
        attache::config::load(&path).unwrap()
    };
    let running = attache::start(config(&old)).await.unwrap();
    let addr = running.http_addr("api").unwrap();
    let mut client = AppClient::connect(addr).await;
    assert_eq!(client.get("/a").await.2, "old");

    // Same `listen` (port 0 in both): same socket, new service.
    running.reload(config(&new)).unwrap();
    assert_eq!(client.get("/b").await.2, "new", "the open connection moved");
    assert_eq!(AppClient::connect(addr).await.get("/c").await.2, "new");
    assert_eq!(old.seen().len(), 1);
    running.shutdown().await;
}

#[tokio::test]
async fn an_http2_app_is_served_too() {
    let upstream = TestUpstream::plain(echo_path()).await;
    let (_attache, addr) = attache_for(&format!("http://{}", upstream.addr), "").await;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = Request::get(format!("http://{addr}/h2c"))
        .body(empty())
        .unwrap();
    let (status, _, body) = support::http::read(sender.send_request(request).await.unwrap()).await;
    assert_eq!((status, body.as_str()), (200, "upstream saw /h2c"));
    assert_eq!(upstream.seen()[0].version, Version::HTTP_11);
}

/// An upstream that reads each request's head and, on every other
/// connection, closes without answering.
async fn flaky_raw_upstream() -> (std::net::SocketAddr, Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => head.extend_from_slice(&buf[..k]),
                    }
                }
                if n % 2 == 0 {
                    return; // dropped: the connection closes unanswered
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_lost_connection_is_retried_for_get_but_a_sent_post_is_not() {
    let (upstream, accepted) = flaky_raw_upstream().await;
    let (_attache, addr) = attache_for(&format!("http://{upstream}"), "").await;
    let (status, _, body) = send(addr, Request::get("/get").body(empty()).unwrap()).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "the GET was retried once"
    );

    let post = Request::post("/post").body(full("payload")).unwrap();
    let (status, headers, body) = send(addr, post).await;
    assert_eq!(status, 502);
    assert_eq!(headers["x-attache-error"], "upstream-reset");
    assert!(
        body.contains("closed the connection before responding"),
        "{body}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 3, "the POST was sent once");
}

#[tokio::test]
async fn mutual_tls_and_server_name_reach_a_strict_upstream() {
    let pki = TestPki::generate();
    let config = support::http::mutual_tls(&pki);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = TestUpstream::on(listener, Some(config), echo_path());
    let port = upstream.addr.port();
    // By IP, with server_name naming the certificate's DNS name.
    let tls = |client: bool| {
        let mut tls = format!(
            "[http.api.tls]\nca_file = \"{}\"\nserver_name = \"localhost\"\n",
            pki.path("ca.pem").display()
        );
        if client {
            tls += &format!(
                "cert_file = \"{}\"\nkey_file = \"{}\"\n",
                pki.path("client.crt").display(),
                pki.path("client.key").display()
            );
        }
        tls
    };
    let (_attache, addr) = attache_for(&format!("https://127.0.0.1:{port}"), &tls(true)).await;
    let (status, _, body) = AppClient::connect(addr).await.get("/mtls").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(upstream.seen()[0].version, Version::HTTP_2);

    // Without a client certificate the upstream refuses: a 502.
    let (_attache, addr) = attache_for(&format!("https://127.0.0.1:{port}"), &tls(false)).await;
    let (status, headers, body) = AppClient::connect(addr).await.get("/mtls").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        ["connect-failed", "upstream-reset"]
            .contains(&headers["x-attache-error"].to_str().unwrap()),
        "{headers:?}"
    );
    assert_eq!(upstream.seen().len(), 1);
}

#[tokio::test]
async fn a_connection_beyond_max_connections_gets_a_503_and_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = TestUpstream::plain(echo_path()).await;
    let (attache, addr) =
        attache_for(&format!("http://{}", upstream.addr), "max_connections = 1").await;
    let mut first = AppClient::connect(addr).await;
    let request = Request::get("/a").body(empty()).unwrap();
    let (status, _, _) = support::http::read(first.send(request).await.unwrap()).await;
    assert_eq!(status, 200);

    // The first keeps its (keep-alive) connection: a second is refused.
    let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
    second
        .write_all(b"GET /b HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), second.read_to_string(&mut answer))
        .await
        .expect("answered and closed")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(
        answer.contains("x-attache-error: max-connections"),
        "{answer}"
    );
    assert!(answer.ends_with("max_connections; retry.\r\n"), "{answer}");
    assert_eq!(attache.stats()[0].refused(), 1);
    // The first connection still works.
    let request = Request::get("/c").body(empty()).unwrap();
    let (status, _, _) = support::http::read(first.send(request).await.unwrap()).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_reload_rereads_a_header_value_file_though_the_config_is_unchanged() {
    let upstream = TestUpstream::plain(echo_path()).await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("api-key");
    std::fs::write(&key, "k1").unwrap();
    let path = dir.path().join("attache.toml");
    std::fs::write(
        &path,
        format!(
            "[http.api]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{}\"\n\
             [http.api.headers]\nx-api-key = {{ value_file = \"{}\" }}\n",
            upstream.addr,
            key.display()
        ),
    )
    .unwrap();
    let running = attache::start(attache::config::load(&path).unwrap())
        .await
        .unwrap();
    let mut client = AppClient::connect(running.http_addr("api").unwrap()).await;
    assert_eq!(client.get("/a").await.0, 200);

    // The Secret behind the file rotates; the config file stays as it was.
    std::fs::write(&key, "k2").unwrap();
    running
        .reload(attache::config::load(&path).unwrap())
        .unwrap();
    assert_eq!(client.get("/b").await.0, 200);
    let seen = upstream.seen();
    assert_eq!(seen[0].headers["x-api-key"], "k1");
    assert_eq!(seen[1].headers["x-api-key"], "k2", "read at reload");
    running.shutdown().await;
}
