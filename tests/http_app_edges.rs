//! The app side of an `[http.NAME]` listener at its edges, on raw
//! HTTP/1.x bytes: malformed heads and framing (each refused with the
//! status pinned here and never forwarded; Content-Length with chunked is
//! read as chunked and the connection closed after it), oversized heads,
//! a refused `Expect`, a body never read (and a 16 MiB upload answered
//! before it was read, which the app still sends whole and then reads the
//! answer of), an HTTP/2 preface after HTTP/1.1 requests, apps that hang
//! up (mid-body, to an HTTP/1.1 or an HTTP/2 upstream; mid-response;
//! after an upload) or half-close, backpressure
//! from a slow app, and a shutdown with a head only begun; the listener
//! stays up.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::http::{attache_for, attache_for_tls};
use support::wire::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn expect_100_continue_refused_gets_the_final_answer_and_a_close() {
    let (upstream, _running, addr) = setup_v1_only().await;
    let mut app = App::connect(addr).await;
    app.write(
        b"POST /v2/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\
          Expect: 100-continue\r\n\r\n",
    )
    .await;
    // attache's own 404, no 100 before it: the app must not send the body.
    let answer = app.response("POST").await;
    assert_eq!(answer.status, 404);
    // The body is neither read nor awaited: the connection closes.
    app.assert_closed().await;
    assert_eq!(upstream.heads(), 0);
}

#[tokio::test]
async fn an_unread_body_is_never_taken_for_a_request() {
    let (upstream, _running, addr) = setup_v1_only().await;
    // Refused (no route) before its body was read; the body looks like a
    // request, small or behind 100 kB of padding.
    let inner = "GET /v1/smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n";
    for padding in [0, 100_000] {
        let body = format!("{}{inner}", "p".repeat(padding));
        let mut app = App::connect(addr).await;
        let request = format!(
            "POST /v2/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout(WAIT, app.stream.write_all(request.as_bytes())).await;
        assert_eq!(app.response("POST").await.status, 404);
        // Then the connection either goes on at the next request or closes.
        if app
            .stream
            .write_all(get("/v1/next").as_bytes())
            .await
            .is_ok()
        {
            if let Some(answer) = app.try_response("GET").await {
                assert_eq!(answer.text(), "GET /v1/next 0 bytes");
            }
        }
    }
    let paths: Vec<_> = upstream.server.seen().into_iter().map(|s| s.path).collect();
    assert!(paths.iter().all(|p| p == "/v1/next"), "{paths:?}");
}

/// Writes a POST to `path` with all of `body` before reading (as most
/// clients do), then reads its answer: the status, and the connection
/// closed after it.
async fn upload_then_read(addr: std::net::SocketAddr, path: &str, body: &[u8]) -> u16 {
    upload_then_read_as(addr, "HTTP/1.1", path, body).await
}

async fn upload_then_read_as(
    addr: std::net::SocketAddr,
    version: &str,
    path: &str,
    body: &[u8],
) -> u16 {
    let mut app = App::connect(addr).await;
    let head = format!(
        "POST {path} {version}\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    app.write(head.as_bytes()).await;
    tokio::time::timeout(WAIT, app.stream.write_all(body))
        .await
        .expect("the upload was taken")
        .expect("the upload was not reset");
    let answer = app.response("POST").await;
    if version == "HTTP/1.1" {
        assert_eq!(answer.header("connection"), Some("close"));
    }
    app.assert_closed().await;
    answer.status
}

#[tokio::test]
async fn an_upload_answered_before_it_was_read_still_gets_its_answer() {
    // Refused (no route) before a byte of it was read: the app must still
    // be able to send it all and read the 404, not a reset.
    let (upstream, _running, addr) = setup_v1_only().await;
    let body = vec![b'u'; 16 << 20];
    for _ in 0..3 {
        assert_eq!(upload_then_read(addr, "/v2/upload", &body).await, 404);
    }
    assert!(upstream.server.seen().is_empty());

    // The same when the upstream answers before it read the upload, and
    // closes.
    let refusing =
        support::http::TestUpstream::plain(support::http::handler(|_| async { status(413) })).await;
    let (_attache, addr) = attache_for(&format!("http://{}", refusing.addr), "").await;
    assert_eq!(upload_then_read(addr, "/up", &body).await, 413);
}

#[tokio::test]
async fn an_upload_hyper_answered_before_it_was_read_still_gets_its_answer() {
    // HTTP/1.0 is served by hyper's server (the handover): refused before
    // its body was read, the connection lingers there too.
    let (upstream, running, addr) = setup_v1_only().await;
    let body = vec![b'u'; 16 << 20];
    for _ in 0..3 {
        assert_eq!(
            upload_then_read_as(addr, "HTTP/1.0", "/v2/upload", &body).await,
            404
        );
    }
    assert!(upstream.server.seen().is_empty());
    assert!(running
        .http_metrics()
        .contains("attache_http_app_handovers_total{listener=\"api\"} 3"));
}

#[tokio::test]
async fn an_upload_an_http2_upstream_answered_early_still_gets_its_answer() {
    // Over HTTP/2 the request body is read by hyper's client in its own
    // task, which may still hold it when the response comes: the app must
    // get the 413 all the same, not a reset, as with an HTTP/1.1 upstream.
    let pki = support::tls::TestPki::generate();
    let refusing = support::http::TestUpstream::tls(
        &pki,
        &[b"h2"],
        // The stream is reset (the body let go) a little after the answer,
        // as a busy server would.
        support::http::handler(|request| async move {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                drop(request);
            });
            status(413)
        }),
    )
    .await;
    let (_attache, addr) = attache_for_tls(&pki, &refusing).await;
    let body = vec![b'u'; 16 << 20];
    for _ in 0..3 {
        assert_eq!(upload_then_read(addr, "/up", &body).await, 413);
    }
    assert!(refusing
        .seen()
        .iter()
        .all(|s| s.version == hyper::Version::HTTP_2));
}

