//! Which server a key lives on, and twemproxy's host ejection.
//!
//! In the hashed modes a server that fails `server_failure_limit` times in
//! a row (connect errors, lost connections, timeouts) is taken out of the
//! ring for `server_retry_timeout`: its keys go to the next server on the
//! ring meanwhile, exactly as twemproxy rebuilds its continuum over the live
//! servers. After the timeout it is back in; if it fails again it goes out
//! again.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use attache_resp::hash::Distributor;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::warn;

use super::error::UpstreamId;
use crate::config::ReadFrom;

/// Ejection settings (`auto_eject_hosts` and friends).
#[derive(Debug, Clone, Copy)]
pub(crate) struct EjectPolicy {
    pub(crate) enabled: bool,
    pub(crate) failure_limit: u32,
    pub(crate) retry_timeout: Duration,
}

/// One server's recent health, written by its connections.
pub(crate) struct Health {
    id: UpstreamId,
    policy: EjectPolicy,
    failures: AtomicU32,
    ejected_until: Mutex<Option<Instant>>,
    /// Bumped on every ejection, shared by a listener's servers.
    changes: Arc<AtomicU64>,
}

impl Health {
    pub(crate) fn new(id: UpstreamId, policy: EjectPolicy, changes: Arc<AtomicU64>) -> Self {
        Self {
            id,
            policy,
            failures: AtomicU32::new(0),
            ejected_until: Mutex::new(None),
            changes,
        }
    }

    pub(crate) fn record_success(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    /// Counts a failure; true when it ejected the server.
    pub(crate) fn record_failure(&self) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if self.policy.enabled && failures >= self.policy.failure_limit {
            self.failures.store(0, Ordering::Relaxed);
            *self.ejected_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(
                crate::clock::after(Instant::now(), self.policy.retry_timeout),
            );
            self.changes.fetch_add(1, Ordering::Relaxed);
            warn!(upstream = %self.id, failures, retry_in = ?self.policy.retry_timeout, "server ejected");
            return true;
        }
        false
    }

    /// When the ejection ends, if the server is ejected at `now`.
    fn ejected_until(&self, now: Instant) -> Option<Instant> {
        let until = *self.ejected_until.lock().unwrap_or_else(|e| e.into_inner());
        until.filter(|&t| t > now)
    }
}

/// Maps keys to server indexes.
pub(crate) enum Router {
    /// One server: everything goes to index 0.
    Single,
    /// twemproxy's ketama / modula / random over the servers.
    Hashed(HashedRouter),
    /// Redis Cluster: slots to the upstream of each slot's primary.
    Cluster(ClusterRouter),
}

/// The slot map of a Redis Cluster, as upstream indexes.
pub(crate) struct ClusterRouter {
    pub(crate) read_from: ReadFrom,
    slots: RwLock<Option<Arc<ClusterSlots>>>,
    /// Wakes the topology task early (a MOVED, a failing node).
    pub(crate) refresh: Notify,
}

/// Slot → shard, each shard's primary and read replicas (upstream
/// indexes), and the distinct primaries.
pub(crate) struct ClusterSlots {
    pub(crate) shard_of: Box<[Option<u16>]>,
    pub(crate) shard_primary: Vec<u32>,
    pub(crate) shard_replicas: Vec<Vec<u32>>,
    pub(crate) primaries: Vec<usize>,
}

impl ClusterRouter {
    pub(crate) fn new(read_from: ReadFrom) -> Self {
        Self {
            read_from,
            slots: RwLock::new(None),
            refresh: Notify::new(),
        }
    }

    pub(crate) fn install(&self, slots: ClusterSlots) {
        *self.slots.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(slots));
    }

    /// The current map, if the topology is known yet.
    pub(crate) fn slots(&self) -> Option<Arc<ClusterSlots>> {
        self.slots.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl ClusterSlots {
    /// The primary serving `slot`.
    pub(crate) fn owner_of(&self, slot: u16) -> Option<usize> {
        let shard = self.shard_of.get(slot as usize).copied().flatten()?;
        self.shard_primary.get(shard as usize).map(|&u| u as usize)
    }

    /// A replica serving reads of `slot` (spread by `pick`), if the
    /// listener reads from replicas and the shard has one online.
    pub(crate) fn reader_of(&self, slot: u16, pick: usize) -> Option<usize> {
        let shard = self.shard_of.get(slot as usize).copied().flatten()?;
        let replicas = self.shard_replicas.get(shard as usize)?;
        (!replicas.is_empty()).then(|| replicas[pick % replicas.len()] as usize)
    }
}

pub(crate) struct HashedRouter {
    all_live: Arc<Distributor>,
    eject: bool,
    healths: Vec<Arc<Health>>,
    changes: Arc<AtomicU64>,
    state: Mutex<RingState>,
}

struct RingState {
    ring: Arc<Distributor>,
    changes_seen: u64,
    /// The earliest end of a current ejection, when the ring must be
    /// rebuilt to take the server back.
    next_rebuild: Option<Instant>,
}

impl HashedRouter {
    pub(crate) fn new(
        all_live: Distributor,
        eject: bool,
        healths: Vec<Arc<Health>>,
        changes: Arc<AtomicU64>,
    ) -> Self {
        let all_live = Arc::new(all_live);
        Self {
            state: Mutex::new(RingState {
                ring: all_live.clone(),
                changes_seen: 0,
                next_rebuild: None,
            }),
            all_live,
            eject,
            healths,
            changes,
        }
    }

    /// The ring in force now, rebuilt if a server was ejected or came back.
    pub(crate) fn ring(&self) -> Arc<Distributor> {
        if !self.eject {
            return self.all_live.clone();
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let changes = self.changes.load(Ordering::Relaxed);
        let now = Instant::now();
        let expired = state.next_rebuild.is_some_and(|t| now >= t);
        if changes != state.changes_seen || expired {
            state.changes_seen = changes;
            let until: Vec<Option<Instant>> =
                self.healths.iter().map(|h| h.ejected_until(now)).collect();
            state.next_rebuild = until.iter().flatten().min().copied();
            let live: Vec<bool> = until.iter().map(Option::is_none).collect();
            state.ring = if live.iter().all(|&l| l) {
                self.all_live.clone()
            } else {
                // With every server ejected, keep the full ring: errors from
                // the real servers beat a refusal from attache.
                Arc::new(
                    self.all_live
                        .with_live(&live)
                        .unwrap_or_else(|_| (*self.all_live).clone()),
                )
            };
        }
        state.ring.clone()
    }
}

impl Router {
    pub(crate) fn is_sharded(&self) -> bool {
        !matches!(self, Router::Single)
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Router::Cluster(_))
    }
}
