//! A Redis listener's upstream side: per server, the connector, the shared
//! multiplexed connections (per protocol version) and the dedicated pools;
//! and the router that maps keys to servers.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use attache_resp::cluster::{Host, NodeAddress, Redirect};
use attache_resp::hash::{Distributor, ServerSpec};

use super::connection::ConnectionHandle;
use super::connector::{Connector, Protocol};
use super::dedicated::{DedicatedManager, DedicatedPool};
use super::error::{UpstreamError, UpstreamId};
use super::router::{ClusterRouter, EjectPolicy, HashedRouter, Health, Router};
use super::shared::spawn_shared;
use super::topology;
use crate::config::{Mode, RedisListenerConfig};
use crate::credentials::RedisCredentials;
use crate::shutdown::SessionShutdown;
use tokio::sync::watch;

use super::metrics::{PoolStatus, RedisMetrics, UpstreamStats, LOCAL_UPSTREAM};
use super::pause::PauseWindow;
use crate::tls::TlsConnector;
use crate::upstream::{Reach, UpstreamServices};

/// One upstream server and its connections.
pub(crate) struct Upstream {
    pub(crate) connector: Arc<Connector>,
    /// Indexed by [`Protocol::index`]; each holds `server_connections` handles.
    shared: [Vec<ConnectionHandle>; 2],
    dedicated: [DedicatedPool; 2],
}

/// Everything app sessions of one listener (on one worker) share.
pub(crate) struct RedisService {
    pub(crate) name: Arc<str>,
    pub(crate) max_request_bytes: usize,
    pub(crate) router: Router,
    /// Indexes never change; cluster mode appends nodes it discovers.
    upstreams: RwLock<Vec<Arc<Upstream>>>,
    template: UpstreamTemplate,
    next_shared: AtomicUsize,
    /// Fires when attache shuts down (or the listener is removed):
    /// sessions close when idle.
    pub(crate) shutdown: Arc<SessionShutdown>,
    /// Set when a reload replaced this service; sessions move to the
    /// successor when idle.
    superseded: AtomicBool,
    successor: std::sync::Mutex<Option<Arc<RedisService>>>,
}

/// What it takes to add an upstream server.
struct UpstreamTemplate {
    listener: Arc<str>,
    credentials: Option<RedisCredentials>,
    tls: Option<TlsConnector>,
    reach: Reach,
    connect_timeout: Duration,
    metrics: Arc<RedisMetrics>,
    timeout: Duration,
    server_connections: usize,
    max_dedicated: usize,
    policy: EjectPolicy,
    changes: Arc<AtomicU64>,
    /// Single mode: the `CLIENT PAUSE` the app sent through (see `pause`).
    pause: Arc<PauseWindow>,
}