#[tokio::test]
async fn a_malformed_head_is_a_400_and_is_not_forwarded() {
    let (upstream, _attache, addr) = setup().await;
    for request in [
        &b"GET / HTTP/1.1\r\nHost: localhost\r\nbad header line\r\n\r\n"[..],
        b"\x00\x01\x02 garbage\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: localhost\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: localhost\r\n\r\n",
    ] {
        let answer = refused(addr, request).await;
        let status = answer.map(|a| a.status);
        assert_eq!(status, Some(400), "{:?}", String::from_utf8_lossy(request));
    }
    assert_eq!(upstream.heads(), 0);
    assert_still_serving(addr).await;
}

#[tokio::test]
async fn content_length_with_chunked_is_read_as_chunked_then_closed() {
    let (upstream, _attache, addr) = setup().await;
    // Both orders. Content-Length: 30 would swallow part of the request
    // after the chunked body; Transfer-Encoding wins, Content-Length is
    // dropped, and attache reads nothing after this request.
    for framing in [
        "Content-Length: 30\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 30",
    ] {
        let request = format!(
            "POST /smuggle HTTP/1.1\r\nHost: localhost\r\n{framing}\r\n\r\n\
             3\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"
        );
        let answer = refused(addr, request.as_bytes()).await.expect("an answer");
        assert_eq!(
            (answer.status, answer.text().as_str()),
            (200, "POST /smuggle 3 bytes")
        );
    }
    let got = upstream.got();
    let paths: Vec<_> = got.iter().map(|g| g.path.as_str()).collect();
    assert_eq!(paths, ["/smuggle", "/smuggle"]);
    for request in got {
        assert_eq!(request.body, b"abc");
        assert!(
            !request.headers.contains_key("content-length"),
            "{request:?}"
        );
    }
    assert_still_serving(addr).await;
}

