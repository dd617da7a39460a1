//! Pub/sub that survives its connection: the session remembers the
//! channels, patterns and sharded channels the app subscribed to, and when
//! the connection relaying them goes away (a cluster failover, a node
//! removed, or attache renewing the connection's credential), subscribes
//! again on another node or a fresh connection. The confirmations of that
//! resubscription are dropped, so the app sees only the messages it was
//! already waiting for. In a cluster, sharded channels (SSUBSCRIBE) are
//! heard only from the primary of their slot, so a session that has any
//! moves to that primary, wherever it now is.

use std::collections::BTreeSet;
use std::time::Duration;

use attache_resp::frame::{reply, Request};
use attache_resp::hash::key_slot;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::routing::{self, Route};
use super::{discard, Session};
use crate::redis::connection::{Op, STREAM_BUFFER};
use crate::redis::error::UpstreamError;
use crate::redis::relay::{self, Replies};
use crate::redis::router::{ClusterSlots, Router};
use crate::redis::slots::Slot;

/// Tries to find a node for the subscription before giving up.
const ATTEMPTS: usize = 40;
const RETRY_EVERY: Duration = Duration::from_millis(250);

#[derive(Default)]
pub(super) struct Subscriptions {
    channels: BTreeSet<Bytes>,
    patterns: BTreeSet<Bytes>,
    /// SSUBSCRIBE's channels.
    sharded: BTreeSet<Bytes>,
}

impl Subscriptions {
    /// No channel nor pattern (sharded channels aside: see `is_none`).
    pub(super) fn is_empty(&self) -> bool {
        self.channels.is_empty() && self.patterns.is_empty()
    }

    /// No subscription of any kind.
    pub(super) fn is_none(&self) -> bool {
        self.is_empty() && self.sharded.is_empty()
    }

    /// Follows SUBSCRIBE / PSUBSCRIBE / SSUBSCRIBE and their UNSUBSCRIBEs.
    pub(super) fn track(&mut self, req: &Request, buf: &[u8]) {
        let Some(name) = req.arg(buf, 0) else { return };
        let args = (1..req.args.len())
            .filter_map(|i| req.arg(buf, i))
            .map(Bytes::copy_from_slice);
        if name.eq_ignore_ascii_case(b"subscribe") {
            self.channels.extend(args);
        } else if name.eq_ignore_ascii_case(b"psubscribe") {
            self.patterns.extend(args);
        } else if name.eq_ignore_ascii_case(b"unsubscribe") {
            remove(&mut self.channels, args, req.args.len() == 1);
        } else if name.eq_ignore_ascii_case(b"punsubscribe") {
            remove(&mut self.patterns, args, req.args.len() == 1);
        } else if name.eq_ignore_ascii_case(b"ssubscribe") {
            self.sharded.extend(args);
        } else if name.eq_ignore_ascii_case(b"sunsubscribe") {
            remove(&mut self.sharded, args, req.args.len() == 1);
        }
    }

    /// The primary that must relay the sharded channels: `Ok(None)` when
    /// there are none, `Err` when their slots are on different primaries
    /// (or not served) in `slots`.
    fn sharded_owner(&self, slots: &ClusterSlots) -> Result<Option<usize>, ()> {
        let mut owner = None;
        for channel in &self.sharded {
            let this = slots.owner_of(key_slot(channel)).ok_or(())?;
            if owner.is_some_and(|o| o != this) {
                return Err(());
            }
            owner = Some(this);
        }
        Ok(owner)
    }

    /// The commands that restore every subscription, and the
    /// confirmations they produce.
    fn commands(&self) -> (Bytes, relay::Unasked) {
        let mut out = Vec::new();
        let mut unasked = relay::Unasked::new();
        for (verb, kind, set) in [
            (&b"SUBSCRIBE"[..], &b"subscribe"[..], &self.channels),
            (b"PSUBSCRIBE", b"psubscribe", &self.patterns),
            (b"SSUBSCRIBE", b"ssubscribe", &self.sharded),
        ] {
            if !set.is_empty() {
                let mut args: Vec<&[u8]> = vec![verb];
                args.extend(set.iter().map(|b| &b[..]));
                out.extend_from_slice(&reply::command(&args));
                unasked.push_back((kind, set.len()));
            }
        }
        (out.into(), unasked)
    }
}

fn remove(set: &mut BTreeSet<Bytes>, args: impl Iterator<Item = Bytes>, all: bool) {
    if all {
        set.clear();
    } else {
        for a in args {
            set.remove(&a);
        }
    }
}

impl Session {
    /// attache's own answer to `req` on a stream (AUTH, CLIENT SETINFO, a
    /// refused HELLO): a RESP2 subscriber gets Redis's refusal instead, as
    /// Redis refuses everything but pub/sub, PING, QUIT and RESET there
    /// after checking the arity.
    pub(super) fn answer_on_stream(&self, req: &Request, answer: Bytes) -> Bytes {
        if self.protocol.is_resp3()
            || self.subscriptions.is_none()
            || crate::redis::policy::is_arity_refusal(&answer)
        {
            return answer;
        }
        let lower = |i| {
            req.arg(&self.rbuf, i)
                .map(|a: &[u8]| String::from_utf8_lossy(a).to_ascii_lowercase())
        };
        let mut name = lower(0).unwrap_or_default();
        if name == "client" {
            if let Some(sub) = lower(1) {
                name = format!("{name}|{sub}");
            }
        }
        reply::error(&format!(
            "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
        ))
    }

    /// Remembers what a request sent on the stream subscribes to, except,
    /// in a cluster, an SSUBSCRIBE of a channel another primary serves: the
    /// pinned node refuses it (`-MOVED`), so there is nothing to restore.
    pub(super) fn track_on_stream(&mut self, req: &Request) {
        if !self.is_foreign_sharded(req) {
            self.subscriptions.track(req, &self.rbuf);
        }
    }

