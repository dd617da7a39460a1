//! What an app that writes raw HTTP/1.x bytes to an `[http.NAME]`
//! listener sees on the wire for well-formed traffic, and which requests
//! reach the upstream: keep-alive, pipelining (also written a byte at a
//! time), `Connection: close`, HTTP/1.0 (with and without keep-alive),
//! request bodies (Content-Length, chunked with extensions and trailers,
//! `Expect: 100-continue`), responses without a body (HEAD, 204, 304), a
//! response of unknown length and its trailers, and the `date` header.
//! Malformed input, hang-ups and shutdown are `tests/http_app_edges.rs`.
//! This is the contract for whatever serves the app side (it was written
//! against hyper's server); responses are parsed with httparse
//! (`support::wire`), never with hyper.

mod support;

use std::time::Duration;

use support::http::attache_for;
use support::wire::*;

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let (upstream, attache, addr) = setup().await;
    let mut app = App::connect(addr).await;
    for i in 0..3 {
        app.write(get(&format!("/k{i}")).as_bytes()).await;
        let answer = app.response("GET").await;
        assert_eq!((answer.status, answer.minor), (200, 1));
        let body = format!("GET /k{i} 0 bytes");
        assert_eq!(answer.text(), body);
        // The upstream's length is the length on the wire.
        assert_eq!(answer.framing, Framing::Length(body.len()));
        assert_ne!(answer.header("connection"), Some("close"));
        app.assert_quiet().await;
    }
    let paths: Vec<_> = upstream.got().into_iter().map(|g| g.path).collect();
    assert_eq!(paths, ["/k0", "/k1", "/k2"]);
    // Served by attache's own path, not handed to hyper's server.
    assert_eq!(handovers(&attache), 0);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (upstream, _attache, addr) = setup().await;
    let mut app = App::connect(addr).await;
    // Three requests, one with a body, in one write.
    let mut burst = get("/p1");
    burst.push_str("POST /p2 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello");
    burst.push_str(&get("/p3"));
    app.write(burst.as_bytes()).await;
    for (method, body) in [
        ("GET", "GET /p1 0 bytes"),
        ("POST", "POST /p2 5 bytes"),
        ("GET", "GET /p3 0 bytes"),
    ] {
        let answer = app.response(method).await;
        assert_eq!((answer.status, answer.text().as_str()), (200, body));
    }
    app.assert_quiet().await;
    let got = upstream.got();
    let paths: Vec<_> = got.iter().map(|g| g.path.as_str()).collect();
    assert_eq!(paths, ["/p1", "/p2", "/p3"]);
    assert_eq!(got[1].body, b"hello");
}

