//! Dedicated connections: pinning an app to one (and back), streaming
//! (pub/sub, MONITOR), the connection-level commands that change which
//! connection an app is on (HELLO, RESET), and what happens to a pinned
//! connection when the app leaves.

use attache_resp::frame::{self, reply, Request};
use bytes::{Buf, Bytes, BytesMut};
use deadpool::managed::PoolError;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::{routing, Pin, Session, Subscriptions, Target, READ_CHUNK};
use crate::redis::connection::{Op, STREAM_BUFFER};
use crate::redis::connector::Protocol;
use crate::redis::dedicated::Dedicated;
use crate::redis::error::UpstreamError;
use crate::redis::policy::{Action, Transient};
use crate::redis::relay::{self, Replies};
use crate::redis::router::Router;
use crate::redis::slots::{wait_front, Slot, MAX_REDIRECTS};
use crate::socket::{try_read, write_all};

impl Session {
    /// Waits until every reply owed so far is written to the app.
    pub(super) async fn barrier(&mut self) -> std::io::Result<()> {
        self.flush_run();
        while !self.slots.is_empty() {
            if matches!(self.slots.back(), Some(Slot::Stream(_))) {
                // A streaming connection never "finishes"; drop the relay.
                self.slots.pop_back();
                continue;
            }
            self.write_ready().await?;
            if !self.slots.is_empty() {
                self.wait_front_or_app_gone().await?;
            }
        }
        Ok(())
    }

    /// Waits for the first reply owed. It may take long (a blocking pop):
    /// an app that leaves meanwhile ends the session, which closes the
    /// upstream connection, and the pop with it.
    pub(super) async fn wait_front_or_app_gone(&mut self) -> std::io::Result<()> {
        tokio::select! {
            () = wait_front(
                &mut self.slots,
                &self.service,
                self.protocol.is_resp3(),
                &mut self.meters,
            ) => Ok(()),
            gone = app_gone(&self.stream, &mut self.rbuf) => Err(gone),
        }
    }

