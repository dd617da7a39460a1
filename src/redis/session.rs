//! One app connection. Requests are read, classified and sent in batches
//! (consecutive requests for the same connection travel as one buffer and
//! come back as one buffer); replies are written back strictly in the order
//! the requests arrived, whichever connection answered them.
//!
//! The app's replies are kept as an ordered queue of slots. Moving from one
//! upstream connection to another (shared → dedicated and back, RESP2 →
//! RESP3) first waits for every outstanding reply, so a command never
//! overtakes an earlier one of the same app connection.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use attache_resp::frame::{self, reply, Request};
use bytes::{Buf, Bytes, BytesMut};
use deadpool::managed::PoolError;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::debug;

use super::connection::{Op, ReplyRx, STREAM_BUFFER};
use super::connector::Protocol;
use super::dedicated::Dedicated;
use super::error::UpstreamError;
use super::policy::{classify, Action, Transient};
use super::service::RedisService;
use crate::socket::{try_read, write_all};

/// Most reply slots outstanding before the session stops reading the app
/// (back-pressure instead of unbounded buffering).
const MAX_SLOTS: usize = 1024;
/// Read buffer growth step.
const READ_CHUNK: usize = 8 * 1024;
/// Buffers larger than this are released once empty.
const KEEP_BUFFER: usize = 64 * 1024;

/// A reply (or a run of replies) the app is owed, in order.
enum Slot {
    Ready(Bytes),
    Wait {
        rx: ReplyRx,
        replies: u32,
    },
    /// Everything the pinned connection sends, as it comes.
    Stream(mpsc::Receiver<Bytes>),
}

/// The dedicated connection an app is pinned to, and why.
struct Pin {
    conn: Dedicated,
    sticky: bool,
    streaming: bool,
}

/// Consecutive requests bound for the same connection, not yet sent.
struct Run {
    bytes: BytesMut,
    count: u32,
    pinned: bool,
    blocking: bool,
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
    pin: Option<Pin>,
    multi: bool,
    watch: bool,
    /// MULTI could not get a dedicated connection: until EXEC or DISCARD,
    /// commands are refused rather than run outside the transaction.
    aborted_multi: bool,
    /// Close once every owed reply is written (QUIT, protocol error, the
    /// pinned upstream went away).
    closing: bool,
}

impl Session {
    pub(crate) fn new(service: Arc<RedisService>, stream: TcpStream, peer: SocketAddr) -> Self {
        let shared_index = service.next_shared_index();
        Self {
            service,
            stream,
            peer,
            rbuf: BytesMut::new(),
            slots: VecDeque::new(),
            run: None,
            protocol: Protocol::Resp2,
            shared_index,
            name: None,
            pin: None,
            multi: false,
            aborted_multi: false,
            watch: false,
            closing: false,
        }
    }

    /// Serves the app until it leaves; I/O errors end the session quietly
    /// (the app is gone), everything else was answered in-band.
    pub(crate) async fn run(mut self) {
        if let Err(e) = self.serve().await {
            debug!(listener = %self.service.name, peer = %self.peer, error = %e, "app connection ended");
        }
        self.release_on_exit();
    }

