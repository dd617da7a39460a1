//! One upstream socket carrying many requests: one driver task sends
//! batches of request frames as they come (several batches per syscall when
//! they queue up) and matches replies to batches strictly in order, handing
//! each batch its replies as one zero-copy `Bytes`.
//!
//! The same driver serves shared multiplexed connections (many app
//! connections) and dedicated ones (one pinned app connection).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::connector::{Connector, Protocol};
use super::error::{UpstreamError, UpstreamId};
use super::pause::PauseWindow;

mod wire;
use wire::{deliver, transaction_open_after, Outgoing, Pending};

/// Where a batch's replies go: all of them at once, in one buffer.
pub(crate) type ReplyTx = oneshot::Sender<Result<Bytes, UpstreamError>>;
pub(crate) type ReplyRx = oneshot::Receiver<Result<Bytes, UpstreamError>>;

/// Read buffer growth step.
const READ_CHUNK: usize = 16 * 1024;
/// How soon a streaming connection whose credential changed looks again
/// whether it can be renewed.
const REAUTH_RETRY: Duration = Duration::from_millis(100);
/// Most bytes gathered into one write.
const MAX_WRITE_GATHER: usize = 256 * 1024;
/// Chunks buffered towards a streaming (subscribed) client before the
/// upstream reader waits for it.
pub(crate) const STREAM_BUFFER: usize = 256;

/// What an app session asks of an upstream connection.
pub(crate) enum Op {
    /// Request frames whose `replies` replies go back through `tx`.
    Request {
        bytes: Bytes,
        replies: u32,
        /// Exempt from the reply timeout (BLPOP and friends).
        blocking: bool,
        tx: ReplyTx,
    },
    /// From these bytes on, every byte the server sends goes to `sink`
    /// unparsed: the connection is a subscriber, a monitor, or has replies
    /// turned off, so replies no longer pair with requests.
    Stream {
        bytes: Bytes,
        sink: mpsc::Sender<Bytes>,
        /// When the credential changes, close the connection so that the
        /// session subscribes again on a fresh one; otherwise (MONITOR,
        /// CLIENT REPLY OFF, a sharded fan-in) it keeps its session.
        renew: bool,
    },
    /// Bytes for a connection already streaming.
    Write(Bytes),
    /// The app's `HELLO` on its own (dedicated) connection changes the
    /// protocol it speaks: the replies after what was queued so far (the
    /// `HELLO`'s own first) are read in `Protocol`.
    Switch(Protocol),
}

/// The sending side of a running connection. Cloning is cheap.
#[derive(Clone)]
pub(crate) struct ConnectionHandle {
    ops: mpsc::UnboundedSender<Op>,
    in_flight: Arc<AtomicUsize>,
}

impl ConnectionHandle {
    pub(crate) fn new() -> (Self, mpsc::UnboundedReceiver<Op>, Arc<AtomicUsize>) {
        let (ops, rx) = mpsc::unbounded_channel();
        let in_flight = Arc::new(AtomicUsize::new(0));
        (
            Self {
                ops,
                in_flight: in_flight.clone(),
            },
            rx,
            in_flight,
        )
    }

    /// Queues request frames; their replies arrive on the returned receiver.
    pub(crate) fn request(&self, bytes: Bytes, replies: u32, blocking: bool) -> ReplyRx {
        let (tx, rx) = oneshot::channel();
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if let Err(mpsc::error::SendError(op)) = self.ops.send(Op::Request {
            bytes,
            replies,
            blocking,
            tx,
        }) {
            // The driver is gone; the dropped sender tells the session.
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            drop(op);
        }
        rx
    }

    /// Sends `op` as is; false when the connection is gone.
    pub(crate) fn send(&self, op: Op) -> bool {
        self.ops.send(op).is_ok()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.ops.is_closed()
    }

