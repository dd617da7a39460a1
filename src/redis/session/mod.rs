//! One app connection. Requests are read, classified and sent in batches
//! (consecutive requests for the same connection travel as one buffer and
//! come back as one buffer); replies are written back strictly in the order
//! the requests arrived, whichever connection answered them.
//!
//! The app's replies are kept as an ordered queue of slots. Moving from one
//! upstream connection to another (shared → dedicated and back, RESP2 →
//! RESP3) first waits for every outstanding reply, so a command never
//! overtakes an earlier one of the same app connection.
//!
//! Here: the read loop and dispatch. Beside it: `batch` (runs of requests
//! for one connection, and attache's own answers, queued in order),
//! `routing` (sharded and cluster routing, split and fan-out), `pinning` (dedicated
//! connections, HELLO, RESET), `transaction` (cluster MULTI…EXEC),
//! `subscriptions` (cluster pub/sub that survives its node) and
//! `spare_buffers` (read buffers of idle connections).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use attache_resp::frame::{self, reply, Request};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{debug, warn};

use attache_resp::shard;

use super::connector::Protocol;
use super::dedicated::Dedicated;
use super::meter::Meters;
use super::metrics::{Family, RedisMetrics};
use super::policy::{classify, is_arity_refusal, Action, Transient};
use super::relay::{Marks, Replies};
use super::service::RedisService;
use super::slots::{collect_ready, wait_front, ReadyReplies, Slot};
use crate::shutdown::ShutdownWait;
use crate::socket::{try_read, write_all};

mod batch;
mod pinning;
mod routing;
mod spare_buffers;
mod subscriptions;
mod transaction;

use batch::{unsubscribed, Run, Target};
use pinning::discard;

use subscriptions::Subscriptions;

use routing::{is_fan_in_subscribe, is_sharded_channel, Route};

/// Most reply slots outstanding before the session stops reading the app
/// (back-pressure instead of unbounded buffering).
const MAX_SLOTS: usize = 1024;
/// Read buffer growth step.
const READ_CHUNK: usize = 8 * 1024;
/// Buffers larger than this are released once empty.
const KEEP_BUFFER: usize = 64 * 1024;

/// The dedicated connection an app is pinned to, and why.
struct Pin {
    conn: Dedicated,
    server: usize,
    sticky: bool,
    streaming: bool,
}

pub(crate) struct Session {
    service: Arc<RedisService>,
    stream: TcpStream,
    peer: SocketAddr,
    rbuf: BytesMut,
    slots: VecDeque<Slot>,
    run: Option<Run>,
    protocol: Protocol,
    shared_index: usize,
    name: Option<Bytes>,
    /// A CLIENT SETNAME queued in the open MULTI: the name once EXEC runs
    /// it (empty: cleared).
    pending_name: Option<Bytes>,
    pin: Option<Pin>,
    multi: bool,
    watch: bool,
    /// MULTI could not get a dedicated connection: until EXEC or DISCARD,
    /// commands are refused rather than run outside the transaction.
    aborted_multi: bool,
    /// Sharded modes: MULTI was answered, and the transaction goes to the
    /// server of its first keyed command, pinned then.
    multi_deferred: bool,
    /// Scratch for key positions (sharded modes).
    keys: Vec<usize>,
    /// Sharded pub/sub: the subscription's connections to servers 1..n
    /// (server 0's is the pin).
    fanin: Vec<Dedicated>,
    /// Cluster pub/sub: what the app is subscribed to, to subscribe again
    /// on another node when its node goes away.
    subscriptions: Subscriptions,
    /// Streaming: where attache's own answers go in the stream (none for a
    /// stream that is not RESP: SYNC).
    marks: Option<Marks>,
    /// The streaming upstream went away (cluster: resubscribe elsewhere).
    stream_lost: bool,
    /// Cluster mode: a transaction queued by attache, sent whole at EXEC.
    cluster_tx: Option<transaction::ClusterTx>,
    /// Close once every owed reply is written (QUIT, protocol error, the
    /// pinned upstream went away).
    closing: bool,
    /// A request was refused unread (a protocol error): linger before the
    /// close, the app may still be writing it.
    linger: bool,
    /// Resolves when attache shuts down (or the listener goes away).
    shutdown: ShutdownWait,
    /// attache is shutting down: close as soon as the app is idle.
    draining: bool,
    /// When the last read from the app returned: the start of the latency
    /// of every command it brought.
    read_at: Instant,
    /// The family of the command being dispatched.
    family: Family,
    /// The stats this connection counts its commands in.
    meters: Meters,
}

