//! A Redis listener's upstream side: the connector, the shared multiplexed
//! connections (per protocol version) and the dedicated pools.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::connection::ConnectionHandle;
use super::connector::{Connector, Protocol};
use super::dedicated::{DedicatedManager, DedicatedPool};
use super::error::{UpstreamError, UpstreamId};
use super::shared::spawn_shared;
use crate::config::RedisListenerConfig;
use crate::credentials::RedisCredentials;

/// Everything app sessions of one listener share.
pub(crate) struct RedisService {
    pub(crate) name: Arc<str>,
    pub(crate) max_request_bytes: usize,
    connector: Arc<Connector>,
    /// Indexed by [`Protocol::index`]; each holds `server_connections` handles.
    shared: [Vec<ConnectionHandle>; 2],
    dedicated: [DedicatedPool; 2],
    next_shared: AtomicUsize,
}

impl RedisService {
    /// Builds the upstream side and starts connecting (RESP2 shared
    /// connections now; RESP3 ones when an app first asks for RESP3).
    pub(crate) fn start(name: &str, config: &RedisListenerConfig) -> Arc<Self> {
        let server = config.servers[0].clone();
        let credentials = config.auth.as_ref().map(RedisCredentials::from_config);
        let connector = Arc::new(Connector::new(
            name,
            server,
            credentials,
            config.connect_timeout,
        ));
        let shared_for = |protocol: Protocol| {
            (0..config.server_connections)
                .map(|_| {
                    spawn_shared(
                        connector.clone(),
                        protocol,
                        config.timeout,
                        protocol == Protocol::Resp2,
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
        Arc::new(Self {
            name: name.into(),
            max_request_bytes: config.max_request_bytes,
            shared: [shared_for(Protocol::Resp2), shared_for(Protocol::Resp3)],
            dedicated: [pool_for(Protocol::Resp2), pool_for(Protocol::Resp3)],
            connector,
            next_shared: AtomicUsize::new(0),
        })
    }

    /// Which shared connection a new app connection uses for its whole life:
    /// one connection keeps the app's commands in order.
    pub(crate) fn next_shared_index(&self) -> usize {
        self.next_shared.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn shared(&self, protocol: Protocol, index: usize) -> ConnectionHandle {
        let group = &self.shared[protocol.index()];
        group[index % group.len()].clone()
    }

    pub(crate) fn dedicated(&self, protocol: Protocol) -> &DedicatedPool {
        &self.dedicated[protocol.index()]
    }

    pub(crate) fn upstream_id(&self) -> UpstreamId {
        self.connector.id.clone()
    }

    /// For a reply whose connection vanished without saying why.
    pub(crate) fn closed_error(&self) -> UpstreamError {
        UpstreamError::Closed(self.upstream_id())
    }
}
