//! Bodies: one boxed type for everything attache sends (upstream requests,
//! app responses), and the app's request body as retries see it.
//!
//! A body is streamed, never collected, except a small one of known length
//! (at most [`REPLAY_MAX`] bytes): that one is kept so that a retry (a 503
//! on a PUT, a 401 that refreshed the token) can send it again. A streamed
//! body can be sent once; after that the request cannot be retried.

use std::pin::Pin;
use std::task::{Context, Poll};

use attache_http::h1::{BodyDecoder, Chunk};
use bytes::{Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http::HeaderMap;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Frame;
use tokio::io::AsyncRead;

/// Every body attache sends.
pub(crate) type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body's error: hyper's (the app's body, HTTP/2 upstreams) or
/// attache's own HTTP/1.1 client's.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The largest request body kept for a retry.
pub(crate) const REPLAY_MAX: u64 = 64 * 1024;

pub(crate) fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub(crate) fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// The app's request body, replayable or streamed once.
pub(crate) enum AppBody {
    /// Empty, or small and read whole.
    Replayable(Bytes),
    /// Streamed; `None` once it has been handed to an upstream connection.
    Stream(Option<Body>),
}

impl AppBody {
    /// Reads a small body of known length whole; streams anything else.
    pub(crate) async fn new<B>(body: B, headers: &HeaderMap) -> Result<Self, BoxError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        if body.is_end_stream() {
            return Ok(Self::Replayable(Bytes::new()));
        }
        let small = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|len| len <= REPLAY_MAX);
        if small {
            let body = body.collect().await.map_err(Into::into)?;
            return Ok(Self::Replayable(body.to_bytes()));
        }
        Ok(Self::Stream(Some(body.map_err(Into::into).boxed_unsync())))
    }

    /// Whether another attempt can send it again.
    pub(crate) fn replayable(&self) -> bool {
        matches!(self, Self::Replayable(_))
    }

    /// Whether it is still here to send (not streamed away already).
    pub(crate) fn available(&self) -> bool {
        !matches!(self, Self::Stream(None))
    }

    /// The body for an attempt; `None` if a streamed body is gone.
    pub(crate) fn take(&mut self) -> Option<Body> {
        match self {
            Self::Replayable(bytes) if bytes.is_empty() => Some(empty()),
            Self::Replayable(bytes) => Some(full(bytes.clone())),
            Self::Stream(body) => body.take(),
        }
    }

    /// An attempt gave the body back unsent (its connection was closed
    /// before the request was written).
    pub(crate) fn put_back(&mut self, body: Body) {
        if let Self::Stream(slot) = self {
            *slot = Some(body);
        }
    }
}

/// Reads a body's next frame from a connection: what `read` holds first,
/// then what `io` brings (with `room` bytes of room per read). `Ok(None)`
/// at its end; after its last frame the decoder [is
/// done](BodyDecoder::is_done), and the connection can go back to whoever
/// lent it. A close ends a body read until the close and fails any other
/// (`closed` says how).
pub(crate) fn poll_decoded<R: AsyncRead + Unpin>(
    decoder: &mut BodyDecoder,
    read: &mut BytesMut,
    io: &mut R,
    room: usize,
    cx: &mut Context<'_>,
    closed: &'static str,
) -> Poll<Result<Option<Frame<Bytes>>, String>> {
    loop {
        match decoder.decode(read) {
            Ok(Chunk::Data(data)) => return Poll::Ready(Ok(Some(Frame::data(data)))),
            // Trailers are the last frame: hyper asks no further.
            Ok(Chunk::Trailers(trailers)) => {
                return Poll::Ready(Ok(Some(Frame::trailers(trailers))))
            }
            Ok(Chunk::End) => return Poll::Ready(Ok(None)),
            Ok(Chunk::Incomplete) => {}
            Err(e) => return Poll::Ready(Err(e.to_string())),
        }
        read.reserve(room);
        match std::task::ready!(tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, read)) {
            Ok(0) if *decoder == BodyDecoder::UntilClose => {
                *decoder = BodyDecoder::Done;
                return Poll::Ready(Ok(None));
            }
            Ok(0) => return Poll::Ready(Err(closed.into())),
            Ok(_) => {}
            Err(e) => return Poll::Ready(Err(e.to_string())),
        }
    }
}