impl Session {
    pub(crate) fn new(service: Arc<RedisService>, stream: TcpStream, peer: SocketAddr) -> Self {
        let shared_index = service.next_shared_index();
        let shutdown = service.shutdown.wait();
        Self {
            shutdown,
            draining: false,
            service,
            stream,
            peer,
            rbuf: BytesMut::new(),
            slots: VecDeque::new(),
            run: None,
            protocol: Protocol::Resp2,
            shared_index,
            name: None,
            pending_name: None,
            pin: None,
            multi: false,
            aborted_multi: false,
            multi_deferred: false,
            keys: Vec::new(),
            fanin: Vec::new(),
            subscriptions: Subscriptions::default(),
            marks: None,
            stream_lost: false,
            cluster_tx: None,
            watch: false,
            closing: false,
            linger: false,
            read_at: Instant::now(),
            family: Family::OTHER,
            meters: Meters::default(),
        }
    }

    /// Serves the app until it leaves; I/O errors end the session quietly
    /// (the app is gone), everything else was answered in-band.
    pub(crate) async fn run(&mut self) {
        if let Err(e) = self.serve().await {
            debug!(listener = %self.service.name, peer = %self.peer, error = %e, "app connection ended");
        }
        self.release_on_exit();
    }

    async fn serve(&mut self) -> std::io::Result<()> {
        loop {
            self.write_ready().await?;
            if std::mem::take(&mut self.stream_lost) {
                if let Err(e) = Box::pin(self.resubscribe()).await {
                    warn!(listener = %self.service.name, peer = %self.peer, error = %e, "could not subscribe again after the upstream went away: closing the app connection");
                    self.closing = true;
                }
            }
            if self.slots.is_empty() && self.run.is_none() {
                self.release_finished_pin();
            }
            if self
                .pin
                .as_ref()
                .is_some_and(|p| p.sticky && !p.streaming && p.conn.handle.is_closed())
            {
                // The connection holding the app's lasting state (SELECT,
                // READONLY …) went away, and the state with it: the app's
                // connection ends once what is owed is written, so that the
                // app reconnects and sets it again, rather than every later
                // command failing (or running without it).
                self.closing = true;
            }
            let draining = self.draining;
            if draining && self.rbuf.is_empty() && self.is_idle() {
                // Shutting down and nothing owed: close while idle, so the
                // app reconnects (to the next attache) between requests. A
                // subscriber waiting for messages is idle: its relay goes.
                Box::pin(self.end_stream()).await?;
                self.closing = true;
            }
            if self.closing && self.slots.is_empty() {
                self.stream.shutdown().await.ok();
                if self.linger && !self.draining {
                    // Nothing is owed: what the app was pinned to (a MULTI,
                    // a WATCH) goes now, not after the lingering.
                    self.release_on_exit();
                    Box::pin(crate::socket::linger(&mut self.stream, &mut self.shutdown)).await;
                }
                return Ok(());
            }
            if self.slots.is_empty() && self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
                // Idle: an idle app connection holds no read buffer.
                spare_buffers::give_back(std::mem::take(&mut self.rbuf));
            }
            // Closing, the app is still read: what it sends is ignored (as
            // after QUIT by Redis), but its close ends the wait for what
            // is owed (a blocking pop's reply) and the pop with it.
            let can_read = self.slots.len() < MAX_SLOTS;
            tokio::select! {
                // In this order, with no random start: the app's requests
                // first (bounded by MAX_SLOTS), so that a flood of pub/sub
                // messages cannot starve them; replies ready by then are
                // collected at the top of the loop anyway.
                biased;
                // Polled for readiness (one waker slot per socket) rather
                // than awaiting `readable()`, whose future joins and leaves
                // a list of waiters under a lock on every pass.
                ready = std::future::poll_fn(|cx| self.stream.poll_read_ready(cx)), if can_read => {
                    ready?;
                    self.follow_reload();
                    if self.rbuf.capacity() == 0 {
                        self.rbuf = spare_buffers::take();
                    }
                    match try_read(&self.stream, &mut self.rbuf, READ_CHUNK)? {
                        None => continue,
                        Some(0) => return Ok(()),
                        Some(_) if self.closing => self.rbuf.clear(),
                        Some(_) => {
                            self.read_at = Instant::now();
                            self.process_input().await?
                        }
                    }
                }
                _ = wait_front(&mut self.slots, &self.service, self.protocol.is_resp3(), &mut self.meters), if !self.slots.is_empty() => {}
                () = &mut self.shutdown, if !draining => self.draining = true,
            }
        }
    }

    /// Nothing owed and no transaction open (a subscriber's relay of
    /// pushes owes nothing).
    fn is_idle(&self) -> bool {
        let owed = match self.slots.len() {
            0 => false,
            1 => !matches!(self.slots.front(), Some(Slot::Stream(_))),
            _ => true,
        };
        !owed
            && self.run.is_none()
            && !self.multi
            && !self.multi_deferred
            && self.cluster_tx.is_none()
    }

    /// A transient state (MULTI…EXEC, WATCH, a blocking command) is over
    /// and its replies are written: the dedicated connection goes back to
    /// its pool now, not at the app's next command (an idle app would keep
    /// it from every other app).
    fn release_finished_pin(&mut self) {
        if self.pin.as_ref().is_some_and(|p| !p.sticky) && !self.multi && !self.watch {
            if let Some(pin) = self.pin.take() {
                if pin.conn.handle.in_flight() > 0 {
                    // A reply nobody waits for (a sharded DISCARD): closed
                    // rather than reused.
                    discard(pin.conn);
                }
            }
        }
    }

    /// After a reload reconfigured this listener, moves to the new service
    /// at a quiet moment: nothing in flight, nothing pinned, no MULTI or
    /// WATCH, so nothing the app started on the old upstream is cut.
    fn follow_reload(&mut self) {
        if !self.slots.is_empty()
            || self.run.is_some()
            || !self.rbuf.is_empty()
            || self.pin.is_some()
            || !self.fanin.is_empty()
            || self.multi
            || self.watch
            || self.cluster_tx.is_some()
        {
            return;
        }
        if let Some(next) = self.service.successor() {
            self.shared_index = next.next_shared_index();
            self.shutdown = next.shutdown.wait();
            self.service = next;
            self.meters.clear();
        }
    }

    /// Decodes and dispatches every complete request in the read buffer.
    async fn process_input(&mut self) -> std::io::Result<()> {
        let max = self.service.max_request_bytes;
        while !self.closing {
            let req = match frame::parse_request(&self.rbuf, max) {
                Ok(Some(req)) => req,
                Ok(None) => break,
                Err(e) => return self.refuse_bad_request(e).await,
            };
            if req.inline {
                match self.requote_inline(&req) {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => return self.refuse_bad_request(e).await,
                }
            }
            if req.args.is_empty() {
                self.rbuf.advance(req.len);
                continue;
            }
            self.dispatch(req).await?;
        }
        self.flush_run();
        Ok(())
    }

    async fn dispatch(&mut self, req: Request) -> std::io::Result<()> {
        RedisMetrics::add(&self.service.metrics().commands);
        self.service.await_topology().await;
        let streaming = self.pin.as_ref().is_some_and(|p| p.streaming)
            && !Box::pin(self.left_subscription(&req)).await?;
        let (mut action, family) = classify(&req, &self.rbuf, self.pin.is_some());
        self.family = family;
        self.auth_as(&mut action);
        let action = self.under_pause(action, &req, streaming);
        if streaming {
            return Box::pin(self.dispatch_streaming(req, action)).await;
        }
        if self.cluster_tx.is_some() && !matches!(action, Action::Reset | Action::Quit) {
            self.queue_in_transaction(&req, action);
            return Ok(());
        }
        if self.aborted_multi && !matches!(action, Action::Reset | Action::Quit) {
            self.answer_after_abort(&req, &action);
            return Ok(());
        }
        match action {
            Action::Unsubscribe if !self.multi && !self.multi_deferred => {
                // Not subscribed (a subscription streams): Redis answers
                // one reply per channel (RESP3: pushes), which a connection
                // counting one reply per command would hand to the
                // commands after it.
                let answer = unsubscribed(&req, &self.rbuf, self.protocol.is_resp3());
                self.reply_local(&req, answer);
            }
            Action::Forward | Action::Unsubscribe | Action::Pause(_) => {
                if self.pin.as_ref().is_some_and(|p| !p.sticky) && !self.multi && !self.watch {
                    // The transient state is over: back to the shared connections.
                    self.barrier().await?;
                    self.pin = None;
                }
                let route = self.route(&req);
                self.forward(&req, route).await?;
            }
            Action::Reply(bytes) if self.multi && self.pin.is_some() => {
                if is_arity_refusal(&bytes) {
                    // As a command Redis refuses when queued: EXEC aborts.
                    self.refuse_in_transaction(&req, bytes);
                } else if frame::is_error(&bytes) {
                    // Refused when run (a bad HELLO, AUTH's syntax error,
                    // a bad name): queued as it is, for Redis's own error
                    // in EXEC's array. It changes nothing upstream.
                    let bytes = self.take_request(&req);
                    self.push_run(bytes, Target::Pinned, false);
                } else {
                    self.queue_stand_in(&req, &[b"UNWATCH"]);
                }
            }
            Action::Reply(bytes) => self.reply_local(&req, bytes),
            Action::PinTransient(kind) => {
                let server = match self.route(&req) {
                    Route::To(server) => server,
                    Route::Keyless => self
                        .pin
                        .as_ref()
                        .map_or_else(|| self.first_primary(), |p| p.server),
                    Route::Reply(bytes) => {
                        self.refuse_in_transaction(&req, bytes);
                        return Ok(());
                    }
                    Route::All(..) => {
                        // WAIT, WAITAOF: they count what one connection
                        // wrote, and would block every server's.
                        self.refuse_spanning(&req, "waits for one connection's writes");
                        return Ok(());
                    }
                    _ => {
                        self.refuse_in_transaction(&req, shard::cross_slot_error());
                        return Ok(());
                    }
                };
                if kind == Transient::Multi
                    && self.service.router.is_cluster()
                    && self.pin.is_none()
                {
                    // Queued here and sent whole at EXEC, so a moved slot
                    // can be followed (see `transaction`).
                    self.cluster_tx = Some(transaction::ClusterTx::default());
                    self.reply_local(&req, Bytes::from_static(reply::OK));
                    return Ok(());
                }
                if kind == Transient::Multi
                    && self.service.router.is_sharded()
                    && self.pin.is_none()
                {
                    // The server is known at the first keyed command.
                    self.multi_deferred = true;
                    self.reply_local(&req, Bytes::from_static(reply::OK));
                    return Ok(());
                }
                if self.pin.as_ref().is_some_and(|p| p.server != server) {
                    self.refuse_in_transaction(&req, shard::cross_slot_error());
                    return Ok(());
                }
                let wait = req.arg(&self.rbuf, 0).is_some_and(|n| {
                    n.eq_ignore_ascii_case(b"wait") || n.eq_ignore_ascii_case(b"waitaof")
                });
                let fresh = self.pin.is_none();
                let bytes = self.take_request(&req);
                if let Err(e) = self.pin(server, false, false).await {
                    self.reply_error(&e);
                    self.aborted_multi = kind == Transient::Multi;
                    return Ok(());
                }
                match kind {
                    Transient::Multi => self.multi = true,
                    Transient::Watch => self.watch = true,
                    Transient::Blocking => {}
                }
                let blocking = kind == Transient::Blocking && !self.multi;
                if blocking && wait {
                    // WAIT counts the replicas that acknowledged the last
                    // write of the connection it runs on, and the app's
                    // writes went on others: a write that changes nothing
                    // (a PUBLISH nobody hears) first, so WAIT covers them.
                    self.send_unanswered(reply::command(&[b"PUBLISH", b"attache:wait", b""]));
                }
                // Cluster mode: a lone blocking command, or the WATCH that
                // pins the app, follows its slot.
                let follows = blocking || kind == Transient::Watch;
                let again = (follows && fresh && self.service.router.is_cluster())
                    .then(|| bytes.clone().freeze());
                self.push_run(bytes, Target::Pinned, blocking);
                if let Some(request) = again {
                    Box::pin(self.follow_redirects(request, blocking)).await?;
                }
            }
            Action::PinSticky { stream } => {
                let server = match self.route(&req) {
                    Route::To(server)
                        if !self.service.router.is_sharded()
                            || is_sharded_channel(&req, &self.rbuf) =>
                    {
                        server
                    }
                    // A cluster relays every PUBLISH to every node: one
                    // subscription hears them all.
                    Route::To(server)
                        if self.service.router.is_cluster()
                            && is_fan_in_subscribe(&req, &self.rbuf) =>
                    {
                        server
                    }
                    Route::Keyless if !self.service.router.is_sharded() => 0,
                    // SUBSCRIBE / PSUBSCRIBE: on every server, relayed from server 0.
                    _ if stream && self.pin.is_none() && is_fan_in_subscribe(&req, &self.rbuf) => {
                        self.subscriptions.track(&req, &self.rbuf);
                        let bytes = self.take_request(&req).freeze();
                        if let Err(e) = Box::pin(self.subscribe_everywhere(bytes)).await {
                            self.subscriptions = Subscriptions::default();
                            self.reply_error(&e);
                        }
                        return Ok(());
                    }
                    _ => {
                        self.refuse_spanning(&req, "holds connection state");
                        return Ok(());
                    }
                };
                if self.pin.as_ref().is_some_and(|p| p.server != server) {
                    self.refuse_in_transaction(&req, shard::cross_slot_error());
                    return Ok(());
                }
                self.subscriptions.track(&req, &self.rbuf);
                let framed = routing::is_framed_stream(&req, &self.rbuf);
                let replies = Replies::On.after(&req, &self.rbuf);
                let bytes = self.take_request(&req);
                if let Err(e) = self.pin(server, true, stream).await {
                    self.reply_error(&e);
                    return Ok(());
                }
                if stream {
                    self.start_streaming(bytes.freeze(), framed, replies);
                } else {
                    self.push_run(bytes, Target::Pinned, false);
                }
            }
            Action::EndsState { multi } => {
                if let Some(name) = self.end_state(&req, multi) {
                    Box::pin(self.name_if_executed(name)).await?;
                }
            }
            Action::Hello {
                protocol,
                setname,
                as_user,
            } => {
                // Its AUTH is the server's: the app's HELLO as it is.
                let own = match as_user && !self.multi {
                    true => Some(self.take_request(&req).freeze()),
                    false => {
                        self.rbuf.advance(req.len);
                        None
                    }
                };
                Box::pin(self.hello(protocol, setname, own)).await?;
            }
            Action::SetName(name) => self.set_name(&req, name),
            Action::GetName if self.multi && self.pin.is_some() => match self.name_in_multi() {
                Some(name) => self.queue_stand_in(&req, &[b"ECHO", &name]),
                // Dedicated connections have no name: null, as the app's.
                None => self.queue_stand_in(&req, &[b"CLIENT", b"GETNAME"]),
            },
            // Resolved by `auth_as` before this.
            Action::Auth { .. } => self.reply_local(&req, Bytes::from_static(reply::OK)),
            Action::GetName => {
                let answer = match &self.name {
                    Some(name) => reply::bulk(name),
                    None => reply::null(self.protocol.is_resp3()),
                };
                self.reply_local(&req, answer);
            }
            Action::Quit => {
                self.reply_local(&req, Bytes::from_static(reply::OK));
                self.closing = true;
            }
            Action::Reset => {
                self.rbuf.advance(req.len);
                Box::pin(self.reset()).await?;
            }
        }
        Ok(())
    }

    /// Writes every reply that is ready, in order, in as few writes as possible.
    async fn write_ready(&mut self) -> std::io::Result<()> {
        let mut out = ReadyReplies::new();
        if collect_ready(
            &mut self.slots,
            &self.service,
            self.protocol.is_resp3(),
            &mut out,
            &mut self.meters,
        ) {
            // The pinned upstream closed (QUIT, or it died): the app's
            // connection ends with it, unless a cluster subscription can
            // move to another node, or attache itself closed it to renew
            // its credential.
            let renewed = self.pin.as_ref().is_some_and(|p| p.conn.was_renewed());
            if !self.closing
                && !self.subscriptions.is_none()
                && (self.service.router.is_cluster() || (renewed && self.fanin.is_empty()))
            {
                self.stream_lost = true;
            } else {
                self.closing = true;
            }
        }
        match out.len() {
            0 => Ok(()),
            1 => write_all(&self.stream, &out[0]).await,
            _ => {
                let mut joined = BytesMut::with_capacity(out.iter().map(Bytes::len).sum());
                for b in &out {
                    joined.extend_from_slice(b);
                }
                write_all(&self.stream, &joined).await
            }
        }
    }
}
