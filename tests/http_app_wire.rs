//! What an app that writes raw HTTP/1.x bytes to an `[http.NAME]`
//! listener sees on the wire, and which requests reach the upstream:
//! keep-alive, pipelining, `Connection: close`, HTTP/1.0 (with and
//! without keep-alive), request bodies (Content-Length, chunked with
//! extensions and trailers, `Expect: 100-continue`), responses without a
//! body (HEAD, 204, 304), a response of unknown length, the `date` header,
//! an app that hangs up mid-body, and malformed heads and framing: each
//! refused with the status pinned here and never forwarded (Content-Length
//! with chunked is read as chunked, and the connection closed after it),
//! the listener still up. This is the contract for whatever serves the
//! app side; responses are parsed with httparse, never with hyper.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{HeaderMap, Response};
use support::http::{attache_for, empty, full, handler, text, TestUpstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long any one read may wait: a server that hangs fails the test.
const WAIT: Duration = Duration::from_secs(5);

/// How a response's body was delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body by the rules (HEAD, 1xx, 204, 304).
    None,
    Length(usize),
    Chunked,
    /// Read until the server closed.
    Close,
}

/// One response as the app read it.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// `1` for `HTTP/1.1`, `0` for `HTTP/1.0`.
    minor: u8,
    /// Names lowercased, in wire order.
    headers: Vec<(String, String)>,
    framing: Framing,
    body: Vec<u8>,
    trailers: Vec<(String, String)>,
}

impl Answer {
    /// Every value of `name`.
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.all(name).first().copied()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An app's raw TCP connection to attache.
struct App {
    stream: TcpStream,
    /// Read and not yet parsed.
    buf: Vec<u8>,
}

impl App {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("write to attache");
    }

    /// Reads more into `buf`; 0 at the end of the stream (a reset counts
    /// as an end). Panics after [`WAIT`].
    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 64 * 1024];
        match tokio::time::timeout(WAIT, self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                n
            }
            Ok(Err(_)) => 0,
            Err(_) => panic!(
                "attache sent nothing for {WAIT:?}; unparsed: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// The next response head: status, minor version, headers. `None` if
    /// the connection closed before a single byte of it.
    async fn try_head(&mut self) -> Option<(u16, u8, Vec<(String, String)>)> {
        loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut fields);
            match response.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let head = (
                        response.code.unwrap(),
                        response.version.unwrap(),
                        response
                            .headers
                            .iter()
                            .map(|h| {
                                let value = String::from_utf8_lossy(h.value).into_owned();
                                (h.name.to_ascii_lowercase(), value)
                            })
                            .collect(),
                    );
                    self.buf.drain(..len);
                    return Some(head);
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => panic!(
                    "not an HTTP/1.x response head ({e}): {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
            if self.fill().await == 0 {
                assert!(
                    self.buf.is_empty(),
                    "closed in the middle of a response head: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                return None;
            }
        }
    }

    async fn head(&mut self) -> (u16, u8, Vec<(String, String)>) {
        self.try_head()
            .await
            .expect("a response, not the connection closed")
    }

    /// The next response to a `method` request, its body read by its
    /// framing. `None` if the connection closed before it began.
    async fn try_response(&mut self, method: &str) -> Option<Answer> {
        let (status, minor, headers) = self.try_head().await?;
        let find = |name: &str| {
            headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        };
        let chunked = find("transfer-encoding")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("chunked"));
        let lengths = find("content-length");
        let framing = if method == "HEAD" || status < 200 || status == 204 || status == 304 {
            Framing::None
        } else if chunked {
            assert!(
                lengths.is_empty(),
                "both framings in a response: {headers:?}"
            );
            Framing::Chunked
        } else if let Some(length) = lengths.first() {
            assert!(
                lengths.iter().all(|l| l == length),
                "content-lengths differ: {headers:?}"
            );
            Framing::Length(length.trim().parse().expect("a numeric content-length"))
        } else {
            Framing::Close
        };
        let mut answer = Answer {
            status,
            minor,
            headers,
            framing,
            body: Vec::new(),
            trailers: Vec::new(),
        };
        match framing {
            Framing::None => {}
            Framing::Length(n) => answer.body = self.take(n).await,
            Framing::Chunked => self.chunks(&mut answer).await,
            Framing::Close => {
                while self.fill().await > 0 {}
                answer.body = std::mem::take(&mut self.buf);
            }
        }
        Some(answer)
    }

    async fn response(&mut self, method: &str) -> Answer {
        self.try_response(method)
            .await
            .expect("a response, not the connection closed")
    }

    /// Exactly `n` bytes.
    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(
                self.fill().await > 0,
                "closed after {} of {n} body bytes",
                self.buf.len()
            );
        }
        self.buf.drain(..n).collect()
    }

    /// One line without its CRLF.
    async fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return line;
            }
            assert!(self.fill().await > 0, "closed in the middle of a chunk");
        }
    }

    /// A chunked body, then its trailer section.
    async fn chunks(&mut self, answer: &mut Answer) {
        loop {
            let line = self.line().await;
            let size = line.split(';').next().unwrap().trim();
            let size = usize::from_str_radix(size, 16).expect("a chunk size");
            if size == 0 {
                break;
            }
            let data = self.take(size).await;
            answer.body.extend_from_slice(&data);
            assert_eq!(self.take(2).await, b"\r\n", "a chunk ends with CRLF");
        }
        loop {
            let line = self.line().await;
            if line.is_empty() {
                return;
            }
            let (name, value) = line.split_once(':').expect("a trailer field");
            let field = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
            answer.trailers.push(field);
        }
    }

    /// Asserts attache closes the connection (within [`WAIT`]) without
    /// sending anything more.
    async fn assert_closed(&mut self) {
        while self.fill().await > 0 {}
        assert!(
            self.buf.is_empty(),
            "bytes after the last response: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
    }

    /// Asserts nothing more arrives for a short while, and the connection
    /// stays open.
    async fn assert_quiet(&mut self) {
        let mut chunk = [0u8; 1024];
        let read = tokio::time::timeout(Duration::from_millis(200), self.stream.read(&mut chunk));
        match read.await {
            Err(_) => assert!(self.buf.is_empty(), "unparsed: {:?}", self.buf),
            Ok(Ok(0)) => panic!("attache closed a keep-alive connection"),
            Ok(Ok(n)) => panic!(
                "unexpected bytes: {:?}",
                String::from_utf8_lossy(&chunk[..n])
            ),
            Ok(Err(e)) => panic!("connection failed: {e}"),
        }
    }
}

