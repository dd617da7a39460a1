//! The replies an app connection is owed, in the order it asked. A slot is
//! a reply ready to write, a batch whose replies an upstream connection will
//! deliver, a command split over several servers whose replies are merged,
//! or a stream relayed as it comes (pub/sub, MONITOR).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use attache_resp::cluster;
use attache_resp::frame::{self, reply};
use attache_resp::shard::{self, Merge};
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::sync::oneshot::error::TryRecvError;

use super::connection::{ConnectionHandle, ReplyRx};
use super::connector::Protocol;
use super::error::UpstreamError;
use super::meter::{Meter, Meters};
use super::metrics::RedisMetrics;
use super::router::{ClusterRouter, Router};
use super::service::RedisService;

pub(super) enum Slot {
    Ready(Bytes),
    Wait {
        rx: ReplyRx,
        replies: u32,
        meter: Meter,
    },
    /// One request per server, one reply each, combined into one reply.
    /// Boxed: it is the largest, and the rarest, so every slot stays small.
    Merge(Box<Merging>),
    /// Everything the pinned connection sends, as it comes.
    Stream(mpsc::Receiver<Bytes>),
    /// Cluster mode: one command, kept so that a MOVED or ASK reply can be
    /// followed without the app seeing it.
    Cluster(Box<Redirectable>),
    /// A stream whose upstream went away.
    Ended,
}

/// A cluster-mode command in flight.
pub(crate) struct Redirectable {
    pub(crate) rx: ReplyRx,
    pub(crate) request: Bytes,
    /// The upstream it was sent to (a MOVED to `:port` means its host).
    pub(crate) server: usize,
    pub(crate) protocol: Protocol,
    pub(crate) shared_index: usize,
    pub(crate) redirects: u8,
    /// Sent as `ASKING` + the command: the first reply is ASKING's.
    pub(crate) asking: bool,
    /// A whole transaction (`MULTI`, the commands, `EXEC`) sent as one
    /// buffer: `replies` frames come back, and the app gets the last
    /// (EXEC's); a MOVED on any of them re-sends the whole transaction.
    pub(crate) transaction: Option<u32>,
    /// Counted once, on the server that answered last.
    pub(crate) meter: Meter,
}

impl Redirectable {
    /// A transaction's replies: EXEC's for the app, unless a command was
    /// redirected: then the whole transaction goes again to the node named,
    /// the slot's new owner (MOVED), or mid-migration the node importing it
    /// (ASK), after `ASKING`, whose flag lasts through a MULTI; or a
    /// command got TRYAGAIN: then it goes again to the same node, later.
    fn settle_transaction(
        &mut self,
        all: Bytes,
        replies: u32,
        service: &RedisService,
    ) -> Option<Bytes> {
        let resp3 = self.protocol.is_resp3();
        let mut frames = Vec::with_capacity(replies as usize);
        let mut rest = &all[..];
        while let Ok(Some(len)) = frame::reply_len(rest, resp3) {
            frames.push(&rest[..len]);
            rest = &rest[len..];
        }
        let last = frames
            .last()
            .map(|f| Bytes::copy_from_slice(f))
            .unwrap_or(all.clone());
        // One Redis could have sent (not a script's made-up error).
        let redirects = frames
            .iter()
            .filter_map(|f| cluster::parse_redirect(f.split(|&b| b == b'\r').next()?))
            .filter(|r| cluster::could_redirect(&self.request, r.slot()));
        // A MOVED first: the slot map is stale.
        let redirect = redirects.reduce(|first, next| match (&first, &next) {
            (cluster::Redirect::Ask { .. }, cluster::Redirect::Moved { .. }) => next,
            _ => first,
        });
        let tryagain = frames.iter().any(|f| f.starts_with(b"-TRYAGAIN"));
        if redirect.is_none() && tryagain && self.redirects < MAX_REDIRECTS {
            self.retry_later(service);
            return None;
        }
        let (Some(redirect), true) = (redirect, self.redirects < MAX_REDIRECTS) else {
            return Some(last);
        };
        let Router::Cluster(router) = &service.router else {
            return Some(last);
        };
        let ask = matches!(redirect, cluster::Redirect::Ask { .. });
        if !ask {
            router.refresh.notify_one();
        }
        if let Some(handle) = self.follow(redirect.addr(), service, router) {
            self.asking = ask;
            let (request, replies) = self.outgoing();
            self.rx = handle.request(request, replies, false);
        }
        None
    }

