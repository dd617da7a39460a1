//! TLS to upstreams, on rustls with the ring provider.
//!
//! A [`TlsConnector`] is built once per upstream from its [`TlsConfig`]:
//! the files are read then, so a bad one fails at startup (or in
//! `attache check`) with an error naming the file. Afterwards the files
//! are watched from the connect path: at most once per
//! [`RELOAD_CHECK_INTERVAL`] their contents are hashed, and when the hash
//! changes (a rewritten file, a Kubernetes Secret's `..data` symlink swap)
//! new connections use the new certificates. A changed file that does not
//! load (half-written, garbage) is reported and the last good config stays
//! in use, since failing every new connection would turn a routine
//! rotation into an outage.

mod config;
mod error;
mod load;
mod stream;

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;

pub use config::{RootStore, TlsConfig, TlsVersion};
pub use error::{TlsError, TlsFailure};
pub(crate) use stream::UpstreamStream;

use config::parse_server_name;
use load::{Files, FilesDigest};

/// How often, at most, a connector looks at its files for changes. A
/// Secret update takes kubelet up to a minute or so to project, so a
/// second more is noise; reading a few KiB once a second is free.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Opens TLS sessions to one upstream. Cheap to clone (an `Arc`); clones
/// share the loaded certificates and their reloads.
#[derive(Clone)]
pub struct TlsConnector {
    inner: Arc<Inner>,
}

struct Inner {
    upstream: Arc<str>,
    config: TlsConfig,
    /// `config.server_name`, parsed.
    server_name: Option<ServerName<'static>>,
    /// Roots that come from no file (`roots`), when `ca_file` is unset.
    base_roots: Option<Arc<RootCertStore>>,
    alpn: Vec<Vec<u8>>,
    state: Mutex<State>,
}

struct State {
    /// The config new connections use: the last one that loaded.
    client: Arc<ClientConfig>,
    /// Digest of the files `client` was built from.
    in_use: FilesDigest,
    /// Digest of the files last read (in use, or rejected).
    seen: FilesDigest,
    next_check: Instant,
    /// Why the files on disk are not the ones in use, if they are not.
    reload_error: Option<String>,
}

impl TlsConnector {
    /// Reads the configured files and builds a connector for `upstream`
    /// (a label for logs and errors, e.g. the listener's name).
    pub fn new(config: &TlsConfig, upstream: &str) -> Result<Self, TlsError> {
        let upstream: Arc<str> = upstream.into();
        let invalid = |(key, problem)| TlsError::Config {
            upstream: upstream.clone(),
            key,
            problem,
        };
        config.validate().map_err(invalid)?;
        let server_name = match &config.server_name {
            Some(name) => Some(parse_server_name(name).map_err(|e| invalid(("server_name", e)))?),
            None => None,
        };
        let base_roots = load::base_roots(config, &upstream)?;
        let files = Files::read(config, &upstream)?;
        let client = load::build(config, &upstream, base_roots.as_ref(), &files, &[])?;
        let digest = files.digest();
        let connector = Self {
            inner: Arc::new(Inner {
                upstream,
                config: config.clone(),
                server_name,
                base_roots,
                alpn: Vec::new(),
                state: Mutex::new(State {
                    client: Arc::new(client),
                    in_use: digest,
                    seen: digest,
                    next_check: Instant::now() + RELOAD_CHECK_INTERVAL,
                    reload_error: None,
                }),
            }),
        };
        connector.warn_if_insecure();
        Ok(connector)
    }

    /// A connector like this one that offers `protocols` by ALPN (e.g.
    /// `h2`, `http/1.1`), in order of preference. It reloads on its own.
    pub fn with_alpn(&self, protocols: Vec<Vec<u8>>) -> Self {
        let inner = &self.inner;
        let state = inner.lock();
        let mut client = ClientConfig::clone(&state.client);
        client.alpn_protocols.clone_from(&protocols);
        let connector = Self {
            inner: Arc::new(Inner {
                upstream: inner.upstream.clone(),
                config: inner.config.clone(),
                server_name: inner.server_name.clone(),
                base_roots: inner.base_roots.clone(),
                alpn: protocols,
                state: Mutex::new(State {
                    client: Arc::new(client),
                    in_use: state.in_use,
                    seen: state.seen,
                    next_check: state.next_check,
                    reload_error: state.reload_error.clone(),
                }),
            }),
        };
        connector.warn_if_insecure();
        connector
    }

    /// The upstream label this connector was built for.
    pub fn upstream(&self) -> &str {
        &self.inner.upstream
    }

