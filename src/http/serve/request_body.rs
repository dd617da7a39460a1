//! The app's request body, streamed from the connection it came on.

use bytes::BytesMut;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::oneshot;

use super::READ_CHUNK;
use crate::http::body::{DecodedBody, Lender};

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
pub(super) type RequestBody = DecodedBody<Loan>;

/// The read half on loan to a [`RequestBody`], and the way back.
pub(super) struct Loan {
    pub(super) lent: Lent,
    pub(super) back: oneshot::Sender<Lent>,
}

impl Loan {
    fn give_back(mut self, finished: bool) {
        self.lent.finished = finished;
        let _ = self.back.send(self.lent);
    }
}

impl Lender for Loan {
    type Io = OwnedReadHalf;
    const ROOM: usize = READ_CHUNK;
    const CLOSED: &'static str = "the app closed its connection before the request body's end";

    fn io(&mut self) -> (&mut BytesMut, &mut OwnedReadHalf) {
        (&mut self.lent.read, &mut self.lent.half)
    }

    fn finished(self) {
        self.give_back(true);
    }

    fn failed(self, _cause: &str) {}

    /// Dropped before its end (the request was answered without it): the
    /// read half goes back all the same, for the connection to linger on.
    fn dropped(self) {
        self.give_back(false);
    }
}
