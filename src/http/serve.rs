//! The app's side of an HTTP listener. Plain HTTP/1.1 requests, nearly
//! all of them, are read and answered here: the head is parsed in one
//! pass into the request's header map (`attache_http::h1::app`), the
//! service runs in this connection's own task, and the response head and
//! the start of its body go out in one write. No channel, no dispatcher.
//!
//! Everything else (HTTP/2 with prior knowledge, HTTP/1.0, upgrades,
//! `Expect: 100-continue`, other target forms, and every head that is
//! malformed, ambiguous or too large) goes to hyper's server: the
//! connection is handed over with the bytes read so far, at the request
//! that needs it, and hyper serves it from then on (see `handover`).
//!
//! What this side does as hyper's server did:
//! - keep-alive unless the app says `close`; pipelined requests are
//!   answered in order;
//! - a request body is streamed from the socket as the upstream takes it
//!   (a small one that arrived with its head is handed over whole);
//! - while a request is in flight (from the end of its body on), or its
//!   response's body is slow to come, an app that hangs up cancels it
//!   (one that only half-closes after a pipelined request gets the answer
//!   in flight);
//! - a response body of unknown length is sent chunked, with trailers
//!   when the app sent `TE: trailers`; a `Date` is added when the
//!   response has none;
//! - a response body that fails, or a request body left unread, closes
//!   the connection after the response; with an unread body it lingers
//!   first, reading and dropping what the app still sends (for at most
//!   10 s), so that an app writing all of an upload before it reads gets
//!   the answer and not a reset;
//! - at shutdown, an idle connection (or one with a head only begun)
//!   closes at once and a busy one after its response (`connection:
//!   close`).

mod request_body;

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use attache_http::h1::app::{
    encode_response_head, parse_request_head, BodyFraming, Parsed, RequestHead, ResponseBody,
};
use attache_http::h1::{
    encode_chunk_header, encode_last_chunk, BodyDecoder, ChunkedDecoder, LAST_CHUNK,
};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tracing::debug;

use self::request_body::{Lent, Loan, RequestBody};
use super::body::{self, Body};
use super::service::HttpService;
use crate::shutdown::SessionShutdown;

/// What a read asks room for (hyper's server started with as much).
const READ_CHUNK: usize = 8 * 1024;
/// A body frame up to this size is copied behind the head (one write);
/// a larger one is written from its own bytes.
const COPY_MAX: usize = 16 * 1024;
/// Buffers a burst grew past this are let go between requests.
const KEEP_MAX: usize = 64 * 1024;
/// While a request is in flight, bytes of the next ones are read (to see
/// a hang-up) up to this much.
const PIPELINED_MAX: usize = 64 * 1024;

/// Serves one app connection until it closes, or hands it to hyper.
pub(crate) async fn serve_h1(
    current: Arc<RwLock<Arc<HttpService>>>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: Arc<SessionShutdown>,
) {
    let (read_half, write_half) = stream.into_split();
    let mut connection = AppConnection {
        read_half: Some(read_half),
        write_half,
        read: BytesMut::new(),
        write: Vec::new(),
    };
    let (handover, fresh) = match connection.run(&current, peer, &shutdown).await {
        Ok(Ended::Closed) => return,
        Ok(Ended::Handover { fresh }) => (connection.handover(), fresh),
        Err(e) => {
            debug!(%peer, error = %e, "app connection ended");
            return;
        }
    };
    if let Some((stream, read)) = handover {
        super::handover::serve_hyper(current, stream, read, peer, shutdown, fresh).await;
    }
}

/// How [`AppConnection::run`] ended.
enum Ended {
    Closed,
    /// A request this side does not take is at the start of `read`.
    Handover {
        /// No request was served on the connection before it.
        fresh: bool,
    },
}

/// An app connection on attache's own HTTP/1.1 path.
struct AppConnection {
    /// `None` while a streamed request body holds it.
    read_half: Option<OwnedReadHalf>,
    write_half: OwnedWriteHalf,
    /// Bytes read and not used yet.
    read: BytesMut,
    /// A response head and the start of its body.
    write: Vec<u8>,
}

