//! The closed-loop HTTP load generator: `conns` keep-alive HTTP/1.1
//! connections (hyper's client, one connection per `SendRequest`, no pool),
//! each a task that sends a GET, reads the whole response, records its
//! latency and sends the next, until the deadline.
//!
//! hyper, not a hand-written client: the generator must speak HTTP as apps
//! do (attache and nginx parse what it sends), and it costs the same for
//! every target, which is what the comparison needs.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::future::try_join_all;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{header, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::outcome::{LoadOutcome, Window};

/// What went wrong talking to a target.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error("{addr}: connect: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr}: GET {path}: {source}")]
    Http {
        addr: SocketAddr,
        path: String,
        source: hyper::Error,
    },
    #[error("{addr}: GET {path}: {status}, {bytes}-byte body (expected 200, {expected} bytes)")]
    Unexpected {
        addr: SocketAddr,
        path: String,
        status: StatusCode,
        bytes: usize,
        expected: usize,
    },
}

/// One run's load: identical for every target.
#[derive(Clone, Debug)]
pub(crate) struct LoadSpec {
    pub(crate) conns: usize,
    /// What every request asks for: `/bytes/N`.
    pub(crate) path: String,
    /// N: a response with another status or length is an error.
    pub(crate) body_size: usize,
    /// Load sent but not recorded, so connection pools and buffers settle.
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
}

/// One keep-alive connection to a target.
struct Client {
    addr: SocketAddr,
    /// `Host`: the target's address, which attache admits as its own.
    host: String,
    sender: SendRequest<Empty<Bytes>>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Result<Self, LoadError> {
        let connect = |source| LoadError::Connect { addr, source };
        let stream = TcpStream::connect(addr).await.map_err(connect)?;
        stream.set_nodelay(true).map_err(connect)?;
        let (sender, connection) =
            http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|source| LoadError::Http {
                    addr,
                    path: String::new(),
                    source,
                })?;
        // Ends when the sender is dropped or the target closes.
        tokio::spawn(connection);
        Ok(Self {
            addr,
            host: addr.to_string(),
            sender,
        })
    }

    /// Sends `GET path` and reads the whole response: its status and body
    /// length, and the instant its last byte arrived.
    async fn get(&mut self, path: &str) -> Result<(StatusCode, usize, Instant), LoadError> {
        let http = |source| LoadError::Http {
            addr: self.addr,
            path: path.to_owned(),
            source,
        };
        let request = Request::get(path)
            .header(header::HOST, &self.host)
            .body(Empty::new())
            .expect("a path from the bench's own options is a valid URI");
        self.sender.ready().await.map_err(http)?;
        let response = self.sender.send_request(request).await.map_err(http)?;
        let status = response.status();
        let mut body = response.into_body();
        let mut bytes = 0;
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame.map_err(http)?.data_ref() {
                bytes += data.len();
            }
        }
        Ok((status, bytes, Instant::now()))
    }
}

/// One GET through `addr` on a new connection: `Ok` once it is a 200 with
/// `body_size` bytes. Readiness probe of the targets.
pub(crate) async fn probe(addr: SocketAddr, path: &str, body_size: usize) -> Result<(), LoadError> {
    let mut client = Client::connect(addr).await?;
    let (status, bytes, _) = client.get(path).await?;
    if status == StatusCode::OK && bytes == body_size {
        return Ok(());
    }
    Err(LoadError::Unexpected {
        addr,
        path: path.to_owned(),
        status,
        bytes,
        expected: body_size,
    })
}

/// Runs `spec` against `addr` and returns the merged measurements.
pub(crate) async fn run(addr: SocketAddr, spec: &LoadSpec) -> Result<LoadOutcome, LoadError> {
    let clients = try_join_all((0..spec.conns).map(|_| Client::connect(addr))).await?;
    // One start for all: connecting is not part of the load.
    let window = Window::starting_now(spec.warmup, spec.duration);
    let tasks = clients
        .into_iter()
        .map(|client| tokio::spawn(drive(client, spec.clone(), window)))
        .collect();
    LoadOutcome::join(tasks).await
}

/// One connection's closed loop; a response other than a 200 with the
/// expected body length counts as an error.
async fn drive(
    mut client: Client,
    spec: LoadSpec,
    window: Window,
) -> Result<LoadOutcome, LoadError> {
    let mut out = LoadOutcome::new();
    loop {
        let sent = Instant::now();
        if window.is_over(sent) {
            return Ok(out);
        }
        let (status, bytes, arrived) = client.get(&spec.path).await?;
        let error = status != StatusCode::OK || bytes != spec.body_size;
        out.record(&window, sent, arrived, error);
    }
}
