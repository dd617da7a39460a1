//! Dedicated connections: an app connection that changes connection state
//! (MULTI, WATCH, a blocking pop, SUBSCRIBE, SELECT, CLIENT TRACKING …) is
//! pinned to one of these for as long as that state lasts. They come from a
//! deadpool pool per server and protocol version. Only clean connections
//! come back to the pool: a session closes one that still holds state (a
//! subscription, another database, tracking, an open MULTI), so that Redis
//! drops the state at once, as it would for the app's own connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use tracing::debug;

use super::connection::{drive, ConnectionHandle, DriveEnd, DriverSettings, Op};
use super::connector::{Connector, Protocol};
use super::error::UpstreamError;

pub(crate) type DedicatedPool = managed::Pool<DedicatedManager>;
pub(crate) type Dedicated = managed::Object<DedicatedManager>;

/// A dedicated connection.
pub(crate) struct DedicatedConnection {
    pub(crate) handle: ConnectionHandle,
    /// The server address it is on, when the host was resolved by name.
    peer: Option<SocketAddr>,
    /// Closed by its driver to renew its credential (see
    /// `DriverSettings::renewed`).
    renewed: Arc<AtomicBool>,
    /// The protocol it speaks now: its pool's, unless the app's `HELLO`
    /// changed it (see `switch_protocol`).
    protocol: Protocol,
}

impl DedicatedConnection {
    /// The app's `HELLO` changes the protocol of its own connection: the
    /// replies after what was sent so far are read in `protocol` (queue the
    /// `HELLO` next), and the connection no longer goes back to its pool.
    pub(crate) fn switch_protocol(&mut self, protocol: Protocol) {
        self.handle.send(Op::Switch(protocol));
        self.protocol = protocol;
    }

    /// The driver closed this streaming connection because the credential
    /// changed: the session should subscribe again on a fresh one.
    pub(crate) fn was_renewed(&self) -> bool {
        self.renewed.load(Ordering::Relaxed)
    }
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
        // Before the handshake: a change during it is re-sent.
        let changes = self.connector.credential_changes();
        let stream = self.connector.connect(self.protocol).await?;
        let peer = self
            .connector
            .addresses()
            .and_then(|_| stream.peer_addr().ok());
        let (handle, mut ops, in_flight) = ConnectionHandle::new();
        let renewed = Arc::new(AtomicBool::new(false));
        let settings = DriverSettings {
            id: self.connector.id.clone(),
            protocol: self.protocol,
            timeout: self.timeout,
            dedicated: true,
            reauth: Some(self.connector.clone()),
            renewed: Some(renewed.clone()),
            pause: self.connector.pause.clone(),
        };
        tokio::spawn(async move {
            // No draining while a session holds it: a dedicated connection
            // is checked against the addresses when it comes back instead.
            if let DriveEnd::Failed(e) =
                drive(stream, None, &mut ops, in_flight, settings, None, changes).await
            {
                debug!(error = %e, "dedicated connection ended");
            }
        });
        Ok(DedicatedConnection {
            handle,
            peer,
            renewed,
            protocol: self.protocol,
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
        if conn.protocol != self.protocol {
            return Err(RecycleError::message("the app changed its protocol"));
        }
        // The host name moved away from this address: drain it by not
        // reusing it.
        if let (Some(peer), Some(addrs)) = (conn.peer, self.connector.addresses()) {
            if !addrs.borrow().contains(&peer) {
                return Err(RecycleError::message("address no longer resolved"));
            }
        }
        Ok(())
    }
}
