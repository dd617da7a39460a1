//! Where requests go on a sharded listener: by key through the router,
//! split over servers and merged, fanned out to every server, or refused
//! with CROSSSLOT; and pub/sub subscribed on every server.

use attache_resp::command;
use attache_resp::frame::{self, reply, Request};
use attache_resp::shard::{self, Merge, Part};
use bytes::{Buf, Bytes};
use deadpool::managed::PoolError;
use tokio::sync::mpsc;

use super::{Session, Target};
use crate::redis::connection::{Op, STREAM_BUFFER};
use crate::redis::error::UpstreamError;
use crate::redis::fanin;
use crate::redis::meter::{Families, Meter};
use crate::redis::policy::{self, Action, Transient};
use crate::redis::relay::{self, Replies};
use std::sync::Arc;

use attache_resp::hash::{key_slot, Distribution, Distributor};

use crate::config::ReadFrom;
use crate::redis::router::{ClusterSlots, Router};
use crate::redis::slots::{split_scan_cursor, Combine, Merging, PartReply, Redirectable, Slot};

/// Where one request goes, in the listener's mode.
pub(super) enum Route {
    /// To this server.
    To(usize),
    /// No key: whichever server the app is on (pinned, else the first).
    Keyless,
    /// Answered without the upstream (PING and ECHO in sharded modes, or a
    /// refusal such as CROSSSLOT).
    Reply(Bytes),
    /// The same request to each of these servers.
    All(Vec<usize>, Merge),
    /// Split by server (each part's `server` is an upstream index).
    Split(Vec<Part>, Merge),
    /// A SCAN step on the `position`-th of `servers`.
    Scan {
        servers: Vec<usize>,
        position: usize,
        inner: u64,
    },
}

/// How keys map to upstreams in a sharded mode.
enum Shards {
    /// twemproxy's ring: a key's server directly. With `Some(server)`
    /// (`random` mode), every key of the request goes to that one server.
    Ring(Arc<Distributor>, usize, Option<usize>),
    /// Redis Cluster: a key's slot, then the slot's primary. Keys group by
    /// slot (not node): Redis refuses multi-key commands across slots.
    /// With `replicas_only` (`read_from = "replica"`), reads never fall
    /// back to the primary.
    Cluster(Arc<ClusterSlots>, bool),
}

impl Shards {
    /// The group a key belongs to: a server (ring) or a slot (cluster).
    fn group_of(&self, key: &[u8]) -> usize {
        match self {
            Shards::Ring(_, _, Some(server)) => *server,
            Shards::Ring(ring, _, None) => ring.server_for_key(key),
            Shards::Cluster(..) => key_slot(key) as usize,
        }
    }

    /// The upstream serving a group.
    fn upstream(&self, group: usize) -> Option<usize> {
        match self {
            Shards::Ring(..) => Some(group),
            Shards::Cluster(slots, _) => slots.owner_of(group as u16),
        }
    }

    /// The upstream serving a group's reads: a replica when the cluster
    /// listener reads from replicas and one is online (spread by `pick`).
    fn reader(&self, group: usize, pick: usize) -> Option<usize> {
        match self {
            Shards::Cluster(slots, true) => slots.reader_of(group as u16, pick),
            Shards::Cluster(slots, _) => slots
                .reader_of(group as u16, pick)
                .or_else(|| slots.owner_of(group as u16)),
            Shards::Ring(..) => self.upstream(group),
        }
    }

    /// Every server a fan-out asks.
    fn all(&self) -> Vec<usize> {
        match self {
            Shards::Ring(_, n, _) => (0..*n).collect(),
            Shards::Cluster(slots, _) => slots.primaries.clone(),
        }
    }
}

fn no_replica(slot: usize) -> Bytes {
    reply::error(&format!(
        "CLUSTERDOWN attache: no replica of hash slot {slot} is online (read_from = \"replica\")"
    ))
}

fn unserved(group: usize) -> Bytes {
    reply::error(&format!("CLUSTERDOWN Hash slot {group} not served"))
}