#[tokio::test]
async fn invalid_framing_is_a_400_and_is_not_forwarded() {
    let (upstream, _attache, addr) = setup().await;
    for framing in [
        "Content-Length: abc",
        "Content-Length: -1",
        "Content-Length: 5\r\nContent-Length: 6",
        "Content-Length: 5, 6",
        // Transfer-Encoding without chunked last.
        "Transfer-Encoding: gzip",
    ] {
        let request = format!("POST /x HTTP/1.1\r\nHost: localhost\r\n{framing}\r\n\r\n");
        let answer = refused(addr, request.as_bytes()).await;
        assert_eq!(answer.map(|a| a.status), Some(400), "{framing}");
    }
    // Transfer-Encoding in HTTP/1.0.
    let request = b"POST /x HTTP/1.0\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(refused(addr, request).await.map(|a| a.status), Some(400));
    assert_eq!(upstream.heads(), 0);
    assert_still_serving(addr).await;
}

#[tokio::test]
async fn a_large_head_passes_and_an_oversized_one_is_refused() {
    let (upstream, _attache, addr) = setup().await;
    // 64 KiB of one header (a big cookie or token) goes through.
    let mut app = App::connect(addr).await;
    let value = "a".repeat(64 * 1024);
    let request = format!("GET /big HTTP/1.1\r\nHost: localhost\r\nx-big: {value}\r\n\r\n");
    app.write(request.as_bytes()).await;
    assert_eq!(app.response("GET").await.text(), "GET /big 0 bytes");
    assert_eq!(upstream.got()[0].headers["x-big"], value.as_str());

    // 512 KiB: 431, the connection closed.
    let value = "a".repeat(512 * 1024);
    let request = format!("GET /huge HTTP/1.1\r\nHost: localhost\r\nx-big: {value}\r\n\r\n");
    let answer = refused(addr, request.as_bytes()).await;
    assert_eq!(answer.map(|a| a.status), Some(431));

    // A target longer than 65534 bytes: 414.
    let request = format!(
        "GET /{} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "u".repeat(70_000)
    );
    let answer = refused(addr, request.as_bytes()).await;
    assert_eq!(answer.map(|a| a.status), Some(414));

    assert_eq!(upstream.heads(), 1, "only the 64 KiB head went up");
    assert_still_serving(addr).await;
}

