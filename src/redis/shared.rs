//! Shared connections: each is a long-lived channel that many app sessions
//! send to, and a supervisor that keeps a socket behind it, reconnecting with
//! backoff. While the upstream is down, requests fail at once with the reason
//! instead of waiting.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::connection::{drive, AddressWatch, ConnectionHandle, DriveEnd, DriverSettings, Op};
use super::connector::{Connector, Protocol};
use super::error::UpstreamError;
use super::metrics::RedisMetrics;
use super::router::Health;

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Starts a shared connection. With `eager`, it connects now; otherwise at
/// its first request (RESP3 connections exist only if some app asks for them).
pub(crate) fn spawn_shared(
    connector: Arc<Connector>,
    protocol: Protocol,
    timeout: Duration,
    eager: bool,
    health: Arc<Health>,
) -> ConnectionHandle {
    let (handle, ops, in_flight) = ConnectionHandle::new();
    let settings = DriverSettings {
        id: connector.id.clone(),
        protocol,
        timeout,
        dedicated: false,
        reauth: Some(connector.clone()),
        renewed: None,
        pause: connector.pause.clone(),
    };
    tokio::spawn(supervise(
        connector, ops, in_flight, settings, eager, health,
    ));
    handle
}

async fn supervise(
    connector: Arc<Connector>,
    mut ops: mpsc::UnboundedReceiver<Op>,
    in_flight: Arc<AtomicUsize>,
    settings: DriverSettings,
    eager: bool,
    health: Arc<Health>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut held: Option<Op> = None;
    if !eager {
        match ops.recv().await {
            Some(op) => held = Some(op),
            None => return,
        }
    }
    loop {
        // Before the handshake: a change during it is re-sent.
        let changes = connector.credential_changes();
        match connector.connect(settings.protocol).await {
            Ok(stream) => {
                info!(upstream = %settings.id, protocol = ?settings.protocol, "connected");
                health.record_success();
                backoff = BACKOFF_MIN;
                // A request that waited for this connection goes first.
                let first = held.take();
                let address = connector.addresses().and_then(|addrs| {
                    let peer = stream.peer_addr().ok()?;
                    Some(AddressWatch { peer, addrs })
                });
                let open = &connector.stats.shared_open;
                open.fetch_add(1, Ordering::Relaxed);
                let end = drive(
                    stream,
                    first,
                    &mut ops,
                    in_flight.clone(),
                    settings.clone(),
                    address,
                    changes,
                )
                .await;
                open.fetch_sub(1, Ordering::Relaxed);
                match end {
                    DriveEnd::Closed => return,
                    DriveEnd::Drained => {
                        info!(upstream = %settings.id, "the host name moved; reconnecting to its new address")
                    }
                    DriveEnd::Failed(e) => {
                        RedisMetrics::add(&connector.metrics.connections_lost);
                        RedisMetrics::add(&connector.stats.connections_lost);
                        if health.record_failure() {
                            RedisMetrics::add(&connector.metrics.ejections);
                            RedisMetrics::add(&connector.stats.ejections);
                        }
                        warn!(upstream = %settings.id, error = %e, "upstream connection lost; reconnecting")
                    }
                }
            }
            Err(e) => {
                if health.record_failure() {
                    RedisMetrics::add(&connector.metrics.ejections);
                    RedisMetrics::add(&connector.stats.ejections);
                }
                warn!(upstream = %settings.id, error = %e, retry_in = ?backoff, "upstream unavailable");
                if let Some(op) = held.take() {
                    fail(op, &e, &in_flight);
                }
                // Until the next attempt, every request fails fast with why.
                let retry = tokio::time::sleep(backoff);
                tokio::pin!(retry);
                loop {
                    tokio::select! {
                        _ = &mut retry => break,
                        op = ops.recv() => match op {
                            Some(op) => fail(op, &e, &in_flight),
                            None => return,
                        },
                    }
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

fn fail(op: Op, error: &UpstreamError, in_flight: &AtomicUsize) {
    if let Op::Request { tx, .. } = op {
        in_flight.fetch_sub(1, Ordering::Relaxed);
        let _ = tx.send(Err(error.clone()));
    }
}