    /// `-TRYAGAIN` (a multi-key command over a slot being migrated, whose
    /// keys are on both nodes for now), or a redirect to a node the slot
    /// map does not name yet (see `follow`): sent again to the same node
    /// (after ASKING if it was asked) once the pause is over, which doubles
    /// each time (25 ms, then 50, 100, 200, 400: under a second in all);
    /// from a task, so that settling a reply stays synchronous.
    fn retry_later(&mut self, service: &RedisService) {
        let pause = TRYAGAIN_PAUSE * (1 << self.redirects);
        self.redirects += 1;
        let handle = service.shared(self.server, self.protocol, self.shared_index);
        let (request, replies) = self.outgoing();
        let closed = service.closed_error();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            tokio::time::sleep(pause).await;
            let reply = handle.request(request, replies, false).await;
            let _ = tx.send(reply.unwrap_or(Err(closed)));
        });
        self.rx = rx;
    }

    /// What goes to the node, and how many replies come back: the command
    /// (or the whole transaction), after `ASKING` when it was asked.
    fn outgoing(&self) -> (Bytes, u32) {
        let replies = self.transaction.unwrap_or(1);
        if !self.asking {
            return (self.request.clone(), replies);
        }
        let mut both = BytesMut::from(&reply::command(&[b"ASKING"])[..]);
        both.extend_from_slice(&self.request);
        (both.freeze(), replies + 1)
    }

    /// Moves this command to the node at `addr` (`:port` meaning the host
    /// of the node that redirected it) and returns that node's connection;
    /// `None` when attache does not know that node (not a seed, not in a
    /// slot map): then the map is refreshed and the command sent again
    /// where it was, later, since a node added to the cluster is named by
    /// the next map, and an address a script's error made up never is.
    fn follow(
        &mut self,
        addr: &cluster::NodeAddress,
        service: &RedisService,
        router: &ClusterRouter,
    ) -> Option<ConnectionHandle> {
        let Some(server) = service.redirect_target(addr, self.server) else {
            router.refresh.notify_one();
            self.retry_later(service);
            return None;
        };
        self.server = server;
        self.redirects += 1;
        Some(service.shared(self.server, self.protocol, self.shared_index))
    }
}

/// Redirects followed (and TRYAGAINs retried) for one command before the
/// app gets the last one.
pub(super) const MAX_REDIRECTS: u8 = 5;
/// The first pause before a TRYAGAIN is retried; it doubles each time.
const TRYAGAIN_PAUSE: Duration = Duration::from_millis(25);

impl Redirectable {
    /// The app's reply, or `None` after re-sending on a redirect.
    fn settle(
        &mut self,
        result: Result<Bytes, UpstreamError>,
        service: &RedisService,
    ) -> Option<Bytes> {
        if self.transaction.is_some() {
            let (_, replies) = self.outgoing();
            return self.settle_transaction(
                settle(result, replies, service.metrics()),
                replies,
                service,
            );
        }
        let mut reply = settle(result, if self.asking { 2 } else { 1 }, service.metrics());
        if self.asking {
            // Drop ASKING's +OK.
            let first = frame::reply_len(&reply, false).ok().flatten().unwrap_or(0);
            reply = reply.slice(first..);
        }
        if reply.starts_with(b"-TRYAGAIN") && self.redirects < MAX_REDIRECTS {
            self.retry_later(service);
            return None;
        }
        if self.redirects >= MAX_REDIRECTS || !cluster::is_redirect(&reply) {
            return Some(reply);
        }
        let line_end = reply
            .iter()
            .position(|&b| b == b'\r')
            .unwrap_or(reply.len());
        // A redirect attache cannot read goes to the app as it is.
        let Some(redirect) = cluster::parse_redirect(&reply[..line_end]) else {
            return Some(reply);
        };
        // Not one Redis could have sent: a script's error, as it is.
        if !cluster::could_redirect(&self.request, redirect.slot()) {
            return Some(reply);
        }
        let Router::Cluster(router) = &service.router else {
            return Some(reply);
        };
        // Counted on the node that redirected (before following).
        let from = self.server;
        // `None`: sent again later where it was (see `follow`).
        let handle = self.follow(redirect.addr(), service, router)?;
        service.count_redirect(&redirect, from);
        match redirect {
            cluster::Redirect::Moved { .. } => {
                router.refresh.notify_one();
                self.asking = false;
                self.rx = handle.request(self.request.clone(), 1, false);
            }
            cluster::Redirect::Ask { .. } => {
                self.asking = true;
                let (request, replies) = self.outgoing();
                self.rx = handle.request(request, replies, false);
            }
        }
        None
    }
}

/// A command split over servers (see [`Slot::Merge`]).
pub(super) struct Merging {
    pub(super) parts: Vec<PartReply>,
    pub(super) combine: Combine,
    /// Counted per part, on the part's server (`server` is unused).
    pub(super) meter: Meter,
}

/// A part of a [`Slot::Merge`]. Kept whole, like a lone cluster command,
/// so that a MOVED or ASK on one part is followed without the app seeing
/// it (outside cluster mode, a redirect is never followed).
pub(super) struct PartReply {
    pub(super) cmd: Redirectable,
    pub(super) reply: Option<Bytes>,
    /// Its reply is attache's error (the upstream failed).
    failed: bool,
}

