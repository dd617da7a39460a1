//! Dedicated connections: pinning an app to one (and back), streaming
//! (pub/sub, MONITOR), the connection-level commands that change which
//! connection an app is on (HELLO, RESET), and what happens to a pinned
//! connection when the app leaves.

use attache_resp::frame::{self, reply};
use bytes::{Bytes, BytesMut};
use deadpool::managed::PoolError;
use tokio::sync::mpsc;

use super::{Pin, Session, Subscriptions, Target};
use crate::redis::connection::{Op, STREAM_BUFFER};
use crate::redis::connector::Protocol;
use crate::redis::dedicated::Dedicated;
use crate::redis::error::UpstreamError;
use crate::redis::slots::{wait_front, Slot};
use crate::socket::write_all;

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
                wait_front(
                    &mut self.slots,
                    &self.service,
                    self.protocol.is_resp3(),
                    &mut self.meters,
                )
                .await;
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
        if let Some(pin) = &mut self.pin {
            pin.sticky |= sticky;
            pin.streaming |= streaming;
            return Ok(());
        }
        if self.barrier().await.is_err() {
            self.closing = true;
        }
        let pool = self.service.dedicated(server, self.protocol);
        let id = || self.service.upstream_id(server);
        let conn = pool.get().await.map_err(|e| match e {
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
        Ok(())
    }

    pub(super) fn start_streaming(&mut self, bytes: Bytes) {
        self.flush_run();
        let (sink, rx) = mpsc::channel(STREAM_BUFFER);
        if let Some(pin) = &self.pin {
            pin.conn.handle.send(Op::Stream { bytes, sink });
        }
        self.slots.push_back(Slot::Stream(rx));
    }

    pub(super) async fn hello(
        &mut self,
        protocol: Option<u8>,
        setname: Option<Bytes>,
    ) -> std::io::Result<()> {
        let wanted = match protocol {
            Some(3) => Protocol::Resp3,
            Some(_) => Protocol::Resp2,
            None => self.protocol,
        };
        if wanted != self.protocol {
            if let Some(pin) = &self.pin {
                if pin.sticky || self.multi || self.watch {
                    self.flush_run();
                    self.slots.push_back(Slot::Ready(reply::error(
                        "ERR attache: HELLO cannot change the protocol while this connection holds state (MULTI, WATCH, SELECT, tracking); send RESET first",
                    )));
                    return Ok(());
                }
            }
            self.barrier().await?;
            self.pin = None;
            self.protocol = wanted;
        }
        if setname.is_some() {
            self.name = setname;
        }
        // The server's own HELLO reply, from a connection already speaking
        // that version, so the HELLO changes nothing on it.
        let command = match protocol {
            Some(3) => reply::command(&[b"HELLO", b"3"]),
            Some(_) => reply::command(&[b"HELLO", b"2"]),
            None => reply::command(&[b"HELLO"]),
        };
        let target = if self.pin.is_some() {
            Target::Pinned
        } else {
            Target::Shared(0)
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
        self.cluster_tx = None;
        self.multi = false;
        self.watch = false;
        self.aborted_multi = false;
        self.multi_deferred = false;
        self.name = None;
        self.protocol = Protocol::Resp2;
        self.slots
            .push_back(Slot::Ready(Bytes::from_static(reply::RESET)));
        Ok(())
    }

    /// Streaming (subscribed, monitoring, tracking): what the server sent
    /// before the app's RESET (a subscription's confirmation, messages) is
    /// the app's, in order. RESET goes on the stream, and the relay is
    /// written up to its `+RESET` (which the app gets from `reset`); the
    /// rest is dropped with the connection. Without that reply within
    /// `timeout` (a replication stream), the relay just goes.
    async fn relay_until_reset(&mut self) -> std::io::Result<()> {
        if !self.fanin.is_empty() || !matches!(self.slots.back(), Some(Slot::Stream(_))) {
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
        let deadline = tokio::time::Instant::now() + self.service.timeout();
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

/// Closes a dedicated connection that holds state (a subscription, another
/// database, tracking, an open MULTI) instead of pooling it: the server then
/// drops that state at once, as it would for the app's own connection (a
/// pooled subscriber would stay subscribed until reused).
pub(super) fn discard(conn: Dedicated) {
    drop(deadpool::managed::Object::take(conn));
}
