//! HTTP/1.1 upstream connections, written and read by the request that
//! uses them: no task, no channel, no dispatcher. The wire format (request
//! head, response head, body framing) is `attache_http::h1`'s; this module
//! does the I/O.
//!
//! - [`H1Connection::send`] writes the request head from the request's
//!   own header map (nothing is copied to build a request), streams the
//!   body, and reads the response head. The response comes back with a
//!   [`ResponseBody`] that reads the rest from the same connection.
//! - Once the body has been read to its end, the connection goes back to
//!   its address's idle list, unless either side said `close` or the
//!   request body was cut short by an early response. An upstream that
//!   answers an upload early and closes makes the rest of the body fail
//!   to write: the response it sent first is still read and is the
//!   answer.
//! - A body dropped before its end, or a connection that fails, is closed
//!   and never reused.
//! - Nobody reads an idle connection, so a close by the upstream is only
//!   noticed when it is taken ([`H1Connection::usable`] reads it once) or
//!   by the pool's sweeper. A failure to write the head, before any byte
//!   went out, gives the body back ([`SendError::Unsent`]) to be sent
//!   elsewhere.
//!
//! HTTP/2 connections and upgrades (WebSocket) use hyper's client (see
//! `pool`): those outlive one request.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use attache_http::h1::{
    encode_chunk_header, encode_last_chunk, encode_request_head, parse_response_head, BodyDecoder,
    RequestFraming, ResponseHead, LAST_CHUNK,
};
use bytes::{Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, Method, Response};
use hyper::body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::debug;

use super::balance::Endpoint;
use super::body::{Body, BoxError, DecodedBody, Lender};
use super::pool::{self, OpenConnection, PoolSettings};
use crate::tls::UpstreamStream;

/// What a read asks room for: a response head, or the next part of a body.
const READ_CHUNK: usize = 16 * 1024;
/// A body frame up to this size is copied behind the head (one write);
/// a larger one is written from its own bytes.
const COPY_MAX: usize = 16 * 1024;
/// Buffers a burst grew past this are let go when the connection idles.
const KEEP_MAX: usize = 64 * 1024;

/// An HTTP/1.1 connection that one request at a time writes and reads.
pub(crate) struct H1Connection {
    io: UpstreamStream,
    /// Bytes read and not used yet.
    read: BytesMut,
    /// Bytes to write; kept between requests for its allocation.
    write: Vec<u8>,
    addr: SocketAddr,
    _open: OpenConnection,
}

/// Why a request got no response head.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The connection failed before any byte of the request was written:
    /// nothing reached the upstream, and the body comes back.
    Unsent { body: Body, cause: io::Error },
    /// The app's request body failed while it was being sent.
    AppBody(BoxError),
    /// The connection failed, or the upstream's answer was not HTTP/1.1,
    /// after (part of) the request was written.
    Failed(String),
}

impl H1Connection {
    pub(crate) fn new(io: UpstreamStream, addr: SocketAddr, open: OpenConnection) -> Self {
        Self {
            io,
            read: BytesMut::new(),
            write: Vec::new(),
            addr,
            _open: open,
        }
    }