    /// Batches sent whose replies have not all arrived.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Settings of one driver.
#[derive(Clone)]
pub(crate) struct DriverSettings {
    pub(crate) id: UpstreamId,
    pub(crate) protocol: Protocol,
    pub(crate) timeout: Duration,
    /// A dedicated connection: the app's own MULTI … EXEC may span several
    /// batches, so the driver watches for them (no re-AUTH in between).
    pub(crate) dedicated: bool,
    /// Re-authenticates in-band when the credential changes.
    pub(crate) reauth: Option<Arc<Connector>>,
    /// Dedicated connections: set when the driver closed a streaming
    /// connection because the credential changed (its session subscribes
    /// again on a fresh connection, authenticated with the new one).
    pub(crate) renewed: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// A `CLIENT PAUSE` the app sent through: what it held is due later.
    pub(crate) pause: Arc<PauseWindow>,
}

/// A future that resolves when the credential changes, handing back its
/// receiver. Boxed because it lives across polls of the driver.
type CredentialChange = Pin<Box<dyn Future<Output = Option<watch::Receiver<u64>>> + Send>>;

fn next_change(mut changes: watch::Receiver<u64>) -> CredentialChange {
    Box::pin(async move { changes.changed().await.ok().map(|()| changes) })
}

/// The address a connection is on and the addresses its host name
/// resolves to now: when the name stops resolving to it, the connection
/// drains (takes no new requests, answers what it owes, then closes).
pub(crate) struct AddressWatch {
    pub(crate) peer: SocketAddr,
    pub(crate) addrs: watch::Receiver<Arc<[SocketAddr]>>,
}

type AddressChange = Pin<Box<dyn Future<Output = Option<AddressWatch>> + Send>>;

fn next_address_change(mut watch: AddressWatch) -> AddressChange {
    Box::pin(async move { watch.addrs.changed().await.ok().map(|()| watch) })
}

/// What the driver watches besides its socket and its requests.
struct Watches {
    credential: Option<CredentialChange>,
    address: Option<AddressChange>,
}

/// How a driver stopped.
pub(crate) enum DriveEnd {
    /// Every handle was dropped and everything owed was delivered.
    Closed,
    /// The host name no longer resolves to this connection's address; all
    /// it owed was delivered. Requests still queued wait for the next
    /// connection.
    Drained,
    /// The connection failed; requests it owed got this error.
    Failed(UpstreamError),
}

/// Runs `stream` until it fails, serving `ops`, and says why it stopped.
/// Every request not answered by then has been failed with the error.
/// `changes` (from `Connector::credential_changes`) was taken before the
/// handshake, so a credential that changed during it is sent again.
///
/// One task does both directions: it writes whatever the sessions queued
/// (gathered into one write) and reads replies, so a request costs one task
/// wakeup on this side rather than a hop from a writer task to a reader task.
pub(crate) async fn drive<S>(
    mut stream: S,
    first: Option<Op>,
    ops: &mut mpsc::UnboundedReceiver<Op>,
    in_flight: Arc<AtomicUsize>,
    settings: DriverSettings,
    address: Option<AddressWatch>,
    changes: Option<watch::Receiver<u64>>,
) -> DriveEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut state = DriverState {
        protocol: settings.protocol,
        queue: VecDeque::new(),
        out: Outgoing::default(),
        buf: BytesMut::with_capacity(READ_CHUNK),
        scanned: 0,
        frames: 0,
        ops_done: false,
        draining: false,
        in_multi: false,
        streaming: false,
        renewable: false,
        stream_fed: false,
        reauth_due: false,
        renew: false,
        reauth_failures: 0,
    };
    let mut watches = Watches {
        credential: changes.map(next_change),
        address: address.map(next_address_change),
    };
    if let Some(op) = first {
        state.register(op, &settings, Instant::now());
    }
    // Armed at or before the front batch's deadline; re-armed only when it
    // fires early, so a request costs no timer update.
    let timer = tokio::time::sleep(settings.timeout);
    tokio::pin!(timer);
    let mut timer_armed = false;
    let error = loop {
        let mut refused = None;
        if let Err(e) = deliver(
            &mut state.buf,
            &mut state.queue,
            &mut state.scanned,
            &mut state.frames,
            &in_flight,
            &settings,
            &mut state.protocol,
            &mut refused,
            &mut state.stream_fed,
        )
        .await
        {
            break e;
        }
        if let Some(reply) = refused {
            state.reauth_refused(&reply, &settings);
        } else if state.reauth_failures > 0
            && !state.queue.iter().any(|p| matches!(p, Pending::Reauth))
        {
            state.reauth_failures = 0;
        }
        // Every handle is gone: finish what is owed, then close. A stream
        // owes nothing (a subscriber whose app left), so it closes at once.
        // Nor does a dedicated connection, whose one app left: once what it
        // sent is written, the close cancels what still runs for it (a
        // blocking pop would otherwise pop an element for nobody), as the
        // app's own close would with Redis itself.
        if state.ops_done
            && state.out.is_empty()
            && (settings.dedicated || state.queue.iter().all(|p| matches!(p, Pending::Stream(_))))
        {
            return DriveEnd::Closed;
        }
        if state.draining && state.out.is_empty() && state.queue.is_empty() {
            debug!(upstream = %settings.id, "drained: the name no longer resolves to this address");
            return DriveEnd::Drained;
        }
        // A re-AUTH has no deadline of its own: the batch behind it does
        // (a server that stops answering at the AUTH times that batch out).
        let front_deadline = match state
            .queue
            .iter()
            .find(|p| !matches!(p, Pending::Reauth | Pending::Switch(_)))
        {
            Some(Pending::Replies { deadline, .. }) => *deadline,
            _ => None,
        };
        match front_deadline {
            Some(d) if !timer_armed => {
                timer.as_mut().reset(d);
                timer_armed = true;
            }
            // An armed timer outlives an empty queue: if it fires, the
            // check below finds nothing late and disarms it.
            _ => {}
        }
        if state.reauth_due {
            state.try_reauth(&settings);
            if state.renew {
                debug!(upstream = %settings.id, "closing a streaming connection to renew its credential");
                return DriveEnd::Drained;
            }
            // Still due (a stream waiting for what started it to be
            // answered): look again soon, whether or not anything else
            // happens on this connection.
            if state.reauth_due && state.streaming && !timer_armed {
                timer.as_mut().reset(Instant::now() + REAUTH_RETRY);
                timer_armed = true;
            }
        }
        let event = poll_fn(|cx| {
            state.poll_event(cx, &mut stream, ops, &mut timer, timer_armed, &mut watches)
        })
        .await;
        match event {
            Event::AddressesChanged(None) => watches.address = None,
            Event::AddressesChanged(Some(watch)) => {
                let current = watch.addrs.borrow().clone();
                if current.contains(&watch.peer) {
                    watches.address = Some(next_address_change(watch));
                } else {
                    // Stop taking requests; the next connection gets them.
                    state.draining = true;
                    watches.address = None;
                }
            }
            Event::CredentialChanged(changes) => {
                watches.credential = changes.map(next_change);
                state.reauth_due = true;
                state.reauth_failures = 0;
            }
            Event::Op(Some(op)) => {
                // One clock reading for every request gathered here.
                let now = Instant::now();
                state.register(op, &settings, now);
                // Gather whatever else is already queued into the same write.
                while state.out.len() < MAX_WRITE_GATHER {
                    let Ok(op) = ops.try_recv() else { break };
                    state.register(op, &settings, now);
                }
            }
            Event::Op(None) => state.ops_done = true,
            Event::Wrote(Ok(0)) => {
                break UpstreamError::Io(settings.id.clone(), "write returned 0".into())
            }
            Event::Wrote(Ok(n)) => state.out.advance(n),
            Event::Wrote(Err(e)) | Event::Read(Err(e)) => {
                break UpstreamError::Io(settings.id.clone(), e.to_string().into())
            }
            Event::Read(Ok(0)) => break UpstreamError::Closed(settings.id.clone()),
            Event::Read(Ok(_)) => {}
            Event::Timer => match front_deadline {
                Some(d) if d <= Instant::now() => {
                    // Held by a pause the app sent through attache: due
                    // `timeout` after the pause ends.
                    match settings.pause.due(settings.timeout) {
                        Some(due) if due > Instant::now() => timer.as_mut().reset(due),
                        _ => break UpstreamError::Timeout(settings.id.clone(), settings.timeout),
                    }
                }
                _ => timer_armed = false,
            },
        }
    };
    debug!(upstream = %settings.id, error = %error, "upstream connection failed");
    for p in state.queue {
        if let Pending::Replies { tx, .. } = p {
            in_flight.fetch_sub(1, Ordering::Relaxed);
            let _ = tx.send(Err(error.clone()));
        }
    }
    DriveEnd::Failed(error)
}

