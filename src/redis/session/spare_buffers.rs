//! Read buffers of idle app connections, kept per worker thread: a thousand
//! idle connections hold no buffer, and a busy pipeline-1 connection does
//! not allocate one per request.

use std::cell::RefCell;

use bytes::BytesMut;

use super::{KEEP_BUFFER, READ_CHUNK};

/// Enough for every connection that is mid-request at once on a worker.
const MAX_SPARE: usize = 64;

thread_local! {
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

pub(super) fn take() -> BytesMut {
    SPARE
        .with(|spare| spare.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(READ_CHUNK))
}

pub(super) fn give_back(mut buf: BytesMut) {
    if buf.capacity() > KEEP_BUFFER {
        return;
    }
    buf.clear();
    // Reclaims the whole allocation in place once nothing else shares it.
    buf.reserve(READ_CHUNK);
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < MAX_SPARE {
            spare.push(buf);
        }
    });
}