    /// Whether an idle connection can take a request: read once (with no
    /// task to wake), it has neither closed nor sent anything unasked.
    pub(crate) fn usable(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut probe)
            .is_pending()
    }

    /// Sends a request (`target` in origin form, `headers` as they go out)
    /// and reads the response head. The response's body reads the rest,
    /// and then returns the connection to `home`.
    pub(crate) async fn send(
        mut self,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        body: Body,
        home: Home,
    ) -> Result<Response<Body>, SendError> {
        let framing = RequestFraming::for_body(
            method,
            body.size_hint().exact(),
            headers.contains_key(CONTENT_LENGTH),
        );
        self.write.clear();
        encode_request_head(method, target, headers, framing, &mut self.write);
        let mut request = Outgoing {
            body: (!body.is_end_stream()).then_some(body),
            chunked: framing == RequestFraming::Chunked,
            written: 0,
            large: None,
            large_written: 0,
            wrote_any: false,
            flushed: false,
            unparsed: false,
            write_failed: None,
        };
        if request.body.is_none() {
            self.end_body(&mut request, None);
        }
        let head = poll_fn(|cx| self.poll_exchange(cx, method, &mut request)).await;
        let head = match head {
            Ok(head) => head,
            Err(Exchange::Unsent(cause)) => {
                let body = request.body.take().unwrap_or_else(super::body::empty);
                return Err(SendError::Unsent { body, cause });
            }
            Err(Exchange::AppBody(e)) => return Err(SendError::AppBody(e)),
            Err(Exchange::Failed(cause)) => return Err(SendError::Failed(cause)),
        };
        // An early answer (before the whole body went out) leaves the
        // request unfinished on the wire: that connection cannot be reused.
        let reusable = head.keep_alive && request.body.is_none() && request.flushed;
        let ResponseHead {
            status,
            version: _,
            headers,
            framing,
            keep_alive: _,
        } = head;
        let body = ResponseBody::new(
            BodyDecoder::of(framing),
            Borrowed {
                connection: self,
                home: reusable.then_some(home),
            },
        );
        let mut response = Response::new(http_body_util::BodyExt::boxed_unsync(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }

    /// Writes what is left of the request and reads until the response
    /// head is complete, whichever can go on.
    fn poll_exchange(
        &mut self,
        cx: &mut Context<'_>,
        method: &Method,
        request: &mut Outgoing,
    ) -> Poll<Result<ResponseHead, Exchange>> {
        loop {
            if !request.flushed && request.write_failed.is_none() {
                match self.poll_write_request(cx, request) {
                    // A response already on its way is the answer (the
                    // rest of the body is dropped, unsent).
                    Poll::Ready(Err(Exchange::Failed(cause))) => {
                        request.write_failed = Some(cause);
                        request.body = None;
                        request.unparsed = !self.read.is_empty();
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    _ => {}
                }
            }
            // Parsed only when a read brought something new: a pooled
            // connection starts empty, and a head that was incomplete
            // stays so until more arrives.
            if request.unparsed {
                request.unparsed = false;
                match parse_response_head(&mut self.read, method) {
                    Ok(Some(head)) => return Poll::Ready(Ok(head)),
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Err(Exchange::Failed(e.to_string()))),
                }
            }
            match self.poll_read(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if !request.wrote_any => {
                    return Poll::Ready(Err(Exchange::Unsent(io::ErrorKind::UnexpectedEof.into())))
                }
                Poll::Ready(Ok(n)) if n > 0 => request.unparsed = true,
                Poll::Ready(Ok(_)) => {
                    let cause = request.write_failed.take().unwrap_or_else(|| {
                        "the upstream closed the connection before its response".into()
                    });
                    return Poll::Ready(Err(Exchange::Failed(cause)));
                }
                Poll::Ready(Err(e)) => {
                    let cause = request.write_failed.take().unwrap_or_else(|| e.to_string());
                    return Poll::Ready(Err(Exchange::Failed(cause)));
                }
            }
        }
    }

    /// Writes the head and then the body as it comes, until everything is
    /// written and flushed (`Ready(Ok)`), or the socket or the body has
    /// nothing more for now (`Pending`).
    fn poll_write_request(
        &mut self,
        cx: &mut Context<'_>,
        request: &mut Outgoing,
    ) -> Poll<Result<(), Exchange>> {
        let failed = |request: &Outgoing, e: io::Error| {
            if request.wrote_any {
                Exchange::Failed(e.to_string())
            } else {
                Exchange::Unsent(e)
            }
        };
        loop {
            // The buffer, then a large frame behind it (its chunk's CRLF
            // then goes in the emptied buffer).
            let written = std::task::ready!(poll_write_all(
                &mut self.io,
                cx,
                &self.write,
                &mut request.written,
                &mut request.wrote_any,
            ));
            written.map_err(|e| failed(request, e))?;
            self.write.clear();
            request.written = 0;
            if let Some(large) = &request.large {
                let written = std::task::ready!(poll_write_all(
                    &mut self.io,
                    cx,
                    large,
                    &mut request.large_written,
                    &mut request.wrote_any,
                ));
                written.map_err(|e| failed(request, e))?;
                request.large = None;
                request.large_written = 0;
                if request.chunked {
                    self.write.extend_from_slice(b"\r\n");
                    continue;
                }
            }
            let Some(body) = request.body.as_mut() else {
                std::task::ready!(Pin::new(&mut self.io).poll_flush(cx))
                    .map_err(|e| failed(request, e))?;
                request.flushed = true;
                return Poll::Ready(Ok(()));
            };
            // Whatever is written so far goes out while the app's body is
            // awaited.
            if let Poll::Ready(Err(e)) = Pin::new(&mut self.io).poll_flush(cx) {
                return Poll::Ready(Err(failed(request, e)));
            }
            match std::task::ready!(Pin::new(body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.queue_data(request, data),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.end_body(request, Some(&trailers));
                        }
                    }
                },
                Some(Err(e)) => return Poll::Ready(Err(Exchange::AppBody(e))),
                None => self.end_body(request, None),
            }
            // hyper's bodies say they are done with their last frame,
            // without a further poll.
            if request.body.as_ref().is_some_and(|b| b.is_end_stream()) {
                self.end_body(request, None);
            }
        }
    }

    /// The app's body has ended: a chunked one gets its last chunk (and
    /// the trailers, which only a chunked body can carry).
    fn end_body(&mut self, request: &mut Outgoing, trailers: Option<&HeaderMap>) {
        request.body = None;
        if request.chunked {
            match trailers {
                Some(trailers) => encode_last_chunk(trailers, &mut self.write),
                None => self.write.extend_from_slice(LAST_CHUNK),
            }
        }
    }

    /// Queues a body frame: copied behind what is buffered if small.
    fn queue_data(&mut self, request: &mut Outgoing, data: Bytes) {
        if data.is_empty() {
            return;
        }
        if request.chunked {
            encode_chunk_header(data.len(), &mut self.write);
        }
        if data.len() <= COPY_MAX {
            self.write.extend_from_slice(&data);
            if request.chunked {
                self.write.extend_from_slice(b"\r\n");
            }
        } else {
            request.large = Some(data);
        }
    }

    /// Reads into `read`; `Ok(0)` at the end of the stream.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.read.reserve(READ_CHUNK);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)
    }

    /// Lets go of buffers a large request or response grew.
    fn trim(&mut self) {
        if self.read.capacity() > KEEP_MAX {
            self.read = BytesMut::new();
        }
        if self.write.capacity() > KEEP_MAX {
            self.write = Vec::new();
        }
    }
}

