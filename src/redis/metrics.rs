//! Counters of one Redis listener, shared by every worker and kept across
//! reloads (a reload that reconfigures the listener keeps counting). Each
//! is one relaxed atomic add where it happens; `/metrics` reads them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
}

impl RedisMetrics {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
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

/// Every listener's counters, by name.
#[derive(Debug, Default, Clone)]
pub(crate) struct MetricsRegistry {
    listeners: Arc<Mutex<BTreeMap<String, Arc<RedisMetrics>>>>,
}

impl MetricsRegistry {
    /// The counters of listener `name` (created on first use).
    pub(crate) fn listener(&self, name: &str) -> Arc<RedisMetrics> {
        let mut map = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_owned()).or_default().clone()
    }

    /// A snapshot of every listener's counters.
    pub(crate) fn snapshot(&self) -> Vec<(String, Arc<RedisMetrics>)> {
        let map = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}
