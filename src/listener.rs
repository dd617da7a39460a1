//! Accepting app connections: bounded by `max_connections` (a semaphore:
//! excess connections wait in the kernel backlog), and never dying on one
//! bad accept (it backs off and goes on).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{error, info};

/// Binds `addr`. Port 0 picks a free port; see the returned listener's address.
pub async fn bind(name: &str, addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("listener {name}: cannot bind {addr}: {e}"),
        )
    })
}

/// Accepts until `shutdown` flips to true, handing each connection to `serve`.
pub(crate) async fn accept_loop<F, Fut>(
    name: Arc<str>,
    listener: TcpListener,
    max_connections: usize,
    mut shutdown: watch::Receiver<bool>,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(max_connections));
    let mut backoff = Duration::from_millis(5);
    if let Ok(addr) = listener.local_addr() {
        info!(listener = %name, %addr, "listening");
    }
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
