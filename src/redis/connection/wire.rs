//! The wire side of a driver: what the server owes ([`Pending`]), matching
//! the bytes it sends to it ([`deliver`]), the bytes waiting to be written
//! ([`Outgoing`]), and the one thing a driver reads from requests: whether
//! the app's MULTI is open ([`transaction_open_after`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use attache_resp::frame;
use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{DriverSettings, ReplyTx};
use crate::redis::connector::Protocol;
use crate::redis::error::UpstreamError;

/// What the server owes, in the order it was written.
pub(super) enum Pending {
    Replies {
        count: u32,
        deadline: Option<Instant>,
        tx: ReplyTx,
    },
    Stream(mpsc::Sender<Bytes>),
    /// The reply to an `AUTH` the driver sent itself (a credential refresh).
    Reauth,
    /// From here on, replies are in this protocol (see `Op::Switch`).
    Switch(Protocol),
}

/// Whether the app's MULTI is open after `bytes` (whole request frames)
/// are sent, given whether it was before. Dedicated connections only, so
/// the parse costs nothing on the shared path.
pub(super) fn transaction_open_after(mut open: bool, bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while let Ok(Some(request)) = frame::parse_request(rest, usize::MAX) {
        match request.arg(rest, 0) {
            Some(name) if name.eq_ignore_ascii_case(b"MULTI") => open = true,
            Some(name)
                if [&b"EXEC"[..], b"DISCARD", b"RESET"]
                    .iter()
                    .any(|c| name.eq_ignore_ascii_case(c)) =>
            {
                open = false
            }
            _ => {}
        }
        if request.len == 0 {
            break;
        }
        rest = &rest[request.len..];
    }
    open
}

/// Largest gathering buffer kept once written (bursts gather up to
/// `MAX_WRITE_GATHER`).
const KEEP_GATHER: usize = 64 * 1024;

/// Bytes waiting to be written. One batch is written from its own buffer;
/// several are gathered into one, so they leave in one syscall. The
/// gathering buffer is kept from one write to the next (a busy connection
/// gathers on every write), so gathering allocates nothing once warm.
#[derive(Default)]
pub(super) struct Outgoing {
    /// A lone batch, not copied (only while `gather` is empty).
    one: Option<Bytes>,
    gather: BytesMut,
}

impl Outgoing {
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn len(&self) -> usize {
        match &self.one {
            Some(one) => one.len(),
            None => self.gather.len(),
        }
    }

    pub(super) fn chunk(&self) -> &[u8] {
        match &self.one {
            Some(one) => one,
            None => &self.gather,
        }
    }

    pub(super) fn push(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        if self.gather.is_empty() && self.one.is_none() {
            self.one = Some(bytes);
            return;
        }
        if let Some(first) = self.one.take() {
            self.gather.reserve(first.len() + bytes.len());
            self.gather.extend_from_slice(&first);
        }
        self.gather.extend_from_slice(&bytes);
    }

    pub(super) fn advance(&mut self, n: usize) {
        match &mut self.one {
            Some(one) => {
                one.advance(n);
                if one.is_empty() {
                    self.one = None;
                }
            }
            // Written whole, a buffer grown by a burst is let go; otherwise,
            // once empty, the next `reserve` reuses it from its start.
            None if n == self.gather.len() && self.gather.capacity() > KEEP_GATHER => {
                self.gather = BytesMut::new();
            }
            None => self.gather.advance(n),
        }
    }
}

/// Hands complete replies in `buf` to the batches waiting for them; sets
/// `fed` when bytes went to a stream.
#[allow(clippy::too_many_arguments)]
pub(super) async fn deliver(
    buf: &mut BytesMut,
    queue: &mut VecDeque<Pending>,
    scanned: &mut usize,
    frames: &mut u32,
    in_flight: &AtomicUsize,
    settings: &DriverSettings,
    protocol: &mut Protocol,
    refused: &mut Option<Bytes>,
    fed: &mut bool,
) -> Result<(), UpstreamError> {
    let mut resp3 = protocol.is_resp3();
    let protocol_error = |e: frame::ProtocolError| {
        UpstreamError::Protocol(settings.id.clone(), e.to_string().into())
    };
    loop {
        match queue.front() {
            None => {
                // Nothing expected: only RESP3 pushes (e.g. a stray
                // invalidation) may arrive; drop them. Anything else means
                // the stream is out of step and cannot be trusted.
                while !buf.is_empty() {
                    match frame::reply_len(buf, resp3).map_err(protocol_error)? {
                        Some(n) if frame::is_push(buf) => {
                            let _ = buf.split_to(n);
                        }
                        Some(_) => {
                            return Err(UpstreamError::Protocol(
                                settings.id.clone(),
                                "reply to no request".into(),
                            ))
                        }
                        None => break,
                    }
                }
                return Ok(());
            }
            Some(Pending::Stream(sink)) => {
                if !buf.is_empty() {
                    let chunk = buf.split().freeze();
                    if sink.send(chunk).await.is_err() {
                        return Err(UpstreamError::Closed(settings.id.clone()));
                    }
                    *fed = true;
                }
                return Ok(());
            }
            Some(&Pending::Switch(next)) => {
                *protocol = next;
                resp3 = next.is_resp3();
                queue.pop_front();
            }
            Some(Pending::Reauth) => {
                let Some(n) = frame::reply_len(buf, resp3).map_err(protocol_error)? else {
                    return Ok(());
                };
                let reply = buf.split_to(n).freeze();
                if resp3 && frame::is_push(&reply) {
                    continue;
                }
                queue.pop_front();
                if frame::is_error(&reply) {
                    *refused = Some(reply);
                }
            }
            Some(Pending::Replies { count, .. }) => {
                let count = *count;
                while *frames < count {
                    let rest = &buf[*scanned..];
                    match frame::reply_len(rest, resp3).map_err(protocol_error)? {
                        Some(n) if resp3 && frame::is_push(rest) => {
                            // An out-of-band push inside a batch: cut it out.
                            let tail = buf.split_off(*scanned);
                            let mut tail = tail;
                            let _ = tail.split_to(n);
                            buf.unsplit(tail);
                        }
                        Some(n) => {
                            *scanned += n;
                            *frames += 1;
                        }
                        None => return Ok(()),
                    }
                }
                let replies = buf.split_to(*scanned).freeze();
                *scanned = 0;
                *frames = 0;
                if let Some(Pending::Replies { tx, .. }) = queue.pop_front() {
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                    // A closed receiver means the app left: its replies are
                    // consumed here and reach nobody.
                    let _ = tx.send(Ok(replies));
                }
            }
        }
    }
}