/// Writes `buf` from `*written` on, counting into it; `Pending` when the
/// socket is full.
fn poll_write_all(
    io: &mut UpstreamStream,
    cx: &mut Context<'_>,
    buf: &[u8],
    written: &mut usize,
    wrote_any: &mut bool,
) -> Poll<io::Result<()>> {
    while *written < buf.len() {
        match std::task::ready!(Pin::new(&mut *io).poll_write(cx, &buf[*written..])) {
            Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                *written += n;
                *wrote_any = true;
            }
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
    Poll::Ready(Ok(()))
}

/// The request as [`H1Connection::send`] writes it.
struct Outgoing {
    /// `None` once its end has been queued.
    body: Option<Body>,
    chunked: bool,
    /// How much of the connection's `write` buffer is written.
    written: usize,
    /// A large body frame, written after the buffer.
    large: Option<Bytes>,
    /// How much of `large` is written.
    large_written: usize,
    wrote_any: bool,
    /// Everything has been written and flushed.
    flushed: bool,
    /// Bytes were read since the response head was last looked for.
    unparsed: bool,
    /// Writing failed after some of the request went out: why. The
    /// response may have come before (an upstream that answers an upload
    /// early and closes), so it is still read for.
    write_failed: Option<String>,
}

/// How [`H1Connection::poll_exchange`] failed.
enum Exchange {
    Unsent(io::Error),
    AppBody(BoxError),
    Failed(String),
}

/// Where a connection goes back to once its response has been read.
pub(crate) struct Home {
    pub(crate) endpoint: Arc<Endpoint>,
    pub(crate) settings: PoolSettings,
}

/// A response body read from its [`H1Connection`], which then goes home.
pub(crate) type ResponseBody = DecodedBody<Borrowed>;

/// The connection a [`ResponseBody`] reads from, and where it goes once
/// the body is whole (`None`: it is not to be reused).
pub(crate) struct Borrowed {
    connection: H1Connection,
    home: Option<Home>,
}

impl Lender for Borrowed {
    type Io = UpstreamStream;
    const ROOM: usize = READ_CHUNK;
    const CLOSED: &'static str = "the upstream closed the connection before the body's end";

    fn io(&mut self) -> (&mut BytesMut, &mut UpstreamStream) {
        (&mut self.connection.read, &mut self.connection.io)
    }

    /// The body is complete: the connection goes home if it may.
    fn finished(self) {
        let Self {
            mut connection,
            home,
        } = self;
        // Bytes past the response's end were never asked for.
        if let Some(home) = home.filter(|_| connection.read.is_empty()) {
            connection.trim();
            pool::park(&home.endpoint, home.settings, connection);
        }
    }

    fn failed(self, cause: &str) {
        let addr = self.connection.addr;
        debug!(%addr, cause, "HTTP/1.1 response body failed; connection closed");
    }

    fn dropped(self) {
        let addr = self.connection.addr;
        debug!(%addr, "response body dropped before its end; connection closed");
    }
}
