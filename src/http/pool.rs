//! Connections to one upstream (scheme + host + port), per worker: its
//! host name resolved by the shared [`Resolver`](crate::dns::Resolver)
//! (re-resolved as TTLs run out), one [`Endpoint`] per address, and on
//! each endpoint the keep-alive connections.
//!
//! hyper-util's pooling client keys its pool by authority, so every
//! address of a name would share one pool and no balancing or ejection per
//! address would be possible: hence this small pool, keyed by address.
//!
//! - HTTP/2 (when the upstream picks `h2` by ALPN): one multiplexed
//!   connection per address, shared by every request; replaced when it
//!   closes.
//! - HTTP/1.1: attache's own client (see `h1`); a connection serves one
//!   request at a time, written and read by that request's task. Once its response has been read to the
//!   end it goes back to the idle list of its address (at most
//!   `max_idle_per_host` each, most recent reused first); one idle longer
//!   than `idle_timeout`, or closed by the upstream, is closed.
//! - Upgrades (WebSocket) always get a new HTTP/1.1 connection from
//!   hyper's client (ALPN `http/1.1` only), spawned, which then belongs to
//!   the upgraded stream.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use attache_http::Upstream;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::OnceCell;
use tracing::{debug, warn};

use super::balance::{self, Ejected, Endpoint};
use super::body::Body;
use super::h1::{H1Connection, Home};
use super::metrics::HttpMetrics;
use crate::dns::Watched;
use crate::tls::TlsConnector;
use crate::tls::UpstreamStream;
use crate::upstream::Reach;

/// TLS connectors of one listener: one offering `h2, http/1.1` by ALPN,
/// one offering only `http/1.1` (for upgrades).
#[derive(Clone)]
pub(crate) struct HttpTls {
    pub(crate) alpn: TlsConnector,
    pub(crate) h1_only: TlsConnector,
}

/// The listener's pool settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolSettings {
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_idle: usize,
}