impl UpstreamTemplate {
    fn build(&self, server: ServerSpec, readonly: bool) -> (Arc<Upstream>, Arc<Health>) {
        let connector = Connector::new(
            &self.listener,
            server,
            self.credentials.clone(),
            self.tls.clone(),
            self.reach.clone(),
            self.connect_timeout,
            self.metrics.clone(),
        )
        .with_pause(self.pause.clone());
        let connector = Arc::new(if readonly {
            connector.readonly()
        } else {
            connector
        });
        let health = Arc::new(Health::new(
            connector.id.clone(),
            self.policy,
            self.changes.clone(),
        ));
        let shared_for = |protocol: Protocol| {
            (0..self.server_connections)
                .map(|_| {
                    spawn_shared(
                        connector.clone(),
                        protocol,
                        self.timeout,
                        protocol == Protocol::Resp2,
                        health.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let pool_for = |protocol| {
            DedicatedManager::pool(
                connector.clone(),
                protocol,
                self.timeout,
                self.max_dedicated,
            )
        };
        let upstream = Arc::new(Upstream {
            shared: [shared_for(Protocol::Resp2), shared_for(Protocol::Resp3)],
            dedicated: [pool_for(Protocol::Resp2), pool_for(Protocol::Resp3)],
            connector,
        });
        upstream.connector.stats.watch(&upstream);
        (upstream, health)
    }
}

impl Upstream {
    /// Whether this is the upstream at `host:port` (a replica serving
    /// reads with `readonly`).
    fn is_at(&self, host: &str, port: u16, readonly: bool) -> bool {
        let c = &self.connector;
        c.server().host == host && c.server().port == port && c.is_readonly() == readonly
    }

    /// What its connections hold now, for `/metrics`.
    pub(crate) fn pool_status(&self) -> PoolStatus {
        let mut status = PoolStatus::default();
        for handle in self.shared.iter().flatten() {
            status.in_flight += handle.in_flight() as u64;
        }
        for pool in &self.dedicated {
            let pool = pool.status();
            status.dedicated_open += pool.size as u64;
            status.dedicated_idle += pool.available as u64;
        }
        status
    }
}

impl RedisService {
    /// The stats of upstream `server`.
    pub(crate) fn upstream_stats(&self, server: usize) -> Arc<UpstreamStats> {
        self.upstream(server).connector.stats.clone()
    }

    /// The stats of commands attache answers itself.
    pub(crate) fn local_stats(&self) -> Arc<UpstreamStats> {
        self.template.metrics.upstream(LOCAL_UPSTREAM)
    }

    /// The listener's counters.
    pub(crate) fn metrics(&self) -> &RedisMetrics {
        &self.template.metrics
    }

    /// A reload replaced this service with `next`.
    pub(crate) fn supersede(&self, next: Arc<RedisService>) {
        *self.successor.lock().unwrap_or_else(|e| e.into_inner()) = Some(next);
        self.superseded.store(true, Ordering::Release);
    }

    /// The service that replaced this one, if a reload did (one relaxed
    /// load on the common path).
    pub(crate) fn successor(&self) -> Option<Arc<RedisService>> {
        if !self.superseded.load(Ordering::Acquire) {
            return None;
        }
        let mut next = self
            .successor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        while let Some(later) = next.successor() {
            next = later;
        }
        Some(next)
    }

    /// Whether upstream connections are TLS.
    pub(crate) fn uses_tls(&self) -> bool {
        self.template.tls.is_some()
    }

    /// Builds the upstream side and starts connecting (RESP2 shared
    /// connections now; RESP3 ones when an app first asks for RESP3).
    pub(crate) fn start(
        name: &str,
        config: &RedisListenerConfig,
        services: &UpstreamServices,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Self> {
        let template = UpstreamTemplate {
            listener: name.into(),
            credentials: config
                .auth
                .as_ref()
                .map(|auth| RedisCredentials::from_config(auth, services.tokens())),
            tls: services.redis_tls(name),
            reach: services.reach(),
            metrics: services.metrics().listener(name),
            connect_timeout: config.connect_timeout,
            timeout: config.timeout,
            server_connections: config.server_connections,
            max_dedicated: config.max_dedicated_connections,
            policy: EjectPolicy {
                enabled: config.auto_eject_hosts && config.mode.distribution().is_some(),
                failure_limit: config.server_failure_limit,
                retry_timeout: config.server_retry_timeout,
            },
            changes: Arc::new(AtomicU64::new(0)),
            pause: Arc::default(),
        };
        let mut upstreams = Vec::new();
        let mut healths = Vec::new();
        for server in &config.servers {
            let (upstream, health) = template.build(server.clone(), false);
            upstreams.push(upstream);
            healths.push(health);
        }
        let router = if config.mode == Mode::Cluster {
            Router::Cluster(ClusterRouter::new(config.read_from))
        } else {
            match config.mode.distribution() {
                None => Router::Single,
                Some(distribution) => {
                    match Distributor::new(
                        distribution,
                        config.hash,
                        config.hash_tag,
                        &config.servers,
                    ) {
                        Ok(ring) => Router::Hashed(HashedRouter::new(
                            ring,
                            template.policy.enabled,
                            healths,
                            template.changes.clone(),
                        )),
                        // Validation builds the same ring first, so this cannot happen.
                        Err(_) => Router::Single,
                    }
                }
            }
        };
        let service = Arc::new(Self {
            name: name.into(),
            max_request_bytes: config.max_request_bytes,
            router,
            upstreams: RwLock::new(upstreams),
            template,
            next_shared: AtomicUsize::new(0),
            shutdown: SessionShutdown::following(shutdown),
            superseded: AtomicBool::new(false),
            successor: std::sync::Mutex::new(None),
        });
        if let Router::Cluster(_) = &service.router {
            tokio::spawn(topology::maintain(Arc::downgrade(&service)));
        }
        service
    }

    /// The index of the upstream at `host:port` (a replica serving reads
    /// with `readonly`), added if it is new. Only the seeds and the nodes
    /// a slot map named are added: a redirect is followed to a known node
    /// only (see [`Self::known_upstream`]).
    pub(crate) fn upstream_at(&self, host: &str, port: u16, readonly: bool) -> usize {
        if let Some(i) = self.known_upstream(host, port, readonly) {
            return i;
        }
        let mut upstreams = self.upstreams.write().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = upstreams.iter().position(|u| u.is_at(host, port, readonly)) {
            return i;
        }
        let spec = ServerSpec {
            host: host.to_owned(),
            port,
            weight: 1,
            name: None,
        };
        let (upstream, _) = self.template.build(spec, readonly);
        upstreams.push(upstream);
        upstreams.len() - 1
    }

    /// The index of the upstream at `host:port`, if attache knows it (a
    /// seed, or a node of a slot map). A MOVED or ASK naming another
    /// address is not followed there: a script's error can say anything
    /// (`redis.error_reply('MOVED 1 host:port')`), and following it would
    /// send the upstream credentials to that address.
    pub(crate) fn known_upstream(&self, host: &str, port: u16, readonly: bool) -> Option<usize> {
        let upstreams = self.upstreams.read().unwrap_or_else(|e| e.into_inner());
        upstreams.iter().position(|u| u.is_at(host, port, readonly))
    }

    /// The upstream a MOVED or ASK answered by upstream `from` names (a
    /// bare `:port` meaning `from`'s host), if attache knows it.
    pub(crate) fn redirect_target(&self, addr: &NodeAddress, from: usize) -> Option<usize> {
        let host = match &addr.host {
            Host::Name(name) => name.clone(),
            Host::Unknown => self.host_of(from),
        };
        self.known_upstream(&host, addr.port, false)
    }

    /// Counts a MOVED or ASK answered by upstream `from`.
    pub(crate) fn count_redirect(&self, redirect: &Redirect, from: usize) {
        let node = self.upstream_stats(from);
        let (all, one) = match redirect {
            Redirect::Moved { .. } => (&self.metrics().moved, &node.moved),
            Redirect::Ask { .. } => (&self.metrics().ask, &node.ask),
        };
        RedisMetrics::add(all);
        RedisMetrics::add(one);
    }

    /// An app's `AUTH` as another ACL user goes to the server (see
    /// `Action::Auth`): single mode, and attache presents no credential
    /// of its own (one would be the connection's identity, and its refresh
    /// would re-`AUTH` the app's connection as attache's user).
    pub(crate) fn forwards_app_auth(&self) -> bool {
        matches!(self.router, Router::Single) && self.template.credentials.is_none()
    }

    /// Single mode: the pause the app sent through (see `pause`).
    pub(crate) fn pause(&self) -> &PauseWindow {
        &self.template.pause
    }

    fn upstream(&self, server: usize) -> Arc<Upstream> {
        let upstreams = self.upstreams.read().unwrap_or_else(|e| e.into_inner());
        upstreams[server.min(upstreams.len() - 1)].clone()
    }

    /// How long a command may wait for its reply.
    pub(crate) fn timeout(&self) -> Duration {
        self.template.timeout
    }

    /// Cluster mode, just started: waits (up to `timeout`) for the first
    /// slot map, so that an app starting with attache is not refused.
    pub(crate) async fn await_topology(&self) {
        let Router::Cluster(router) = &self.router else {
            return;
        };
        let deadline = crate::clock::after(tokio::time::Instant::now(), self.template.timeout);
        while router.slots().is_none() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The host of upstream `server`.
    pub(crate) fn host_of(&self, server: usize) -> String {
        self.upstream(server).connector.server().host.clone()
    }

    /// Every upstream's connector, in index order.
    pub(crate) fn connectors(&self) -> Vec<Arc<Connector>> {
        let upstreams = self.upstreams.read().unwrap_or_else(|e| e.into_inner());
        upstreams.iter().map(|u| u.connector.clone()).collect()
    }

    /// `host:port` of each server, for merged replies that name them.
    pub(crate) fn labels(&self, servers: &[usize]) -> Vec<String> {
        servers
            .iter()
            .map(|&s| self.upstream_id(s).addr.to_string())
            .collect()
    }

    /// Which shared connection a new app connection uses for its whole life:
    /// one connection per server keeps the app's commands in order.
    pub(crate) fn next_shared_index(&self) -> usize {
        self.next_shared.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn servers(&self) -> usize {
        self.upstreams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub(crate) fn shared(
        &self,
        server: usize,
        protocol: Protocol,
        index: usize,
    ) -> ConnectionHandle {
        let upstream = self.upstream(server);
        let group = &upstream.shared[protocol.index()];
        group[index % group.len()].clone()
    }

    pub(crate) fn dedicated(&self, server: usize, protocol: Protocol) -> DedicatedPool {
        self.upstream(server).dedicated[protocol.index()].clone()
    }

    pub(crate) fn upstream_id(&self, server: usize) -> UpstreamId {
        self.upstream(server).connector.id.clone()
    }

    /// For a reply whose connection vanished without saying why.
    pub(crate) fn closed_error(&self) -> UpstreamError {
        UpstreamError::Closed(self.upstream_id(0))
    }
}
