//! attache: an ambassador sidecar. Apps in the pod talk plain Redis or
//! plain HTTP to localhost; attache carries the upstream side: connection
//! multiplexing and pooling, dedicated connections for stateful commands,
//! TLS, authentication and tokens, retries, reconnects.
//!
//! # Layout
//!
//! - [`admin`]: the admin listener: probes, metrics, config, quit.
//! - [`reload`]: hot reload: generations of config + sockets + services,
//!   applied by each worker without dropping app connections.
//! - [`config`]: the config file: model, loading (figment + env), validation.
//! - `listener`: binding, and the bounded accept loop each worker runs.
//! - `redis`: the Redis ambassador (sessions, routing policy, upstream
//!   connections and pools).
//! - `http`: the HTTP ambassador (`[http.NAME]`: routes, token injection,
//!   pooled HTTP/1.1 and HTTP/2 upstream connections, retries).
//! - [`credentials`]: what attache presents upstream, with redacted secrets:
//!   static passwords, and tokens that expire, kept fresh by one refresh
//!   engine (`[tokens.NAME]`).
//! - [`dns`]: upstream host names, resolved and re-resolved as TTLs run out.
//! - `socket`: reads and writes that spend no syscall in vain.
//! - `shutdown`: the shutdown wait every app connection polls, at the
//!   cost of an atomic load.
//! - [`upstream`]: what every worker shares to reach upstreams (TLS
//!   connectors, credential sources).
//! - [`tls`]: TLS to upstreams (rustls): `[… .tls]` config, a connector
//!   that reloads rotated certificate files, and the upstream stream (plain
//!   or TLS) that Redis and HTTP connections share.
//!
//! Wire knowledge (frames, the command table, hashing) lives in the sans-I/O
//! crate `attache-resp`, HTTP policy (admission, routes, headers, retry
//! rules) in `attache-http`; this crate owns the sockets.
//!
//! # Threads
//!
//! attache runs `[runtime] workers` single-threaded event loops. Every
//! worker accepts from every listener and owns its own upstream connections,
//! so an app connection's requests, their upstream connection and the
//! replies never leave one thread: no cross-thread wakeups on the request
//! path (measured: a multi-threaded runtime cost ~2.5× the context switches
//! and ~40% more CPU per request on 2 cores).

pub mod admin;
mod clock;
pub mod config;
pub mod credentials;
pub mod dns;
mod http;
mod listener;
mod redis;
pub mod reload;
mod shutdown;
mod socket;
pub mod tls;
pub mod upstream;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;
use crate::listener::BoundListener;
pub use crate::listener::ListenerStats;
pub use crate::reload::{Generation, ReloadError};
pub use crate::upstream::StartError;
use crate::upstream::UpstreamServices;

/// Every listener of a config, bound (before any worker starts, so a port
/// conflict is reported once and at once).
pub struct Listeners {
    redis: Vec<Arc<BoundListener>>,
    http: Vec<Arc<BoundListener>>,
}

impl Listeners {
    /// Binds every listener of `config`.
    pub fn bind(config: &Config) -> std::io::Result<Self> {
        let redis = config
            .redis
            .iter()
            .map(|(name, l)| BoundListener::bind(name, l.listen, l.max_connections).map(Arc::new))
            .collect::<std::io::Result<_>>()?;
        let http = config
            .http
            .iter()
            .map(|(name, l)| BoundListener::bind(name, l.listen, l.max_connections).map(Arc::new))
            .collect::<std::io::Result<_>>()?;
        Ok(Self { redis, http })
    }

    /// The bound address of Redis listener `name` (useful with port 0).
    pub fn redis_addr(&self, name: &str) -> Option<SocketAddr> {
        self.redis
            .iter()
            .find(|l| l.name() == name)
            .and_then(|l| l.local_addr().ok())
    }

    /// Connection counts of every listener.
    pub fn stats(&self) -> Vec<ListenerStats> {
        self.redis
            .iter()
            .chain(&self.http)
            .map(|l| l.stats())
            .collect()
    }
}

/// A started attache: listeners bound and one worker serving them on the
/// caller's runtime (what tests and embedders use; the binary runs
/// `[runtime] workers` of them, each on its own thread).
pub struct Running {
    generations: watch::Sender<Arc<Generation>>,
    shutdown: watch::Sender<bool>,
    worker: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// The bound address of Redis listener `name` (useful with port 0).
    pub fn redis_addr(&self, name: &str) -> Option<SocketAddr> {
        self.generations.borrow().redis_addr(name)
    }

    /// Connection counts of the listeners now served.
    pub fn stats(&self) -> Vec<ListenerStats> {
        self.generations.borrow().stats()
    }

    /// The bound address of HTTP listener `name` (useful with port 0).
    pub fn http_addr(&self, name: &str) -> Option<SocketAddr> {
        self.generations.borrow().http_addr(name)
    }

    /// The HTTP listeners' metrics, in the Prometheus text format that
    /// `/metrics` serves (an embedder may have no admin listener).
    pub fn http_metrics(&self) -> String {
        let mut out = String::new();
        self.generations
            .borrow()
            .services
            .http_metrics()
            .render(&mut out);
        out
    }

    /// Applies `config` as a hot reload would (see [`reload`]); on error
    /// the running config stays.
    pub fn reload(&self, config: Config) -> Result<(), ReloadError> {
        let next = reload::prepare(&self.generations.borrow(), config)?;
        self.generations.send_replace(Arc::new(next));
        Ok(())
    }

    /// Stops accepting; app connections close when idle (HTTP: once their
    /// in-flight requests are answered).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.worker.await;
    }
}

/// Binds every listener of `config` and serves them on the current runtime.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let services = UpstreamServices::start(&config, &tokio::runtime::Handle::current())?;
    let listeners = Listeners::bind(&config)?;
    let generation = Generation::first(config, &listeners, Arc::new(services));
    let (generations, receiver) = watch::channel(Arc::new(generation));
    let (shutdown, stop) = watch::channel(false);
    let worker = tokio::spawn(reload::run_worker(receiver, stop));
    Ok(Running {
        generations,
        shutdown,
        worker,
    })
}

/// Addresses of every listener, for logs.
pub fn describe(listeners: &Listeners) -> BTreeMap<String, SocketAddr> {
    listeners
        .redis
        .iter()
        .chain(&listeners.http)
        .filter_map(|l| Some((l.name().to_string(), l.local_addr().ok()?)))
        .collect()
}