#[tokio::test]
async fn an_app_that_hangs_up_mid_body_leaves_attache_serving() {
    let (upstream, _attache, addr) = setup().await;
    // A small body (read whole before forwarding) and a large one
    // (streamed), each cut at half.
    for length in [100, 200_000] {
        let mut app = App::connect(addr).await;
        let head =
            format!("POST /cut HTTP/1.1\r\nHost: localhost\r\nContent-Length: {length}\r\n\r\n");
        app.write(head.as_bytes()).await;
        app.write(&vec![b'x'; length / 2]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(app);
    }
    // Any upstream connection that carried a cut body is closed.
    for _ in 0..150 {
        if upstream.server.open() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        upstream.server.open(),
        0,
        "an upstream connection was left open"
    );
    assert!(
        upstream.got().is_empty(),
        "a cut body reached the upstream as a whole one"
    );
    assert_still_serving(addr).await;
}

/// The start of a response whose body never ends.
const ENDLESS: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nstart\r\n";
#[tokio::test]
async fn an_app_that_hangs_up_mid_response_releases_the_upstream() {
    let upstream = RawUpstream::start(ENDLESS).await;
    let (_attache, addr) = attache_for(&upstream.url(), "").await;
    let mut app = App::connect(addr).await;
    app.write(get("/endless").as_bytes()).await;
    let (status, _, _) = app.head().await;
    assert_eq!(status, 200);
    assert_eq!(app.line().await, "5");
    drop(app);
    // attache sees the hang-up and drops the upstream's body (and with it
    // its connection), as it would a request in flight.
    for _ in 0..100 {
        if upstream.closed() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(upstream.closed(), 1, "the upstream connection was held");
}

#[tokio::test]
async fn a_pipelined_burst_then_a_half_close_gets_its_first_answer() {
    let (upstream, _attache, addr) = setup().await;
    let mut app = App::connect(addr).await;
    let mut burst = get("/h1");
    burst.push_str(&get("/h2"));
    app.write(burst.as_bytes()).await;
    // Done sending, still reading: not a hang-up while a request is
    // buffered behind the one in flight (hyper's server answers it too).
    app.stream.shutdown().await.unwrap();
    let first = app.try_response("GET").await.map(|a| a.text());
    assert_eq!(first.as_deref(), Some("GET /h1 0 bytes"));
    // The second may be answered or not; then the connection closes.
    if let Some(second) = app.try_response("GET").await {
        assert_eq!(second.text(), "GET /h2 0 bytes");
    }
    app.assert_closed().await;
    assert_eq!(upstream.got()[0].path, "/h1");
}

#[tokio::test]
async fn an_http2_preface_after_http1_requests_is_not_taken_as_http2() {
    let (upstream, attache, addr) = setup().await;
    let mut app = App::connect(addr).await;
    app.write(get("/first").as_bytes()).await;
    assert_eq!(app.response("GET").await.text(), "GET /first 0 bytes");
    // HTTP/2 with prior knowledge starts a connection; here it is a
    // malformed HTTP/1.1 request: an HTTP/1.1 refusal (no HTTP/2 SETTINGS
    // frame, which the parser would reject), then the close.
    app.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    if let Some(answer) = app.try_response("GET").await {
        assert!(answer.status >= 400, "status {}", answer.status);
    }
    app.assert_closed().await;
    assert_eq!(upstream.got().len(), 1);
    assert_eq!(handovers(&attache), 1);
    assert_still_serving(addr).await;
}

#[tokio::test]
async fn a_fast_upstream_body_waits_for_a_slow_app() {
    use std::io::{Read as _, Write as _};
    use std::sync::atomic::{AtomicU64, Ordering};
    // An upstream that writes 1 GiB as fast as its socket takes it.
    const LENGTH: u64 = 1 << 30;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = listener.local_addr().unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let count = written.clone();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {LENGTH}\r\n\r\n");
        if stream.write_all(answer.as_bytes()).is_err() {
            return;
        }
        let block = vec![b'z'; 16 * 1024];
        while count.load(Ordering::SeqCst) < LENGTH {
            if stream.write_all(&block).is_err() {
                return;
            }
            count.fetch_add(block.len() as u64, Ordering::SeqCst);
        }
    });
    let (_attache, addr) = attache_for(&format!("http://{upstream}"), "").await;
    let mut app = App::connect(addr).await;
    app.write(get("/big").as_bytes()).await;
    // The app reads nothing for a while: what attache took from the
    // upstream meanwhile is what the sockets hold, not the whole body.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let taken = written.load(Ordering::SeqCst);
    assert!(
        taken < 64 << 20,
        "attache took {} MiB of a body the app did not read",
        taken >> 20
    );
}

#[tokio::test]
async fn a_shutdown_closes_a_connection_with_half_a_head() {
    let (_upstream, running, addr) = setup().await;
    // One request answered, then the start of another that never ends.
    let mut app = App::connect(addr).await;
    app.write(get("/before").as_bytes()).await;
    assert_eq!(app.response("GET").await.text(), "GET /before 0 bytes");
    app.write(b"GET /never HTTP/1.1\r\nHost: loc").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stopping = tokio::spawn(running.shutdown());
    // Nothing is in flight: the connection closes (as hyper's server
    // closes one between requests), and the shutdown completes.
    app.assert_closed().await;
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("shutdown finished")
        .unwrap();
}

