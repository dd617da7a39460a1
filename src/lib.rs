//! attache: an ambassador sidecar. Apps in the pod talk plain Redis to
//! localhost; attache carries the upstream side: connection multiplexing,
//! dedicated connections for stateful commands, authentication, reconnects.
//!
//! # Layout
//!
//! - [`config`]: the config file: model, loading (figment + env), validation.
//! - [`listener`]: binding and the bounded accept loop.
//! - `redis`: the Redis ambassador (sessions, routing policy, upstream
//!   connections and pools).
//! - [`credentials`]: what attache presents upstream, with redacted secrets.
//!
//! Wire knowledge (frames, the command table, hashing) lives in the sans-I/O
//! crate `attache-resp`; this crate owns the sockets.

pub mod config;
pub mod credentials;
pub mod listener;
mod redis;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::redis::RedisService;

/// A started attache: its listeners are bound and accepting.
pub struct Running {
    redis_addrs: BTreeMap<String, SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Running {
    /// The bound address of Redis listener `name` (useful with port 0).
    pub fn redis_addr(&self, name: &str) -> Option<SocketAddr> {
        self.redis_addrs.get(name).copied()
    }

    /// Stops accepting; open app connections end when their tasks see EOF.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Binds every listener of `config` and starts serving.
pub async fn start(config: Config) -> std::io::Result<Running> {
    let (shutdown, stop) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut redis_addrs = BTreeMap::new();
    for (name, listener_config) in &config.redis {
        let listener = listener::bind(name, listener_config.listen).await?;
        redis_addrs.insert(name.clone(), listener.local_addr()?);
        let service = RedisService::start(name, listener_config);
        let name: Arc<str> = name.as_str().into();
        tasks.spawn(listener::accept_loop(
            name,
            listener,
            listener_config.max_connections,
            stop.clone(),
            move |stream, peer| redis::serve_client(service.clone(), stream, peer),
        ));
    }
    Ok(Running {
        redis_addrs,
        shutdown,
        tasks,
    })
}