impl Session {
    /// An app's `AUTH` (or `HELLO … AUTH`) is Redis's when attache
    /// presents no credential of its own in single mode (see
    /// `RedisService::forwards_app_auth`): as an ACL user other than
    /// `default`, on the app's own connection, which then acts as that
    /// user (`ACL WHOAMI`, its permissions) until `RESET`; as `default`, on
    /// any connection (it cannot change who that is; Redis's own answer,
    /// and `MONITOR` shows it). Otherwise attache's identity stays and the
    /// `AUTH` is answered.
    #[inline]
    pub(super) fn auth_as(&self, action: &mut Action) {
        // A discriminant check for every other command.
        if !matches!(
            action,
            Action::Auth { .. } | Action::Hello { as_user: true, .. }
        ) {
            return;
        }
        let forwards = self.service.forwards_app_auth();
        *action = match std::mem::replace(action, Action::Forward) {
            Action::Auth { as_user: true } if forwards => Action::PinSticky { stream: false },
            Action::Auth { .. } if forwards => Action::Forward,
            Action::Auth { .. } => Action::Reply(Bytes::from_static(reply::OK)),
            Action::Hello {
                protocol,
                setname,
                as_user: true,
            } if !forwards => Action::Hello {
                protocol,
                setname,
                as_user: false,
            },
            other => other,
        };
    }

    /// Single mode: notes a `CLIENT PAUSE` / `UNPAUSE` the app sends, and
    /// while a `WRITE` pause lasts sends what it holds (writes) on a
    /// connection of its own, as a blocking command, so no other app's
    /// reads wait behind it on a shared connection (see `pause`). An `ALL`
    /// pause holds every connection alike: only the timeout moves.
    pub(super) fn under_pause(&self, action: Action, req: &Request, streaming: bool) -> Action {
        let pause = self.service.pause();
        match action {
            Action::Pause(change) => {
                let runs_now = !streaming && !self.multi && self.cluster_tx.is_none();
                if runs_now && !self.service.router.is_sharded() {
                    pause.change(change);
                }
                Action::Forward
            }
            Action::Forward
                if pause.holds(true)
                    && !pause.holds(false)
                    && !self.service.router.is_sharded()
                    && self.pin.as_ref().is_none_or(|p| !p.sticky)
                    && !self.multi
                    && !self.watch
                    && policy::is_write(req, &self.rbuf) =>
            {
                Action::PinTransient(Transient::Blocking)
            }
            other => other,
        }
    }

