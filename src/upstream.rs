//! What reaching the upstreams takes that is built once per process and
//! shared by every worker: the TLS connectors (so a certificate reload
//! happens once, not per worker) and the credential sources with their
//! refresh tasks (one token per source, not one per worker), and the DNS
//! resolver (one re-resolution per name).

use std::collections::BTreeMap;

use crate::config::Config;
use crate::credentials::{CredentialError, TokenRegistry};
use crate::dns::Resolver;
use crate::redis::metrics::MetricsRegistry;
use crate::tls::{TlsConnector, TlsError};

/// Process-wide upstream services; workers hold a reference.
#[derive(Clone, Default)]
pub struct UpstreamServices {
    /// TLS connector of each Redis listener that has `[redis.NAME.tls]`.
    redis_tls: BTreeMap<String, TlsConnector>,
    tokens: TokenRegistry,
    /// Upstream host names, re-resolved as their TTLs run out.
    resolver: Option<Resolver>,
    /// Each Redis listener's counters, kept across reloads.
    metrics: MetricsRegistry,
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
            metrics: MetricsRegistry::default(),
        })
    }

    /// The same token sources and resolver, with TLS connectors for
    /// `config`'s listeners (a reload; `[tokens]` and `[dns]` are unchanged).
    pub fn for_config(&self, config: &Config) -> Result<Self, StartError> {
        let redis_tls = tls_connectors(config)?;
        Ok(Self {
            redis_tls,
            tokens: self.tokens.clone(),
            resolver: self.resolver.clone(),
            metrics: self.metrics.clone(),
        })
    }

    /// TLS files only, without starting anything (`attache check`).
    pub fn check(config: &Config) -> Result<(), StartError> {
        tls_connectors(config).map(drop)
    }

    /// The shared DNS resolver.
    pub(crate) fn resolver(&self) -> Option<Resolver> {
        self.resolver.clone()
    }

    /// Each Redis listener's counters.
    pub(crate) fn metrics(&self) -> &MetricsRegistry {
        &self.metrics
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