#[tokio::test]
async fn connection_close_from_the_app_is_answered_then_closed() {
    let (upstream, _attache, addr) = setup().await;
    let mut app = App::connect(addr).await;
    app.write(b"GET /last HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await;
    let answer = app.response("GET").await;
    assert_eq!(
        (answer.status, answer.text().as_str()),
        (200, "GET /last 0 bytes")
    );
    app.assert_closed().await;

    // A request pipelined after the one that asked to close is never read.
    let mut app = App::connect(addr).await;
    let mut burst =
        String::from("GET /first HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    burst.push_str(&get("/after-close"));
    app.write(burst.as_bytes()).await;
    assert_eq!(app.response("GET").await.text(), "GET /first 0 bytes");
    app.assert_closed().await;
    let paths: Vec<_> = upstream.got().into_iter().map(|g| g.path).collect();
    assert_eq!(paths, ["/last", "/first"]);
}

#[tokio::test]
async fn http_1_0_is_answered_without_chunks_then_closed() {
    let (upstream, attache, addr) = setup().await;
    let mut app = App::connect(addr).await;
    app.write(b"GET /old HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await;
    let answer = app.response("GET").await;
    assert_eq!(
        (answer.status, answer.text().as_str()),
        (200, "GET /old 0 bytes")
    );
    assert_eq!(answer.framing, Framing::Length(16));
    app.assert_closed().await;

    // A body of unknown length: delimited by the close, never chunked.
    let mut app = App::connect(addr).await;
    app.write(b"GET /stream HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await;
    let answer = app.response("GET").await;
    assert_eq!(
        (answer.status, answer.text().as_str()),
        (200, "one,two,three")
    );
    assert_eq!(answer.framing, Framing::Close);
    assert_eq!(upstream.got().len(), 2);
    // HTTP/1.0 is hyper's to serve.
    assert_eq!(handovers(&attache), 2);
}

#[tokio::test]
async fn http_1_0_keep_alive_holds_while_bodies_have_a_length() {
    let (upstream, _attache, addr) = setup().await;
    let mut app = App::connect(addr).await;
    let request = |path: &str| {
        format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n")
    };
    for path in ["/ka1", "/ka2"] {
        app.write(request(path).as_bytes()).await;
        let answer = app.response("GET").await;
        assert_eq!(answer.text(), format!("GET {path} 0 bytes"));
        assert!(matches!(answer.framing, Framing::Length(_)));
        // An HTTP/1.0 client keeps the connection only if told so.
        let connection = answer.header("connection").unwrap_or_default();
        assert!(connection.eq_ignore_ascii_case("keep-alive"), "{answer:?}");
        app.assert_quiet().await;
    }
    // No length and no chunks in HTTP/1.0: the close ends the body.
    app.write(request("/stream").as_bytes()).await;
    let answer = app.response("GET").await;
    assert_eq!(
        (answer.framing, answer.text().as_str()),
        (Framing::Close, "one,two,three")
    );
    assert_eq!(upstream.got().len(), 3);
}

#[tokio::test]
async fn a_content_length_body_reaches_the_upstream_exactly() {
    let (upstream, _attache, addr) = setup().await;
    let mut app = App::connect(addr).await;
    // 10 kB and 200 kB (attache reads a small body whole before it
    // forwards, and streams a large one): each in two writes.
    let small = "0123456789".repeat(1000);
    let large = "abcdefghij".repeat(20_000);
    for body in [&small, &large] {
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        app.write(head.as_bytes()).await;
        app.write(&body.as_bytes()[..4000]).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        app.write(&body.as_bytes()[4000..]).await;
        let answer = app.response("POST").await;
        let expected = format!("POST /upload {} bytes", body.len());
        assert_eq!((answer.status, answer.text()), (200, expected));
    }
    // The connection serves the next request.
    app.write(get("/next").as_bytes()).await;
    assert_eq!(app.response("GET").await.text(), "GET /next 0 bytes");
    let got = upstream.got();
    assert_eq!(got[0].body, small.as_bytes());
    assert_eq!(got[0].headers["content-length"], "10000");
    assert_eq!(got[1].body, large.as_bytes());
    assert_eq!(got[2].path, "/next");
}

#[tokio::test]
async fn a_chunked_body_reaches_the_upstream_whole() {
    let (upstream, _attache, addr) = setup().await;
    let mut app = App::connect(addr).await;
    // Several chunks, one with an extension, in separate writes.
    app.write(b"POST /chunks HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await;
    for piece in [
        &b"5\r\nhello\r\n"[..],
        b"1;ext=1\r\n,\r\n",
        b"6\r\n world\r\n0\r\n\r\n",
    ] {
        app.write(piece).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(app.response("POST").await.text(), "POST /chunks 12 bytes");

    // With a trailer (named in `Trailer`), on the same connection.
    app.write(
        b"POST /trailed HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\
          Trailer: x-sum\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\nx-sum: 42\r\n\r\n",
    )
    .await;
    assert_eq!(app.response("POST").await.text(), "POST /trailed 6 bytes");
    app.write(get("/after").as_bytes()).await;
    assert_eq!(app.response("GET").await.text(), "GET /after 0 bytes");

    let got = upstream.got();
    assert_eq!(got[0].body, b"hello, world");
    assert_eq!(got[1].body, b"abcdef");
    let trailers = got[1].trailers.as_ref().expect("the trailer went up");
    assert_eq!(trailers["x-sum"], "42");
    assert_eq!(got[2].path, "/after");
}

#[tokio::test]
async fn expect_100_continue_gets_an_interim_response_before_the_body() {
    let (upstream, _attache, addr) = setup().await;
    let mut app = App::connect(addr).await;
    // A small body and a large one (read whole, or streamed, by attache).
    let large = vec![b'y'; 100_000];
    for body in [&b"payload"[..], &large] {
        let head = format!(
            "POST /expect HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\
             Expect: 100-continue\r\n\r\n",
            body.len()
        );
        app.write(head.as_bytes()).await;
        // Nothing of the body is sent until the 100 came.
        let (status, minor, _) = app.head().await;
        assert_eq!((status, minor), (100, 1));
        app.write(body).await;
        let answer = app.response("POST").await;
        let expected = format!("POST /expect {} bytes", body.len());
        assert_eq!((answer.status, answer.text()), (200, expected));
    }
    app.write(get("/next").as_bytes()).await;
    assert_eq!(app.response("GET").await.text(), "GET /next 0 bytes");
    let got = upstream.got();
    assert_eq!(got[0].body, b"payload");
    assert_eq!(got[1].body, large);
}

#[tokio::test]
async fn a_head_response_has_no_body() {
    let (upstream, _attache, addr) = setup().await;
    let mut app = App::connect(addr).await;
    app.write(b"HEAD /fixed HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let answer = app.response("HEAD").await;
    assert_eq!(answer.status, 200);
    // The length a GET would have.
    assert_eq!(answer.header("content-length"), Some("10"));
    // The GET right after parses: no body bytes came with the HEAD.
    app.write(get("/fixed").as_bytes()).await;
    assert_eq!(app.response("GET").await.text(), "fixed body");
    app.assert_quiet().await;
    assert_eq!(upstream.got()[0].method, "HEAD");
}

#[tokio::test]
async fn responses_204_and_304_have_no_body_and_keep_the_connection() {
    let (_upstream, _attache, addr) = setup().await;
    let mut app = App::connect(addr).await;
    for code in [204, 304] {
        app.write(get(&format!("/{code}")).as_bytes()).await;
        let answer = app.response("GET").await;
        assert_eq!(answer.status, code);
        assert!(answer.header("transfer-encoding").is_none(), "{answer:?}");
        if code == 204 {
            assert!(answer.header("content-length").is_none(), "{answer:?}");
        } else {
            assert_eq!(answer.header("etag"), Some("\"v1\""));
        }
        // No body bytes followed: the next response parses.
        app.write(get("/fixed").as_bytes()).await;
        assert_eq!(app.response("GET").await.text(), "fixed body");
    }
    app.assert_quiet().await;
}

#[tokio::test]
async fn a_response_of_unknown_length_arrives_whole() {
    let (_upstream, _attache, addr) = setup().await;
    let mut app = App::connect(addr).await;
    app.write(get("/stream").as_bytes()).await;
    let answer = app.response("GET").await;
    assert_eq!(
        (answer.status, answer.text().as_str()),
        (200, "one,two,three")
    );
    match answer.framing {
        // Chunked (what attache does today): the connection goes on.
        Framing::Chunked => {
            app.write(get("/fixed").as_bytes()).await;
            assert_eq!(app.response("GET").await.text(), "fixed body");
        }
        // Delimited by the close: nothing more.
        Framing::Close => app.assert_closed().await,
        other => panic!("framing {other:?}"),
    }
}

#[tokio::test]
async fn responses_carry_one_date_header() {
    // The upstream's own Date passes unchanged.
    let (_upstream, _attache, addr) = setup().await;
    let mut app = App::connect(addr).await;
    app.write(get("/dated").as_bytes()).await;
    let answer = app.response("GET").await;
    assert_eq!(answer.text(), "dated");
    assert_eq!(answer.all("date"), [FIXED_DATE]);

    // An upstream without one: attache adds one.
    let (_attache, addr) = attache_for(&format!("http://{}", undated_upstream().await), "").await;
    let mut app = App::connect(addr).await;
    app.write(get("/").as_bytes()).await;
    let answer = app.response("GET").await;
    assert_eq!(answer.text(), "ok");
    let dates = answer.all("date");
    assert!(dates.len() == 1 && is_http_date(dates[0]), "{answer:?}");

    // attache's own answers (here a 502: nothing listens upstream), and its
    // refusals of a malformed request, have one too.
    let nobody = support::refusing_port();
    let (_attache, addr) = attache_for(&format!("http://127.0.0.1:{}", nobody.port), "").await;
    let mut app = App::connect(addr).await;
    app.write(get("/").as_bytes()).await;
    let answer = app.response("GET").await;
    assert_eq!(answer.status, 502);
    let dates = answer.all("date");
    assert!(dates.len() == 1 && is_http_date(dates[0]), "{answer:?}");
    let answer = refused(addr, b"GET / HTTP/1.1\r\nbad header\r\n\r\n")
        .await
        .unwrap();
    let dates = answer.all("date");
    assert!(dates.len() == 1 && is_http_date(dates[0]), "{answer:?}");
}

#[tokio::test]
async fn pipelined_requests_written_byte_by_byte_are_each_answered() {
    let (upstream, attache, addr) = setup().await;
    let mut app = App::connect(addr).await;
    let mut burst = get("/b1").into_bytes();
    burst.extend_from_slice(
        b"POST /b2 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 11\r\n\r\nhello world",
    );
    burst.extend_from_slice(
        b"POST /b3 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
          4\r\nabcd\r\n3;x=y\r\nefg\r\n0\r\nx-sum: 7\r\n\r\n",
    );
    burst.extend_from_slice(get("/b4").as_bytes());
    trickle(&mut app, &burst).await;
    for (method, body) in [
        ("GET", "GET /b1 0 bytes"),
        ("POST", "POST /b2 11 bytes"),
        ("POST", "POST /b3 7 bytes"),
        ("GET", "GET /b4 0 bytes"),
    ] {
        let answer = app.response(method).await;
        assert_eq!((answer.status, answer.text().as_str()), (200, body));
        assert_ne!(answer.header("connection"), Some("close"));
    }
    app.assert_quiet().await;
    let got = upstream.got();
    let paths: Vec<_> = got.iter().map(|g| g.path.as_str()).collect();
    assert_eq!(paths, ["/b1", "/b2", "/b3", "/b4"]);
    assert!(got[0].body.is_empty() && got[3].body.is_empty());
    assert_eq!(got[1].body, b"hello world");
    assert_eq!(got[2].body, b"abcdefg");
    let trailers = got[2].trailers.as_ref().expect("the trailer went up");
    assert_eq!(trailers["x-sum"], "7");
    assert_eq!(handovers(&attache), 0);
}

#[tokio::test]
async fn a_streamed_upload_then_a_pipelined_get_in_one_write_are_both_answered() {
    let (upstream, _attache, addr) = setup().await;
    let mut app = App::connect(addr).await;
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut burst = format!(
        "POST /up HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    burst.extend_from_slice(&body);
    burst.extend_from_slice(get("/after-upload").as_bytes());
    app.write(&burst).await;
    let answer = app.response("POST").await;
    assert_eq!(
        (answer.status, answer.text()),
        (200, format!("POST /up {} bytes", body.len()))
    );
    let answer = app.response("GET").await;
    assert_eq!(
        (answer.status, answer.text().as_str()),
        (200, "GET /after-upload 0 bytes")
    );
    app.assert_quiet().await;
    let got = upstream.got();
    assert_eq!(got.len(), 2);
    assert!(
        got[0].body == body,
        "the upload reached the upstream altered"
    );
    assert_eq!(got[1].path, "/after-upload");
}

/// A body of unknown length (chunked), with a trailer.
const TRAILED: &[u8] =
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n\
    5\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: 42\r\n\r\n";
#[tokio::test]
async fn trailers_of_a_body_of_unknown_length_reach_only_an_app_that_accepts_them() {
    let upstream = RawUpstream::start(TRAILED).await;
    let (_attache, addr) = attache_for(&upstream.url(), "").await;
    let mut app = App::connect(addr).await;
    // With `TE: trailers`: after the last chunk.
    app.write(b"GET /t HTTP/1.1\r\nHost: localhost\r\nTE: trailers\r\n\r\n")
        .await;
    let answer = app.response("GET").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.framing, Framing::Chunked);
    assert_eq!(answer.text(), "hello world");
    assert_eq!(
        answer.trailers,
        [("x-checksum".to_owned(), "42".to_owned())]
    );
    // Without: the same body, no trailers, and the connection goes on.
    app.write(get("/t").as_bytes()).await;
    let answer = app.response("GET").await;
    assert_eq!(answer.framing, Framing::Chunked);
    assert_eq!(answer.text(), "hello world");
    assert!(answer.trailers.is_empty(), "{answer:?}");
    app.assert_quiet().await;
    let heads = upstream.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2);
    assert!(
        heads[0].to_ascii_lowercase().contains("te: trailers"),
        "{heads:?}"
    );
    assert!(!heads[1].to_ascii_lowercase().contains("te:"), "{heads:?}");
}