impl PartReply {
    pub(super) fn new(cmd: Redirectable) -> Self {
        Self {
            cmd,
            reply: None,
            failed: false,
        }
    }

    /// Settles the part, or re-sends it on a redirect (leaving it pending).
    fn settle(&mut self, result: Result<Bytes, UpstreamError>, service: &RedisService) {
        let failed = result.is_err();
        if let Some(reply) = self.cmd.settle(result, service) {
            self.failed = failed;
            self.reply = Some(reply);
        }
    }
}

/// Counts a merged command once per part, on each part's upstream.
fn record_parts(
    parts: &[PartReply],
    meter: &Meter,
    service: &RedisService,
    meters: &mut Meters,
    resp3: bool,
    now: Instant,
) {
    for part in parts {
        let reply = part.reply.as_deref().unwrap_or_default();
        let stats = meters.upstream(service, part.cmd.server);
        meter.record(stats, reply, 1, part.failed, resp3, now);
    }
}

/// How a [`Slot::Merge`]'s replies become the app's reply.
pub(super) enum Combine {
    /// By the command's response policy (see `attache_resp::shard`).
    Shards {
        merge: Merge,
        key_orders: Vec<Vec<usize>>,
        /// The servers asked, in reply order (to name them in INFO).
        servers: Vec<usize>,
    },
    /// A SCAN step on `server` of `servers`: the cursor is rewritten so that
    /// it also says which server to continue on.
    Scan { server: usize, servers: usize },
}

/// Replies ready to write in one go: the usual one or two without an
/// allocation (the session keeps nothing between writes, so an idle
/// connection holds no buffer for them).
pub(super) type ReadyReplies = smallvec::SmallVec<[Bytes; 2]>;

/// Moves every ready reply at the front into `out`. Returns true when a
/// stream ended (the pinned upstream went away).
pub(super) fn collect_ready(
    slots: &mut VecDeque<Slot>,
    service: &RedisService,
    resp3: bool,
    out: &mut ReadyReplies,
    meters: &mut Meters,
) -> bool {
    let mut stream_ended = false;
    // One clock reading for every reply collected in this pass.
    let mut now = None;
    let mut now = || *now.get_or_insert_with(Instant::now);
    while let Some(front) = slots.front_mut() {
        match front {
            Slot::Ready(_) => {
                if let Some(Slot::Ready(bytes)) = slots.pop_front() {
                    out.push(bytes);
                }
            }
            Slot::Wait { rx, replies, meter } => {
                let replies = *replies;
                let result = match rx.try_recv() {
                    Ok(result) => result,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Closed) => Err(service.closed_error()),
                };
                let failed = result.is_err();
                let reply = settle(result, replies, service.metrics());
                let stats = meters.upstream(service, meter.server);
                meter.record(stats, &reply, replies, failed, resp3, now());
                out.push(reply);
                slots.pop_front();
            }
            Slot::Merge(merge) => {
                let Merging {
                    parts,
                    combine,
                    meter,
                } = &mut **merge;
                for part in parts.iter_mut().filter(|p| p.reply.is_none()) {
                    match part.cmd.rx.try_recv() {
                        Ok(result) => part.settle(result, service),
                        Err(TryRecvError::Empty) => {}
                        Err(TryRecvError::Closed) => {
                            part.settle(Err(service.closed_error()), service)
                        }
                    }
                }
                if parts.iter().any(|p| p.reply.is_none()) {
                    break;
                }
                record_parts(parts, meter, service, meters, resp3, now());
                out.push(finish(parts, combine, service, resp3));
                slots.pop_front();
            }
            Slot::Cluster(cmd) => {
                let result = match cmd.rx.try_recv() {
                    Ok(result) => result,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Closed) => Err(service.closed_error()),
                };
                let failed = result.is_err();
                match cmd.settle(result, service) {
                    Some(reply) => {
                        let stats = meters.upstream(service, cmd.server);
                        cmd.meter.record(stats, &reply, 1, failed, resp3, now());
                        out.push(reply);
                        slots.pop_front();
                    }
                    // Re-sent: wait for the new reply.
                    None => break,
                }
            }
            Slot::Ended => {
                slots.pop_front();
                stream_ended = true;
            }
            Slot::Stream(rx) => match rx.try_recv() {
                Ok(bytes) => out.push(bytes),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    slots.pop_front();
                    stream_ended = true;
                }
            },
        }
    }
    stream_ended
}

