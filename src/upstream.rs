//! What reaching the upstreams takes that is built once per process and
//! shared by every worker: the TLS connectors (so a certificate reload
//! happens once, not per worker) and the credential sources with their
//! refresh tasks (one token per source, not one per worker), and the DNS
//! resolver (one re-resolution per name).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

use attache_http::config::HeaderValueSource;
use attache_http::{InvalidConfig, Policy};

use crate::config::Config;
use crate::credentials::{CredentialError, TokenRegistry};
use crate::dns::Resolver;
use crate::http::metrics::HttpMetricsRegistry;
use crate::http::HttpTls;
use crate::redis::metrics::MetricsRegistry;
use crate::tls::{TlsConfig, TlsConnector, TlsError};

/// Process-wide upstream services; workers hold a reference.
#[derive(Clone, Default)]
pub struct UpstreamServices {
    /// TLS connector of each Redis listener that has `[redis.NAME.tls]`.
    redis_tls: BTreeMap<String, TlsConnector>,
    tokens: TokenRegistry,
    /// Upstream host names, re-resolved as their TTLs run out.
    resolver: Option<Resolver>,
    /// The addresses attache listens on now, which no upstream may be.
    own: OwnListeners,
    /// Each Redis listener's counters, kept across reloads.
    metrics: MetricsRegistry,
    /// Each HTTP listener's checked policy (static header values read).
    http_policies: BTreeMap<String, Arc<Policy>>,
    /// TLS connectors of each HTTP listener with an `https` upstream.
    http_tls: BTreeMap<String, HttpTls>,
    /// Each HTTP listener's counters, kept across reloads.
    http_metrics: HttpMetricsRegistry,
}

