//! Raw HTTP/1.x on the wire, as an app writes and reads it: a client that
//! parses responses with httparse (never with hyper), an upstream that
//! records what reached it, and a raw upstream with a scripted answer.
//! Used by `tests/http_app_wire.rs` and `tests/http_app_edges.rs`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{HeaderMap, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::http::{attache_for, empty, full, handler, text, TestUpstream};

/// How long any one read may wait: a server that hangs fails the test.
pub const WAIT: Duration = Duration::from_secs(5);

/// How a response's body was delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body by the rules (HEAD, 1xx, 204, 304).
    None,
    Length(usize),
    Chunked,
    /// Read until the server closed.
    Close,
}

/// One response as the app read it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// `1` for `HTTP/1.1`, `0` for `HTTP/1.0`.
    pub minor: u8,
    /// Names lowercased, in wire order.
    pub headers: Vec<(String, String)>,
    pub framing: Framing,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

impl Answer {
    /// Every value of `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).first().copied()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An app's raw TCP connection to attache.
pub struct App {
    pub stream: TcpStream,
    /// Read and not yet parsed.
    pub buf: Vec<u8>,
}

impl App {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("write to attache");
    }

    /// Reads more into `buf`; 0 at the end of the stream (a reset counts
    /// as an end). Panics after [`WAIT`].
    pub async fn fill(&mut self) -> usize {
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
    pub async fn try_head(&mut self) -> Option<(u16, u8, Vec<(String, String)>)> {
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

    pub async fn head(&mut self) -> (u16, u8, Vec<(String, String)>) {
        self.try_head()
            .await
            .expect("a response, not the connection closed")
    }

    /// The next response to a `method` request, its body read by its
    /// framing. `None` if the connection closed before it began.
    pub async fn try_response(&mut self, method: &str) -> Option<Answer> {
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

    pub async fn response(&mut self, method: &str) -> Answer {
        self.try_response(method)
            .await
            .expect("a response, not the connection closed")
    }

    /// Exactly `n` bytes.
    pub async fn take(&mut self, n: usize) -> Vec<u8> {
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
    pub async fn line(&mut self) -> String {
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
    pub async fn chunks(&mut self, answer: &mut Answer) {
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
    pub async fn assert_closed(&mut self) {
        while self.fill().await > 0 {}
        assert!(
            self.buf.is_empty(),
            "bytes after the last response: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
    }

    /// Asserts nothing more arrives for a short while, and the connection
    /// stays open.
    pub async fn assert_quiet(&mut self) {
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
pub struct Got {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: Option<HeaderMap>,
}

/// A hyper upstream that reads every request's body and answers by path:
/// `/204`, `/304`, `/stream` (three pieces, no length), `/dated` (a fixed
/// `Date`), `/fixed` (`fixed body`), anything else `METHOD PATH N bytes`.
pub struct Upstream {
    pub server: TestUpstream,
    pub got: Arc<Mutex<Vec<Got>>>,
}

/// The `Date` `/dated` answers with.
pub const FIXED_DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

impl Upstream {
    pub async fn start() -> Self {
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

    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    pub fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Requests whose head reached the upstream, bodies read or not.
    pub fn heads(&self) -> usize {
        self.server.seen().len()
    }
}

pub fn status(code: u16) -> Response<super::http::TestBody> {
    Response::builder().status(code).body(empty()).unwrap()
}

/// `pieces`, each after a short pause: a body of unknown length.
pub fn stream_body(pieces: &[&'static str]) -> super::http::TestBody {
    let frames = futures::stream::iter(pieces.to_vec()).then(|piece| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(piece.as_bytes())))
    });
    BodyExt::boxed(StreamBody::new(frames))
}

/// An upstream and attache in front of it.
pub async fn setup() -> (Upstream, attache::Running, SocketAddr) {
    let upstream = Upstream::start().await;
    let (running, addr) = attache_for(&upstream.url(), "").await;
    (upstream, running, addr)
}

/// An upstream and attache in front of it for paths under `/v1` only
/// (anything else is attache's own 404, its body never read).
pub async fn setup_v1_only() -> (Upstream, attache::Running, SocketAddr) {
    let upstream = Upstream::start().await;
    let running = super::start_attache(&format!(
        "[http.api]\nlisten = \"127.0.0.1:0\"\n\
         [[http.api.routes]]\nprefix = \"/v1\"\nupstream = \"{}\"\n",
        upstream.url()
    ))
    .await;
    let addr = running.http_addr("api").unwrap();
    (upstream, running, addr)
}

/// Connections of listener `api` that hyper's server took over (the rest
/// are served by attache's own HTTP/1.1 path).
pub fn handovers(attache: &attache::Running) -> u64 {
    let text = attache.http_metrics();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("attache_http_app_handovers_total{listener=\"api\"} "))
        .unwrap_or_else(|| panic!("no handover counter in:\n{text}"));
    line.trim().parse().expect("a count")
}

pub fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")
}

/// A fresh connection is served: the listener is still up.
pub async fn assert_still_serving(addr: SocketAddr) {
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
pub async fn refused(addr: SocketAddr, request: &[u8]) -> Option<Answer> {
    let mut app = App::connect(addr).await;
    // attache may close before it read everything: a failed write is fine.
    let _ = tokio::time::timeout(WAIT, app.stream.write_all(request)).await;
    let answer = app.try_response("GET").await;
    app.assert_closed().await;
    answer
}

/// `Www, DD Mon YYYY HH:MM:SS GMT` (RFC 9110's IMF-fixdate), roughly.
pub fn is_http_date(value: &str) -> bool {
    value.len() == 29 && &value[3..5] == ", " && value.ends_with(" GMT")
}

/// An upstream that answers every request head with `ok` and no `Date`
/// (hyper always adds one); it reads no bodies.
pub async fn undated_upstream() -> SocketAddr {
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

/// A raw upstream: answers every request head (requests without bodies)
/// with `answer`, keeps each head it read, and counts the connections
/// attache closed.
pub struct RawUpstream {
    pub addr: SocketAddr,
    pub heads: Arc<Mutex<Vec<String>>>,
    pub closed: Arc<std::sync::atomic::AtomicUsize>,
}

impl RawUpstream {
    pub async fn start(answer: &'static [u8]) -> Self {
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

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn closed(&self) -> usize {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Writes `bytes` one at a time, each flushed, with a short pause every
/// few bytes.
pub async fn trickle(app: &mut App, bytes: &[u8]) {
    for (i, byte) in bytes.iter().enumerate() {
        app.write(std::slice::from_ref(byte)).await;
        app.stream.flush().await.unwrap();
        if i % 4 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}