    /// On a ketama or modula listener, an SSUBSCRIBE / SUNSUBSCRIBE sent on
    /// a subscription pinned to one server, for a channel another server
    /// serves: `SPUBLISH` goes to the channel's server, so the pinned one
    /// would never relay it. Refused as it is before the stream (a
    /// sharded listener's fan-in hears every server and takes it).
    pub(super) fn is_stray_sharded_channel(&mut self, req: &Request) -> bool {
        if !matches!(self.service.router, Router::Hashed(_))
            || !self.fanin.is_empty()
            || !routing::is_sharded_channel(req, &self.rbuf)
            || req.args.len() < 2
        {
            return false;
        }
        let Some(pinned) = self.pin.as_ref().map(|p| p.server) else {
            return false;
        };
        !matches!(self.route(req), Route::To(server) if server == pinned)
    }

    /// On a sharded or cluster listener, a command other than pub/sub's on
    /// a subscription: a SUBSCRIBE's fan-in writes to every server and
    /// answers from the first, a subscription's pin is one server (its
    /// channel's, or a cluster's node), not the key's, which would answer
    /// MOVED. (RESP3 allows such commands while subscribed; RESP2 refuses
    /// them, and after the last UNSUBSCRIBE the connection is no longer
    /// subscribed: see `left_subscription`.) Refused rather than sent to
    /// the wrong servers; a command for the pinned server still goes there.
    pub(super) fn is_off_shard_on_subscription(&mut self, req: &Request) -> bool {
        if !self.service.router.is_sharded() {
            return false;
        }
        let Some(name) = req.arg(&self.rbuf, 0) else {
            return false;
        };
        let pubsub = [
            &b"subscribe"[..],
            b"psubscribe",
            b"ssubscribe",
            b"unsubscribe",
            b"punsubscribe",
            b"sunsubscribe",
            b"ping",
            b"quit",
            b"reset",
            // The connection's own state, sent as before.
            b"hello",
            b"client",
        ]
        .iter()
        .any(|c| name.eq_ignore_ascii_case(c));
        if pubsub {
            return false;
        }
        if !self.fanin.is_empty() {
            return true;
        }
        let Some(pinned) = self.pin.as_ref().map(|p| p.server) else {
            return false;
        };
        !matches!(self.route(req), Route::To(server) if server == pinned)
    }

    fn is_foreign_sharded(&self, req: &Request) -> bool {
        let Router::Cluster(router) = &self.service.router else {
            return false;
        };
        let ssubscribe = req
            .arg(&self.rbuf, 0)
            .is_some_and(|n| n.eq_ignore_ascii_case(b"ssubscribe"));
        if !ssubscribe {
            return false;
        }
        let (Some(pin), Some(slots)) = (&self.pin, router.slots()) else {
            return false;
        };
        (1..req.args.len())
            .filter_map(|i| req.arg(&self.rbuf, i))
            .any(|channel| slots.owner_of(key_slot(channel)) != Some(pin.server))
    }

    /// Sends the subscriptions on the (new) pinned connection, hiding
    /// their confirmations from the app.
    fn subscribe_again(&mut self) {
        let (commands, unasked) = self.subscriptions.commands();
        let (sink, rx) = mpsc::channel(STREAM_BUFFER);
        let (quiet, marks) = relay::spawn(sink, self.protocol.is_resp3(), unasked, Replies::On);
        self.marks = Some(marks);
        if let Some(pin) = &self.pin {
            pin.conn.handle.send(Op::Stream {
                bytes: commands,
                sink: quiet,
                renew: true,
            });
        }
        self.slots.push_back(Slot::Stream(rx));
    }

    /// Subscribes again to everything the app had: on another node of a
    /// cluster, or on a fresh connection to the same server.
    pub(super) async fn resubscribe(&mut self) -> Result<(), UpstreamError> {
        let lost = self.pin.take();
        let lost_server = lost.as_ref().map(|p| p.server);
        if let Some(pin) = lost {
            discard(pin.conn);
        }
        let service = self.service.clone();
        let Router::Cluster(router) = &service.router else {
            // Not a cluster: the same server, on a fresh connection (the
            // old one was closed to renew its credential).
            let server = lost_server.unwrap_or(0);
            let mut last = self.service.closed_error();
            for _ in 0..ATTEMPTS {
                match self.pin(server, true, true).await {
                    Ok(()) => {
                        self.subscribe_again();
                        return Ok(());
                    }
                    Err(e) => last = e,
                }
                tokio::time::sleep(RETRY_EVERY).await;
            }
            return Err(last);
        };
        let mut last = self.service.closed_error();
        for _ in 0..ATTEMPTS {
            router.refresh.notify_one();
            let Some(slots) = router.slots() else {
                tokio::time::sleep(RETRY_EVERY).await;
                continue;
            };
            let ordered = match self.subscriptions.sharded_owner(&slots) {
                // Sharded channels: their slot's primary, once the map
                // names one (after a failover, the promoted replica).
                Ok(Some(owner)) => vec![owner],
                // Any node relays every PUBLISH; avoid the one that just
                // went away.
                Ok(None) => {
                    let mut ordered: Vec<usize> = slots
                        .primaries
                        .iter()
                        .copied()
                        .filter(|&c| Some(c) != lost_server)
                        .collect();
                    ordered.extend(lost_server);
                    ordered
                }
                Err(()) => Vec::new(),
            };
            for server in ordered {
                match self.pin(server, true, true).await {
                    Ok(()) => {
                        self.subscribe_again();
                        return Ok(());
                    }
                    Err(e) => last = e,
                }
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
        Err(last)
    }
}