    /// Where `req` goes. Single mode: the one server. Sharded modes: by its
    /// keys and the command table's policy tips.
    pub(super) fn route(&mut self, req: &Request) -> Route {
        let shards = match &self.service.router {
            Router::Single => return Route::To(0),
            Router::Hashed(router) => {
                let ring = router.ring();
                // `random`: any server for each request, but one server for
                // all of its keys (drawn per key, RENAME a a could get
                // CROSSSLOT); a transaction stays on its server.
                let fixed = (ring.distribution() == Distribution::Random).then(|| {
                    self.pin
                        .as_ref()
                        .map_or_else(|| ring.server_for_key(b""), |p| p.server)
                });
                Shards::Ring(ring, self.service.servers(), fixed)
            }
            Router::Cluster(router) => match router.slots() {
                Some(slots) => Shards::Cluster(slots, router.read_from == ReadFrom::Replica),
                None => {
                    return Route::Reply(reply::error(
                        "CLUSTERDOWN attache: the cluster topology is not known yet",
                    ))
                }
            },
        };
        let args: smallvec::SmallVec<[&[u8]; frame::INLINE_ARGS]> = (0..req.args.len())
            .filter_map(|i| req.arg(&self.rbuf, i))
            .collect();
        let Some(spec) = command::resolve(&args) else {
            return Route::Keyless;
        };
        // Inside MULTI, PING and ECHO are queued like any command: answered
        // here, the app would get PONG for QUEUED and EXEC one reply short.
        // On any pinned connection (WATCH) the server answers them too.
        let held = self.multi || self.multi_deferred || self.pin.is_some();
        match spec.name {
            "ping" | "echo" if held => return Route::Keyless,
            "ping" if args.len() <= 2 => {
                return Route::Reply(match args.get(1) {
                    Some(message) => reply::bulk(message),
                    None => Bytes::from_static(b"+PONG\r\n"),
                })
            }
            "echo" if args.len() == 2 => return Route::Reply(reply::bulk(args[1])),
            "scan" if args.len() < 2 => {
                return Route::Reply(reply::error(
                    "ERR wrong number of arguments for 'scan' command",
                ));
            }
            "scan" => {
                let Some(cursor) = std::str::from_utf8(args.get(1).copied().unwrap_or_default())
                    .ok()
                    .and_then(|c| c.parse::<u64>().ok())
                else {
                    return Route::Reply(reply::error("ERR invalid cursor"));
                };
                let servers = shards.all();
                let (position, inner) = split_scan_cursor(cursor, servers.len());
                return Route::Scan {
                    servers,
                    position,
                    inner,
                };
            }
            // Channels are not keys, but a sharded listener still spreads them.
            "publish" | "spublish" | "ssubscribe" | "sunsubscribe" if args.len() >= 2 => {
                let group = shards.group_of(args[1]);
                return match shards.upstream(group) {
                    Some(server) => Route::To(server),
                    None => Route::Reply(unserved(group)),
                };
            }
            _ => {}
        }
        command::key_indices(spec, &args, &mut self.keys);
        // Reads may go to a replica, unless the app is in a transaction.
        let read = spec.has_flag(command::READONLY)
            && self.pin.is_none()
            && !self.multi_deferred
            && self.cluster_tx.is_none();
        let pick = self.shared_index;
        let serve = |group: usize| {
            if read {
                shards.reader(group, pick)
            } else {
                shards.upstream(group)
            }
        };
        match shard::plan(spec, &args, &self.keys, |key| shards.group_of(key)) {
            shard::Plan::One(group) => match serve(group) {
                Some(server) => Route::To(server),
                None if read => Route::Reply(no_replica(group)),
                None => Route::Reply(unserved(group)),
            },
            shard::Plan::Keyless => {
                if spec.has_flag(command::WRITE) || spec.has_flag(command::ADMIN) {
                    Route::Reply(reply::error(&format!(
                        "ERR attache: '{}' has no key to pick a shard by; send it to a server directly",
                        spec.name
                    )))
                } else {
                    match shards.all().first() {
                        Some(&first) if self.pin.is_none() => Route::To(first),
                        _ => Route::Keyless,
                    }
                }
            }
            shard::Plan::All(merge) => Route::All(shards.all(), merge),
            shard::Plan::Split { mut parts, merge } => {
                for part in &mut parts {
                    match serve(part.server) {
                        Some(server) => part.server = server,
                        None => return Route::Reply(unserved(part.server)),
                    }
                }
                Route::Split(parts, merge)
            }
            shard::Plan::CrossSlot => Route::Reply(shard::cross_slot_error()),
        }
    }

