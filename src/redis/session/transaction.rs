//! Transactions in cluster mode. attache answers MULTI and each QUEUED
//! itself and sends the whole transaction (`MULTI`, the commands, `EXEC`)
//! as one buffer on the slot owner's shared connection at EXEC: the bytes
//! are contiguous on the socket, so no other app's command can come between
//! them. If the slot moved, the node answers MOVED and the transaction is
//! sent again, whole, to the new owner; the app sees only EXEC's reply.

use attache_resp::frame::{self, reply, Request};
use bytes::{Buf, Bytes, BytesMut};

use super::routing::Route;
use super::{Session, Target};
use crate::redis::meter::{Families, Meter};
use crate::redis::policy::{Action, Transient};
use crate::redis::slots::{Redirectable, Slot};

/// A transaction being queued.
#[derive(Default)]
pub(super) struct ClusterTx {
    commands: BytesMut,
    count: u32,
    /// The server of its keys, once one is known.
    server: Option<usize>,
    /// A command could not be queued: EXEC answers EXECABORT.
    aborted: bool,
}

impl Session {
    /// Handles `req` while a cluster transaction is open.
    pub(super) fn queue_in_transaction(&mut self, req: &Request, action: Action) {
        let refuse = |this: &mut Self, message: &str| {
            if let Some(tx) = &mut this.cluster_tx {
                tx.aborted = true;
            }
            this.reply_local(req, reply::error(message));
        };
        match action {
            Action::EndsState { multi: true } => {
                let exec = req
                    .arg(&self.rbuf, 0)
                    .is_some_and(|n| n.eq_ignore_ascii_case(b"exec"));
                let Some(tx) = self.cluster_tx.take() else {
                    return;
                };
                if !exec {
                    self.reply_local(req, Bytes::from_static(reply::OK));
                } else if tx.aborted {
                    self.reply_local(
                        req,
                        reply::error("EXECABORT Transaction discarded because of previous errors."),
                    );
                } else if tx.count == 0 {
                    self.reply_local(req, Bytes::from_static(b"*0\r\n"));
                } else {
                    self.send_transaction(req, tx);
                }
            }
            Action::PinTransient(Transient::Multi) => {
                self.reply_local(req, reply::error("ERR MULTI calls can not be nested"))
            }
            Action::PinTransient(Transient::Watch) => {
                refuse(self, "ERR WATCH inside MULTI is not allowed")
            }
            Action::Reply(bytes) => self.reply_local(req, bytes),
            Action::Forward
            | Action::Unsubscribe
            | Action::EndsState { multi: false }
            | Action::PinTransient(Transient::Blocking) => {
                let server = match self.route(req) {
                    Route::To(server) => Some(server),
                    Route::Keyless => None,
                    Route::Reply(bytes) if frame::is_error(&bytes) => {
                        if let Some(tx) = &mut self.cluster_tx {
                            tx.aborted = true;
                        }
                        self.reply_local(req, bytes);
                        return;
                    }
                    // PING and ECHO: answered by the server, in EXEC's reply.
                    Route::Reply(_) => None,
                    _ => {
                        refuse(
                            self,
                            "ERR attache: a command that spans shards cannot run inside MULTI",
                        );
                        return;
                    }
                };
                let Some(tx) = &mut self.cluster_tx else {
                    return;
                };
                if let (Some(queued), Some(server)) = (tx.server, server) {
                    if queued != server {
                        refuse(
                            self,
                            "CROSSSLOT Keys in request don't hash to the same slot",
                        );
                        return;
                    }
                }
                tx.server = tx.server.or(server);
                let bytes = self.take_request(req);
                if let Some(tx) = &mut self.cluster_tx {
                    tx.commands.extend_from_slice(&bytes);
                    tx.count += 1;
                }
                self.flush_run();
                self.slots
                    .push_back(Slot::Ready(Bytes::from_static(b"+QUEUED\r\n")));
            }
            _ => refuse(
                self,
                "ERR attache: this command cannot be queued in a cluster transaction",
            ),
        }
    }

