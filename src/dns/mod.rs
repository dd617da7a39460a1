//! Upstream host names, resolved and kept fresh.
//!
//! [`Resolver::watch`] resolves a `(host, port)` once and then re-resolves it
//! in the background whenever the answer's TTL runs out, clamped to
//! `[dns] min_ttl`..`max_ttl` (defaults 5 s..60 s) plus 0–10% jitter. A
//! consumer reads the current addresses with [`Watched::addrs`] or follows
//! changes with [`Watched::subscribe`], and turns each change into
//! connections to open and to drain with [`AddrDiff`].
//!
//! A DNS blip never empties an upstream: a failed refresh (timeout, SERVFAIL,
//! NXDOMAIN, an empty answer) keeps the last good addresses, is logged once
//! per streak of failures, shows in [`Watched::status`], and is retried after
//! `min_ttl` instead of a whole TTL.
//!
//! # Threads
//!
//! One [`Resolver`] serves the whole process. Its refresh tasks, and hickory's
//! sockets, run on the runtime handed to [`Resolver::new`]; the workers (each
//! its own single-threaded runtime) only read answers through `watch`
//! channels, so no worker's runtime carries another's DNS traffic.
//!
//! # Layout
//!
//! - `config`: [`DnsConfig`], the `[dns]` section.
//! - `refresh`: the per-name background task and its [`DnsStatus`].
//! - `hickory`: the resolver that asks the nameservers.
//! - `diff`: [`AddrDiff`], old vs new address sets.

mod config;
mod diff;
mod hickory;
mod refresh;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::ResolveError;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::AbortHandle;

pub use self::config::DnsConfig;
pub use self::diff::AddrDiff;
pub use self::refresh::DnsStatus;
use self::refresh::{FirstAnswer, Lookup, RefreshPolicy, Refresher};

/// What can go wrong resolving a name.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DnsError {
    /// A `[dns]` value is out of range.
    #[error("{key}: {message}")]
    InvalidConfig {
        /// The dotted key, e.g. `dns.max_ttl`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// `nameservers` is empty and the system's resolver config is unusable.
    #[error("dns: reading the system resolver config (/etc/resolv.conf): {source}")]
    SystemConfig {
        /// hickory's reason.
        source: ResolveError,
    },
    /// The nameservers did not answer (a timeout, a refused connection), or
    /// the name is malformed.
    #[error("resolving {host}: {source}")]
    Resolve {
        /// The name asked for.
        host: String,
        /// hickory's reason.
        source: ResolveError,
    },
    /// A nameserver answered with an error code: `NXDomain` (no such name),
    /// `ServFail`, `Refused`…
    #[error("resolving {host}: the nameserver answered {code:?} ({code})")]
    Answered {
        /// The name asked for.
        host: String,
        /// The answer's response code.
        code: ResponseCode,
    },
    /// The answer had neither A nor AAAA records.
    #[error("resolving {host}: the answer has no A or AAAA records")]
    NoAddresses {
        /// The name asked for.
        host: String,
    },
    /// The DNS runtime shut down before the first answer arrived.
    #[error("resolving {host}: the DNS runtime has shut down")]
    Stopped {
        /// The name asked for.
        host: String,
    },
}

/// Resolves upstream names and keeps them fresh; see the [module](self)
/// docs. Cheap to clone: clones share the refresh tasks.
#[derive(Clone)]
pub struct Resolver {
    shared: Arc<Shared>,
}

struct Shared {
    lookup: Arc<dyn Lookup>,
    policy: RefreshPolicy,
    runtime: Handle,
    /// One refresh task per watched `(host, port)`; an entry lives as long
    /// as some `Watched` holds it.
    watched: Mutex<HashMap<(String, u16), Weak<Entry>>>,
}

impl Resolver {
    /// A resolver for `config` (validated here) whose background work runs
    /// on `runtime`, which must outlive every `Watched` that should stay
    /// fresh. Reads `/etc/resolv.conf` when `config.nameservers` is empty.
    pub fn new(config: &DnsConfig, runtime: Handle) -> Result<Self, DnsError> {
        let config = config.clone().validate()?;
        let lookup = hickory::HickoryLookup::new(&config, &runtime)?;
        let policy = RefreshPolicy {
            min_ttl: config.min_ttl,
            max_ttl: config.max_ttl,
        };
        Ok(Self::with_lookup(Arc::new(lookup), policy, runtime))
    }

    fn with_lookup(lookup: Arc<dyn Lookup>, policy: RefreshPolicy, runtime: Handle) -> Self {
        Self {
            shared: Arc::new(Shared {
                lookup,
                policy,
                runtime,
                watched: Mutex::default(),
            }),
        }
    }

