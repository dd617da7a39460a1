//! The app's request body, streamed from the connection it came on.

use std::pin::Pin;
use std::task::{Context, Poll};

use attache_http::h1::BodyDecoder;
use bytes::{Bytes, BytesMut};
use hyper::body::{Frame, SizeHint};
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::oneshot;

use super::READ_CHUNK;
use crate::http::body::{poll_decoded, BoxError};

/// The connection's read half and what was read past the head, lent to a
/// request body.
pub(super) struct Lent {
    pub(super) half: OwnedReadHalf,
    pub(super) read: BytesMut,
    /// The body was read to its end; if not, the rest of it may still be
    /// coming (the connection closes after its response, lingering).
    pub(super) finished: bool,
}

/// A request body read from the connection's read half, which goes back
/// to the connection (through `back`) when the body has been read to its
/// end or is dropped before that; a body that failed (the app hung up, a
/// broken chunk) keeps it, and the connection closes after its response.
pub(super) struct RequestBody {
    pub(super) decoder: BodyDecoder,
    /// `None` once the body ended or failed.
    pub(super) lent: Option<Lent>,
    pub(super) back: Option<oneshot::Sender<Lent>>,
}

impl RequestBody {
    fn finish(&mut self) {
        self.decoder = BodyDecoder::Done;
        self.give_back(true);
    }

    fn give_back(&mut self, finished: bool) {
        if let (Some(mut lent), Some(back)) = (self.lent.take(), self.back.take()) {
            lent.finished = finished;
            let _ = back.send(lent);
        }
    }

    fn failed(&mut self, cause: &str) -> BoxError {
        self.decoder = BodyDecoder::Done;
        self.lent = None;
        cause.to_owned().into()
    }
}

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(lent) = this.lent.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = std::task::ready!(poll_decoded(
            &mut this.decoder,
            &mut lent.read,
            &mut lent.half,
            READ_CHUNK,
            cx,
            "the app closed its connection before the request body's end",
        ));
        match polled {
            Ok(frame) => {
                if this.decoder.is_done() {
                    this.finish();
                }
                Poll::Ready(frame.map(Ok))
            }
            Err(cause) => Poll::Ready(Some(Err(this.failed(&cause)))),
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

impl Drop for RequestBody {
    /// Dropped before its end (the request was answered without it): the
    /// read half goes back all the same, for the connection to linger on.
    fn drop(&mut self) {
        self.give_back(false);
    }
}
