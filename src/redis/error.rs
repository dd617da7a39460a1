//! What can go wrong between attache and an upstream Redis, and what the
//! app reads when it does.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

/// Which upstream an error concerns: the listener's name and the server.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamId {
    pub(crate) listener: Arc<str>,
    pub(crate) addr: Arc<str>,
}

impl std::fmt::Display for UpstreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "upstream {} ({})", self.listener, self.addr)
    }
}

/// One upstream failure; cloned to every command that was waiting on it.
/// Commands that fail with it were not answered by Redis: whether they ran
/// is unknown, so attache never retries them on its own.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("{0}: connect failed: {1}")]
    Connect(UpstreamId, Arc<str>),
    /// The TLS error names the upstream itself.
    #[error("{1} [{0}]")]
    Tls(UpstreamId, Arc<str>),
    #[error("{0}: connect timed out after {1:?}")]
    ConnectTimeout(UpstreamId, Duration),
    #[error("{0}: handshake refused: {1}")]
    Handshake(UpstreamId, Arc<str>),
    #[error("{0}: no credential: {1}")]
    Credential(UpstreamId, Arc<str>),
    #[error("{0}: connection lost: {1}")]
    Io(UpstreamId, Arc<str>),
    #[error("{0}: connection closed by the server")]
    Closed(UpstreamId),
    #[error("{0}: no reply within {1:?}")]
    Timeout(UpstreamId, Duration),
    #[error("{0}: unparseable reply: {1}")]
    Protocol(UpstreamId, Arc<str>),
    #[error("{0}: all {1} dedicated connections are in use")]
    PoolExhausted(UpstreamId, usize),
}

impl UpstreamError {
    /// The `-ERR …` reply the app gets in place of each lost reply.
    pub(crate) fn to_reply(&self) -> Bytes {
        attache_resp::frame::reply::error(&format!("ERR attache: {self}"))
    }
}
