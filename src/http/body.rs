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
use hyper::body::{Frame, SizeHint};
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

/// What an HTTP/1.1 body read by a [`DecodedBody`] comes from: a
/// connection lent to the body, which the lender gets back (or not) when
/// the body ends, fails or is dropped.
pub(crate) trait Lender: Sized + Unpin {
    type Io: AsyncRead + Unpin;
    /// Room asked for per read.
    const ROOM: usize;
    /// How a close before the body's end is told.
    const CLOSED: &'static str;
    /// What was read past the head, and the socket.
    fn io(&mut self) -> (&mut BytesMut, &mut Self::Io);
    /// The body was read to its end.
    fn finished(self);
    /// The body failed with `cause`; the connection is not to be reused.
    fn failed(self, cause: &str);
    /// The body was dropped before its end.
    fn dropped(self);
}

/// An HTTP/1.1 body (the app's request, an upstream's response), decoded
/// from the connection lent to it: what was read past the head first, then
/// what the socket brings. A close ends a body read until the close and
/// fails any other.
pub(crate) struct DecodedBody<L: Lender> {
    decoder: BodyDecoder,
    /// `None` once the body ended or failed.
    lender: Option<L>,
}

impl<L: Lender> DecodedBody<L> {
    pub(crate) fn new(decoder: BodyDecoder, lender: L) -> Self {
        let mut body = Self {
            decoder,
            lender: Some(lender),
        };
        if body.decoder.is_done() {
            body.finish();
        }
        body
    }

    fn finish(&mut self) {
        self.decoder = BodyDecoder::Done;
        if let Some(lender) = self.lender.take() {
            lender.finished();
        }
    }

    fn fail(&mut self, cause: String) -> BoxError {
        self.decoder = BodyDecoder::Done;
        if let Some(lender) = self.lender.take() {
            lender.failed(&cause);
        }
        cause.into()
    }

    /// The next frame: `Ok(None)` at the body's end.
    fn poll_decoded(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Frame<Bytes>>, String>> {
        let Some(lender) = self.lender.as_mut() else {
            return Poll::Ready(Ok(None));
        };
        let (read, io) = lender.io();
        loop {
            match self.decoder.decode(read) {
                Ok(Chunk::Data(data)) => return Poll::Ready(Ok(Some(Frame::data(data)))),
                // Trailers are the last frame: hyper asks no further.
                Ok(Chunk::Trailers(trailers)) => {
                    return Poll::Ready(Ok(Some(Frame::trailers(trailers))))
                }
                Ok(Chunk::End) => return Poll::Ready(Ok(None)),
                Ok(Chunk::Incomplete) => {}
                Err(e) => return Poll::Ready(Err(e.to_string())),
            }
            read.reserve(L::ROOM);
            match std::task::ready!(tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, read)) {
                Ok(0) if self.decoder == BodyDecoder::UntilClose => {
                    self.decoder = BodyDecoder::Done;
                    return Poll::Ready(Ok(None));
                }
                Ok(0) => return Poll::Ready(Err(L::CLOSED.into())),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(e.to_string())),
            }
        }
    }
}

impl<L: Lender> hyper::body::Body for DecodedBody<L> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match std::task::ready!(this.poll_decoded(cx)) {
            Ok(frame) => {
                // After its last frame the decoder is done, and the
                // connection goes back at once.
                if this.decoder.is_done() {
                    this.finish();
                }
                Poll::Ready(frame.map(Ok))
            }
            Err(cause) => Poll::Ready(Some(Err(this.fail(cause)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        self.decoder
            .exact()
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

impl<L: Lender> Drop for DecodedBody<L> {
    fn drop(&mut self) {
        if let Some(lender) = self.lender.take() {
            lender.dropped();
        }
    }
}
