//! Accepting app connections: bounded by `max_connections` (a semaphore
//! shared by every worker: excess connections wait in the kernel backlog),
//! and never dying on one bad accept (it backs off and goes on).

use std::net::SocketAddr;
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
        })
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
    name: Arc<str>,
    listener: TcpListener,
    limit: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit {
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
                debug!(listener = %name, %peer, "accepted");
                let fut = serve(stream, peer);
                tokio::spawn(async move {
                    fut.await;
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
