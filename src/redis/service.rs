//! A Redis listener's upstream side: per server, the connector, the shared
//! multiplexed connections (per protocol version) and the dedicated pools;
//! and the router that maps keys to servers.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use attache_resp::hash::Distributor;

use super::connection::ConnectionHandle;
use super::connector::{authority, Connector, Protocol};
use super::dedicated::{DedicatedManager, DedicatedPool};
use super::error::{UpstreamError, UpstreamId};
use super::router::{EjectPolicy, HashedRouter, Health, Router};
use super::shared::spawn_shared;
use crate::config::RedisListenerConfig;
use crate::credentials::RedisCredentials;

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
    upstreams: Vec<Upstream>,
    /// `host:port` of each server, for merged replies that name them.
    pub(crate) labels: Vec<String>,
    next_shared: AtomicUsize,
}

impl RedisService {
    /// Builds the upstream side and starts connecting (RESP2 shared
    /// connections now; RESP3 ones when an app first asks for RESP3).
    pub(crate) fn start(name: &str, config: &RedisListenerConfig) -> Arc<Self> {
        let credentials = config.auth.as_ref().map(RedisCredentials::from_config);
        let policy = EjectPolicy {
            enabled: config.auto_eject_hosts && config.mode.distribution().is_some(),
            failure_limit: config.server_failure_limit,
            retry_timeout: config.server_retry_timeout,
        };
        let changes = Arc::new(AtomicU64::new(0));
        let mut upstreams = Vec::new();
        let mut healths = Vec::new();
        for server in &config.servers {
            let connector = Arc::new(Connector::new(
                name,
                server.clone(),
                credentials.clone(),
                config.connect_timeout,
            ));
            let health = Arc::new(Health::new(connector.id.clone(), policy, changes.clone()));
            let shared_for = |protocol: Protocol| {
                (0..config.server_connections)
                    .map(|_| {
                        spawn_shared(
                            connector.clone(),
                            protocol,
                            config.timeout,
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
                    config.timeout,
                    config.max_dedicated_connections,
                )
            };
            upstreams.push(Upstream {
                shared: [shared_for(Protocol::Resp2), shared_for(Protocol::Resp3)],
                dedicated: [pool_for(Protocol::Resp2), pool_for(Protocol::Resp3)],
                connector,
            });
            healths.push(health);
        }
        let router = match config.mode.distribution() {
            None => Router::Single,
            Some(distribution) => {
                match Distributor::new(distribution, config.hash, config.hash_tag, &config.servers)
                {
                    Ok(ring) => {
                        Router::Hashed(HashedRouter::new(ring, policy.enabled, healths, changes))
                    }
                    // Validation builds the same ring first, so this cannot happen.
                    Err(_) => Router::Single,
                }
            }
        };
        Arc::new(Self {
            name: name.into(),
            max_request_bytes: config.max_request_bytes,
            router,
            labels: config.servers.iter().map(authority).collect(),
            upstreams,
            next_shared: AtomicUsize::new(0),
        })
    }

    /// Which shared connection a new app connection uses for its whole life:
    /// one connection per server keeps the app's commands in order.
    pub(crate) fn next_shared_index(&self) -> usize {
        self.next_shared.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn servers(&self) -> usize {
        self.upstreams.len()
    }

    pub(crate) fn shared(
        &self,
        server: usize,
        protocol: Protocol,
        index: usize,
    ) -> ConnectionHandle {
        let group = &self.upstreams[server].shared[protocol.index()];
        group[index % group.len()].clone()
    }

    pub(crate) fn dedicated(&self, server: usize, protocol: Protocol) -> &DedicatedPool {
        &self.upstreams[server].dedicated[protocol.index()]
    }

    pub(crate) fn upstream_id(&self, server: usize) -> UpstreamId {
        self.upstreams[server].connector.id.clone()
    }

    /// For a reply whose connection vanished without saying why.
    pub(crate) fn closed_error(&self) -> UpstreamError {
        UpstreamError::Closed(self.upstream_id(0))
    }
}
