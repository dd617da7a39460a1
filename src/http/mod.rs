//! The HTTP ambassador: `[http.NAME]` listeners. The app sends plain HTTP
//! (HTTP/1.1, or HTTP/2 with prior knowledge) to localhost, without
//! credentials; attache forwards each request to the route's upstream
//! (HTTP/1.1 or HTTP/2 by ALPN, TLS, a token injected) and streams the
//! response back.
//!
//! What is allowed, how headers change, when to retry and what the app
//! sees when attache answers itself is decided by the sans-I/O crate
//! `attache-http`; this module owns the sockets.
//!
//! # Layout
//!
//! - `serve`: the app's side: attache's own HTTP/1.1 server for plain
//!   requests; `handover`: hyper's for the rest (HTTP/2, upgrades,
//!   anything unusual), taking the connection over.
//! - `service`: one listener's request path: admit, headers, token,
//!   forward with retries and `timeout`, response or local error.
//! - `pool`: connections per upstream and address (HTTP/1.1 keep-alive,
//!   shared HTTP/2), DNS through the shared resolver.
//! - `h1`: attache's HTTP/1.1 client: an upstream connection written and
//!   read by the request using it (no task of its own; the wire format is
//!   `attache_http::h1`'s), and the response body that returns it.
//! - `balance`: which address takes a request (power of two choices) and
//!   ejection of failing ones.
//! - `body`: the boxed body type, and the app's body as retries see it.
//! - `metrics`: per-listener counters and gauges for `/metrics`.
//!
//! # Threads
//!
//! As for Redis: every worker has its own service and upstream
//! connections per listener; the token sources, the resolver, TLS
//! connectors and metrics are shared by the process.

mod balance;
mod body;
mod h1;
mod handover;
pub(crate) mod metrics;
mod pool;
mod serve;
mod service;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use tokio::net::TcpStream;

use crate::shutdown::SessionShutdown;

pub(crate) use self::pool::HttpTls;
pub(crate) use self::service::HttpService;

/// What an app connecting beyond `max_connections` reads before the close.
pub(crate) const MAX_CONNECTIONS_REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\n\
x-attache-error: max-connections\r\n\
connection: close\r\n\
content-length: 53\r\n\r\n\
attache: the listener is at max_connections; retry.\r\n";

/// Serves one app connection: each request goes to the listener's current
/// service (a reload swaps it; requests in flight finish on the old one).
/// When `shutdown` flips, in-flight requests finish and the connection
/// closes (HTTP/1: after the current response; HTTP/2: GOAWAY). Plain
/// HTTP/1.1 requests are served by attache itself (`serve`), the rest by
/// hyper.
pub(crate) async fn serve_client(
    current: Arc<RwLock<Arc<HttpService>>>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: Arc<SessionShutdown>,
) {
    let _ = stream.set_nodelay(true);
    serve::serve_h1(current, stream, peer, shutdown).await;
}
