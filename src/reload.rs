//! Hot reload. A [`Generation`] is everything workers serve: the config,
//! its bound listening sockets and the upstream services. [`prepare`] turns
//! a new config into the next generation (binding what is new, reusing the
//! sockets of listeners whose address did not change); each worker then
//! applies it on its own event loop ([`run_worker`]):
//!
//! - an unchanged listener keeps its accept loop, service and connections;
//! - a listener whose settings changed (same address) gets a new service
//!   for new app connections; each existing app connection moves to it the
//!   next time it is idle (nothing in flight, no transaction, no pinned
//!   connection), so its in-flight commands finish on the old upstream
//!   connections, which close when the last one leaves;
//! - an added listener starts accepting; a removed one (or one whose
//!   address changed, which is a remove and an add) stops accepting and its
//!   app connections close when idle. A new listener on the address of one
//!   going away (renamed, or two swapping ports) takes its socket over.
//!
//! HTTP listeners (`[http.NAME]`) follow the same rules; a reconfigured one
//! serves each new request with the new service, even on an app connection
//! that stays open (HTTP requests carry no connection state), while
//! requests in flight finish on the old one. A removed one stops accepting
//! and closes its app connections gracefully (in-flight requests finish).
//!
//! Sections that shape the process rather than a listener (`[runtime]`,
//! `[admin]`, `[log]`, `[dns]`, `[tokens]`) need a restart: a reload that
//! changes them is refused and the running config stays.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock, Weak};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::info;

use crate::config::{Config, HttpListenerConfig, RedisListenerConfig};
use crate::http::{self, HttpService};
use crate::listener::{self, BoundListener};
use crate::redis::{self, RedisService};
use crate::shutdown::SessionShutdown;
use crate::upstream::UpstreamServices;

/// Everything the workers serve at one point in time.
pub struct Generation {
    pub(crate) config: Arc<Config>,
    pub(crate) listeners: BTreeMap<String, Arc<BoundListener>>,
    pub(crate) http_listeners: BTreeMap<String, Arc<BoundListener>>,
    pub(crate) services: Arc<UpstreamServices>,
    /// Sockets of listeners that earlier reloads let go of, while a worker
    /// may still hold them (by address): a reload that comes right after
    /// can take them over too.
    retired: BTreeMap<SocketAddr, Weak<BoundListener>>,
}

