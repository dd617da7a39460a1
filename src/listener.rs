//! Accepting app connections: bounded by `max_connections` (a semaphore
//! shared by every worker: excess connections wait in the kernel backlog),
//! and never dying on one bad accept (it backs off and goes on).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, error};

/// A bound listening socket, shared by the workers that accept from it.
pub(crate) struct BoundListener {
    pub(crate) name: Arc<str>,
    pub(crate) socket: std::net::TcpListener,
    pub(crate) limit: Arc<Semaphore>,
    pub(crate) max: usize,
    pub(crate) accepted: Arc<AtomicU64>,
    pub(crate) open: Arc<AtomicUsize>,
}

/// A listener's connection counts, for `/ready` and `/metrics`.
#[derive(Clone)]
pub struct ListenerStats {
    /// The listener's name.
    pub name: Arc<str>,
    /// Its `max_connections`.
    pub max: usize,
    limit: Arc<Semaphore>,
    accepted: Arc<AtomicU64>,
    open: Arc<AtomicUsize>,
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

    /// Waits until every app connection has closed.
    pub async fn wait_idle(&self) {
        if let Ok(all) = self.limit.acquire_many(self.max as u32).await {
            drop(all);
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
        Ok(Self {
            name: name.into(),
            socket,
            limit: Arc::new(Semaphore::new(max_connections)),
            max: max_connections,
            accepted: Arc::new(AtomicU64::new(0)),
            open: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub(crate) fn stats(&self) -> ListenerStats {
        ListenerStats {
            name: self.name.clone(),
            max: self.max,
            limit: self.limit.clone(),
            accepted: self.accepted.clone(),
            open: self.open.clone(),
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

/// Accepts until `shutdown` flips to true, handing each connection to `serve`.
pub(crate) async fn accept_loop<F, Fut>(
    stats: ListenerStats,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let name = stats.name.clone();
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            permit = stats.limit.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                stats.open.fetch_add(1, Ordering::Relaxed);
                debug!(listener = %name, %peer, "accepted");
                let fut = serve(stream, peer);
                let open = stats.open.clone();
                tokio::spawn(async move {
                    fut.await;
                    open.fetch_sub(1, Ordering::Relaxed);
                    drop(permit);
                });
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