#[tokio::test]
async fn a_shutdown_ends_the_lingering_after_an_unread_upload() {
    let (_upstream, running, addr) = setup_v1_only().await;
    let mut app = App::connect(addr).await;
    app.write(b"POST /v2/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000000\r\n\r\n")
        .await;
    app.write(&[b'u'; 100_000]).await;
    assert_eq!(app.response("POST").await.status, 404);
    // The response is whole: attache is done writing.
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, app.stream.read_to_end(&mut rest))
        .await
        .expect("the end of the response stream")
        .unwrap();
    // Still sending, a little at a time: attache reads and drops it
    // (lingering) until the shutdown, which does not wait for the upload's
    // end; then the app's writes fail.
    let trickle = tokio::spawn(async move {
        while app.stream.write_all(&[b'u'; 1000]).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!trickle.is_finished(), "attache stopped reading the upload");
    running.shutdown().await;
    tokio::time::timeout(WAIT, trickle)
        .await
        .expect("attache closed at the shutdown")
        .unwrap();
}

#[tokio::test]
async fn an_app_that_hangs_up_after_its_upload_cancels_the_request() {
    // An upstream that reads everything and never answers.
    let upstream = RawUpstream::start(b"").await;
    let (_attache, addr) = attache_for(&upstream.url(), "").await;
    let mut app = App::connect(addr).await;
    // Streamed (over 64 KiB): the body holds the socket while it is read,
    // and gives it back once whole, before any answer.
    let length = 200_000;
    let head =
        format!("POST /slow HTTP/1.1\r\nHost: localhost\r\nContent-Length: {length}\r\n\r\n");
    app.write(head.as_bytes()).await;
    app.write(&vec![b'x'; length]).await;
    for _ in 0..100 {
        if !upstream.heads.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(app);
    // The hang-up is seen once the body gave the socket back: the request
    // is cancelled and its upstream connection closed, long before the
    // listener's timeout.
    for _ in 0..100 {
        if upstream.closed() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(upstream.closed(), 1, "the request outlived its app");
}

#[tokio::test]
async fn an_app_that_hangs_up_mid_body_never_completes_an_http2_upload() {
    use http_body_util::BodyExt;
    use support::http::{handler, text, TestUpstream};
    // What the upstream's handler made of each body: its length, or the
    // error that ended it.
    let bodies = Arc::new(std::sync::Mutex::new(Vec::<Result<usize, String>>::new()));
    let record = bodies.clone();
    let pki = support::tls::TestPki::generate();
    let upstream = TestUpstream::tls(
        &pki,
        &[b"h2"],
        handler(move |request| {
            let record = record.clone();
            async move {
                let body = request.into_body().collect().await;
                let outcome = body.map(|b| b.to_bytes().len()).map_err(|e| e.to_string());
                record.lock().unwrap().push(outcome);
                text(200, "read")
            }
        }),
    )
    .await;
    let (_attache, addr) = attache_for_tls(&pki, &upstream).await;
    // Streamed (large) and read whole (small), each cut at half.
    for length in [200_000, 100] {
        let mut app = App::connect(addr).await;
        let head =
            format!("POST /cut HTTP/1.1\r\nHost: localhost\r\nContent-Length: {length}\r\n\r\n");
        app.write(head.as_bytes()).await;
        app.write(&vec![b'x'; length / 2]).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(app);
    }
    for _ in 0..250 {
        if !bodies.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Time for a wrongly completed small body to arrive too.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = bodies.lock().unwrap().clone();
    // The streamed one reached the upstream, and ended there in an error
    // (a reset stream); the small one was still being read whole.
    assert!(
        matches!(seen.as_slice(), [Err(_)]),
        "a cut body reached the HTTP/2 upstream as a whole one: {seen:?}"
    );
    // The shared HTTP/2 connection still serves.
    let mut app = App::connect(addr).await;
    app.write(b"POST /ok HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc")
        .await;
    assert_eq!(app.response("POST").await.status, 200);
    assert_eq!(bodies.lock().unwrap().last(), Some(&Ok(3)));
}