    /// Cluster mode: the command just sent alone on a fresh dedicated
    /// connection (`request`: a blocking command, or the WATCH that pins
    /// the app) went where attache's slot map says. If the slot moved
    /// meanwhile the node answers MOVED (or ASK mid-migration), which a
    /// client that does not know Redis Cluster cannot follow: it is
    /// followed here, on a dedicated connection to the node named, as a
    /// shared connection's command is (see `slots::Redirectable`). The
    /// reply is awaited now, as Redis holds a blocked client's next
    /// commands (they wait in `rbuf`).
    pub(super) async fn follow_redirects(
        &mut self,
        request: Bytes,
        blocking: bool,
    ) -> std::io::Result<()> {
        use attache_resp::cluster::{self, Redirect};
        self.flush_run();
        for _ in 0..MAX_REDIRECTS {
            // Its reply, not counted yet: a redirect attache follows is not
            // the app's reply, and the command counts once (as a shared
            // connection's redirected command does).
            let Some(Slot::Wait { rx, replies, meter }) = self.slots.pop_back() else {
                return Ok(());
            };
            let closed = self.service.closed_error();
            let result = tokio::select! {
                result = rx => result.unwrap_or(Err(closed)),
                gone = app_gone(&self.stream, &mut self.rbuf) => return Err(gone),
            };
            // One Redis could have sent (not a script's made-up error).
            let redirect = match &result {
                Ok(reply) if cluster::is_redirect(reply) => cluster::parse_redirect(reply)
                    .filter(|r| cluster::could_redirect(&request, r.slot())),
                _ => None,
            };
            // The app's reply: back in place, counted when it is written.
            let keep = move |slots: &mut std::collections::VecDeque<Slot>| {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let _ = tx.send(result);
                slots.push_back(Slot::Wait { rx, replies, meter });
            };
            let service = self.service.clone();
            let (Some(redirect), Router::Cluster(router)) = (redirect, &service.router) else {
                keep(&mut self.slots);
                return Ok(());
            };
            let from = self.pin.as_ref().map_or(0, |p| p.server);
            service.count_redirect(&redirect, from);
            router.refresh.notify_one();
            // A node the slot map does not name yet: the next map may (a
            // node added to the cluster); an address a script's error made
            // up never will, and the app gets that error.
            let mut known = service.redirect_target(redirect.addr(), from);
            for _ in 0..10 {
                if known.is_some() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                known = service.redirect_target(redirect.addr(), from);
            }
            let Some(server) = known else {
                keep(&mut self.slots);
                return Ok(());
            };
            // The connection answered: back to its pool; one to the node
            // named instead.
            self.pin = None;
            if let Err(e) = self.pin(server, false, false).await {
                self.reply_error(&e);
                return Ok(());
            }
            if let Redirect::Ask { .. } = redirect {
                self.send_unanswered(reply::command(&[b"ASKING"]));
            }
            self.push_run(BytesMut::from(&request[..]), Target::Pinned, blocking);
            self.flush_run();
            if let Redirect::Moved { slot, .. } = redirect {
                // The app's next commands (those of the WATCH'd
                // transaction) are routed by the map: once it says so too.
                for _ in 0..50 {
                    let slots = router.slots();
                    if slots.is_some_and(|s| s.owner_of(slot) == Some(server)) {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        }
        Ok(())
    }

    /// Pins the app to a dedicated connection (or upgrades the pin).
    pub(super) async fn pin(
        &mut self,
        server: usize,
        sticky: bool,
        streaming: bool,
    ) -> Result<(), UpstreamError> {
        let was_own = self.on_own_connection();
        if let Some(pin) = &mut self.pin {
            pin.sticky |= sticky;
            pin.streaming |= streaming;
        } else {
            if self.barrier().await.is_err() {
                self.closing = true;
            }
            let pool = self.service.dedicated(server, self.protocol);
            let id = || self.service.upstream_id(server);
            let conn = Box::pin(pool.get()).await.map_err(|e| match e {
                PoolError::Backend(e) => e,
                PoolError::Timeout(_) => UpstreamError::PoolExhausted(id(), pool.status().max_size),
                other => UpstreamError::Io(id(), other.to_string().into()),
            })?;
            self.pin = Some(Pin {
                conn,
                server,
                sticky,
                streaming,
            });
        }
        if !was_own && self.name.is_some() {
            self.name_own_connection();
        }
        Ok(())
    }

    /// `CLIENT SETNAME name`: kept by attache, which answers CLIENT GETNAME;
    /// inside MULTI queued through a stand-in with the same reply, and the
    /// app's name once EXEC runs it.
    pub(super) fn set_name(&mut self, req: &Request, name: Bytes) {
        match &self.pin {
            // Its own connection for good: named there too.
            Some(_) if self.multi && self.on_own_connection() => {
                self.queue_stand_in(req, &[b"CLIENT", b"SETNAME", &name]);
            }
            Some(_) if self.multi => self.queue_stand_in(req, &[b"UNWATCH"]),
            _ => {
                self.reply_local(req, Bytes::from_static(reply::OK));
                self.keep_name(name);
                return;
            }
        }
        self.pending_name = Some(name);
    }

    /// The client name a CLIENT GETNAME queued in the open MULTI answers:
    /// the one a SETNAME queued before it sets, if any.
    pub(super) fn name_in_multi(&self) -> Option<Bytes> {
        match &self.pending_name {
            Some(name) => (!name.is_empty()).then(|| name.clone()),
            None => self.name.clone(),
        }
    }

    /// The app's new client name; an empty one clears it, as in Redis.
    pub(super) fn keep_name(&mut self, name: Bytes) {
        let changed = !name.is_empty() || self.name.is_some();
        self.name = (!name.is_empty()).then_some(name);
        if changed {
            self.name_own_connection();
        }
    }

    /// Pinned for good (SELECT n, CLIENT INFO …), not streaming: the
    /// connection is the app's own, closed rather than pooled when it
    /// leaves.
    fn on_own_connection(&self) -> bool {
        self.pin.as_ref().is_some_and(|p| p.sticky && !p.streaming)
    }

    /// The app's client name (none: cleared) given to its own connection,
    /// where CLIENT INFO and CLIENT LIST read it. Not inside MULTI, where
    /// it would be queued.
    fn name_own_connection(&mut self) {
        if self.on_own_connection() && !self.multi {
            let name = self.name.clone().unwrap_or_default();
            self.send_unanswered(reply::command(&[b"CLIENT", b"SETNAME", &name]));
        }
    }

    /// From `bytes` on, the pinned connection streams to the app. A RESP
    /// stream goes through a relay, which places attache's own answers.
    pub(super) fn start_streaming(&mut self, bytes: Bytes, framed: bool, replies: Replies) {
        self.flush_run();
        let (sink, rx) = mpsc::channel(STREAM_BUFFER);
        let sink = if framed {
            let (sink, marks) = relay::spawn(
                sink,
                self.protocol.is_resp3(),
                relay::Unasked::new(),
                replies,
            );
            self.marks = Some(marks);
            sink
        } else {
            self.marks = None;
            sink
        };
        if let Some(pin) = &self.pin {
            // Subscriptions are renewed with the credential (see
            // `subscriptions`); MONITOR and CLIENT REPLY are not.
            let renew = !self.subscriptions.is_empty() && self.fanin.is_empty();
            pin.conn.handle.send(Op::Stream { bytes, sink, renew });
        }
        self.slots.push_back(Slot::Stream(rx));
    }

    /// Streaming: replies no longer pair with requests. Everything but
    /// RESET and attache's own answers goes to the pinned connection as it
    /// is.
    pub(super) async fn dispatch_streaming(
        &mut self,
        req: Request,
        action: Action,
    ) -> std::io::Result<()> {
        match action {
            Action::Reset => {
                self.rbuf.advance(req.len);
                self.reset().await
            }
            Action::Reply(bytes) => {
                let answer = self.answer_on_stream(&req, bytes);
                self.rbuf.advance(req.len);
                self.answer_in_stream(answer);
                Ok(())
            }
            _ => {
                if action == Action::Quit {
                    // The server answers and closes: so does the app's
                    // connection, after the stream's last bytes (a
                    // cluster subscription does not move elsewhere).
                    self.closing = true;
                }
                // Inside a MULTI a PING is queued, not answered: attache's
                // answers cannot be placed with one until EXEC / DISCARD.
                match action {
                    Action::PinTransient(Transient::Multi) => self.multi = true,
                    Action::EndsState { multi: true } => self.multi = false,
                    _ => {}
                }
                if let Some(marks) = &mut self.marks {
                    marks.follow(&req, &self.rbuf);
                }
                if self.is_stray_sharded_channel(&req) {
                    self.rbuf.advance(req.len);
                    self.answer_in_stream(attache_resp::shard::cross_slot_error());
                    return Ok(());
                }
                if self.is_off_shard_on_subscription(&req) {
                    self.rbuf.advance(req.len);
                    self.answer_in_stream(reply::error(
                        "ERR attache: only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed on a sharded listener's subscription (it is not on the keys' servers); use another connection",
                    ));
                    return Ok(());
                }
                self.track_on_stream(&req);
                if !routing::is_framed_stream(&req, &self.rbuf) {
                    // Its replies are not RESP: the relay passes what comes
                    // as it comes; the answers after it go ahead of the
                    // stream.
                    if let Some(marks) = self.marks.take() {
                        marks.unframe();
                    }
                }
                let bytes = self.take_request(&req).freeze();
                for conn in &self.fanin {
                    conn.handle.send(Op::Write(bytes.clone()));
                }
                if let Some(pin) = &self.pin {
                    pin.conn.handle.send(Op::Write(bytes));
                }
                Ok(())
            }
        }
    }

    /// attache's own answer while streaming: in the stream, after the
    /// replies to what the app sent before it (see `relay`); ahead of the
    /// stream when it has no relay.
    fn answer_in_stream(&mut self, answer: Bytes) {
        let answer = match (&mut self.marks, &self.pin) {
            // The app turned replies off: the server answers nothing, nor
            // does attache.
            (Some(marks), Some(_)) if marks.replies == Replies::Off => return,
            // The next reply is skipped: this answer's. A PING takes the
            // server's skip, or it would skip the next command's reply.
            (Some(marks), Some(pin))
                if marks.replies == Replies::SkipNext && !self.multi && !marks.caching =>
            {
                marks.replies = Replies::On;
                pin.conn.handle.send(Op::Write(reply::command(&[b"PING"])));
                return;
            }
            (Some(marks), Some(pin))
                if marks.replies == Replies::On
                    && !self.multi
                    && !marks.caching
                    && matches!(self.slots.back(), Some(Slot::Stream(_))) =>
            {
                match marks.mark(answer) {
                    Ok(ping) => {
                        // Not sent (the connection is gone): the relay
                        // gives the answer when its stream ends.
                        pin.conn.handle.send(Op::Write(ping));
                        return;
                    }
                    Err(answer) => answer,
                }
            }
            _ => answer,
        };
        self.slots
            .insert(self.slots.len().saturating_sub(1), Slot::Ready(answer));
    }

    /// `own`: the app's HELLO as it sent it, when its AUTH is the
    /// server's (see `auth_as`): sent on the app's own connection.
    pub(super) async fn hello(
        &mut self,
        protocol: Option<u8>,
        setname: Option<Bytes>,
        own: Option<Bytes>,
    ) -> std::io::Result<()> {
        if own.is_some() {
            if let Err(e) = self.pin(0, true, false).await {
                self.reply_error(&e);
                return Ok(());
            }
        }
        let wanted = match protocol {
            Some(3) => Protocol::Resp3,
            Some(_) => Protocol::Resp2,
            None => self.protocol,
        };
        if wanted != self.protocol {
            match &self.pin {
                // The protocol of EXEC's replies would change halfway.
                Some(_) if self.multi => {
                    self.flush_run();
                    self.slots.push_back(Slot::Ready(reply::error(
                        "ERR attache: HELLO cannot change the protocol inside MULTI; send it before MULTI or after EXEC",
                    )));
                    return Ok(());
                }
                // The app's own connection for now (SELECT n, WATCH …):
                // it changes protocol there, as the app's connection to
                // Redis would, keeping its state.
                Some(pin) if pin.sticky || self.watch => {
                    self.flush_run();
                    if let Some(pin) = &mut self.pin {
                        pin.conn.switch_protocol(wanted);
                    }
                }
                _ => {
                    self.barrier().await?;
                    self.pin = None;
                }
            }
            self.protocol = wanted;
        }
        match setname {
            // Queued: the app's name once EXEC runs it.
            Some(name) if self.multi => self.pending_name = Some(name),
            Some(name) => self.keep_name(name),
            None => {}
        }
        // The server's own HELLO reply, from a connection already speaking
        // that version, so the HELLO changes nothing on it.
        let command = match (own, protocol) {
            (Some(own), _) => own,
            (None, Some(3)) => reply::command(&[b"HELLO", b"3"]),
            (None, Some(_)) => reply::command(&[b"HELLO", b"2"]),
            (None, None) => reply::command(&[b"HELLO"]),
        };
        let target = if self.pin.is_some() {
            Target::Pinned
        } else {
            Target::Shared(self.first_primary())
        };
        self.push_run(BytesMut::from(&command[..]), target, false);
        Ok(())
    }

    pub(super) async fn reset(&mut self) -> std::io::Result<()> {
        self.relay_until_reset().await?;
        self.barrier().await?;
        if let Some(pin) = self.pin.take() {
            discard(pin.conn);
        }
        for conn in self.fanin.drain(..) {
            discard(conn);
        }
        self.subscriptions = Subscriptions::default();
        self.marks = None;
        self.cluster_tx = None;
        self.multi = false;
        self.watch = false;
        self.aborted_multi = false;
        self.multi_deferred = false;
        self.name = None;
        self.pending_name = None;
        self.protocol = Protocol::Resp2;
        self.slots
            .push_back(Slot::Ready(Bytes::from_static(reply::RESET)));
        Ok(())
    }

    /// A command other than pub/sub's, for another server, on a sharded or
    /// cluster listener's subscription to nothing any more (the app
    /// unsubscribed from all): as in Redis, the connection is an ordinary
    /// one again. What the stream owes the app (the confirmations) is
    /// relayed first, then its connections go. `true` when it left.
    pub(super) async fn left_subscription(&mut self, req: &Request) -> std::io::Result<bool> {
        if !self.subscriptions.is_none() || self.multi || !self.is_off_shard_on_subscription(req) {
            return Ok(false);
        }
        self.relay_until_reset().await?;
        if let Some(pin) = self.pin.take() {
            discard(pin.conn);
        }
        for conn in self.fanin.drain(..) {
            discard(conn);
        }
        self.marks = None;
        Ok(true)
    }

    /// The app's stream ends (a protocol error, shutdown): what its relay
    /// owes the app (attache's answers placed in it) is written first, as
    /// for RESET; a stream without a relay just goes.
    pub(super) async fn end_stream(&mut self) -> std::io::Result<()> {
        if self.marks.is_some() {
            return self.relay_until_reset().await;
        }
        if matches!(self.slots.back(), Some(Slot::Stream(_))) {
            self.slots.pop_back();
        }
        Ok(())
    }

    /// Streaming (subscribed, monitoring, tracking): what the server sent
    /// before the app's RESET (a subscription's confirmation, messages,
    /// attache's answers placed in the stream) is the app's, in order.
    /// RESET goes on the stream (server 0's, for a sharded subscription:
    /// the others' are closed), and the relay is
    /// written up to its `+RESET` (which the app gets from `reset`); the
    /// rest is dropped with the connection. Without that reply within
    /// `timeout` (a replication stream), the relay just goes.
    async fn relay_until_reset(&mut self) -> std::io::Result<()> {
        if !matches!(self.slots.back(), Some(Slot::Stream(_))) {
            return Ok(());
        }
        self.flush_run();
        let Some(Slot::Stream(mut rx)) = self.slots.pop_back() else {
            return Ok(());
        };
        let reset = reply::command(&[b"RESET"]);
        if !self
            .pin
            .as_ref()
            .is_some_and(|p| p.conn.handle.send(Op::Write(reset)))
        {
            return Ok(());
        }
        // The replies owed before the stream (attache's own) go first.
        self.barrier().await?;
        let resp3 = self.protocol.is_resp3();
        let deadline = crate::clock::after(tokio::time::Instant::now(), self.service.timeout());
        let mut relayed = BytesMut::new();
        loop {
            let mut end = 0;
            let mut done = false;
            while let Ok(Some(n)) = frame::reply_len(&relayed[end..], resp3) {
                if &relayed[end..end + n] == reply::RESET {
                    done = true;
                    break;
                }
                end += n;
            }
            if end > 0 {
                write_all(&self.stream, &relayed.split_to(end)).await?;
            }
            if done {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(chunk)) => relayed.extend_from_slice(&chunk),
                _ => return Ok(()),
            }
        }
    }

    /// Returns a pinned connection to its pool, or closes it when the app
    /// left state behind.
    pub(super) fn release_on_exit(&mut self) {
        for conn in self.fanin.drain(..) {
            discard(conn);
        }
        if let Some(pin) = self.pin.take() {
            // Still busy (a blocking pop the app walked away from): closed
            // now, so that it stops on the server too.
            if pin.sticky
                || pin.streaming
                || self.multi
                || self.watch
                || pin.conn.handle.in_flight() > 0
            {
                discard(pin.conn);
            }
        }
    }
}

/// Resolves when the app closes its connection (or it fails), reading
/// what the app sends meanwhile into `rbuf` for later, up to a bound.
pub(super) async fn app_gone(stream: &TcpStream, rbuf: &mut BytesMut) -> std::io::Error {
    const HOLD_AT_MOST: usize = 1024 * 1024;
    loop {
        if rbuf.len() >= HOLD_AT_MOST {
            return std::future::pending().await;
        }
        if let Err(e) = std::future::poll_fn(|cx| stream.poll_read_ready(cx)).await {
            return e;
        }
        match try_read(stream, rbuf, READ_CHUNK) {
            Ok(Some(0)) => return std::io::ErrorKind::UnexpectedEof.into(),
            Ok(_) => {}
            Err(e) => return e,
        }
    }
}

/// Closes a dedicated connection that holds state (a subscription, another
/// database, tracking, an open MULTI) instead of pooling it: the server then
/// drops that state at once, as it would for the app's own connection (a
/// pooled subscriber would stay subscribed until reused).
pub(super) fn discard(conn: Dedicated) {
    drop(deadpool::managed::Object::take(conn));
}
