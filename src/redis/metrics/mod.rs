//! Counters of one Redis listener, kept across reloads (a reload that
//! reconfigures the listener keeps counting). Each is one relaxed atomic
//! add where it happens; `/metrics` reads them.
//!
//! Sharded per worker: a worker thread gets its own [`RedisMetrics`] for
//! each listener (see [`MetricsRegistry::listener`]), so the request path
//! of one worker never writes a cache line another worker writes; `/metrics`
//! adds the shards up.
//!
//! - `upstream`: per upstream server and command family: requests, error
//!   replies, latency; the upstream's connection gauges.

mod upstream;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

pub(crate) use upstream::{
    ErrorSource, Family, FamilySnapshot, PoolStatus, UpstreamSnapshot, UpstreamStats,
};

/// The `upstream` label of commands attache answered itself.
pub(crate) const LOCAL_UPSTREAM: &str = "attache";

/// A counter as `/metrics` shows it: name suffix, help text, value.
pub(crate) type Counter = (&'static str, &'static str, u64);

/// One listener's counters.
#[derive(Debug, Default)]
pub(crate) struct RedisMetrics {
    /// Commands received from apps.
    pub(crate) commands: AtomicU64,
    /// `-ERR attache: …` replies: upstream failures the app was told about.
    pub(crate) errors: AtomicU64,
    /// Upstream connections established (shared and dedicated).
    pub(crate) connects: AtomicU64,
    /// Upstream connect attempts that failed.
    pub(crate) connect_failures: AtomicU64,
    /// Shared upstream connections lost (and re-established).
    pub(crate) connections_lost: AtomicU64,
    /// In-band `AUTH`s sent after a credential refresh.
    pub(crate) reauths: AtomicU64,
    /// Servers ejected from a hashed ring.
    pub(crate) ejections: AtomicU64,
    /// Cluster `MOVED` redirects followed.
    pub(crate) moved: AtomicU64,
    /// Cluster `ASK` redirects followed.
    pub(crate) ask: AtomicU64,
    /// Cluster slot maps installed.
    pub(crate) topology_refreshes: AtomicU64,
    /// Per upstream label (`host:port`, or [`LOCAL_UPSTREAM`]).
    upstreams: Mutex<BTreeMap<Arc<str>, Arc<UpstreamStats>>>,
}

impl RedisMetrics {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The stats of the upstream labelled `label` (created on first use):
    /// every connector and generation of the same server shares them.
    pub(crate) fn upstream(&self, label: &str) -> Arc<UpstreamStats> {
        let mut map = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stats) = map.get(label) {
            return stats.clone();
        }
        let label: Arc<str> = label.into();
        let stats = Arc::new(UpstreamStats::new(label.clone()));
        map.insert(label, stats.clone());
        stats
    }

    /// Every upstream's stats on this shard.
    pub(crate) fn upstreams(&self) -> Vec<Arc<UpstreamStats>> {
        let map = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        map.values().cloned().collect()
    }

    /// `(metric suffix, help, value)` of every counter.
    pub(crate) fn counters(&self) -> [Counter; 10] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            (
                "commands_total",
                "Commands received from apps.",
                get(&self.commands),
            ),
            (
                "errors_total",
                "Error replies attache gave apps in place of an upstream reply.",
                get(&self.errors),
            ),
            (
                "upstream_connects_total",
                "Upstream connections established.",
                get(&self.connects),
            ),
            (
                "upstream_connect_failures_total",
                "Upstream connection attempts that failed.",
                get(&self.connect_failures),
            ),
            (
                "upstream_connections_lost_total",
                "Shared upstream connections lost (then re-established).",
                get(&self.connections_lost),
            ),
            (
                "upstream_reauths_total",
                "In-band AUTHs sent after a credential refresh.",
                get(&self.reauths),
            ),
            (
                "ejections_total",
                "Servers ejected from a hashed ring.",
                get(&self.ejections),
            ),
            (
                "cluster_moved_total",
                "Cluster MOVED redirects followed.",
                get(&self.moved),
            ),
            (
                "cluster_ask_total",
                "Cluster ASK redirects followed.",
                get(&self.ask),
            ),
            (
                "cluster_topology_refreshes_total",
                "Cluster slot maps installed.",
                get(&self.topology_refreshes),
            ),
        ]
    }
}

/// One listener's counters, one shard per worker thread.
type Shards = Vec<(ThreadId, Arc<RedisMetrics>)>;

/// Every listener's counters, by name, one shard per worker thread.
#[derive(Debug, Default, Clone)]
pub(crate) struct MetricsRegistry {
    listeners: Arc<Mutex<BTreeMap<String, Shards>>>,
}

impl MetricsRegistry {
    /// The calling thread's shard of listener `name`'s counters (created
    /// on first use). A listener's upstream side is built on the worker
    /// that runs it, so each worker counts in its own shard.
    pub(crate) fn listener(&self, name: &str) -> Arc<RedisMetrics> {
        let thread = std::thread::current().id();
        let mut map = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        let shards = map.entry(name.to_owned()).or_default();
        if let Some((_, shard)) = shards.iter().find(|(t, _)| *t == thread) {
            return shard.clone();
        }
        let shard = Arc::new(RedisMetrics::default());
        shards.push((thread, shard.clone()));
        shard
    }

    /// Every listener's shards.
    pub(crate) fn snapshot(&self) -> Vec<(String, Vec<Arc<RedisMetrics>>)> {
        let map = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .map(|(k, v)| (k.clone(), v.iter().map(|(_, m)| m.clone()).collect()))
            .collect()
    }
}