/// A connection to send one request on.
pub(crate) enum Sender {
    /// Driven by the request (and its response body), then pooled.
    H1(H1Connection),
    /// A new spawned connection for an upgrade, never pooled.
    Upgrade(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
#[error("{addr}: {cause}")]
pub(crate) struct ConnectError {
    pub(crate) addr: String,
    pub(crate) cause: String,
}

/// One upstream's endpoints and connections.
pub(crate) struct UpstreamPool {
    pub(crate) upstream: Upstream,
    tls: Option<HttpTls>,
    /// Resolves the host; never connects to attache's own listeners.
    reach: Reach,
    watched: OnceCell<Watched>,
    /// Shared with the idle sweeper, which ends when the pool is dropped.
    /// A shared slice: each request takes it with one reference count.
    endpoints: Arc<Mutex<Arc<[Arc<Endpoint>]>>>,
    sweeper: std::sync::Once,
    settings: PoolSettings,
    metrics: Arc<HttpMetrics>,
}

impl UpstreamPool {
    pub(crate) fn new(
        upstream: Upstream,
        tls: Option<HttpTls>,
        reach: Reach,
        settings: PoolSettings,
        metrics: Arc<HttpMetrics>,
    ) -> Self {
        Self {
            upstream,
            tls,
            reach,
            watched: OnceCell::new(),
            endpoints: Arc::new(Mutex::new(Arc::new([]))),
            sweeper: std::sync::Once::new(),
            settings,
            metrics,
        }
    }

    /// The endpoints for the upstream's current addresses (kept, with
    /// their connections and health, while their address stays).
    pub(crate) async fn endpoints(&self) -> Result<Arc<[Arc<Endpoint>]>, ConnectError> {
        let addrs = match self.watched.get() {
            Some(watched) => watched.addrs(),
            // Boxed: resolving is rare, and its state would otherwise be
            // carried (and copied) by every request's future.
            None => Box::pin(self.addresses()).await?,
        };
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        let unchanged = endpoints.len() == addrs.len()
            && endpoints
                .iter()
                .zip(addrs.iter())
                .all(|(e, a)| e.addr == *a);
        if !unchanged {
            let mut next = Vec::with_capacity(addrs.len());
            for addr in addrs.iter() {
                let kept = endpoints.iter().find(|e| e.addr == *addr).cloned();
                next.push(kept.unwrap_or_else(|| Arc::new(Endpoint::new(*addr))));
            }
            *endpoints = next.into();
        }
        Ok(endpoints.clone())
    }

    async fn addresses(&self) -> Result<Arc<[SocketAddr]>, ConnectError> {
        let (host, port) = (self.upstream.host(), self.upstream.port());
        let failed = |cause: String| ConnectError {
            addr: format!("{host}:{port}"),
            cause,
        };
        match &self.reach.resolver {
            Some(resolver) => {
                // Only the first resolution waits (later ones happen in
                // the background); it counts against connect_timeout.
                let first = self.watched.get_or_try_init(|| resolver.watch(host, port));
                let watched = tokio::time::timeout(self.settings.connect_timeout, first)
                    .await
                    .map_err(|_| failed("no DNS answer within connect_timeout".into()))?
                    .map_err(|e| failed(e.to_string()))?;
                Ok(watched.addrs())
            }
            // No usable resolv.conf: the system resolver at each request.
            None => {
                let literal = host.trim_start_matches('[').trim_end_matches(']');
                let found: Vec<SocketAddr> = tokio::net::lookup_host((literal, port))
                    .await
                    .map_err(|e| failed(format!("resolving: {e}")))?
                    .collect();
                if found.is_empty() {
                    return Err(failed("resolving: no addresses".into()));
                }
                Ok(found.into())
            }
        }
    }

    /// Records a connect failure or lost connection on `endpoint`.
    pub(crate) fn failed(&self, endpoint: &Endpoint) {
        let others = {
            let all = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
            balance::others_in_rotation(&all, endpoint.addr)
        };
        if let Ejected::For(period) = endpoint.failed(others) {
            HttpMetrics::add(&self.metrics.ejections);
            warn!(upstream = %self.upstream, addr = %endpoint.addr, ?period, "address ejected after repeated failures");
        }
    }

    /// A connection on `endpoint`: the shared HTTP/2 one, an idle HTTP/1
    /// one, or a new one (within `connect_timeout`). `upgrade`: a new
    /// HTTP/1.1 connection, always.
    pub(crate) async fn checkout(
        &self,
        endpoint: &Arc<Endpoint>,
        upgrade: bool,
    ) -> Result<Sender, ConnectError> {
        if !upgrade {
            if let Some(sender) = self.reuse(endpoint) {
                return Ok(sender);
            }
        }
        // Boxed: connecting (TCP, TLS, handshake) is the largest state of
        // the request's future, which every request would otherwise carry
        // (and copy) to reuse a connection.
        let connecting = Box::pin(self.connect(endpoint, upgrade));
        match tokio::time::timeout(self.settings.connect_timeout, connecting).await {
            Ok(Ok(sender)) => {
                HttpMetrics::add(&self.metrics.connects);
                Ok(sender)
            }
            Ok(Err(cause)) => Err(self.connect_failed(endpoint, cause)),
            Err(_) => Err(self.connect_failed(
                endpoint,
                format!(
                    "no connection within connect_timeout ({:?})",
                    self.settings.connect_timeout
                ),
            )),
        }
    }

    fn connect_failed(&self, endpoint: &Endpoint, cause: String) -> ConnectError {
        HttpMetrics::add(&self.metrics.connect_failures);
        // Once per streak (and per ejection), not once per request.
        if endpoint.failure_streak() == 0 {
            warn!(upstream = %self.upstream, addr = %endpoint.addr, error = %cause, "cannot connect to the upstream");
        } else {
            debug!(upstream = %self.upstream, addr = %endpoint.addr, error = %cause, "cannot connect to the upstream");
        }
        self.failed(endpoint);
        ConnectError {
            addr: endpoint.addr.to_string(),
            cause,
        }
    }

    fn reuse(&self, endpoint: &Endpoint) -> Option<Sender> {
        {
            let mut h2 = endpoint.h2.lock().unwrap_or_else(|e| e.into_inner());
            match &*h2 {
                Some(sender) if !sender.is_closed() => return Some(Sender::H2(sender.clone())),
                Some(_) => *h2 = None,
                None => {}
            }
        }
        let now = Instant::now();
        let mut idle = endpoint.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((mut connection, since)) = idle.pop() {
            if now.duration_since(since) >= self.settings.idle_timeout {
                // The rest went idle earlier still.
                idle.clear();
                break;
            }
            if connection.usable() {
                return Some(Sender::H1(connection));
            }
        }
        None
    }

    async fn connect(&self, endpoint: &Arc<Endpoint>, upgrade: bool) -> Result<Sender, String> {
        self.reach.own.refuse(endpoint.addr)?;
        let tcp = TcpStream::connect(endpoint.addr)
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        if !self.upstream.is_https() {
            return self
                .handshake(endpoint, UpstreamStream::Plain(tcp), false, upgrade)
                .await;
        }
        let tls = self
            .tls
            .as_ref()
            .ok_or_else(|| "https upstream without a TLS connector".to_owned())?;
        let connector = if upgrade { &tls.h1_only } else { &tls.alpn };
        let stream = connector
            .connect(self.upstream.host(), tcp)
            .await
            .map_err(|e| e.to_string())?;
        let h2 = !upgrade && stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let stream = UpstreamStream::Tls(Box::new(stream));
        self.handshake(endpoint, stream, h2, upgrade).await
    }

    async fn handshake(
        &self,
        endpoint: &Arc<Endpoint>,
        stream: UpstreamStream,
        h2: bool,
        upgrade: bool,
    ) -> Result<Sender, String> {
        let metrics = self.metrics.clone();
        let addr = endpoint.addr;
        let upstream = self.upstream.to_string();
        let open = move || {
            metrics
                .connections
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            OpenConnection(metrics)
        };
        if !h2 && !upgrade {
            self.sweeper.call_once(|| self.spawn_sweeper());
            return Ok(Sender::H1(H1Connection::new(stream, addr, open())));
        }
        let io = TokioIo::new(stream);
        if h2 {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .handshake(io)
                .await
                .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
            let open = open();
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    debug!(%upstream, %addr, error = %e, "HTTP/2 connection ended");
                }
                drop(open);
            });
            let mut shared = endpoint.h2.lock().unwrap_or_else(|e| e.into_inner());
            // Requests that raced to connect share the first connection;
            // dropping this one's sender closes it.
            if let Some(first) = shared.as_ref().filter(|s| !s.is_closed()) {
                return Ok(Sender::H2(first.clone()));
            }
            *shared = Some(sender.clone());
            return Ok(Sender::H2(sender));
        }
        let (sender, connection) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
        let open = open();
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                debug!(%upstream, %addr, error = %e, "HTTP/1.1 connection ended");
            }
            drop(open);
        });
        Ok(Sender::Upgrade(sender))
    }

    /// Where `endpoint`'s HTTP/1 connections go back to when idle.
    pub(crate) fn home(&self, endpoint: Arc<Endpoint>) -> Home {
        Home {
            endpoint,
            settings: self.settings,
        }
    }

    /// Closes idle connections past `idle_timeout` even when no request
    /// comes to notice (one task per pool, checking every half timeout).
    fn spawn_sweeper(&self) {
        let endpoints = Arc::downgrade(&self.endpoints);
        let settings = self.settings;
        let period = (settings.idle_timeout / 2).max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(endpoints) = endpoints.upgrade() else {
                    return;
                };
                let current = endpoints.lock().unwrap_or_else(|e| e.into_inner()).clone();
                for endpoint in current.iter() {
                    sweep(endpoint, settings);
                }
            }
        });
    }
}