    async fn serve(&mut self) -> std::io::Result<()> {
        loop {
            self.write_ready().await?;
            if self.closing && self.slots.is_empty() {
                self.stream.shutdown().await.ok();
                return Ok(());
            }
            if self.slots.is_empty() && self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
                // Idle: an idle app connection holds no read buffer.
                spare_buffers::give_back(std::mem::take(&mut self.rbuf));
            }
            let can_read = !self.closing && self.slots.len() < MAX_SLOTS;
            tokio::select! {
                ready = self.stream.readable(), if can_read => {
                    ready?;
                    if self.rbuf.capacity() == 0 {
                        self.rbuf = spare_buffers::take();
                    }
                    match try_read(&self.stream, &mut self.rbuf, READ_CHUNK)? {
                        None => continue,
                        Some(0) => return Ok(()),
                        Some(_) => self.process_input().await?,
                    }
                }
                _ = wait_front(&mut self.slots, &self.service), if !self.slots.is_empty() => {}
            }
        }
    }

    /// Decodes and dispatches every complete request in the read buffer.
    async fn process_input(&mut self) -> std::io::Result<()> {
        let max = self.service.max_request_bytes;
        while !self.closing {
            let req = match frame::parse_request(&self.rbuf, max) {
                Ok(Some(req)) => req,
                Ok(None) => break,
                Err(e) => {
                    debug!(listener = %self.service.name, peer = %self.peer, error = %e, "bad request");
                    self.flush_run();
                    self.slots
                        .push_back(Slot::Ready(reply::error(&format!("ERR {e}"))));
                    self.rbuf.clear();
                    self.closing = true;
                    break;
                }
            };
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
        let streaming = self.pin.as_ref().is_some_and(|p| p.streaming);
        let action = classify(&req, &self.rbuf, self.pin.is_some());
        if streaming {
            // Replies no longer pair with requests: everything but RESET
            // goes to the pinned connection as it is.
            return match action {
                Action::Reset => {
                    self.rbuf.advance(req.len);
                    self.reset().await
                }
                Action::Reply(bytes) => {
                    self.rbuf.advance(req.len);
                    self.slots
                        .insert(self.slots.len().saturating_sub(1), Slot::Ready(bytes));
                    Ok(())
                }
                _ => {
                    let bytes = self.take_request(&req);
                    if let Some(pin) = &self.pin {
                        pin.conn.handle.send(Op::Write(bytes.freeze()));
                    }
                    Ok(())
                }
            };
        }
        if self.aborted_multi && !matches!(action, Action::Reset | Action::Quit) {
            self.rbuf.advance(req.len);
            self.flush_run();
            let answer = match action {
                Action::EndsState { multi: true } => {
                    self.aborted_multi = false;
                    reply::error("EXECABORT Transaction discarded because of previous errors.")
                }
                _ => reply::error("ERR attache: MULTI failed, command not queued"),
            };
            self.slots.push_back(Slot::Ready(answer));
            return Ok(());
        }
        match action {
            Action::Forward => {
                if self.pin.as_ref().is_some_and(|p| !p.sticky) && !self.multi && !self.watch {
                    // The transient state is over: back to the shared connection.
                    self.barrier().await?;
                    self.pin = None;
                }
                let pinned = self.pin.is_some();
                let bytes = self.take_request(&req);
                self.push_run(bytes, pinned, false);
            }
            Action::Reply(bytes) => {
                self.rbuf.advance(req.len);
                self.flush_run();
                self.slots.push_back(Slot::Ready(bytes));
            }
            Action::PinTransient(kind) => {
                let bytes = self.take_request(&req);
                if let Err(e) = self.pin(false, false).await {
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
                self.push_run(bytes, true, blocking);
            }
            Action::PinSticky { stream } => {
                let bytes = self.take_request(&req);
                if let Err(e) = self.pin(true, stream).await {
                    self.reply_error(&e);
                    return Ok(());
                }
                if stream {
                    self.start_streaming(bytes.freeze());
                } else {
                    self.push_run(bytes, true, false);
                }
            }
            Action::EndsState { multi } => {
                let pinned = self.pin.is_some();
                if pinned {
                    if multi {
                        self.multi = false;
                    }
                    self.watch = false;
                }
                let bytes = self.take_request(&req);
                self.push_run(bytes, pinned, false);
            }
            Action::Hello { protocol, setname } => {
                self.rbuf.advance(req.len);
                self.hello(protocol, setname).await?;
            }
            Action::SetName(name) => {
                self.rbuf.advance(req.len);
                self.flush_run();
                self.name = Some(name);
                self.slots
                    .push_back(Slot::Ready(Bytes::from_static(reply::OK)));
            }
            Action::GetName => {
                self.rbuf.advance(req.len);
                self.flush_run();
                let answer = match &self.name {
                    Some(name) => reply::bulk(name),
                    None => reply::null(self.protocol.is_resp3()),
                };
                self.slots.push_back(Slot::Ready(answer));
            }
            Action::Quit => {
                self.rbuf.advance(req.len);
                self.flush_run();
                self.slots
                    .push_back(Slot::Ready(Bytes::from_static(reply::OK)));
                self.closing = true;
            }
            Action::Reset => {
                self.rbuf.advance(req.len);
                self.reset().await?;
            }
        }
        Ok(())
    }

    /// The request's bytes, taken off the read buffer. Inline commands are
    /// re-encoded as RESP so that everything sent upstream is RESP.
    fn take_request(&mut self, req: &Request) -> BytesMut {
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

    fn push_run(&mut self, bytes: BytesMut, pinned: bool, blocking: bool) {
        if let Some(run) = &mut self.run {
            if run.pinned == pinned && !run.blocking && !blocking {
                run.bytes.unsplit(bytes);
                run.count += 1;
                return;
            }
        }
        self.flush_run();
        self.run = Some(Run {
            bytes,
            count: 1,
            pinned,
            blocking,
        });
    }

    /// Sends the pending run to its connection.
    fn flush_run(&mut self) {
        let Some(run) = self.run.take() else { return };
        let bytes = run.bytes.freeze();
        let handle = if run.pinned {
            match &self.pin {
                Some(pin) => pin.conn.handle.clone(),
                None => return,
            }
        } else {
            self.service.shared(self.protocol, self.shared_index)
        };
        let rx = handle.request(bytes, run.count, run.blocking);
        self.slots.push_back(Slot::Wait {
            rx,
            replies: run.count,
        });
    }

    /// Waits until every reply owed so far is written to the app.
    async fn barrier(&mut self) -> std::io::Result<()> {
        self.flush_run();
        while !self.slots.is_empty() {
            if matches!(self.slots.back(), Some(Slot::Stream(_))) {
                // A streaming connection never "finishes"; drop the relay.
                self.slots.pop_back();
                continue;
            }
            wait_front(&mut self.slots, &self.service).await;
            self.write_ready().await?;
        }
        Ok(())
    }

    /// Pins the app to a dedicated connection (or upgrades the pin).
    async fn pin(&mut self, sticky: bool, streaming: bool) -> Result<(), UpstreamError> {
        if let Some(pin) = &mut self.pin {
            pin.sticky |= sticky;
            pin.streaming |= streaming;
            return Ok(());
        }
        if self.barrier().await.is_err() {
            self.closing = true;
        }
        let pool = self.service.dedicated(self.protocol);
        let conn = pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => e,
            PoolError::Timeout(_) => {
                UpstreamError::PoolExhausted(self.service.upstream_id(), pool.status().max_size)
            }
            other => UpstreamError::Io(self.service.upstream_id(), other.to_string().into()),
        })?;
        self.pin = Some(Pin {
            conn,
            sticky,
            streaming,
        });
        Ok(())
    }

    fn start_streaming(&mut self, bytes: Bytes) {
        self.flush_run();
        let (sink, rx) = mpsc::channel(STREAM_BUFFER);
        if let Some(pin) = &self.pin {
            pin.conn.handle.send(Op::Stream { bytes, sink });
        }
        self.slots.push_back(Slot::Stream(rx));
    }

    async fn hello(&mut self, protocol: Option<u8>, setname: Option<Bytes>) -> std::io::Result<()> {
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
        let pinned = self.pin.is_some();
        self.push_run(BytesMut::from(&command[..]), pinned, false);
        Ok(())
    }

    async fn reset(&mut self) -> std::io::Result<()> {
        self.barrier().await?;
        if let Some(mut pin) = self.pin.take() {
            pin.conn.dirty = true;
        }
        self.multi = false;
        self.watch = false;
        self.aborted_multi = false;
        self.name = None;
        self.protocol = Protocol::Resp2;
        self.slots
            .push_back(Slot::Ready(Bytes::from_static(reply::RESET)));
        Ok(())
    }

    fn reply_error(&mut self, error: &UpstreamError) {
        self.flush_run();
        self.slots.push_back(Slot::Ready(error.to_reply()));
    }

    /// Writes every reply that is ready, in order, in as few writes as possible.
    async fn write_ready(&mut self) -> std::io::Result<()> {
        let mut out: Vec<Bytes> = Vec::new();
        while let Some(front) = self.slots.front_mut() {
            match front {
                Slot::Ready(_) => {
                    if let Some(Slot::Ready(bytes)) = self.slots.pop_front() {
                        out.push(bytes);
                    }
                }
                Slot::Wait { rx, replies } => match rx.try_recv() {
                    Ok(result) => {
                        let replies = *replies;
                        out.push(settle(result, replies));
                        self.slots.pop_front();
                    }
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty) => break,
                    Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                        let replies = *replies;
                        out.push(settle(Err(self.service.closed_error()), replies));
                        self.slots.pop_front();
                    }
                },
                Slot::Stream(rx) => match rx.try_recv() {
                    Ok(bytes) => out.push(bytes),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        // The pinned upstream closed (QUIT, or it died):
                        // the app's connection ends with it.
                        self.slots.pop_front();
                        self.closing = true;
                    }
                },
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

    /// Returns a pinned connection to its pool, marked for RESET when the
    /// app left state behind.
    fn release_on_exit(&mut self) {
        if let Some(mut pin) = self.pin.take() {
            if pin.sticky || pin.streaming || self.multi || self.watch {
                pin.conn.dirty = true;
            }
        }
    }
}

/// Read buffers of idle app connections, kept per worker thread: a thousand
/// idle connections hold no buffer, and a busy pipeline-1 connection does
/// not allocate one per request.
mod spare_buffers {
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
}

/// Resolves when the front slot has something to write, turning a
/// settled reply into `Slot::Ready` in place.
async fn wait_front(slots: &mut VecDeque<Slot>, service: &RedisService) {
    match slots.front_mut() {
        Some(Slot::Wait { rx, replies }) => {
            let result = match rx.await {
                Ok(result) => result,
                Err(_) => Err(service.closed_error()),
            };
            slots[0] = Slot::Ready(settle(result, *replies));
        }
        Some(Slot::Stream(rx)) => match rx.recv().await {
            Some(bytes) => slots.push_front(Slot::Ready(bytes)),
            None => {
                slots.pop_front();
            }
        },
        _ => std::future::pending().await,
    }
}

/// A batch's replies, or one error reply per lost reply so the app's reply
/// count stays right.
fn settle(result: Result<Bytes, UpstreamError>, replies: u32) -> Bytes {
    match result {
        Ok(bytes) => bytes,
        Err(e) => {
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
