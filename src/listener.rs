//! Accepting app connections: bounded by `max_connections` (a semaphore
//! shared by every worker), and never dying on one bad accept (it backs off
//! and goes on).
//!
//! A connection beyond the limit is accepted, told why in the listener's
//! protocol and closed (as Redis itself does with `-ERR max number of
//! clients reached`), and counted as refused: the app gets an answer
//! rather than a connect that hangs in the kernel backlog. The limit can
//! change on a reload: raising it takes effect at once; lowering it closes
//! nothing, the extra slots are withdrawn as connections leave.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, error, warn};

/// A bound listening socket, shared by the workers that accept from it.
pub(crate) struct BoundListener {
    pub(crate) socket: std::net::TcpListener,
    /// Its limit and counts, shared with every worker's accept loop.
    stats: ListenerStats,
}

/// A listener's connection counts, for `/ready` and `/metrics`.
#[derive(Clone)]
pub struct ListenerStats {
    /// The listener's name.
    pub name: Arc<str>,
    limit: Arc<Semaphore>,
    max: Arc<AtomicUsize>,
    accepted: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    open: Arc<AtomicUsize>,
    /// Slots still to withdraw after `max_connections` was lowered: the
    /// next connections to leave give theirs up instead of freeing them.
    withdraw: Arc<AtomicUsize>,
}

impl ListenerStats {
    /// App connections open now (across workers).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// App connections accepted since start.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// App connections refused at `max_connections` since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The listener's `max_connections` now.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// Waits until every app connection has closed.
    pub async fn wait_idle(&self) {
        loop {
            let max = self.max();
            let want = u32::try_from(max).unwrap_or(u32::MAX);
            let Ok(all) = self.limit.acquire_many(want).await else {
                return;
            };
            drop(all);
            // A reload may have lowered the limit meanwhile; the slots
            // then held were not all of them.
            if self.max() <= max {
                return;
            }
        }
    }
}

impl BoundListener {
    /// Binds `addr` (port 0 picks a free port).
    pub(crate) fn bind(
        name: &str,
        addr: SocketAddr,
        max_connections: usize,
    ) -> std::io::Result<Self> {
        let socket = std::net::TcpListener::bind(addr).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("listener {name}: cannot bind {addr}: {e}"),
            )
        })?;
        socket.set_nonblocking(true)?;
        Ok(Self::on(name, socket, max_connections))
    }

    /// Takes over the socket of `other`, a listener going away (removed,
    /// renamed or moved by a reload) whose address a new one uses: that
    /// address is still bound in this process, so it cannot be bound again.
    pub(crate) fn take_over(
        name: &str,
        other: &BoundListener,
        max_connections: usize,
    ) -> std::io::Result<Self> {
        Ok(Self::on(name, other.socket.try_clone()?, max_connections))
    }

    fn on(name: &str, socket: std::net::TcpListener, max_connections: usize) -> Self {
        Self {
            socket,
            stats: ListenerStats {
                name: name.into(),
                limit: Arc::new(Semaphore::new(max_connections)),
                max: Arc::new(AtomicUsize::new(max_connections)),
                accepted: Arc::new(AtomicU64::new(0)),
                refused: Arc::new(AtomicU64::new(0)),
                open: Arc::new(AtomicUsize::new(0)),
                withdraw: Arc::new(AtomicUsize::new(0)),
            },
        }
    }

    pub(crate) fn stats(&self) -> ListenerStats {
        self.stats.clone()
    }

    pub(crate) fn name(&self) -> &str {
        &self.stats.name
    }

    /// Applies a reloaded `max_connections` to this (kept) socket. Raising
    /// it frees slots at once; lowering it withdraws free slots now and the
    /// rest as app connections leave (none is closed for it).
    pub(crate) fn set_max_connections(&self, max: usize) {
        let stats = &self.stats;
        let old = stats.max.swap(max, Ordering::AcqRel);
        if max > old {
            // Owed withdrawals are cancelled first.
            let mut grow = max - old;
            let _ = stats
                .withdraw
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |owed| {
                    let cancel = owed.min(max - old);
                    grow = max - old - cancel;
                    Some(owed - cancel)
                });
            stats.limit.add_permits(grow);
        } else if max < old {
            let now = stats.limit.forget_permits(old - max);
            stats.withdraw.fetch_add(old - max - now, Ordering::AcqRel);
        }
    }

    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// This worker's handle on the socket (same file, own registration).
    pub(crate) fn for_this_worker(&self) -> std::io::Result<TcpListener> {
        TcpListener::from_std(self.socket.try_clone()?)
    }
}

/// Accepts until `shutdown` flips to true, handing each connection to `serve`;
/// a connection beyond `max_connections` gets `refusal` and is closed.
pub(crate) async fn accept_loop<F, Fut>(
    stats: ListenerStats,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    refusal: &'static [u8],
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let name = stats.name.clone();
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                let Ok(permit) = stats.limit.clone().try_acquire_owned() else {
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    warn!(listener = %name, %peer, max_connections = stats.max(), "refused an app connection: the listener is at max_connections");
                    refuse(stream, refusal);
                    continue;
                };
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                stats.open.fetch_add(1, Ordering::Relaxed);
                debug!(listener = %name, %peer, "accepted");
                tokio::spawn(counted(serve(stream, peer), &stats, permit));
            }
            Err(e) => {
                // EMFILE and friends: wait and retry rather than spin or die.
                error!(listener = %name, error = %e, retry_in = ?backoff, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// An app connection's task: `fut` serves it, then its slot is given back
/// (or withdrawn, if `max_connections` was lowered meanwhile).
///
/// `map`, not `async move { fut.await; … }`: such a block holds the
/// connection's future twice (captured, then awaited), which doubled every
/// idle app connection's memory.
fn counted<Fut>(
    fut: Fut,
    stats: &ListenerStats,
    permit: OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send + 'static
where
    Fut: Future<Output = ()> + Send + 'static,
{
    let (open, withdraw) = (stats.open.clone(), stats.withdraw.clone());
    fut.map(move |()| {
        open.fetch_sub(1, Ordering::Relaxed);
        let owed = withdraw.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        match owed {
            Ok(_) => permit.forget(),
            Err(_) => drop(permit),
        }
    })
}

/// Tells a refused app why and closes its connection: the answer, then a
/// FIN, then whatever the app had already sent is read and dropped for a
/// moment (closing with unread data would send a reset, which can make the
/// app's kernel discard the answer before the app reads it).
fn refuse(stream: TcpStream, refusal: &'static [u8]) {
    tokio::spawn(async move {
        let mut stream = stream;
        let _ = stream.try_write(refusal);
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 512];
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The task of an app connection is its serving future and a few words,
    /// not two copies of it (see `counted`).
    #[test]
    fn a_connection_task_holds_its_future_once() {
        async fn serving() {
            let state = [7u8; 4096];
            tokio::task::yield_now().await;
            std::hint::black_box(&state);
        }
        let bound = BoundListener::bind("test", "127.0.0.1:0".parse().unwrap(), 10).unwrap();
        let stats = bound.stats();
        let permit = stats.limit.clone().try_acquire_owned().unwrap();
        let inner = std::mem::size_of_val(&serving());
        let task = counted(serving(), &stats, permit);
        let size = std::mem::size_of_val(&task);
        assert!(inner >= 4096, "{inner}");
        assert!(
            size < inner + 64,
            "task {size} bytes for a future of {inner}"
        );
    }
}
