//! Dedicated connections: an app connection that changes connection state
//! (MULTI, WATCH, a blocking pop, SUBSCRIBE, SELECT, CLIENT TRACKING …) is
//! pinned to one of these for as long as that state lasts. They come from a
//! deadpool pool per server and protocol version; one that comes back dirty
//! is `RESET` and re-authenticated before anyone else gets it.

use std::sync::Arc;
use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use tracing::debug;

use super::connection::{drive, ConnectionHandle, DriverSettings};
use super::connector::{Connector, Protocol};
use super::error::UpstreamError;
use attache_resp::frame::reply;

pub(crate) type DedicatedPool = managed::Pool<DedicatedManager>;
pub(crate) type Dedicated = managed::Object<DedicatedManager>;

/// A dedicated connection: its handle, and whether its state must be reset
/// before reuse.
pub(crate) struct DedicatedConnection {
    pub(crate) handle: ConnectionHandle,
    /// Set by a session that leaves state behind (an open MULTI, a
    /// subscription, another database, tracking …).
    pub(crate) dirty: bool,
}

pub(crate) struct DedicatedManager {
    connector: Arc<Connector>,
    protocol: Protocol,
    timeout: Duration,
}

impl DedicatedManager {
    pub(crate) fn pool(
        connector: Arc<Connector>,
        protocol: Protocol,
        timeout: Duration,
        max_size: usize,
    ) -> DedicatedPool {
        let manager = Self {
            connector,
            protocol,
            timeout,
        };
        managed::Pool::builder(manager)
            .max_size(max_size)
            .runtime(deadpool::Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .build()
            .expect("a runtime is configured, so the pool builds")
    }
}

impl managed::Manager for DedicatedManager {
    type Type = DedicatedConnection;
    type Error = UpstreamError;

    async fn create(&self) -> Result<DedicatedConnection, UpstreamError> {
        let stream = self.connector.connect(self.protocol).await?;
        let (handle, mut ops, in_flight) = ConnectionHandle::new();
        let settings = DriverSettings {
            id: self.connector.id.clone(),
            protocol: self.protocol,
            timeout: self.timeout,
        };
        tokio::spawn(async move {
            if let Some(e) = drive(stream, None, &mut ops, in_flight, settings).await {
                debug!(error = %e, "dedicated connection ended");
            }
        });
        Ok(DedicatedConnection {
            handle,
            dirty: false,
        })
    }

    async fn recycle(
        &self,
        conn: &mut DedicatedConnection,
        _: &Metrics,
    ) -> RecycleResult<UpstreamError> {
        if conn.handle.is_closed() {
            return Err(RecycleError::message("connection closed"));
        }
        // Something still running (a blocking pop the app walked away
        // from): this connection cannot be trusted to be idle; replace it.
        if conn.handle.in_flight() > 0 {
            return Err(RecycleError::message("connection busy"));
        }
        if conn.dirty {
            let (handshake, replies) = self.connector.handshake(self.protocol)?;
            let mut commands = reply::command(&[b"RESET"]).to_vec();
            commands.extend_from_slice(&handshake);
            let rx = conn.handle.request(commands.into(), 1 + replies, false);
            let answer = rx
                .await
                .map_err(|_| RecycleError::message("connection closed"))?
                .map_err(RecycleError::Backend)?;
            self.connector
                .check_handshake(&answer, self.protocol)
                .map_err(RecycleError::Backend)?;
            conn.dirty = false;
        }
        Ok(())
    }
}