    fn send_transaction(&mut self, req: &Request, tx: ClusterTx) {
        self.rbuf.advance(req.len);
        self.flush_run();
        let server = tx.server.unwrap_or_else(|| self.first_primary());
        let mut batch = BytesMut::from(&reply::command(&[b"MULTI"])[..]);
        batch.extend_from_slice(&tx.commands);
        batch.extend_from_slice(&reply::command(&[b"EXEC"]));
        let batch = batch.freeze();
        let replies = tx.count + 2;
        let handle = self
            .service
            .shared(server, self.protocol, self.shared_index);
        let rx = handle.request(batch.clone(), replies, false);
        self.slots.push_back(Slot::Cluster(Box::new(Redirectable {
            rx,
            request: batch,
            server,
            protocol: self.protocol,
            shared_index: self.shared_index,
            redirects: 0,
            asking: false,
            transaction: Some(replies),
            meter: Meter {
                started: self.read_at,
                server,
                families: Families::One(self.family),
            },
        })));
    }

    /// Where a command with no key goes off a pinned connection: upstream 0
    /// (the first seed) in the other modes; in cluster mode a primary the
    /// slot map names, since the first seed may be down (or gone).
    pub(super) fn first_primary(&self) -> usize {
        match &self.service.router {
            crate::redis::router::Router::Cluster(router) => router
                .slots()
                .and_then(|s| s.primaries.first().copied())
                .unwrap_or(0),
            _ => 0,
        }
    }

    /// EXEC, DISCARD or UNWATCH outside a cluster transaction. Returns the
    /// client name an EXEC is to make the app's if it runs (see
    /// `name_if_executed`).
    pub(super) fn end_state(&mut self, req: &Request, multi: bool) -> Option<Bytes> {
        let exec = req
            .arg(&self.rbuf, 0)
            .is_some_and(|n| n.eq_ignore_ascii_case(b"exec"));
        let name = match multi {
            true => self.pending_name.take().filter(|_| exec),
            false => None,
        };
        if multi && self.multi_deferred {
            // MULTI was never sent anywhere: nothing was queued.
            self.multi_deferred = false;
            let answer = if exec {
                Bytes::from_static(b"*0\r\n")
            } else {
                Bytes::from_static(reply::OK)
            };
            self.reply_local(req, answer);
            return None;
        }
        let target = if self.pin.is_some() {
            if multi {
                self.multi = false;
            }
            self.watch = false;
            Target::Pinned
        } else {
            Target::Shared(self.first_primary())
        };
        let bytes = self.take_request(req);
        self.push_run(bytes, target, false);
        name
    }

    /// EXEC of a transaction that set the client name: as in Redis, the
    /// name is the app's only if EXEC ran the transaction (its reply is an
    /// array, not EXECABORT nor the null of a failed WATCH). Waits for
    /// EXEC's reply, writing the replies owed before it meanwhile.
    pub(super) async fn name_if_executed(&mut self, name: Bytes) -> std::io::Result<()> {
        self.flush_run();
        let Some(exec) = self.slots.pop_back() else {
            return Ok(());
        };
        self.barrier().await?;
        self.slots.push_back(exec);
        self.wait_front_or_app_gone().await?;
        // EXEC's reply is the last of its batch (the queued commands'
        // QUEUED may come before it).
        let Some(Slot::Ready(replies)) = self.slots.front() else {
            return Ok(());
        };
        let (resp3, mut exec) = (self.protocol.is_resp3(), &replies[..]);
        while let Ok(Some(n)) = frame::reply_len(exec, resp3) {
            if n == exec.len() {
                break;
            }
            exec = &exec[n..];
        }
        if exec.starts_with(b"*") && !exec.starts_with(b"*-1") {
            self.keep_name(name);
        }
        Ok(())
    }

    /// After a command refused inside MULTI: EXEC gets EXECABORT and
    /// DISCARD `+OK` (as from Redis), either ending the WATCH too; anything
    /// else is refused, since the transaction could not be opened.
    pub(super) fn answer_after_abort(&mut self, req: &Request, action: &Action) {
        let discard = req
            .arg(&self.rbuf, 0)
            .is_some_and(|n| n.eq_ignore_ascii_case(b"discard"));
        self.rbuf.advance(req.len);
        self.flush_run();
        self.pending_name = None;
        let answer = match *action {
            // As Redis: DISCARD ends a failed transaction with +OK.
            Action::EndsState { multi: true } => {
                self.aborted_multi = false;
                // EXEC and DISCARD end the WATCH too (the DISCARD sent
                // at the abort already unwatched upstream): the app is
                // no longer held to the watched keys' server.
                self.watch = false;
                if discard {
                    Bytes::from_static(reply::OK)
                } else {
                    reply::error("EXECABORT Transaction discarded because of previous errors.")
                }
            }
            _ => reply::error("ERR attache: MULTI failed, command not queued"),
        };
        self.slots.push_back(Slot::Ready(answer));
    }
}
