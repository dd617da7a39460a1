//! Batching: consecutive requests for the same upstream connection are
//! gathered into one run and sent as one buffer (its replies come back as
//! one buffer); attache's own answers take their place in the same ordered
//! queue of slots, so every reply reaches the app in request order.

use attache_resp::frame::{self, reply, ProtocolError, Request};
use attache_resp::inline;
use bytes::{Buf, Bytes, BytesMut};
use tracing::warn;

use super::super::error::UpstreamError;
use super::super::meter::{Families, Meter};
use super::super::metrics::{ErrorSource, Family, RedisMetrics};
use super::super::slots::{Redirectable, Slot};
use super::Session;

/// Which connection a run of requests goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// The app's shared connection to this server.
    Shared(usize),
    /// The app's dedicated connection.
    Pinned,
}

/// Consecutive requests bound for the same connection, not yet sent.
pub(super) struct Run {
    pub(super) bytes: BytesMut,
    pub(super) count: u32,
    pub(super) target: Target,
    pub(super) blocking: bool,
    pub(super) families: Families,
}

impl Session {
    /// Consumes `req` and answers it with `bytes`, in order.
    pub(super) fn reply_local(&mut self, req: &Request, bytes: Bytes) {
        self.rbuf.advance(req.len);
        self.flush_run();
        self.push_local(bytes);
    }

    /// Queues attache's own answer to the current command, counted as
    /// answered by upstream `attache`.
    pub(super) fn push_local(&mut self, bytes: Bytes) {
        let stats = self.meters.local(&self.service);
        stats.answered(self.family, self.read_at.elapsed(), 1);
        if frame::is_error(&bytes) {
            stats.error(self.family, ErrorSource::Attache, 1);
        }
        self.slots.push_back(Slot::Ready(bytes));
    }

    /// An app's malformed request: the error, then the close (as Redis).
    pub(super) async fn refuse_bad_request(&mut self, e: ProtocolError) -> std::io::Result<()> {
        warn!(listener = %self.service.name, peer = %self.peer, error = %e, "bad request from the app: answered with the error, closing its connection");
        self.flush_run();
        // Subscribed: the relay of pushes never ends, and the error (and
        // the close) would wait behind it forever.
        Box::pin(self.end_stream()).await?;
        self.family = Family::OTHER;
        self.push_local(reply::error(&format!("ERR {e}")));
        self.rbuf.clear();
        self.closing = true;
        self.linger = true;
        Ok(())
    }

    /// An inline request that quotes an argument (`SET k "a b"`) is
    /// rewritten in the read buffer as the RESP array Redis would have
    /// read; `true` when it was.
    pub(super) fn requote_inline(&mut self, req: &Request) -> Result<bool, ProtocolError> {
        let Some(args) = inline::unquote(&self.rbuf[..req.len])? else {
            return Ok(false);
        };
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let rest = self.rbuf.split_off(req.len);
        self.rbuf.clear();
        self.rbuf.extend_from_slice(&reply::command(&args));
        self.rbuf.unsplit(rest);
        Ok(true)
    }

    /// The request's bytes, taken off the read buffer. Inline commands are
    /// re-encoded as RESP so that everything sent upstream is RESP.
    pub(super) fn take_request(&mut self, req: &Request) -> BytesMut {
        if req.inline {
            let args: Vec<&[u8]> = (0..req.args.len())
                .filter_map(|i| req.arg(&self.rbuf, i))
                .collect();
            let encoded = BytesMut::from(&reply::command(&args)[..]);
            self.rbuf.advance(req.len);
            encoded
        } else {
            self.rbuf.split_to(req.len)
        }
    }

    pub(super) fn push_run(&mut self, bytes: BytesMut, target: Target, blocking: bool) {
        // Cluster mode keeps each shared command apart, to follow a redirect.
        let alone = self.service.router.is_cluster() && target != Target::Pinned;
        if let Some(run) = &mut self.run {
            if run.target == target && !run.blocking && !blocking && !alone {
                run.bytes.unsplit(bytes);
                run.families.push(self.family, run.count);
                run.count += 1;
                return;
            }
        }
        self.flush_run();
        self.run = Some(Run {
            bytes,
            count: 1,
            target,
            blocking,
            families: Families::One(self.family),
        });
    }

    /// Sends the pending run to its connection.
    pub(super) fn flush_run(&mut self) {
        let Some(run) = self.run.take() else { return };
        let bytes = run.bytes.freeze();
        let (handle, server) = match run.target {
            Target::Pinned => match &self.pin {
                Some(pin) => (pin.conn.handle.clone(), pin.server),
                None => return,
            },
            Target::Shared(server) => (
                self.service
                    .shared(server, self.protocol, self.shared_index),
                server,
            ),
        };
        let meter = Meter {
            started: self.read_at,
            server,
            families: run.families,
        };
        if let (Target::Shared(server), true) = (run.target, self.service.router.is_cluster()) {
            let rx = handle.request(bytes.clone(), 1, false);
            self.slots.push_back(Slot::Cluster(Box::new(Redirectable {
                rx,
                request: bytes,
                server,
                protocol: self.protocol,
                shared_index: self.shared_index,
                redirects: 0,
                asking: false,
                transaction: None,
                meter,
            })));
            return;
        }
        let rx = handle.request(bytes, run.count, run.blocking);
        self.slots.push_back(Slot::Wait {
            rx,
            replies: run.count,
            meter,
        });
    }

    pub(super) fn reply_error(&mut self, error: &UpstreamError) {
        self.flush_run();
        RedisMetrics::add(&self.service.metrics().errors);
        self.push_local(error.to_reply());
    }

    /// Inside MULTI, a command attache answers itself (AUTH, CLIENT
    /// SETNAME / GETNAME / SETINFO) is queued like any other, as Redis
    /// does: a command with the same reply and no effect goes in its place,
    /// so the app reads QUEUED now and the answer in EXEC's array, one
    /// entry per command (clients check both counts).
    pub(super) fn queue_stand_in(&mut self, req: &Request, stand_in: &[&[u8]]) {
        self.rbuf.advance(req.len);
        let bytes = BytesMut::from(&reply::command(stand_in)[..]);
        self.push_run(bytes, Target::Pinned, false);
    }
}

/// Redis's answer to UNSUBSCRIBE, PUNSUBSCRIBE or SUNSUBSCRIBE from a
/// connection subscribed to nothing: one reply per channel given (one with
/// a null channel if none), each with a count of 0.
pub(super) fn unsubscribed(req: &Request, buf: &[u8], resp3: bool) -> Bytes {
    let name = req.arg(buf, 0).unwrap_or_default();
    let kind: &[u8] = [&b"punsubscribe"[..], b"sunsubscribe"]
        .into_iter()
        .find(|k| name.eq_ignore_ascii_case(k))
        .unwrap_or(b"unsubscribe");
    let mut out = BytesMut::new();
    let mut one = |channel: Option<&[u8]>| {
        out.extend_from_slice(if resp3 { b">3\r\n" } else { b"*3\r\n" });
        out.extend_from_slice(&reply::bulk(kind));
        match channel {
            Some(channel) => out.extend_from_slice(&reply::bulk(channel)),
            None => out.extend_from_slice(&reply::null(resp3)),
        }
        out.extend_from_slice(b":0\r\n");
    };
    if req.args.len() < 2 {
        one(None);
    }
    for i in 1..req.args.len() {
        one(req.arg(buf, i));
    }
    out.freeze()
}