impl AppConnection {
    async fn run(
        &mut self,
        current: &RwLock<Arc<HttpService>>,
        peer: SocketAddr,
        shutdown: &Arc<SessionShutdown>,
    ) -> io::Result<Ended> {
        let mut down = pin!(shutdown.wait());
        let mut fresh = true;
        loop {
            let head = loop {
                if !self.read.is_empty() {
                    match parse_request_head(&mut self.read) {
                        Parsed::Head(head) => break head,
                        Parsed::Other => return Ok(Ended::Handover { fresh }),
                        Parsed::Partial => {}
                    }
                }
                let Some(half) = self.read_half.as_mut() else {
                    return Ok(Ended::Closed);
                };
                self.read.reserve(READ_CHUNK);
                let buf = &mut self.read;
                let read =
                    poll_fn(|cx| tokio_util::io::poll_read_buf(Pin::new(&mut *half), cx, buf));
                // Waiting between requests is where a shutdown closes the
                // connection, with a head only begun too (an app that
                // stalls in one would hold the shutdown; hyper's server
                // closes there as well).
                let n = tokio::select! {
                    biased;
                    n = read => n?,
                    () = down.as_mut() => return Ok(Ended::Closed),
                };
                if n == 0 {
                    return Ok(Ended::Closed);
                }
            };
            let service = current.read().unwrap_or_else(|e| e.into_inner()).clone();
            if !self.exchange(service, head, peer, shutdown).await? {
                return Ok(Ended::Closed);
            }
            fresh = false;
            if self.read.capacity() > KEEP_MAX && self.read.is_empty() {
                self.read = BytesMut::new();
            }
            if self.write.capacity() > KEEP_MAX {
                self.write = Vec::new();
            }
        }
    }

    /// One request and its response. `Ok(true)`: the connection can take
    /// another request.
    async fn exchange(
        &mut self,
        service: Arc<HttpService>,
        head: RequestHead,
        peer: SocketAddr,
        shutdown: &Arc<SessionShutdown>,
    ) -> io::Result<bool> {
        let RequestHead {
            method,
            uri,
            headers,
            body: framing,
            keep_alive,
            trailers,
        } = head;
        let mut lent: Option<oneshot::Receiver<Lent>> = None;
        let body = match framing {
            BodyFraming::Empty => body::empty(),
            BodyFraming::Length(n) if n <= self.read.len() as u64 => {
                body::full(self.read.split_to(n as usize).freeze())
            }
            BodyFraming::Length(_) | BodyFraming::Chunked => {
                let Some(half) = self.read_half.take() else {
                    return Ok(false);
                };
                let (back, returned) = oneshot::channel();
                lent = Some(returned);
                let decoder = match framing {
                    BodyFraming::Length(n) => BodyDecoder::Length(n),
                    _ => BodyDecoder::Chunked(ChunkedDecoder::default()),
                };
                let lent = Lent {
                    half,
                    read: std::mem::take(&mut self.read),
                    finished: false,
                };
                RequestBody::new(decoder, Loan { lent, back }).boxed_unsync()
            }
        };
        let mut request = Request::new(body);
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = headers;
        let mut handling = pin!(service.handle(request, peer));
        // A streamed body has the read half: the request is not watched
        // until the body gives it back (read to its end, or dropped).
        if let Some(returned) = lent.as_mut() {
            let first = tokio::select! {
                biased;
                response = handling.as_mut() => Ok(response),
                back = &mut *returned => Err(back),
            };
            let (response, held) = match first {
                Err(Ok(lent)) if lent.finished => {
                    self.take_back(lent);
                    (None, None)
                }
                // Dropped before its end: the rest of the body may still
                // be coming, so the request is not watched (what the app
                // sends is not a next request).
                Err(Ok(lent)) => {
                    self.take_back(lent);
                    (Some(handling.as_mut().await), None)
                }
                // Failed: the app hung up or broke its framing.
                Err(Err(_)) => (Some(handling.as_mut().await), None),
                // Answered first: the body was read to its end or dropped
                // with the request (then it is back), or is still held
                // somewhere (an HTTP/2 upstream stream: waited for after
                // the response, to linger on).
                Ok(response) => match returned.try_recv() {
                    Ok(lent) if lent.finished => {
                        self.take_back(lent);
                        return self
                            .respond(&method, response, keep_alive, trailers, shutdown)
                            .await;
                    }
                    Ok(lent) => {
                        self.take_back(lent);
                        (Some(response), None)
                    }
                    Err(oneshot::error::TryRecvError::Empty) => (Some(response), Some(returned)),
                    Err(oneshot::error::TryRecvError::Closed) => (Some(response), None),
                },
            };
            if let Some(response) = response {
                return self
                    .respond_unread(&method, response, held, trailers, shutdown, peer)
                    .await;
            }
        }
        let response = match self.read_half.as_mut() {
            // Watched meanwhile: an app that hangs up cancels it.
            Some(half) => {
                let read = &mut self.read;
                let hang_up = poll_fn(|cx| watch_hang_up(half, read, cx));
                tokio::select! {
                    biased;
                    response = handling => response,
                    () = hang_up => return Ok(false),
                }
            }
            None => handling.await,
        };
        self.respond(&method, response, keep_alive, trailers, shutdown)
            .await
    }

