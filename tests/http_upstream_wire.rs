//! attache's own HTTP/1.1 client against an upstream that writes its
//! answers byte by byte: chunked and close-delimited bodies, interim
//! responses, `Connection: close`, an answer that comes before the
//! request's body was read, a broken head, a body cut short, and a chunked
//! upload with trailers. Which connections get reused is checked by
//! counting accepts.

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::Request;
use support::http::{attache_for, AppClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted upstream does with a request for `path`: the bytes it
/// writes, and whether it then closes the connection.
fn script(path: &str) -> (&'static [u8], bool) {
    match path {
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-kind: chunked\r\n\
              trailer: x-trailer\r\n\r\n\
              5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: t\r\n\r\n",
            false,
        ),
        "/until-close" => (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the close",
            true,
        ),
        "/interim" => (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            false,
        ),
        "/last" => (
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 4\r\n\r\nlast",
            false,
        ),
        "/garbage" => (b"HTTP/1.1 abc\r\n\r\n", true),
        "/short" => (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", true),
        _ => (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false),
    }
}

/// The scripted upstream: connections accepted, and every request in full.
struct WireUpstream {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl WireUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (accepted.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, seen.clone()));
            }
        });
        Self {
            addr,
            accepted,
            requests,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Reads requests (head, then a body by its length or to the last chunk)
/// and answers each by [`script`]. `/early` is answered with a 413 right
/// after its head, its body left unread.
async fn serve(mut stream: TcpStream, seen: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !read_more(&mut stream, &mut buf).await {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
        if path == "/early" {
            seen.lock().unwrap().push(head);
            let answer = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n";
            let _ = stream.write_all(answer).await;
            // Reads nothing more, and holds the connection a while.
            tokio::time::sleep(Duration::from_secs(3)).await;
            return;
        }
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map(|n| n.trim().parse::<usize>().unwrap());
        let end = if let Some(n) = length {
            while buf.len() < head_end + n {
                if !read_more(&mut stream, &mut buf).await {
                    return;
                }
            }
            head_end + n
        } else if head.contains("transfer-encoding: chunked") {
            // The last chunk, then trailer fields up to an empty line.
            loop {
                let last = find(&buf[head_end..], b"\r\n0\r\n").map(|i| head_end + i + 3);
                if let Some(end) =
                    last.and_then(|l| find(&buf[l..], b"\r\n\r\n").map(|j| l + j + 4))
                {
                    break end;
                }
                if !read_more(&mut stream, &mut buf).await {
                    return;
                }
            }
        } else {
            head_end
        };
        seen.lock()
            .unwrap()
            .push(String::from_utf8_lossy(&buf[..end]).into_owned());
        buf.drain(..end);
        let (answer, close) = script(&path);
        if stream.write_all(answer).await.is_err() || close {
            return;
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn bodies_of_every_framing_pass_and_only_reusable_connections_are_reused() {
    let upstream = WireUpstream::start().await;
    let (_attache, addr) = attache_for(&format!("http://{}", upstream.addr), "").await;
    let mut app = AppClient::connect(addr).await;

    // Chunked (with an extension and a trailer) and an interim 100 before
    // a response: one connection, kept.
    for _ in 0..2 {
        // An app that accepts trailers gets the ones `Trailer` names.
        let request = Request::get("/chunked")
            .header("te", "trailers")
            .body(support::http::empty())
            .unwrap();
        let response = app.send(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-kind"], "chunked");
        assert!(
            response.headers().get("x-trailer").is_none(),
            "trailers are not headers"
        );
        let collected = response.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-trailer"], "t");
        assert_eq!(&collected.to_bytes()[..], b"hello world");
    }
    assert_eq!(app.get("/interim").await.2, "ok");
    assert_eq!(upstream.accepted(), 1);

    // A body delimited by the close: complete for the app, and the
    // connection is not pooled.
    let (status, _, body) = app.get("/until-close").await;
    assert_eq!((status, body.as_str()), (200, "until the close"));
    assert_eq!(app.get("/").await.2, "ok");
    assert_eq!(upstream.accepted(), 2, "a new connection after the close");

    // `Connection: close` from the upstream: not reused either.
    assert_eq!(app.get("/last").await.2, "last");
    assert_eq!(app.get("/").await.2, "ok");
    assert_eq!(app.get("/").await.2, "ok");
    assert_eq!(upstream.accepted(), 3);
    // attache's own framing went up, never `Connection` options.
    for request in upstream.requests.lock().unwrap().iter() {
        let request = request.to_lowercase();
        assert!(
            request.contains(&format!("host: {}", upstream.addr)),
            "{request}"
        );
        assert!(!request.contains("connection:"), "{request}");
    }
}

#[tokio::test]
async fn a_broken_head_is_a_502_and_a_body_cut_short_fails_the_app_response() {
    let upstream = WireUpstream::start().await;
    let (_attache, addr) = attache_for(&format!("http://{}", upstream.addr), "").await;
    let mut app = AppClient::connect(addr).await;
    let (status, headers, body) = app.get("/garbage").await;
    assert_eq!(status, 502);
    assert!(headers.contains_key("x-attache-error"));
    assert!(body.contains("invalid response head"), "{body}");

    let mut app = AppClient::connect(addr).await;
    let request = Request::get("/short").body(support::http::empty()).unwrap();
    // The head may reach the app before the cut or not; either way the
    // app must see a failure, never 3 bytes of 10 as a whole body.
    let complete = match app.send(request).await {
        Ok(response) => response.into_body().collect().await.is_ok(),
        Err(_) => false,
    };
    assert!(!complete, "a body cut short looked whole");
    // The next request is served as usual.
    let mut app = AppClient::connect(addr).await;
    assert_eq!(app.get("/").await.2, "ok");
}

#[tokio::test]
async fn a_body_of_unknown_length_goes_up_chunked_with_its_trailers() {
    let upstream = WireUpstream::start().await;
    let (_attache, addr) = attache_for(&format!("http://{}", upstream.addr), "").await;
    let mut app = AppClient::connect(addr).await;
    // Three pieces, no Content-Length: the app's client sends it chunked,
    // and so does attache, each piece as it comes.
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("x-checksum", "42".parse().unwrap());
    let pieces = ["first;", "second;", "third"]
        .map(|p| Frame::data(Bytes::from_static(p.as_bytes())))
        .into_iter()
        .chain([Frame::trailers(trailers)])
        .map(Ok::<_, Infallible>);
    let body = StreamBody::new(futures::stream::iter(pieces))
        .map_err(|never| match never {})
        .boxed();
    // hyper's client sends only the trailers the `Trailer` header names.
    let request = Request::post("/upload")
        .header("trailer", "x-checksum")
        .body(body)
        .unwrap();
    let response = app.send(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let requests = upstream.requests.lock().unwrap().clone();
    let upload = requests
        .iter()
        .find(|r| r.starts_with("POST /upload "))
        .unwrap();
    let (head, body) = upload.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let (chunks, trailer) = body.split_once("\r\n0\r\n").unwrap();
    let data: String = chunks.split("\r\n").skip(1).step_by(2).collect();
    assert_eq!(data, "first;second;third");
    assert_eq!(
        trailer, "x-checksum: 42\r\n\r\n",
        "the app's trailers go up"
    );
}

#[tokio::test]
async fn an_answer_before_the_upload_was_read_reaches_the_app_and_its_connection_is_dropped() {
    let upstream = WireUpstream::start().await;
    let (_attache, addr) = attache_for(&format!("http://{}", upstream.addr), "").await;
    let mut app = AppClient::connect(addr).await;
    // 8 MiB: far more than the socket buffers hold, so attache is still
    // writing when the 413 arrives.
    let big = Request::post("/early")
        .body(support::http::full(vec![b'x'; 8 << 20]))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), app.send(big))
        .await
        .expect("the early answer must not wait for the upload");
    assert_eq!(response.unwrap().status(), 413);
    let mut app = AppClient::connect(addr).await;
    assert_eq!(app.get("/").await.2, "ok");
    assert_eq!(
        upstream.accepted(),
        2,
        "the connection with a half-sent body is not reused"
    );
}