/// Resolves when the front slot has something to write, turning a settled
/// reply into `Slot::Ready` in place.
pub(super) async fn wait_front(
    slots: &mut VecDeque<Slot>,
    service: &RedisService,
    resp3: bool,
    meters: &mut Meters,
) {
    match slots.front_mut() {
        Some(Slot::Wait { rx, replies, meter }) => {
            let result = match rx.await {
                Ok(result) => result,
                Err(_) => Err(service.closed_error()),
            };
            let failed = result.is_err();
            let reply = settle(result, *replies, service.metrics());
            let stats = meters.upstream(service, meter.server);
            meter.record(stats, &reply, *replies, failed, resp3, Instant::now());
            slots[0] = Slot::Ready(reply);
        }
        Some(Slot::Merge(merge)) => {
            let Merging {
                parts,
                combine,
                meter,
            } = &mut **merge;
            for part in parts.iter_mut() {
                // A redirected part is re-sent: wait for its new reply.
                while part.reply.is_none() {
                    let result = (&mut part.cmd.rx)
                        .await
                        .unwrap_or_else(|_| Err(service.closed_error()));
                    part.settle(result, service);
                }
            }
            record_parts(parts, meter, service, meters, resp3, Instant::now());
            let merged = finish(parts, combine, service, resp3);
            slots[0] = Slot::Ready(merged);
        }
        Some(Slot::Cluster(cmd)) => loop {
            let result = (&mut cmd.rx)
                .await
                .unwrap_or_else(|_| Err(service.closed_error()));
            let failed = result.is_err();
            if let Some(reply) = cmd.settle(result, service) {
                let stats = meters.upstream(service, cmd.server);
                cmd.meter
                    .record(stats, &reply, 1, failed, resp3, Instant::now());
                slots[0] = Slot::Ready(reply);
                break;
            }
        },
        Some(Slot::Stream(rx)) => match rx.recv().await {
            Some(bytes) => slots.push_front(Slot::Ready(bytes)),
            None => slots[0] = Slot::Ended,
        },
        _ => std::future::pending().await,
    }
}

/// A batch's replies, or one error reply per lost reply so the app's reply
/// count stays right.
pub(super) fn settle(
    result: Result<Bytes, UpstreamError>,
    replies: u32,
    metrics: &RedisMetrics,
) -> Bytes {
    match result {
        Ok(bytes) => bytes,
        Err(e) => {
            RedisMetrics::add(&metrics.errors);
            let one = e.to_reply();
            if replies == 1 {
                return one;
            }
            let mut all = BytesMut::with_capacity(one.len() * replies as usize);
            for _ in 0..replies {
                all.extend_from_slice(&one);
            }
            all.freeze()
        }
    }
}

fn finish(
    parts: &mut [PartReply],
    combine: &Combine,
    service: &RedisService,
    resp3: bool,
) -> Bytes {
    let replies: Vec<Bytes> = parts.iter_mut().filter_map(|p| p.reply.take()).collect();
    match combine {
        Combine::Shards {
            merge,
            key_orders,
            servers,
        } => shard::merge(merge, &replies, resp3, key_orders, &service.labels(servers)),
        Combine::Scan { server, servers } => match replies.first() {
            Some(r) => rewrite_scan_cursor(r, *server, *servers, resp3),
            None => reply::error("ERR attache: no reply"),
        },
    }
}

/// attache's SCAN cursor is `inner * servers + server`: the server's own
/// cursor and which server it belongs to. A server that finishes hands over
/// to the next one with cursor 0; after the last, the app gets 0.
pub(super) fn split_scan_cursor(cursor: u64, servers: usize) -> (usize, u64) {
    let n = servers.max(1) as u64;
    ((cursor % n) as usize, cursor / n)
}

fn rewrite_scan_cursor(reply: &Bytes, server: usize, servers: usize, resp3: bool) -> Bytes {
    if frame::is_error(reply) {
        return reply.clone();
    }
    let Some(elements) = shard::array_elements(reply, resp3) else {
        return reply.clone();
    };
    let (Some(cursor), Some(keys)) = (elements.first(), elements.get(1)) else {
        return reply.clone();
    };
    let inner = reply[cursor.clone()]
        .split(|&b| b == b'\n')
        .nth(1)
        .and_then(|line| std::str::from_utf8(line.strip_suffix(b"\r").unwrap_or(line)).ok())
        .and_then(|text| text.parse::<u64>().ok());
    let Some(inner) = inner else {
        return reply.clone();
    };
    let n = servers as u64;
    let next = if inner != 0 {
        inner
            .checked_mul(n)
            .and_then(|c| c.checked_add(server as u64))
    } else if server + 1 < servers {
        Some(server as u64 + 1)
    } else {
        Some(0)
    };
    let Some(next) = next else {
        return reply::error("ERR attache: SCAN cursor overflow");
    };
    let mut out = BytesMut::new();
    out.extend_from_slice(b"*2\r\n");
    out.extend_from_slice(&reply::bulk(next.to_string().as_bytes()));
    out.extend_from_slice(&reply[keys.clone()]);
    out.freeze()
}