    /// Runs the TLS handshake over `stream`, a connection to `host` (the
    /// upstream's host name or IP literal; `server_name` overrides it).
    ///
    /// With TLS 1.3 a server that refuses attache's client certificate can
    /// only say so after the handshake: the first read fails instead, and
    /// [`TlsConnector::session_error`] describes that error.
    pub async fn connect<S>(&self, host: &str, stream: S) -> Result<TlsStream<S>, TlsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let inner = &*self.inner;
        let name = match &inner.server_name {
            Some(name) => name.clone(),
            None => parse_server_name(host).map_err(|_| TlsError::ServerName {
                upstream: inner.upstream.clone(),
                host: host.to_owned(),
            })?,
        };
        tokio_rustls::TlsConnector::from(self.client_config())
            .connect(name, stream)
            .await
            .map_err(|io| TlsError::Handshake {
                upstream: inner.upstream.clone(),
                host: host.to_owned(),
                failure: TlsFailure::of(&io),
                io,
            })
    }

    /// Describes an error read from or written to a stream this connector
    /// opened to `host`.
    pub fn session_error(&self, host: &str, io: io::Error) -> TlsError {
        TlsError::Session {
            upstream: self.inner.upstream.clone(),
            host: host.to_owned(),
            failure: TlsFailure::of(&io),
            io,
        }
    }

    /// Why the files on disk are not the ones in use (they changed but do
    /// not load), or `None` when they are.
    pub fn reload_error(&self) -> Option<String> {
        self.inner.lock().reload_error.clone()
    }

    /// The config for a connection being made now, reloaded first if the
    /// files changed.
    fn client_config(&self) -> Arc<ClientConfig> {
        let inner = &*self.inner;
        let watched = inner.config.ca_file.is_some() || inner.config.cert_file.is_some();
        {
            let mut state = inner.lock();
            let now = Instant::now();
            if !watched || now < state.next_check {
                return state.client.clone();
            }
            state.next_check = now + RELOAD_CHECK_INTERVAL;
        }
        // A blocking read on the event loop, but of a few KiB from a
        // Secret volume (tmpfs), at most once a second: cheaper than a hop
        // to the blocking pool. Outside the lock, so other connections
        // proceed meanwhile.
        let files = Files::read(&inner.config, &inner.upstream);
        let mut state = inner.lock();
        let files = match files {
            Ok(files) => files,
            Err(error) => {
                state.record(&inner.upstream, error);
                return state.client.clone();
            }
        };
        let digest = files.digest();
        if digest == state.seen {
            if digest == state.in_use {
                // Back to the files in use (e.g. after a transient read error).
                state.reload_error = None;
            }
            return state.client.clone();
        }
        state.seen = digest;
        let built = load::build(
            &inner.config,
            &inner.upstream,
            inner.base_roots.as_ref(),
            &files,
            &inner.alpn,
        );
        match built {
            Ok(client) => {
                // A new `ClientConfig` also starts a new session cache, so
                // no connection resumes a session verified by old roots.
                state.client = Arc::new(client);
                state.in_use = digest;
                state.reload_error = None;
                tracing::info!(
                    upstream = %inner.upstream,
                    "TLS files changed; new connections use them"
                );
            }
            Err(error) => state.record(&inner.upstream, error),
        }
        state.client.clone()
    }

    fn warn_if_insecure(&self) {
        if self.inner.config.insecure_skip_verify {
            let upstream = &self.inner.upstream;
            tracing::warn!(
                upstream = %upstream,
                "TLS verification disabled for upstream {upstream} (insecure_skip_verify = true): \
                 anyone on the network path can impersonate it"
            );
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a plain assignment: a panic cannot leave the
        // state half-changed, so a poisoned lock is still good.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Keeps the last good config and says why, once per distinct error.
    fn record(&mut self, upstream: &str, error: TlsError) {
        let message = error.to_string();
        if self.reload_error.as_deref() != Some(message.as_str()) {
            tracing::warn!(
                upstream = %upstream,
                error = %message,
                "TLS files changed but do not load; new connections keep the last good ones"
            );
        }
        self.reload_error = Some(message);
    }
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Paths and settings only: the loaded keys stay out of logs.
        let alpn: Vec<_> = self
            .inner
            .alpn
            .iter()
            .map(|p| String::from_utf8_lossy(p))
            .collect();
        f.debug_struct("TlsConnector")
            .field("upstream", &self.inner.upstream)
            .field("config", &self.inner.config)
            .field("alpn", &alpn)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
