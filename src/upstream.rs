//! What reaching the upstreams takes that is built once per process and
//! shared by every worker: the TLS connectors (so a certificate reload
//! happens once, not per worker).

use std::collections::BTreeMap;

use crate::config::Config;
use crate::tls::{TlsConnector, TlsError};

/// Process-wide upstream services; workers hold a reference.
#[derive(Clone, Default)]
pub struct UpstreamServices {
    /// TLS connector of each Redis listener that has `[redis.NAME.tls]`.
    redis_tls: BTreeMap<String, TlsConnector>,
}

/// Why the upstream services could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A TLS file does not load.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A listener cannot be bound.
    #[error("cannot bind: {0}")]
    Bind(#[from] std::io::Error),
}

impl UpstreamServices {
    /// Loads what `config` needs (TLS files are read now, so a bad one
    /// fails here with an error naming it).
    pub fn start(config: &Config) -> Result<Self, StartError> {
        let mut redis_tls = BTreeMap::new();
        for (name, listener) in &config.redis {
            if let Some(tls) = &listener.tls {
                redis_tls.insert(name.clone(), TlsConnector::new(tls, name)?);
            }
        }
        Ok(Self { redis_tls })
    }

    /// The TLS connector of Redis listener `name`, if it uses TLS.
    pub(crate) fn redis_tls(&self, name: &str) -> Option<TlsConnector> {
        self.redis_tls.get(name).cloned()
    }
}