    /// Sends a stateless request where `route` says.
    pub(super) async fn forward(&mut self, req: &Request, route: Route) -> std::io::Result<()> {
        let server = match route {
            Route::Reply(bytes) => {
                if frame::is_error(&bytes) {
                    self.refuse_in_transaction(req, bytes);
                } else {
                    self.reply_local(req, bytes);
                }
                return Ok(());
            }
            Route::To(server) => Some(server),
            Route::Keyless => None,
            Route::All(servers, merge) => {
                let sub = self.sub_request(req, None, None);
                let parts = servers
                    .iter()
                    .map(|&server| (server, sub.clone()))
                    .collect();
                let combine = Combine::Shards {
                    merge,
                    key_orders: Vec::new(),
                    servers,
                };
                return self.fan_out(req, parts, combine);
            }
            Route::Split(parts, merge) => {
                let key_orders = parts.iter().map(|p| p.key_order.clone()).collect();
                let servers = parts.iter().map(|p| p.server).collect();
                let subs = parts
                    .iter()
                    .map(|p| (p.server, self.sub_request(req, Some(&p.args), None)))
                    .collect();
                let combine = Combine::Shards {
                    merge,
                    key_orders,
                    servers,
                };
                return self.fan_out(req, subs, combine);
            }
            Route::Scan {
                servers,
                position,
                inner,
            } => {
                let sub = self.sub_request(req, None, Some(inner));
                let Some(&server) = servers.get(position) else {
                    self.reply_local(req, reply::error("ERR invalid cursor"));
                    return Ok(());
                };
                let combine = Combine::Scan {
                    server: position,
                    servers: servers.len(),
                };
                return self.fan_out(req, vec![(server, sub)], combine);
            }
        };
        if let Some(pin) = &self.pin {
            if server.is_some_and(|s| s != pin.server) {
                // A transaction is bound to one shard, as in Redis Cluster.
                self.refuse_in_transaction(req, shard::cross_slot_error());
                return Ok(());
            }
            let bytes = self.take_request(req);
            self.push_run(bytes, Target::Pinned, false);
            return Ok(());
        }
        let server = server.unwrap_or_else(|| self.first_primary());
        if self.multi_deferred {
            self.multi_deferred = false;
            if let Err(e) = self.pin(server, false, false).await {
                self.rbuf.advance(req.len);
                self.reply_error(&e);
                self.aborted_multi = true;
                return Ok(());
            }
            // MULTI was answered already; its upstream reply is dropped.
            self.send_unanswered(reply::command(&[b"MULTI"]));
            self.multi = true;
            let bytes = self.take_request(req);
            self.push_run(bytes, Target::Pinned, false);
            return Ok(());
        }
        let bytes = self.take_request(req);
        self.push_run(bytes, Target::Shared(server), false);
        Ok(())
    }

    /// Answers `req` with `refusal`. Inside MULTI, a command refused when
    /// queued aborts the transaction, as in Redis: EXEC gets EXECABORT
    /// rather than running the other commands without this one.
    pub(super) fn refuse_in_transaction(&mut self, req: &Request, refusal: Bytes) {
        if self.multi {
            self.send_unanswered(reply::command(&[b"DISCARD"]));
            self.multi = false;
            self.aborted_multi = true;
        } else if self.multi_deferred {
            // Nothing was sent upstream yet.
            self.multi_deferred = false;
            self.aborted_multi = true;
        }
        self.reply_local(req, refusal);
    }

    /// Refuses `req`, which cannot span the servers of a sharded listener,
    /// for the reason `why` (as with any refusal, a MULTI is aborted).
    pub(super) fn refuse_spanning(&mut self, req: &Request, why: &str) {
        let name = req
            .arg(&self.rbuf, 0)
            .map(String::from_utf8_lossy)
            .unwrap_or_default()
            .to_uppercase();
        let refusal = reply::error(&format!(
            "ERR attache: {name} {why} and cannot span the servers of a sharded listener"
        ));
        self.refuse_in_transaction(req, refusal);
    }

    /// Sends a command on the pinned connection, after everything queued
    /// before it, whose reply the app does not wait for.
    pub(super) fn send_unanswered(&mut self, command: Bytes) {
        self.flush_run();
        if let Some(pin) = &self.pin {
            drop(pin.conn.handle.request(command, 1, false));
        }
    }

    /// `req` re-encoded: only the arguments at `indices` (all if `None`),
    /// with argument 1 replaced by `cursor` if given.
    fn sub_request(&self, req: &Request, indices: Option<&[usize]>, cursor: Option<u64>) -> Bytes {
        let cursor_text = cursor.map(|c| c.to_string());
        let all: Vec<usize> = (0..req.args.len()).collect();
        let indices = indices.unwrap_or(&all);
        let args: Vec<&[u8]> = indices
            .iter()
            .filter_map(|&i| match (&cursor_text, i) {
                (Some(c), 1) => Some(c.as_bytes()),
                _ => req.arg(&self.rbuf, i),
            })
            .collect();
        reply::command(&args)
    }