    /// The read half and what follows the body, back from a request body.
    fn take_back(&mut self, Lent { half, read, .. }: Lent) {
        self.read_half = Some(half);
        self.read = read;
    }

    /// Writes the response to a request whose body was not read to its
    /// end, then closes the connection (where the body ends is unknown),
    /// lingering first ([`crate::socket::linger`]): the app may still be
    /// writing the body.
    ///
    /// `held`: the body is still held elsewhere (an HTTP/2 upstream's
    /// stream); the read half is waited for, within the lingering's time,
    /// once the response is written.
    async fn respond_unread(
        &mut self,
        method: &Method,
        response: Response<Body>,
        held: Option<&mut oneshot::Receiver<Lent>>,
        trailers: bool,
        shutdown: &Arc<SessionShutdown>,
        peer: SocketAddr,
    ) -> io::Result<bool> {
        debug!(%peer, "request body not read to its end; the connection closes after the response");
        // A response cut short closes at once: nothing to linger for.
        if !self
            .write_response(method, response, trailers, true)
            .await?
        {
            return Ok(false);
        }
        if self.read_half.is_none() && held.is_none() {
            return Ok(false);
        }
        // The response is whole: the end of the stream tells the app so.
        self.write_half.shutdown().await?;
        let deadline = tokio::time::Instant::now() + crate::socket::LINGER_MAX;
        if let Some(held) = held {
            let back = tokio::select! {
                biased;
                () = shutdown.wait() => return Ok(false),
                back = tokio::time::timeout_at(deadline, held) => back,
            };
            match back {
                Ok(Ok(lent)) => self.take_back(lent),
                _ => return Ok(false),
            }
        }
        if let Some(half) = self.read_half.as_mut() {
            crate::socket::linger_until(half, shutdown.wait(), deadline).await;
        }
        Ok(false)
    }

    /// Writes the response; `Ok(true)`: the connection can take another
    /// request.
    async fn respond(
        &mut self,
        method: &Method,
        response: Response<Body>,
        keep_alive: bool,
        trailers: bool,
        shutdown: &SessionShutdown,
    ) -> io::Result<bool> {
        let keep_alive = keep_alive && self.read_half.is_some() && !shutdown.is_down();
        let written = self
            .write_response(method, response, trailers, !keep_alive)
            .await?;
        Ok(keep_alive && written)
    }

