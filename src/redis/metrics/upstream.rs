//! Per upstream server (of one listener, on one worker): requests, error
//! replies and latency by command family, and the gauges of its
//! connections.
//!
//! A command's family is its group in the command table (`COMMAND DOCS`:
//! string, hash, list, sorted-set, …), so the label set is bounded by the
//! table; a command the table does not know is `other`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use attache_resp::command::Group;

use crate::admin::histogram::{Histogram, HistogramSnapshot};
use crate::redis::service::Upstream;

/// Every group of the command table, in declaration order (a test checks
/// that `group as usize` indexes it).
const GROUPS: [Group; 18] = [
    Group::Generic,
    Group::String,
    Group::List,
    Group::Set,
    Group::SortedSet,
    Group::Hash,
    Group::Pubsub,
    Group::Transactions,
    Group::Connection,
    Group::Server,
    Group::Scripting,
    Group::Hyperloglog,
    Group::Cluster,
    Group::Sentinel,
    Group::Geo,
    Group::Stream,
    Group::Bitmap,
    Group::Module,
];

/// Families: the table's groups, then `other`.
pub(crate) const FAMILIES: usize = GROUPS.len() + 1;

/// A command family: an index into the per-family stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Family(u8);

impl Family {
    /// Commands the command table does not know.
    pub(crate) const OTHER: Family = Family(GROUPS.len() as u8);

    /// The family of a command in `group` (`None`: unknown command).
    pub(crate) fn of(group: Option<Group>) -> Family {
        match group {
            Some(g) if (g as usize) < GROUPS.len() => Family(g as u8),
            _ => Family::OTHER,
        }
    }

    /// The `family` label value.
    pub(crate) fn name(self) -> &'static str {
        GROUPS.get(self.0 as usize).map_or("other", |g| g.as_str())
    }

    fn index(self) -> usize {
        self.0 as usize
    }
}

/// Who produced an error reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorSource {
    /// The upstream Redis (`-ERR …`, `-WRONGTYPE …`).
    Upstream = 0,
    /// attache itself (`-ERR attache: …`, `-CROSSSLOT …`, refusals).
    Attache = 1,
}

impl ErrorSource {
    pub(crate) const ALL: [ErrorSource; 2] = [ErrorSource::Upstream, ErrorSource::Attache];

    pub(crate) fn name(self) -> &'static str {
        match self {
            ErrorSource::Upstream => "upstream",
            ErrorSource::Attache => "attache",
        }
    }
}

#[derive(Debug, Default)]
struct FamilyStats {
    /// Read from the app → reply ready for the app. Its count is the
    /// number of commands answered.
    latency: Histogram,
    errors: [AtomicU64; 2],
}

/// One upstream's stats on one worker. The label is the server's
/// `host:port` (`attache` for commands attache answered itself).
#[derive(Debug)]
pub(crate) struct UpstreamStats {
    pub(crate) label: Arc<str>,
    families: [FamilyStats; FAMILIES],
    /// Shared multiplexed connections connected now.
    pub(crate) shared_open: AtomicU64,
    /// Connections established (shared and dedicated).
    pub(crate) connects: AtomicU64,
    /// Connect attempts that failed.
    pub(crate) connect_failures: AtomicU64,
    /// Connections lost (shared) since start.
    pub(crate) connections_lost: AtomicU64,
    /// Times this server was ejected from a hashed ring.
    pub(crate) ejections: AtomicU64,
    /// Cluster `MOVED` redirects this node answered (and attache followed).
    pub(crate) moved: AtomicU64,
    /// Cluster `ASK` redirects this node answered.
    pub(crate) ask: AtomicU64,
    /// The live upstreams (this worker, every generation) with this label,
    /// sampled for pool sizes and in-flight requests when rendering.
    upstreams: Mutex<Vec<Weak<Upstream>>>,
}

impl UpstreamStats {
    pub(crate) fn new(label: Arc<str>) -> Self {
        Self {
            label,
            families: Default::default(),
            shared_open: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            connections_lost: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            moved: AtomicU64::new(0),
            ask: AtomicU64::new(0),
            upstreams: Mutex::new(Vec::new()),
        }
    }

    /// Counts `n` commands of `family` answered after `elapsed`.
    pub(crate) fn answered(&self, family: Family, elapsed: Duration, n: u64) {
        self.families[family.index()].latency.observe_n(elapsed, n);
    }