/// Why the upstream services could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A TLS file does not load.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A credential source cannot start.
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// An HTTP listener's config does not hold up (e.g. a header's
    /// `value_file` cannot be read).
    #[error(transparent)]
    Http(#[from] InvalidConfig),
    /// A listener cannot be bound.
    #[error("cannot bind: {0}")]
    Bind(#[from] std::io::Error),
}

impl UpstreamServices {
    /// Loads what `config` needs (TLS files are read now, so a bad one
    /// fails here with an error naming it) and starts the credential
    /// refresh tasks on `control`, a runtime that outlives the workers.
    pub fn start(config: &Config, control: &tokio::runtime::Handle) -> Result<Self, StartError> {
        let tokens = TokenRegistry::start(&config.tokens, control)?;
        let redis_tls = tls_connectors(config)?;
        let (http_policies, http_tls) = http_listeners(config)?;
        let resolver = match Resolver::new(&config.dns, control.clone()) {
            Ok(resolver) => Some(resolver),
            Err(e) => {
                // No usable resolv.conf: names are left to the system's
                // resolver at each connect, without TTL tracking.
                tracing::warn!(error = %e, "DNS resolver unavailable; using the system resolver at each connect");
                None
            }
        };
        Ok(Self {
            redis_tls,
            tokens,
            resolver,
            own: OwnListeners::default(),
            metrics: MetricsRegistry::default(),
            http_policies,
            http_tls,
            http_metrics: HttpMetricsRegistry::default(),
        })
    }

    /// The same token sources and resolver, with TLS connectors for
    /// `config`'s listeners (a reload; `[tokens]` and `[dns]` are unchanged).
    pub fn for_config(&self, config: &Config) -> Result<Self, StartError> {
        let redis_tls = tls_connectors(config)?;
        let (http_policies, http_tls) = http_listeners(config)?;
        Ok(Self {
            redis_tls,
            tokens: self.tokens.clone(),
            resolver: self.resolver.clone(),
            own: self.own.clone(),
            metrics: self.metrics.clone(),
            http_policies,
            http_tls,
            http_metrics: self.http_metrics.clone(),
        })
    }

    /// TLS files only, without starting anything (`attache check`).
    pub fn check(config: &Config) -> Result<(), StartError> {
        tls_connectors(config)?;
        http_listeners(config).map(drop)
    }

    /// How connectors reach an upstream: names through the shared DNS
    /// resolver, and never to one of attache's own listeners.
    pub(crate) fn reach(&self) -> Reach {
        Reach {
            resolver: self.resolver.clone(),
            own: self.own.clone(),
        }
    }

    /// The listeners attache serves now (set by each generation).
    pub(crate) fn own_listeners(&self) -> &OwnListeners {
        &self.own
    }

    /// Each Redis listener's counters.
    pub(crate) fn metrics(&self) -> &MetricsRegistry {
        &self.metrics
    }

    /// Each HTTP listener's counters.
    pub(crate) fn http_metrics(&self) -> &HttpMetricsRegistry {
        &self.http_metrics
    }

    /// The checked policy of HTTP listener `name`.
    pub(crate) fn http_policy(&self, name: &str) -> Option<Arc<Policy>> {
        self.http_policies.get(name).cloned()
    }

    /// The TLS connectors of HTTP listener `name`, if an upstream is https.
    pub(crate) fn http_tls(&self, name: &str) -> Option<HttpTls> {
        self.http_tls.get(name).cloned()
    }

    /// Every configured credential source.
    pub fn tokens(&self) -> &TokenRegistry {
        &self.tokens
    }

    /// The TLS connector of Redis listener `name`, if it uses TLS.
    pub(crate) fn redis_tls(&self, name: &str) -> Option<TlsConnector> {
        self.redis_tls.get(name).cloned()
    }
}

/// What a connector needs to turn an upstream's host into addresses to
/// connect to.
#[derive(Clone, Debug, Default)]
pub(crate) struct Reach {
    /// Resolves host names; `None` leaves them to the system (getaddrinfo).
    pub(crate) resolver: Option<Resolver>,
    pub(crate) own: OwnListeners,
}

/// The addresses of attache's own listeners. An upstream that resolves to
/// one of them is refused at connect: attache would proxy each request to
/// itself, and each hop would open another connection to itself until the
/// process runs out of file descriptors, the app waiting all along (a
/// config with `listen` and `servers` on the same port, or an upstream
/// named `localhost` on attache's own port, does that).
#[derive(Clone, Debug, Default)]
pub(crate) struct OwnListeners(Arc<RwLock<Listening>>);

/// Each listener's name and bound address.
type Listening = Arc<[(String, SocketAddr)]>;

impl OwnListeners {
    /// The listeners now served (listener name, bound address).
    pub(crate) fn set(&self, listeners: impl IntoIterator<Item = (String, SocketAddr)>) {
        let listeners: Listening = listeners.into_iter().collect();
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = listeners;
    }

    /// Why connecting to `target` would loop back into attache, if it would.
    pub(crate) fn refuse(&self, target: SocketAddr) -> Result<(), String> {
        let listeners = self.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        match listeners.iter().find(|(_, own)| reaches(*own, target)) {
            None => Ok(()),
            Some((name, own)) => Err(format!(
                "{target} is attache's own listener `{name}` ({own}): requests would loop back into attache"
            )),
        }
    }
}

/// Whether a connect to `target` reaches a socket listening on `own`.
pub(crate) fn reaches(own: SocketAddr, target: SocketAddr) -> bool {
    if own.port() != target.port() {
        return false;
    }
    let local = |ip: IpAddr| ip.is_loopback() || ip.is_unspecified();
    let (own_ip, target_ip) = (canonical(own.ip()), canonical(target.ip()));
    own_ip == target_ip
        // A wildcard listener answers on every local address; a connect
        // to the wildcard address reaches a loopback listener. (A pod IP
        // is local too, but not recognisable without the interface list.)
        || (own_ip.is_unspecified() && local(target_ip))
        || (target_ip.is_unspecified() && local(own_ip))
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A TLS connector for every Redis listener with `[redis.NAME.tls]`; its
/// files are read now, so a bad one is an error naming it.
fn tls_connectors(config: &Config) -> Result<BTreeMap<String, TlsConnector>, StartError> {
    let mut connectors = BTreeMap::new();
    for (name, listener) in &config.redis {
        if let Some(tls) = &listener.tls {
            connectors.insert(name.clone(), TlsConnector::new(tls, name)?);
        }
    }
    Ok(connectors)
}

/// Each HTTP listener's policy (its `value_file` / `value_env` headers
/// read now, so a missing one is an error naming the key) and, when an
/// upstream is `https`, its TLS connectors: `[http.NAME.tls]`, or the
/// defaults (webpki roots) without one.
#[allow(clippy::type_complexity)]
fn http_listeners(
    config: &Config,
) -> Result<(BTreeMap<String, Arc<Policy>>, BTreeMap<String, HttpTls>), StartError> {
    let mut policies = BTreeMap::new();
    let mut connectors = BTreeMap::new();
    for (name, listener) in &config.http {
        let policy = listener.policy(name, |source| match source {
            HeaderValueSource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display())),
            HeaderValueSource::Env(var) => {
                std::env::var(var).map_err(|e| format!("environment variable {var}: {e}"))
            }
        })?;
        let table = policy.gate.routes();
        let https = table
            .routes()
            .iter()
            .chain(table.fallback())
            .any(|route| route.upstream().is_https());
        if https || listener.tls.is_some() {
            let default = TlsConfig::default();
            let tls = listener.tls.as_ref().unwrap_or(&default);
            let base = TlsConnector::new(tls, &format!("http.{name}"))?;
            connectors.insert(
                name.clone(),
                HttpTls {
                    alpn: base.with_alpn(vec![b"h2".to_vec(), b"http/1.1".to_vec()]),
                    h1_only: base.with_alpn(vec![b"http/1.1".to_vec()]),
                },
            );
        }
        policies.insert(name.clone(), Arc::new(policy));
    }
    Ok((policies, connectors))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_upstream_on_an_own_listener_is_refused() {
        let own = OwnListeners::default();
        own.set([
            ("cache".to_string(), addr("127.0.0.1:6379")),
            ("api".to_string(), addr("0.0.0.0:8080")),
            ("v6".to_string(), addr("[::]:9000")),
        ]);
        for looping in [
            "127.0.0.1:6379",
            "[::ffff:127.0.0.1]:6379",
            "0.0.0.0:6379",
            "127.0.0.1:8080",
            "127.0.0.2:8080",
            "[::1]:8080",
            "0.0.0.0:8080",
            "127.0.0.1:9000",
            "[::1]:9000",
        ] {
            let refused = own.refuse(addr(looping)).unwrap_err();
            assert!(refused.contains("loop back into attache"), "{refused}");
        }
        for elsewhere in [
            "127.0.0.1:6380",
            "127.0.0.2:6379",
            "[::1]:6379",
            "10.0.0.5:8080",
            "10.0.0.5:9000",
        ] {
            assert_eq!(own.refuse(addr(elsewhere)), Ok(()), "{elsewhere}");
        }
        assert!(own
            .refuse(addr("127.0.0.1:6379"))
            .unwrap_err()
            .starts_with("127.0.0.1:6379 is attache's own listener `cache` (127.0.0.1:6379)"));
        own.set([]);
        assert_eq!(own.refuse(addr("127.0.0.1:6379")), Ok(()));
    }
}