/// Why a new config was not applied (the running one stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// A section that needs a restart changed.
    #[error("[{0}] changed: that needs a restart (the running config stays)")]
    NeedsRestart(&'static str),
    /// A new or moved listener cannot be bound.
    #[error(transparent)]
    Bind(#[from] std::io::Error),
    /// TLS files of the new config do not load.
    #[error(transparent)]
    Services(#[from] crate::upstream::StartError),
}

impl Generation {
    /// The first generation: `config` with `listeners` bound and `services`.
    pub fn first(
        config: Config,
        listeners: &crate::Listeners,
        services: Arc<UpstreamServices>,
    ) -> Self {
        let generation = Self {
            config: Arc::new(config),
            listeners: listeners
                .redis
                .iter()
                .map(|l| (l.name().to_string(), l.clone()))
                .collect(),
            http_listeners: listeners
                .http
                .iter()
                .map(|l| (l.name().to_string(), l.clone()))
                .collect(),
            services,
            retired: BTreeMap::new(),
        };
        generation.own_listeners();
        generation
    }

    /// Tells the upstream side which addresses attache listens on now, so
    /// that no upstream connection goes to one of them.
    fn own_listeners(&self) {
        let bound = self.listeners.iter().chain(&self.http_listeners);
        let addrs = bound.filter_map(|(name, l)| Some((name.clone(), l.local_addr().ok()?)));
        self.services.own_listeners().set(addrs);
    }

    /// The config this generation serves.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Connection counts of its listeners.
    pub fn stats(&self) -> Vec<crate::ListenerStats> {
        self.listeners
            .values()
            .chain(self.http_listeners.values())
            .map(|l| l.stats())
            .collect()
    }

    /// The bound address of Redis listener `name`.
    pub fn redis_addr(&self, name: &str) -> Option<std::net::SocketAddr> {
        self.listeners.get(name).and_then(|l| l.local_addr().ok())
    }

    /// The bound address of HTTP listener `name`.
    pub fn http_addr(&self, name: &str) -> Option<std::net::SocketAddr> {
        self.http_listeners
            .get(name)
            .and_then(|l| l.local_addr().ok())
    }
}

/// The next generation for `config` after `current`.
pub fn prepare(current: &Generation, config: Config) -> Result<Generation, ReloadError> {
    let old = &current.config;
    if config.runtime != old.runtime {
        return Err(ReloadError::NeedsRestart("runtime"));
    }
    if config.admin != old.admin {
        return Err(ReloadError::NeedsRestart("admin"));
    }
    if config.log != old.log {
        return Err(ReloadError::NeedsRestart("log"));
    }
    if config.dns != old.dns {
        return Err(ReloadError::NeedsRestart("dns"));
    }
    if config.tokens != old.tokens {
        return Err(ReloadError::NeedsRestart("tokens"));
    }
    // Sockets of listeners going away (removed, renamed or moved), by
    // address: a new listener there takes the socket over, since this
    // process still holds the address until they have drained.
    let mut released: BTreeMap<SocketAddr, Arc<BoundListener>> = current
        .retired
        .iter()
        .filter_map(|(addr, bound)| Some((*addr, bound.upgrade()?)))
        .collect();
    for (name, bound) in &current.listeners {
        let addr = old.redis[name].listen;
        if addr.port() != 0 && config.redis.get(name).is_none_or(|l| l.listen != addr) {
            released.insert(addr, bound.clone());
        }
    }
    for (name, bound) in &current.http_listeners {
        let addr = old.http[name].listen;
        if addr.port() != 0 && config.http.get(name).is_none_or(|l| l.listen != addr) {
            released.insert(addr, bound.clone());
        }
    }
    let mut bind = |name: &str, addr, max| match released.remove(&addr) {
        Some(other) => BoundListener::take_over(name, &other, max).map(Arc::new),
        None => BoundListener::bind(name, addr, max).map(Arc::new),
    };
    let mut listeners = BTreeMap::new();
    for (name, l) in &config.redis {
        // Same address: same socket, with the new `max_connections`.
        let reuse = current
            .listeners
            .get(name)
            .filter(|_| old.redis[name].listen == l.listen);
        let bound = match reuse {
            Some(bound) => bound.clone(),
            None => bind(name, l.listen, l.max_connections)?,
        };
        listeners.insert(name.clone(), bound);
    }
    let mut http_listeners = BTreeMap::new();
    for (name, l) in &config.http {
        let reuse = current
            .http_listeners
            .get(name)
            .filter(|_| old.http.get(name).is_some_and(|o| o.listen == l.listen));
        let bound = match reuse {
            Some(bound) => bound.clone(),
            None => bind(name, l.listen, l.max_connections)?,
        };
        http_listeners.insert(name.clone(), bound);
    }
    let services = Arc::new(current.services.for_config(&config)?);
    // Kept sockets take the new limit once nothing else can refuse it.
    for (name, bound) in &listeners {
        bound.set_max_connections(config.redis[name].max_connections);
    }
    for (name, bound) in &http_listeners {
        bound.set_max_connections(config.http[name].max_connections);
    }
    let retired = released
        .iter()
        .map(|(addr, bound)| (*addr, Arc::downgrade(bound)))
        .collect();
    let next = Generation {
        config: Arc::new(config),
        listeners,
        http_listeners,
        services,
        retired,
    };
    next.own_listeners();
    Ok(next)
}

/// One listener as one worker serves it.
struct Served {
    bound: Arc<BoundListener>,
    config: RedisListenerConfig,
    service: Arc<RwLock<Arc<RedisService>>>,
    stop: watch::Sender<bool>,
}

/// A worker: serves every generation it is given, on the current
/// (single-threaded) runtime, until `shutdown`; then stops accepting,
/// tells its app connections to close when idle and returns once the
/// accept loops have ended.
pub async fn run_worker(
    mut generations: watch::Receiver<Arc<Generation>>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut served: BTreeMap<String, Served> = BTreeMap::new();
    let mut served_http: BTreeMap<String, ServedHttp> = BTreeMap::new();
    let mut accepting = JoinSet::new();
    let anchor = tokio::spawn(timer_anchor());
    {
        // Scoped: holding a generation keeps its sockets open.
        let first = generations.borrow_and_update().clone();
        apply(&first, &mut served, &mut accepting)?;
        apply_http(&first, &mut served_http, &mut accepting)?;
    }
    loop {
        tokio::select! {
            changed = generations.changed() => {
                if changed.is_err() {
                    break;
                }
                let next = generations.borrow_and_update().clone();
                apply(&next, &mut served, &mut accepting)?;
                apply_http(&next, &mut served_http, &mut accepting)?;
            }
            _ = shutdown.wait_for(|stop| *stop) => break,
            Some(_) = accepting.join_next(), if !accepting.is_empty() => {}
        }
    }
    for listener in served.values() {
        let _ = listener.stop.send(true);
    }
    for listener in served_http.values() {
        let _ = listener.stop.send(true);
    }
    while accepting.join_next().await.is_some() {}
    anchor.abort();
    Ok(())
}

/// Keeps one timer due within a second on the worker, always.
///
/// Each HTTP request arms its `timeout`. tokio wakes its own driver (an
/// eventfd write, and one more trip through epoll) whenever a timer is
/// armed that is due before every other one, which is every time a worker
/// that went idle with no timer gets its next request: about one request
/// in six under load. With this timer always nearer, arming a request's
/// timeout is only a wheel insert. It costs one wake-up a second.
async fn timer_anchor() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

fn apply(
    generation: &Generation,
    served: &mut BTreeMap<String, Served>,
    accepting: &mut JoinSet<()>,
) -> std::io::Result<()> {
    drain_removed(served, &generation.listeners, |s| (&s.bound, &s.stop));
    for (name, bound) in &generation.listeners {
        let config = &generation.config.redis[name];
        if let Some(s) = served.get_mut(name) {
            if &s.config != config {
                let next =
                    RedisService::start(name, config, &generation.services, s.stop.subscribe());
                let mut current = s.service.write().unwrap_or_else(|e| e.into_inner());
                current.supersede(next.clone());
                *current = next;
                s.config = config.clone();
                info!(listener = %name, "listener reconfigured: app connections move to it when idle");
            }
            continue;
        }
        let (stop, stopped) = watch::channel(false);
        let service = RedisService::start(name, config, &generation.services, stopped.clone());
        let service = Arc::new(RwLock::new(service));
        let current = service.clone();
        accepting.spawn(holding(
            bound.clone(),
            listener::accept_loop(
                bound.stats(),
                bound.for_this_worker()?,
                stopped,
                redis::MAX_CLIENTS_REFUSAL,
                move |stream, peer| {
                    let service = current.read().unwrap_or_else(|e| e.into_inner()).clone();
                    redis::serve_client(service, stream, peer)
                },
            ),
        ));
        served.insert(
            name.clone(),
            Served {
                bound: bound.clone(),
                config: config.clone(),
                service,
                stop,
            },
        );
    }
    Ok(())
}

/// Runs an accept loop holding its listener, so that a reload can take
/// over the socket (see `Generation::retired`) as long as it is open.
async fn holding(_bound: Arc<BoundListener>, accepting: impl std::future::Future<Output = ()>) {
    accepting.await
}

/// Stops serving the listeners that are not in `listeners` any more, or
/// moved to another socket: they stop accepting and drain.
fn drain_removed<S>(
    served: &mut BTreeMap<String, S>,
    listeners: &BTreeMap<String, Arc<BoundListener>>,
    parts: impl Fn(&S) -> (&Arc<BoundListener>, &watch::Sender<bool>),
) {
    served.retain(|name, s| {
        let (bound, stop) = parts(s);
        let keep = listeners
            .get(name)
            .is_some_and(|current| Arc::ptr_eq(current, bound));
        if !keep {
            info!(listener = %name, "listener removed or moved: draining its app connections");
            let _ = stop.send(true);
        }
        keep
    });
}

/// One HTTP listener as one worker serves it.
struct ServedHttp {
    bound: Arc<BoundListener>,
    config: HttpListenerConfig,
    /// Its policy, whose headers may change with their files alone.
    policy: Arc<attache_http::Policy>,
    service: Arc<RwLock<Arc<HttpService>>>,
    stop: watch::Sender<bool>,
}

fn apply_http(
    generation: &Generation,
    served: &mut BTreeMap<String, ServedHttp>,
    accepting: &mut JoinSet<()>,
) -> std::io::Result<()> {
    drain_removed(served, &generation.http_listeners, |s| (&s.bound, &s.stop));
    for (name, bound) in &generation.http_listeners {
        let config = &generation.config.http[name];
        // Prepared with the generation, so always there; a listener
        // without one is not served rather than served wrongly.
        let Some(policy) = generation.services.http_policy(name) else {
            tracing::error!(listener = %name, "no policy for HTTP listener: not serving it");
            continue;
        };
        if let Some(s) = served.get_mut(name) {
            // `headers` read from files (or the environment) may have
            // changed under an unchanged config.
            if &s.config != config || s.policy.headers != policy.headers {
                s.policy = policy.clone();
                let next = HttpService::start(name, config, policy, &generation.services);
                *s.service.write().unwrap_or_else(|e| e.into_inner()) = next;
                s.config = config.clone();
                info!(listener = %name, "HTTP listener reconfigured: new requests use it");
            }
            continue;
        }
        let (stop, stopped) = watch::channel(false);
        let service = HttpService::start(name, config, policy.clone(), &generation.services);
        let service = Arc::new(RwLock::new(service));
        let current = service.clone();
        let shutdown = SessionShutdown::following(stopped.clone());
        accepting.spawn(holding(
            bound.clone(),
            listener::accept_loop(
                bound.stats(),
                bound.for_this_worker()?,
                stopped,
                http::MAX_CONNECTIONS_REFUSAL,
                move |stream, peer| {
                    http::serve_client(current.clone(), stream, peer, shutdown.clone())
                },
            ),
        ));
        served.insert(
            name.clone(),
            ServedHttp {
                bound: bound.clone(),
                config: config.clone(),
                policy,
                service,
                stop,
            },
        );
    }
    Ok(())
}