    /// Sends one sub-request per server on the shared connections and owes
    /// the app one combined reply.
    fn fan_out(
        &mut self,
        req: &Request,
        subs: Vec<(usize, Bytes)>,
        combine: Combine,
    ) -> std::io::Result<()> {
        if self.pin.is_some() || self.multi_deferred {
            let refusal = reply::error(
                "ERR attache: a command that spans shards cannot run inside MULTI or WATCH",
            );
            self.refuse_in_transaction(req, refusal);
            return Ok(());
        }
        self.rbuf.advance(req.len);
        self.flush_run();
        let parts = subs
            .into_iter()
            .map(|(server, bytes)| {
                let handle = self
                    .service
                    .shared(server, self.protocol, self.shared_index);
                PartReply::new(Redirectable {
                    rx: handle.request(bytes.clone(), 1, false),
                    request: bytes,
                    server,
                    protocol: self.protocol,
                    shared_index: self.shared_index,
                    redirects: 0,
                    asking: false,
                    transaction: None,
                    meter: Meter {
                        started: self.read_at,
                        server,
                        families: Families::One(self.family),
                    },
                })
            })
            .collect();
        let meter = Meter {
            started: self.read_at,
            server: 0,
            families: Families::One(self.family),
        };
        self.slots.push_back(Slot::Merge(Box::new(Merging {
            parts,
            combine,
            meter,
        })));
        Ok(())
    }

    /// Sharded pub/sub: pins a connection on every server, all subscribed.
    pub(super) async fn subscribe_everywhere(&mut self, bytes: Bytes) -> Result<(), UpstreamError> {
        self.pin(0, true, true).await?;
        let mut others = Vec::new();
        for server in 1..self.service.servers() {
            let pool = self.service.dedicated(server, self.protocol);
            match Box::pin(pool.get()).await {
                Ok(conn) => others.push(conn),
                Err(e) => {
                    // Not subscribed anywhere: the app stays on the shared
                    // connections, as before its SUBSCRIBE.
                    if let Some(pin) = self.pin.take() {
                        super::discard(pin.conn);
                    }
                    return Err(match e {
                        PoolError::Backend(e) => e,
                        other => UpstreamError::Io(
                            self.service.upstream_id(server),
                            other.to_string().into(),
                        ),
                    });
                }
            }
        }
        self.flush_run();
        let (sink, rx) = mpsc::channel(STREAM_BUFFER);
        for conn in &others {
            let filtered = fanin::secondary_sink(sink.clone(), self.protocol.is_resp3());
            conn.handle.send(Op::Stream {
                bytes: bytes.clone(),
                sink: filtered,
                // Not renewed: the fan-in keeps the session it authenticated.
                renew: false,
            });
        }
        // Server 0's stream goes to the app in whole frames, so the others'
        // messages never land inside one of its frames.
        let (sink, marks) = relay::spawn(
            sink,
            self.protocol.is_resp3(),
            relay::Unasked::new(),
            Replies::On,
        );
        self.marks = Some(marks);
        if let Some(pin) = &self.pin {
            pin.conn.handle.send(Op::Stream {
                bytes,
                sink,
                renew: false,
            });
        }
        self.fanin = others;
        self.slots.push_back(Slot::Stream(rx));
        Ok(())
    }
}

/// SSUBSCRIBE and friends: channels with a slot, which a sharded listener
/// may pin to their server.
pub(super) fn is_sharded_channel(req: &Request, buf: &[u8]) -> bool {
    req.arg(buf, 0).is_some_and(|name| {
        name.eq_ignore_ascii_case(b"ssubscribe") || name.eq_ignore_ascii_case(b"sunsubscribe")
    })
}

/// SUBSCRIBE and PSUBSCRIBE, which a sharded listener sends to every server.
pub(super) fn is_fan_in_subscribe(req: &Request, buf: &[u8]) -> bool {
    req.arg(buf, 0).is_some_and(|name| {
        name.eq_ignore_ascii_case(b"subscribe") || name.eq_ignore_ascii_case(b"psubscribe")
    })
}

/// A stream the relay can frame and place answers in: not SYNC / PSYNC (a
/// replication stream is not RESP).
pub(super) fn is_framed_stream(req: &Request, buf: &[u8]) -> bool {
    !req.arg(buf, 0).is_some_and(|name| {
        name.eq_ignore_ascii_case(b"sync") || name.eq_ignore_ascii_case(b"psync")
    })
}