    /// Counts `n` error replies to commands of `family`.
    pub(crate) fn error(&self, family: Family, source: ErrorSource, n: u64) {
        self.families[family.index()].errors[source as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Samples `upstream`'s connections when rendering, while it lives.
    pub(crate) fn watch(&self, upstream: &Arc<Upstream>) {
        let mut upstreams = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        upstreams.retain(|u| u.strong_count() > 0);
        upstreams.push(Arc::downgrade(upstream));
    }

    /// This shard's numbers now.
    pub(crate) fn snapshot(&self) -> UpstreamSnapshot {
        let mut snapshot = UpstreamSnapshot {
            shared_open: self.shared_open.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
            connect_failures: self.connect_failures.load(Ordering::Relaxed),
            connections_lost: self.connections_lost.load(Ordering::Relaxed),
            ejections: self.ejections.load(Ordering::Relaxed),
            moved: self.moved.load(Ordering::Relaxed),
            ask: self.ask.load(Ordering::Relaxed),
            ..UpstreamSnapshot::default()
        };
        for (into, from) in snapshot.families.iter_mut().zip(&self.families) {
            into.latency = from.latency.snapshot();
            for (e, counter) in into.errors.iter_mut().zip(&from.errors) {
                *e = counter.load(Ordering::Relaxed);
            }
        }
        let upstreams = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        for upstream in upstreams.iter().filter_map(Weak::upgrade) {
            let pools = upstream.pool_status();
            snapshot.in_flight += pools.in_flight;
            snapshot.dedicated_open += pools.dedicated_open;
            snapshot.dedicated_idle += pools.dedicated_idle;
        }
        snapshot
    }
}

/// What an upstream's connections hold now.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PoolStatus {
    /// Request batches sent on shared connections and not answered yet.
    pub(crate) in_flight: u64,
    /// Dedicated connections open (pinned to an app, or idle).
    pub(crate) dedicated_open: u64,
    /// Dedicated connections idle in the pool.
    pub(crate) dedicated_idle: u64,
}

/// One family's numbers.
#[derive(Debug, Default, Clone)]
pub(crate) struct FamilySnapshot {
    pub(crate) latency: HistogramSnapshot,
    /// By [`ErrorSource`].
    pub(crate) errors: [u64; 2],
}

/// An upstream's numbers, summed over workers with [`Self::add`].
#[derive(Debug, Default, Clone)]
pub(crate) struct UpstreamSnapshot {
    pub(crate) families: [FamilySnapshot; FAMILIES],
    pub(crate) shared_open: u64,
    pub(crate) connects: u64,
    pub(crate) connect_failures: u64,
    pub(crate) connections_lost: u64,
    pub(crate) ejections: u64,
    pub(crate) moved: u64,
    pub(crate) ask: u64,
    pub(crate) in_flight: u64,
    pub(crate) dedicated_open: u64,
    pub(crate) dedicated_idle: u64,
}

impl UpstreamSnapshot {
    pub(crate) fn add(&mut self, other: &UpstreamSnapshot) {
        for (into, from) in self.families.iter_mut().zip(&other.families) {
            into.latency.add(&from.latency);
            for (e, o) in into.errors.iter_mut().zip(&from.errors) {
                *e += o;
            }
        }
        self.shared_open += other.shared_open;
        self.connects += other.connects;
        self.connect_failures += other.connect_failures;
        self.connections_lost += other.connections_lost;
        self.ejections += other.ejections;
        self.moved += other.moved;
        self.ask += other.ask;
        self.in_flight += other.in_flight;
        self.dedicated_open += other.dedicated_open;
        self.dedicated_idle += other.dedicated_idle;
    }

    /// The families with anything to show, with their names.
    pub(crate) fn active_families(&self) -> impl Iterator<Item = (&'static str, &FamilySnapshot)> {
        self.families
            .iter()
            .enumerate()
            .filter(|(_, f)| f.latency.count() > 0 || f.errors.iter().any(|&e| e > 0))
            .map(|(i, f)| (Family(i as u8).name(), f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_indexed_by_their_discriminant() {
        for (i, g) in GROUPS.iter().enumerate() {
            assert_eq!(*g as usize, i, "{g:?}");
            assert_eq!(Family::of(Some(*g)).name(), g.as_str());
        }
        assert_eq!(Family::of(None).name(), "other");
    }

    #[test]
    fn only_families_with_traffic_are_shown_and_shards_add_up() {
        let a = UpstreamStats::new("a:1".into());
        let string = Family::of(Some(Group::String));
        a.answered(string, Duration::from_micros(40), 2);
        a.error(Family::OTHER, ErrorSource::Attache, 1);
        let b = UpstreamStats::new("a:1".into());
        b.answered(string, Duration::from_micros(40), 1);
        let mut total = a.snapshot();
        total.add(&b.snapshot());
        let shown: Vec<_> = total.active_families().collect();
        assert_eq!(shown.len(), 2);
        assert_eq!(shown[0].0, "string");
        assert_eq!(shown[0].1.latency.count(), 3);
        assert_eq!(shown[1].0, "other");
        assert_eq!(shown[1].1.errors, [0, 1]);
    }
}
