//! Found in a review of the HTTP ambassador: each test fails without its
//! fix.

mod support;
#[allow(dead_code)]
mod token_endpoint;

use std::time::{Duration, Instant};

use hyper::Request;
use support::http::{attache_for, echo_path, empty, handler, send, text, TestUpstream};
use support::wire::*;
use token_endpoint::{Mode, TokenEndpoint};
/// An app whose chunked upload breaks its own framing gets attache's 400
/// `bad-request` (README: "an unreadable body"), not a 502 blaming the
/// upstream for closing the connection.
#[tokio::test]
async fn a_malformed_chunked_upload_is_the_apps_400_not_an_upstream_reset() {
    let (_upstream, _running, addr) = setup().await;
    let mut app = App::connect(addr).await;
    app.write(
        b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\nzz\r\nnot a chunk\r\n0\r\n\r\n",
    )
    .await;
    let answer = app.response("POST").await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert_eq!(answer.header("x-attache-error"), Some("bad-request"));
    assert!(answer.text().contains("request body"), "{}", answer.text());
    assert_still_serving(addr).await;
}

/// A 401 forces a token refresh; when the token endpoint then hangs, the
/// app gets a 503 `no-token` naming the source within `timeout`, not a
/// 504 saying the upstream (which answered at once) did not respond.
#[tokio::test]
async fn a_401_whose_refresh_hangs_is_a_503_naming_the_token_source() {
    let endpoint = TokenEndpoint::start(3600).await;
    let upstream = TestUpstream::plain(handler(|_| async { text(401, "revoked") })).await;
    std::env::set_var("ATTACHE_REVIEW_CLIENT_SECRET", "client-secret");
    let running = support::start_attache(&format!(
        r#"
[http.api]
listen = "127.0.0.1:0"
upstream = "http://{}"
token = "api"
timeout = "1s"

[tokens.api]
provider = "oauth2_client_credentials"
token_url = "{}"
client_id = "attache"
client_secret_env = "ATTACHE_REVIEW_CLIENT_SECRET"
"#,
        upstream.addr,
        endpoint.url("/token")
    ))
    .await;
    let addr = running.http_addr("api").unwrap();
    while endpoint.seen().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Past the 1 s in which a forced refresh reuses the last token.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    endpoint.set_mode(Mode::Slow(Duration::from_secs(10))).await;

    let started = Instant::now();
    let (status, headers, body) = send(addr, Request::get("/x").body(empty()).unwrap()).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(headers["x-attache-error"], "no-token");
    assert!(body.contains("no token from source \"api\""), "{body}");
    assert!(body.contains("401"), "{body}");
    assert_eq!(upstream.seen().len(), 1);
}

/// An app that declares a small body and sends only part of it gets a
/// 408 naming its body within `timeout`, not a 504 saying the upstream
/// (never contacted) did not respond.
#[tokio::test]
async fn a_small_body_that_never_arrives_is_a_408_not_an_upstream_timeout() {
    let upstream = Upstream::start().await;
    let (_running, addr) = attache_for(&upstream.url(), "timeout = \"500ms\"").await;
    let mut app = App::connect(addr).await;
    app.write(b"POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nabc")
        .await;
    let started = Instant::now();
    let answer = app.response("POST").await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(answer.status, 408, "{}", answer.text());
    assert_eq!(answer.header("x-attache-error"), Some("request-timeout"));
    assert!(answer.text().contains("request body"), "{}", answer.text());
    assert_eq!(upstream.heads(), 0);
}

/// RFC 9113 §8.2.3: cookies an HTTP/2 app sends as several fields are
/// joined with `; ` before going on over HTTP/1.1, where a server reads
/// one `Cookie` line.
#[tokio::test]
async fn an_http2_apps_split_cookies_reach_an_http1_upstream_as_one_field() {
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
    let request = Request::get(format!("http://{addr}/c"))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(empty())
        .unwrap();
    let (status, _, _) = support::http::read(sender.send_request(request).await.unwrap()).await;
    assert_eq!(status, 200);
    let seen = upstream.seen();
    let cookies: Vec<_> = seen[0].headers.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=1; b=2"]);
}

/// Routes to one origin share a pool; an error names the upstream of the
/// route the request took, not the base URL of whichever route made the
/// pool (here the catch-all's request was said to go to `…/base`).
#[tokio::test]
async fn an_error_names_the_routes_own_upstream_not_a_sibling_routes() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let origin = format!("http://127.0.0.1:{port}");
    let (_attache, addr) = attache_for(
        &origin,
        &format!(
            "connect_timeout = \"500ms\"\nretries = 0\n\
             [[http.api.routes]]\nprefix = \"/a\"\nupstream = \"{origin}/base\"\n"
        ),
    )
    .await;
    let (status, _, body) = send(addr, Request::get("/x").body(empty()).unwrap()).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains(&format!("upstream {origin}:")),
        "the catch-all's request: {body}"
    );
    let (status, _, body) = send(addr, Request::get("/a/x").body(empty()).unwrap()).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains(&format!("upstream {origin}/base:")), "{body}");
}