/// One request as the upstream read it, body and trailers included (only
/// requests whose body arrived whole are recorded).
#[derive(Debug, Clone)]
struct Got {
    method: String,
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
    trailers: Option<HeaderMap>,
}

/// A hyper upstream that reads every request's body and answers by path:
/// `/204`, `/304`, `/stream` (three pieces, no length), `/dated` (a fixed
/// `Date`), `/fixed` (`fixed body`), anything else `METHOD PATH N bytes`.
struct Upstream {
    server: TestUpstream,
    got: Arc<Mutex<Vec<Got>>>,
}

/// The `Date` `/dated` answers with.
const FIXED_DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

impl Upstream {
    async fn start() -> Self {
        let got = Arc::new(Mutex::new(Vec::new()));
        let record = got.clone();
        let server = TestUpstream::plain(handler(move |request| {
            let record = record.clone();
            async move {
                let (parts, body) = request.into_parts();
                let Ok(collected) = body.collect().await else {
                    return text(400, "body failed");
                };
                let trailers = collected.trailers().cloned();
                let body = collected.to_bytes().to_vec();
                let path = parts.uri.path().to_owned();
                let answer = format!("{} {} {} bytes", parts.method, path, body.len());
                record.lock().unwrap().push(Got {
                    method: parts.method.to_string(),
                    path: path.clone(),
                    headers: parts.headers,
                    body,
                    trailers,
                });
                match path.as_str() {
                    "/204" => status(204),
                    "/304" => Response::builder()
                        .status(304)
                        .header("etag", "\"v1\"")
                        .body(empty())
                        .unwrap(),
                    "/stream" => Response::new(stream_body(&["one,", "two,", "three"])),
                    "/dated" => Response::builder()
                        .header("date", FIXED_DATE)
                        .body(full("dated"))
                        .unwrap(),
                    "/fixed" => text(200, "fixed body"),
                    _ => text(200, &answer),
                }
            }
        }))
        .await;
        Self { server, got }
    }

    fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Requests whose head reached the upstream, bodies read or not.
    fn heads(&self) -> usize {
        self.server.seen().len()
    }
}

fn status(code: u16) -> Response<support::http::TestBody> {
    Response::builder().status(code).body(empty()).unwrap()
}

/// `pieces`, each after a short pause: a body of unknown length.
fn stream_body(pieces: &[&'static str]) -> support::http::TestBody {
    let frames = futures::stream::iter(pieces.to_vec()).then(|piece| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(piece.as_bytes())))
    });
    BodyExt::boxed(StreamBody::new(frames))
}

/// An upstream and attache in front of it.
async fn setup() -> (Upstream, attache::Running, SocketAddr) {
    let upstream = Upstream::start().await;
    let (running, addr) = attache_for(&upstream.url(), "").await;
    (upstream, running, addr)
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")
}

/// A fresh connection is served: the listener is still up.
async fn assert_still_serving(addr: SocketAddr) {
    let mut app = App::connect(addr).await;
    app.write(get("/alive").as_bytes()).await;
    let answer = app.response("GET").await;
    assert_eq!(
        (answer.status, answer.text().as_str()),
        (200, "GET /alive 0 bytes")
    );
}

/// Writes `request` on a new connection, and reads what comes back before
/// attache closes it (`None`: closed without a response).
async fn refused(addr: SocketAddr, request: &[u8]) -> Option<Answer> {
    let mut app = App::connect(addr).await;
    // attache may close before it read everything: a failed write is fine.
    let _ = tokio::time::timeout(WAIT, app.stream.write_all(request)).await;
    let answer = app.try_response("GET").await;
    app.assert_closed().await;
    answer
}

/// `Www, DD Mon YYYY HH:MM:SS GMT` (RFC 9110's IMF-fixdate), roughly.
fn is_http_date(value: &str) -> bool {
    value.len() == 29 && &value[3..5] == ", " && value.ends_with(" GMT")
}

/// An upstream that answers every request head with `ok` and no `Date`
/// (hyper always adds one); it reads no bodies.
async fn undated_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..i + 4);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let (upstream, _attache, addr) = setup().await;
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
    let (upstream, _attache, addr) = setup().await;
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
async fn expect_100_continue_refused_gets_the_final_answer_and_a_close() {
    let upstream = Upstream::start().await;
    let running = support::start_attache(&format!(
        "[http.api]\nlisten = \"127.0.0.1:0\"\n\
         [[http.api.routes]]\nprefix = \"/v1\"\nupstream = \"{}\"\n",
        upstream.url()
    ))
    .await;
    let addr = running.http_addr("api").unwrap();
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
    let upstream = Upstream::start().await;
    let running = support::start_attache(&format!(
        "[http.api]\nlisten = \"127.0.0.1:0\"\n\
         [[http.api.routes]]\nprefix = \"/v1\"\nupstream = \"{}\"\n",
        upstream.url()
    ))
    .await;
    let addr = running.http_addr("api").unwrap();
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
    let (_attache, addr) =
        attache_for(&format!("http://127.0.0.1:{}", support::free_port()), "").await;
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

/// A raw upstream: answers every request head (requests without bodies)
/// with `answer`, keeps each head it read, and counts the connections
/// attache closed.
struct RawUpstream {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    closed: Arc<std::sync::atomic::AtomicUsize>,
}

impl RawUpstream {
    async fn start(answer: &'static [u8]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (record, count) = (heads.clone(), closed.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (record, count) = (record.clone(), count.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head: Vec<u8> = buf.drain(..i + 4).collect();
                            let head = String::from_utf8_lossy(&head).into_owned();
                            record.lock().unwrap().push(head);
                            if stream.write_all(answer).await.is_err() {
                                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                return;
                            }
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => {
                                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                return;
                            }
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        Self {
            addr,
            heads,
            closed,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn closed(&self) -> usize {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Writes `bytes` one at a time, each flushed, with a short pause every
/// few bytes.
async fn trickle(app: &mut App, bytes: &[u8]) {
    for (i, byte) in bytes.iter().enumerate() {
        app.write(std::slice::from_ref(byte)).await;
        app.stream.flush().await.unwrap();
        if i % 4 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[tokio::test]
async fn pipelined_requests_written_byte_by_byte_are_each_answered() {
    let (upstream, _attache, addr) = setup().await;
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