/// Puts `connection` on `endpoint`'s idle list if there is room (after
/// dropping those idle too long); otherwise it closes.
pub(crate) fn park(endpoint: &Endpoint, settings: PoolSettings, connection: H1Connection) {
    let now = Instant::now();
    let mut idle = endpoint.idle.lock().unwrap_or_else(|e| e.into_inner());
    drop_expired(&mut idle, now, settings);
    if idle.len() < settings.max_idle {
        idle.push((connection, now));
    }
}

/// Drops `endpoint`'s idle connections that are idle too long or closed by
/// the upstream. Each is polled once: the sweeper's job, too slow for
/// every request.
fn sweep(endpoint: &Endpoint, settings: PoolSettings) {
    let mut idle = endpoint.idle.lock().unwrap_or_else(|e| e.into_inner());
    drop_expired(&mut idle, Instant::now(), settings);
    idle.retain_mut(|(connection, _)| connection.usable());
}

/// The idle list is in the order connections went idle: the expired ones
/// are a prefix.
fn drop_expired(idle: &mut Vec<(H1Connection, Instant)>, now: Instant, settings: PoolSettings) {
    // Usually none: then the oldest tells, without a search.
    if idle
        .first()
        .is_none_or(|(_, since)| now.duration_since(*since) < settings.idle_timeout)
    {
        return;
    }
    let expired =
        idle.partition_point(|(_, since)| now.duration_since(*since) >= settings.idle_timeout);
    idle.drain(..expired);
}

/// Counts an open upstream connection in the gauge until dropped.
pub(crate) struct OpenConnection(Arc<HttpMetrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