/// What woke the driver.
enum Event {
    Op(Option<Op>),
    Wrote(std::io::Result<usize>),
    Read(std::io::Result<usize>),
    Timer,
    CredentialChanged(Option<watch::Receiver<u64>>),
    AddressesChanged(Option<AddressWatch>),
}

struct DriverState {
    /// What replies are read in (see `Op::Switch`).
    protocol: Protocol,
    /// What the server owes, in the order it was written.
    queue: VecDeque<Pending>,
    out: Outgoing,
    buf: BytesMut,
    /// Progress through the front batch's replies: bytes and frames seen.
    scanned: usize,
    frames: u32,
    ops_done: bool,
    /// Taking no new requests: the host name moved away from this address.
    draining: bool,
    /// Inside the app's MULTI (dedicated connections only).
    in_multi: bool,
    /// Subscribed, monitoring or replies off: every byte goes to a sink.
    streaming: bool,
    /// The stream is one the session renews (see `Op::Stream`).
    renewable: bool,
    /// The stream got bytes since its last `Op::Stream` or `Op::Write`: the
    /// replies to what the app sent (a SUBSCRIBE's confirmation) reached it
    /// (on a busy channel, messages may come first: a heuristic).
    stream_fed: bool,
    /// The credential changed while an `AUTH` could not be sent.
    reauth_due: bool,
    /// A streaming connection to close for a fresh one (new credential).
    renew: bool,
    /// `AUTH` replies that were errors since the last success.
    reauth_failures: u32,
}