    /// Writes a response: its head with the first part of its body, then
    /// the rest as it comes. `Ok(false)`: its body failed or did not
    /// match its length, so the app got less than the whole response and
    /// the connection must close.
    async fn write_response(
        &mut self,
        method: &Method,
        response: Response<Body>,
        trailers_wanted: bool,
        close: bool,
    ) -> io::Result<bool> {
        let (parts, mut body) = response.into_parts();
        let framing = ResponseBody::of(
            method,
            parts.status,
            &parts.headers,
            body.size_hint().exact(),
        );
        self.write.clear();
        with_date(|date| {
            encode_response_head(
                parts.status,
                &parts.headers,
                framing,
                close,
                date,
                &mut self.write,
            )
        });
        let chunked = framing == ResponseBody::Chunked;
        let mut left = match framing {
            ResponseBody::None => {
                self.write_half.write_all(&self.write).await?;
                return Ok(true);
            }
            ResponseBody::Length(n) => n,
            ResponseBody::Chunked => 0,
        };
        let mut trailers: Option<HeaderMap> = None;
        let complete = loop {
            // What is ready goes behind the head; the buffer goes out
            // before waiting for more.
            let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    self.flush().await?;
                    // Watched while the body is slow to come (a stream, a
                    // long poll): an app that hangs up lets go of it, and
                    // of the upstream connection it is read from.
                    match self.read_half.as_mut() {
                        Some(half) => {
                            let read = &mut self.read;
                            let hang_up = poll_fn(|cx| watch_hang_up(half, read, cx));
                            tokio::select! {
                                biased;
                                frame = body.frame() => frame,
                                () = hang_up => {
                                    debug!("the app hung up during the response body");
                                    return Ok(false);
                                }
                            }
                        }
                        None => body.frame().await,
                    }
                }
            };
            let frame = match frame {
                None => break chunked || left == 0,
                Some(Err(e)) => {
                    debug!(error = %e, "response body failed; the app's connection closes");
                    break false;
                }
                Some(Ok(frame)) => frame,
            };
            let mut data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    trailers = frame.into_trailers().ok();
                    continue;
                }
            };
            if !chunked {
                if data.len() as u64 > left {
                    debug!(
                        "response body longer than its content-length; the app's connection closes"
                    );
                    data.truncate(left as usize);
                    self.queue(data, false).await?;
                    break false;
                }
                left -= data.len() as u64;
            }
            self.queue(data, chunked).await?;
        };
        if complete && chunked {
            match trailers.as_ref().filter(|_| trailers_wanted) {
                Some(trailers) => encode_last_chunk(trailers, &mut self.write),
                None => self.write.extend_from_slice(LAST_CHUNK),
            }
        }
        self.flush().await?;
        Ok(complete)
    }

    /// Queues a body frame: copied behind what is buffered if small,
    /// written from its own bytes if not.
    async fn queue(&mut self, data: Bytes, chunked: bool) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if chunked {
            encode_chunk_header(data.len(), &mut self.write);
        }
        if data.len() <= COPY_MAX {
            self.write.extend_from_slice(&data);
        } else {
            self.flush().await?;
            self.write_half.write_all(&data).await?;
        }
        if chunked {
            self.write.extend_from_slice(b"\r\n");
        }
        // A body whose small frames are always ready goes out in bounded
        // writes, not gathered whole.
        if self.write.len() >= KEEP_MAX {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.write.is_empty() {
            self.write_half.write_all(&self.write).await?;
            self.write.clear();
        }
        Ok(())
    }

    /// The whole connection again, for hyper, with what was read of it.
    fn handover(self) -> Option<(TcpStream, BytesMut)> {
        let stream = self.read_half?.reunite(self.write_half).ok()?;
        Some((stream, self.read))
    }
}

/// While a request is in flight: reads what the app sends next (a
/// pipelined request stays in `read`), and is ready when the app hangs
/// up. Stops watching once `read` holds [`PIPELINED_MAX`].
///
/// The end of the stream with a next request already buffered is the app
/// done sending (a half-close), not a hang-up: the request in flight is
/// answered, as hyper's server does (the next read sees the end again).
fn watch_hang_up(half: &mut OwnedReadHalf, read: &mut BytesMut, cx: &mut Context<'_>) -> Poll<()> {
    loop {
        if read.len() >= PIPELINED_MAX {
            return Poll::Pending;
        }
        read.reserve(READ_CHUNK);
        match tokio_util::io::poll_read_buf(Pin::new(&mut *half), cx, read) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(0)) if !read.is_empty() => return Poll::Pending,
            Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(()),
            Poll::Ready(Ok(_)) => {}
        }
    }
}

/// Runs `f` with the current `Date` value (RFC 9110 §6.6.1), formatted
/// once a second per thread.
fn with_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(cached, date)| {
        if *cached != second || date.is_empty() {
            *cached = second;
            *date = httpdate::fmt_http_date(now);
        }
        f(date.as_bytes())
    })
}