    /// Resolves `host` now and keeps it fresh until the returned `Watched`
    /// (and its clones) are dropped. Returns once the first answer is in; an
    /// error (naming `host`) if there is none. Watchers of one `(host, port)`
    /// share one background task. An IP literal (`10.0.0.7`, `::1`,
    /// `[::1]`) needs no DNS and never changes.
    pub async fn watch(&self, host: &str, port: u16) -> Result<Watched, DnsError> {
        let literal = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = literal.parse::<IpAddr>() {
            return Ok(Watched::constant(host, SocketAddr::new(ip, port)));
        }
        let entry = self.entry(host.to_ascii_lowercase(), port);
        let mut first = entry.first.clone();
        let outcome = first
            .wait_for(|f| !matches!(f, FirstAnswer::Pending))
            .await
            .map(|f| f.clone());
        match outcome {
            Ok(FirstAnswer::Failed(error)) => Err(error),
            Ok(_) => Ok(Watched { entry }),
            Err(_) => Err(DnsError::Stopped {
                host: host.to_owned(),
            }),
        }
    }

    /// The live entry for `(host, port)`, or a new one with its task spawned.
    fn entry(&self, host: String, port: u16) -> Arc<Entry> {
        let mut watched = self
            .shared
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        watched.retain(|_, entry| entry.strong_count() > 0);
        let key = (host, port);
        if let Some(entry) = watched.get(&key).and_then(Weak::upgrade) {
            // A failed first resolution is not shared with later callers:
            // they get a fresh attempt.
            if !matches!(*entry.first.borrow(), FirstAnswer::Failed(_)) {
                return entry;
            }
        }
        let host: Arc<str> = key.0.as_str().into();
        let (addrs_tx, addrs) = watch::channel(Arc::<[SocketAddr]>::from([]));
        let (first_tx, first) = watch::channel(FirstAnswer::Pending);
        let status = Arc::new(Mutex::new(DnsStatus::default()));
        let refresher = Refresher {
            host: host.clone(),
            port,
            lookup: self.shared.lookup.clone(),
            policy: self.shared.policy,
            addrs: addrs_tx,
            status: status.clone(),
            first: first_tx,
        };
        let task = self.shared.runtime.spawn(refresher.run()).abort_handle();
        let entry = Arc::new(Entry {
            host,
            port,
            addrs,
            status,
            first,
            _constant: None,
            task: Some(task),
        });
        watched.insert(key, Arc::downgrade(&entry));
        entry
    }
}

/// A name being kept fresh. Cheap to clone; the background refresh stops
/// when the last clone is dropped (receivers from [`subscribe`] then see
/// the channel close).
///
/// [`subscribe`]: Watched::subscribe
#[derive(Clone)]
pub struct Watched {
    entry: Arc<Entry>,
}

struct Entry {
    host: Arc<str>,
    port: u16,
    addrs: watch::Receiver<Arc<[SocketAddr]>>,
    status: Arc<Mutex<DnsStatus>>,
    first: watch::Receiver<FirstAnswer>,
    /// An IP literal's sender, held so its subscribers wait forever rather
    /// than see a closed channel.
    _constant: Option<watch::Sender<Arc<[SocketAddr]>>>,
    task: Option<AbortHandle>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Watched {
    fn constant(host: &str, addr: SocketAddr) -> Self {
        let (sender, addrs) = watch::channel(Arc::<[SocketAddr]>::from([addr]));
        let (_, first) = watch::channel(FirstAnswer::Ready);
        Self {
            entry: Arc::new(Entry {
                host: host.into(),
                port: addr.port(),
                addrs,
                status: Arc::default(),
                first,
                _constant: Some(sender),
                task: None,
            }),
        }
    }

    /// The name as watched.
    pub fn host(&self) -> &str {
        &self.entry.host
    }

    /// The port every address carries.
    pub fn port(&self) -> u16 {
        self.entry.port
    }

    /// The current addresses (A and AAAA), sorted and deduplicated; never
    /// empty.
    pub fn addrs(&self) -> Arc<[SocketAddr]> {
        self.entry.addrs.borrow().clone()
    }

    /// A receiver that is notified when the address set changes (not on a
    /// refresh that returns the same set). The current set counts as seen.
    pub fn subscribe(&self) -> watch::Receiver<Arc<[SocketAddr]>> {
        let mut addrs = self.entry.addrs.clone();
        addrs.borrow_and_update();
        addrs
    }

    /// How resolution of this name is doing.
    pub fn status(&self) -> DnsStatus {
        self.entry
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("host", &self.host())
            .field("port", &self.port())
            .field("addrs", &self.addrs())
            .finish()
    }
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}
