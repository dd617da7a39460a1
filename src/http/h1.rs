//! HTTP/1.1 upstream connections driven by the request that uses them.
//!
//! hyper's client connection is a future that does the I/O; the usual way
//! is to spawn it, and the request then talks to it through a channel.
//! Each request then costs two wake-ups across tasks on top of the app
//! connection's task. Here no task is spawned: an [`H1Connection`] keeps
//! the connection future next to its sender, the request polls it while
//! it waits for the response head, and the response body
//! ([`PooledBody`]) keeps polling it while the app reads the body.
//!
//! - Once the body has been read to its end and the connection is ready
//!   for another request, it goes back to its address's idle list.
//! - A body dropped before its end, or a connection that fails, is closed
//!   and never reused.
//! - Nobody polls an idle connection, so a close by the upstream is only
//!   noticed when it is taken ([`H1Connection::usable`] polls it once) or
//!   by the pool's sweeper. A close that races with the request is seen
//!   by hyper before anything was written, and the request comes back
//!   unsent (retried like a connect failure).
//!
//! HTTP/2 connections and upgrades (WebSocket) keep a spawned connection:
//! those outlive one request.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, TrySendError};
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::balance::Endpoint;
use super::body::Body;
use super::pool::{self, OpenConnection, PoolSettings};
use crate::tls::UpstreamStream;

/// An HTTP/1.1 connection that is not spawned: whoever holds it polls it.
pub(crate) struct H1Connection {
    sender: http1::SendRequest<Body>,
    /// `None` once it has ended. Boxed: it is large, and moves with the
    /// connection in and out of the pool at every request.
    connection: Option<Box<http1::Connection<TokioIo<UpstreamStream>, Body>>>,
    addr: std::net::SocketAddr,
    _open: OpenConnection,
}

impl H1Connection {
    pub(crate) fn new(
        sender: http1::SendRequest<Body>,
        connection: http1::Connection<TokioIo<UpstreamStream>, Body>,
        addr: std::net::SocketAddr,
        open: OpenConnection,
    ) -> Self {
        Self {
            sender,
            connection: Some(Box::new(connection)),
            addr,
            _open: open,
        }
    }

    /// Does the connection's pending I/O; `false` once it has ended (closed
    /// by the upstream, or failed).
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(connection) = self.connection.as_mut() else {
            return false;
        };
        match Pin::new(connection.as_mut()).poll(cx) {
            Poll::Pending => true,
            Poll::Ready(result) => {
                if let Err(e) = result {
                    debug!(addr = %self.addr, error = %e, "HTTP/1.1 connection ended");
                }
                // Dropping it fails a request still waiting on it.
                self.connection = None;
                false
            }
        }
    }

    /// Whether an idle connection can take a request: polled once (with
    /// no task to wake), it has not ended and wants one.
    pub(crate) fn usable(&mut self) -> bool {
        self.drive(&mut Context::from_waker(Waker::noop())) && self.sender.is_ready()
    }

    /// Sends `request` and drives the connection until the response head
    /// (or the failure) arrives. The connection comes back with the
    /// response unless it has ended.
    pub(crate) async fn send(
        mut self,
        request: Request<Body>,
    ) -> Result<(Response<Incoming>, Option<Self>), TrySendError<Request<Body>>> {
        let mut response = std::pin::pin!(self.sender.try_send_request(request));
        let response = poll_fn(|cx| {
            // The connection first: it writes the request and reads the
            // response, which the sender's future then picks up at once.
            // Only that drive can complete the response (or fail it, by
            // dropping the connection), so the future needs no waker: one
            // would only make the task wake itself once more.
            self.drive(cx);
            response
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
        })
        .await?;
        let connection = self.connection.is_some().then_some(self);
        Ok((response, connection))
    }

    /// Drives the connection until it can take another request; `None` if
    /// it ends first.
    async fn ready(mut self) -> Option<Self> {
        poll_fn(|cx| {
            if !self.drive(cx) {
                return Poll::Ready(false);
            }
            Poll::Ready(match self.sender.poll_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(result) => result.is_ok(),
            })
        })
        .await
        .then_some(self)
    }
}

/// Where a connection goes back to once its response has been read.
pub(crate) struct Home {
    pub(crate) endpoint: Arc<Endpoint>,
    pub(crate) settings: PoolSettings,
}

impl Home {
    /// Puts `connection` on the idle list; first drives it, in a task of
    /// its own, if it is not ready for the next request yet.
    fn release(self, mut connection: H1Connection) {
        if connection.usable() {
            pool::park(&self.endpoint, self.settings, connection);
            return;
        }
        // A body dropped outside the runtime (at shutdown) has no task to
        // finish in: its connection closes.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if connection.connection.is_none() {
            return;
        }
        runtime.spawn(async move {
            if let Some(connection) = connection.ready().await {
                pool::park(&self.endpoint, self.settings, connection);
            }
        });
    }
}

/// A response body from an [`H1Connection`], which it drives while the
/// app reads it, and then returns to the pool.
pub(crate) struct PooledBody {
    body: Incoming,
    connection: Option<H1Connection>,
    home: Option<Home>,
    /// The body has been read to its end.
    done: bool,
}

impl PooledBody {
    pub(crate) fn new(body: Incoming, connection: Option<H1Connection>, home: Home) -> Self {
        let done = body.is_end_stream();
        Self {
            body,
            connection,
            home: Some(home),
            done,
        }
    }

    /// The body is complete: the connection goes home.
    fn finish(&mut self) {
        self.done = true;
        if let (Some(connection), Some(home)) = (self.connection.take(), self.home.take()) {
            home.release(connection);
        }
    }
}

impl hyper::body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(connection) = this.connection.as_mut() {
            // An ended connection has already handed over what it read.
            if !connection.drive(cx) {
                this.connection = None;
            }
        }
        let frame = std::task::ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            None => this.finish(),
            Some(Ok(_)) if this.body.is_end_stream() => this.finish(),
            Some(Ok(_)) => {}
            Some(Err(_)) => this.connection = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // hyper drops a body as soon as it reports its end, without
        // reading past the last frame.
        if self.body.is_end_stream() {
            self.finish();
        } else if let Some(connection) = self.connection.take() {
            debug!(addr = %connection.addr, "response body dropped before its end; connection closed");
        }
    }
}
