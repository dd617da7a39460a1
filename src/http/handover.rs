//! A connection attache's own HTTP/1.1 path (`serve`) does not take,
//! handed to hyper's server with the bytes already read: HTTP/2 with prior
//! knowledge, HTTP/1.0, upgrades, `Expect`, unusual or malformed requests.
//! hyper serves it from that request to its end.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::{pin, Pin};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tracing::debug;

use super::metrics::HttpMetrics;
use super::HttpService;
use crate::shutdown::SessionShutdown;

/// Serves the rest of an app connection with hyper's server: `read` is
/// what was read of it and not used; `fresh`, that no request was served
/// on it before.
pub(super) async fn serve_hyper(
    current: Arc<RwLock<Arc<HttpService>>>,
    stream: TcpStream,
    read: BytesMut,
    peer: SocketAddr,
    shutdown: Arc<SessionShutdown>,
    fresh: bool,
) {
    let service = current.read().unwrap_or_else(|e| e.into_inner()).clone();
    HttpMetrics::add(&service.metrics().handovers);
    drop(service);
    let io = Rewind {
        prefix: read.freeze(),
        inner: stream,
        ended: false,
        shutdown: shutdown.clone(),
    };
    // HTTP/2 with prior knowledge starts a connection; after HTTP/1.1
    // requests its preface is a malformed HTTP/1.1 request (hyper's server
    // alone answers it so).
    let protocols = if fresh {
        Protocols::Any
    } else {
        Protocols::Http1
    };
    serve_io(current, io, peer, shutdown, protocols).await;
}

/// Which protocols hyper's server may find on a connection handed to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocols {
    /// HTTP/1.x, or HTTP/2 with prior knowledge (the connection's start).
    Any,
    /// HTTP/1.x only: HTTP/1.1 requests were served on it already.
    Http1,
}

/// Serves `io` with hyper's server, speaking `protocols`.
async fn serve_io<I>(
    current: Arc<RwLock<Arc<HttpService>>>,
    io: I,
    peer: SocketAddr,
    shutdown: Arc<SessionShutdown>,
    protocols: Protocols,
) where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let service = current.read().unwrap_or_else(|e| e.into_inner()).clone();
        // Boxed: the request's future is large, and hyper would otherwise
        // move it into its dispatcher by value for every request.
        Box::pin(async move { Ok::<_, Infallible>(service.handle(request, peer).await) })
    });
    let io = TokioIo::new(io);
    let result = match protocols {
        Protocols::Any => {
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection_with_upgrades(io, service);
            until_shutdown(connection, &shutdown, |c| c.graceful_shutdown()).await
        }
        Protocols::Http1 => {
            // Not the auto builder's `http1_only`: with upgrades it still
            // looks for the HTTP/2 preface (hyper-util 0.1.21).
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .with_upgrades();
            until_shutdown(connection, &shutdown, |c| c.graceful_shutdown())
                .await
                .map_err(Into::into)
        }
    };
    if let Err(e) = result {
        debug!(%peer, error = %e, "app connection ended");
    }
}

/// Runs a hyper connection to its end; when `shutdown` flips first, asks it
/// to finish gracefully (HTTP/1: after the response in flight; HTTP/2:
/// GOAWAY) and waits for that.
async fn until_shutdown<C, E>(
    connection: C,
    shutdown: &Arc<SessionShutdown>,
    graceful: impl FnOnce(Pin<&mut C>),
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut connection = pin!(connection);
    tokio::select! {
        biased;
        result = connection.as_mut() => return result,
        () = shutdown.wait() => {}
    }
    graceful(connection.as_mut());
    connection.await
}

/// A connection with bytes already read from it in front: what hyper's
/// server reads first. When hyper lets it go before the app's end of the
/// stream (a response before the upload it refused, an HTTP/1.0 close),
/// the connection lingers ([`crate::socket::linger`]), so the app reads its
/// answer instead of a reset, as on attache's own path.
struct Rewind {
    prefix: Bytes,
    inner: TcpStream,
    /// The app's end of the stream was read (or the connection failed).
    ended: bool,
    shutdown: Arc<SessionShutdown>,
}

impl Drop for Rewind {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // The same socket, kept open by a second descriptor once this one
        // is closed.
        let Ok(fd) = self.inner.as_fd().try_clone_to_owned() else {
            return;
        };
        let socket = std::net::TcpStream::from(fd);
        let shutdown = self.shutdown.clone();
        runtime.spawn(async move {
            let Ok(mut stream) = socket
                .set_nonblocking(true)
                .and_then(|()| TcpStream::from_std(socket))
            else {
                return;
            };
            // What was written is the whole answer.
            let _ = stream.shutdown().await;
            crate::socket::linger(&mut stream, shutdown.wait()).await;
        });
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => {
                self.ended = true;
            }
            Poll::Ready(Err(_)) => self.ended = true,
            _ => {}
        }
        polled
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
