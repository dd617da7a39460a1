//! The Redis ambassador: app sessions on a local listener, and the upstream
//! connections they are multiplexed over.
//!
//! - [`service`]: one listener's upstream side (servers, connections, pools).
//! - `fanin`: pub/sub on a sharded listener, subscribed on every server.
//! - `relay`: a streaming connection's frames to the app, with attache's own
//!   answers in their place.
//! - `topology`: the Redis Cluster slot map, refreshed in the background.
//! - `router`: key → server (twemproxy's ketama/modula/random), ejection.
//! - `session`: one app connection: decode, classify, batch, reply in order.
//! - `policy`: which commands share, pin, or are answered locally.
//! - `connection`: the driver of one upstream socket (pipelined, in order).
//! - `shared` / `dedicated`: reconnecting shared connections; the deadpool
//!   of dedicated ones.
//! - `connector`: TCP + handshake (AUTH, HELLO 3) with current credentials.
//! - `shutdown`: telling every session of a listener to close when idle.
//! - `metrics`: per-listener counters, per upstream and command family
//!   stats; `meter`: where a session counts its commands' replies.

mod connection;
mod connector;
mod dedicated;
mod error;
mod fanin;
mod meter;
pub(crate) mod metrics;
mod pause;
mod policy;
mod relay;
mod router;
pub(crate) mod service;
mod session;
mod shared;
mod slots;
mod topology;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

pub(crate) use service::RedisService;

/// What an app connecting beyond `max_connections` reads before the close,
/// as from Redis itself.
pub(crate) const MAX_CLIENTS_REFUSAL: &[u8] = b"-ERR max number of clients reached\r\n";

/// Serves one app connection until it closes.
pub(crate) async fn serve_client(service: Arc<RedisService>, stream: TcpStream, peer: SocketAddr) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(peer = %peer, error = %e, "set_nodelay failed");
    }
    // The session lives here and `run` borrows it: an `async fn` taking
    // `self` by value would hold the session twice (argument and local).
    let mut session = session::Session::new(service, stream, peer);
    session.run().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output_size<F, Fut>(_: F) -> usize
    where
        F: Fn(Arc<RedisService>, TcpStream, SocketAddr) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// What each idle app connection costs starts with its task: the
    /// session and its deepest hot-path await. Rare, deep awaits (taking a
    /// dedicated connection) are boxed to keep it so; 1,992 bytes with
    /// Rust 1.95, and more than twice that before.
    #[test]
    fn an_app_connection_task_stays_small() {
        let size = output_size(serve_client);
        assert!(size <= 2560, "serve_client's future is {size} bytes");
    }
}