impl DriverState {
    /// Notes what the server will owe for `op` and queues its bytes. Bytes
    /// are written only after this, so no reply can arrive unexpected.
    fn register(&mut self, op: Op, settings: &DriverSettings, now: Instant) {
        let bytes = match op {
            Op::Request {
                bytes,
                replies,
                blocking,
                tx,
            } => {
                let deadline = (!blocking).then(|| crate::clock::after(now, settings.timeout));
                self.queue.push_back(Pending::Replies {
                    count: replies,
                    deadline,
                    tx,
                });
                bytes
            }
            Op::Stream { bytes, sink, renew } => {
                self.queue.push_back(Pending::Stream(sink));
                self.streaming = true;
                self.renewable = renew;
                self.stream_fed = false;
                bytes
            }
            Op::Write(bytes) => {
                // Awaits an answer too (a further SUBSCRIBE's confirmation).
                self.stream_fed = false;
                bytes
            }
            Op::Switch(protocol) => {
                self.queue.push_back(Pending::Switch(protocol));
                return;
            }
        };
        if settings.dedicated && !self.streaming {
            self.in_multi = transaction_open_after(self.in_multi, &bytes);
        }
        self.out.push(bytes);
    }

    /// The server refused a re-`AUTH`. The connection keeps the session it
    /// authenticated before; the credential source is asked for a fresh
    /// credential once (whose arrival triggers another `AUTH`), after which
    /// the refusal is only reported.
    fn reauth_refused(&mut self, reply: &[u8], settings: &DriverSettings) {
        self.reauth_failures += 1;
        let text = String::from_utf8_lossy(reply.get(1..).unwrap_or_default());
        let text = text.trim_end();
        warn!(upstream = %settings.id, reply = %text, attempt = self.reauth_failures, "the upstream refused the refreshed credential");
        if self.reauth_failures == 1 {
            if let Some(connector) = &settings.reauth {
                connector.refresh_credential();
            }
        }
    }

    /// Sends `AUTH` with the current credential between two batches, unless
    /// that would land inside the app's MULTI (then after its EXEC) or on a
    /// streaming connection, whose replies no longer pair with requests
    /// (it keeps the session it authenticated; see the README).
    fn try_reauth(&mut self, settings: &DriverSettings) {
        let Some(connector) = &settings.reauth else {
            self.reauth_due = false;
            return;
        };
        if self.in_multi {
            return;
        }
        if self.streaming {
            // Replies no longer pair with requests, so an AUTH reply could
            // not be told from the stream: a dedicated subscriber is
            // replaced instead, and its session subscribes again: once
            // the server answered what started the stream and all the app
            // sent is written (the session resubscribes quietly).
            if self.renewable && (!self.stream_fed || !self.out.is_empty()) {
                return;
            }
            if let (Some(renewed), true) = (&settings.renewed, self.renewable) {
                renewed.store(true, Ordering::Relaxed);
                self.renew = true;
            }
            self.reauth_due = false;
            return;
        }
        self.reauth_due = false;
        match connector.auth_command() {
            Ok(Some(command)) => {
                debug!(upstream = %settings.id, "re-authenticating with the refreshed credential");
                self.queue.push_back(Pending::Reauth);
                self.out.push(command);
                super::metrics::RedisMetrics::add(&connector.metrics.reauths);
            }
            Ok(None) => {}
            Err(e) => warn!(upstream = %settings.id, error = %e, "cannot re-authenticate"),
        }
    }

    /// Writes first (requests out as soon as possible), then new ops (only
    /// while the outgoing buffer is not full), then replies, then the timer.
    fn poll_event<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut S,
        ops: &mut mpsc::UnboundedReceiver<Op>,
        timer: &mut Pin<&mut tokio::time::Sleep>,
        timer_armed: bool,
        watches: &mut Watches,
    ) -> Poll<Event> {
        if !self.out.is_empty() {
            if let Poll::Ready(r) = Pin::new(&mut *stream).poll_write(cx, self.out.chunk()) {
                return Poll::Ready(Event::Wrote(r));
            }
        }
        if !self.ops_done && !self.draining && self.out.len() < MAX_WRITE_GATHER {
            if let Poll::Ready(op) = ops.poll_recv(cx) {
                return Poll::Ready(Event::Op(op));
            }
        }
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
            self.buf.reserve(READ_CHUNK.max(self.buf.len() / 2));
        }
        let read = stream.read_buf(&mut self.buf);
        tokio::pin!(read);
        if let Poll::Ready(r) = read.poll(cx) {
            return Poll::Ready(Event::Read(r));
        }
        if timer_armed && timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Event::Timer);
        }
        if let Some(change) = &mut watches.credential {
            if let Poll::Ready(changes) = change.as_mut().poll(cx) {
                return Poll::Ready(Event::CredentialChanged(changes));
            }
        }
        if let Some(change) = &mut watches.address {
            if let Poll::Ready(watch) = change.as_mut().poll(cx) {
                return Poll::Ready(Event::AddressesChanged(watch));
            }
        }
        Poll::Pending
    }
}
