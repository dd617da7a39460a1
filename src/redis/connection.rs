//! One upstream socket carrying many requests: the writer half sends
//! batches of request frames as they come (several batches per syscall when
//! they queue up), the reader half matches replies to batches strictly in
//! order and hands each batch its replies as one zero-copy `Bytes`.
//!
//! The same driver serves shared multiplexed connections (many app
//! connections) and dedicated ones (one pinned app connection).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use attache_resp::frame;
use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::debug;

use super::connector::Protocol;
use super::error::{UpstreamError, UpstreamId};
use crate::socket::{read_some, write_all};

/// Where a batch's replies go: all of them at once, in one buffer.
pub(crate) type ReplyTx = oneshot::Sender<Result<Bytes, UpstreamError>>;
pub(crate) type ReplyRx = oneshot::Receiver<Result<Bytes, UpstreamError>>;

/// Read buffer growth step.
const READ_CHUNK: usize = 16 * 1024;
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
    },
    /// Bytes for a connection already streaming.
    Write(Bytes),
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

/// What the reader half waits for, in the order the writer sent it.
enum Pending {
    Replies {
        count: u32,
        deadline: Option<Instant>,
        tx: ReplyTx,
    },
    Stream(mpsc::Sender<Bytes>),
}

/// Settings of one driver.
#[derive(Clone)]
pub(crate) struct DriverSettings {
    pub(crate) id: UpstreamId,
    pub(crate) protocol: Protocol,
    pub(crate) timeout: Duration,
}

/// Runs `stream` until it fails, serving `ops`. Returns why it stopped
/// (`None` when every handle was dropped). Every request not answered by then
/// has been failed with that error.
pub(crate) async fn drive(
    stream: TcpStream,
    first: Option<Op>,
    ops: &mut mpsc::UnboundedReceiver<Op>,
    in_flight: Arc<AtomicUsize>,
    settings: DriverSettings,
) -> Option<UpstreamError> {
    let stream = Arc::new(stream);
    let (read, write) = (stream.clone(), stream);
    let (pending_tx, pending_rx) = mpsc::unbounded_channel();
    let (writer_failed_tx, writer_failed_rx) = oneshot::channel();
    let reader = tokio::spawn(read_replies(
        read,
        pending_rx,
        writer_failed_rx,
        in_flight,
        settings.clone(),
    ));
    let outcome = write_requests(write, first, ops, pending_tx, &settings).await;
    match outcome {
        // All handles dropped: let the reader finish what is in flight.
        Ok(()) => reader.await.ok().flatten(),
        Err(WriterStop::Failed(e)) => {
            let _ = writer_failed_tx.send(e);
            reader.await.ok().flatten()
        }
        Err(WriterStop::ReaderGone) => reader.await.ok().flatten(),
    }
}

enum WriterStop {
    Failed(UpstreamError),
    ReaderGone,
}

async fn write_requests(
    write: Arc<TcpStream>,
    mut first: Option<Op>,
    ops: &mut mpsc::UnboundedReceiver<Op>,
    pending: mpsc::UnboundedSender<Pending>,
    settings: &DriverSettings,
) -> Result<(), WriterStop> {
    let mut gathered = BytesMut::new();
    loop {
        let first = match first.take() {
            Some(op) => op,
            None => tokio::select! {
                op = ops.recv() => match op {
                    Some(op) => op,
                    None => return Ok(()),
                },
                _ = pending.closed() => return Err(WriterStop::ReaderGone),
            },
        };
        let mut single = Some(register(first, &pending, settings)?);
        // Gather whatever else is already queued into the same write.
        while gathered.len() < MAX_WRITE_GATHER {
            let Ok(op) = ops.try_recv() else { break };
            let bytes = register(op, &pending, settings)?;
            if let Some(first) = single.take() {
                gathered.extend_from_slice(&first);
            }
            gathered.extend_from_slice(&bytes);
        }
        let result = match single {
            Some(bytes) => write_all(&write, &bytes).await,
            None => {
                let r = write_all(&write, &gathered).await;
                gathered.clear();
                if gathered.capacity() > 4 * MAX_WRITE_GATHER {
                    gathered = BytesMut::new();
                }
                r
            }
        };
        if let Err(e) = result {
            return Err(WriterStop::Failed(UpstreamError::Io(
                settings.id.clone(),
                e.to_string().into(),
            )));
        }
    }
}

/// Tells the reader what to expect for `op` (before its bytes are written,
/// so a reply can never arrive unexpected) and returns the bytes to write.
fn register(
    op: Op,
    pending: &mpsc::UnboundedSender<Pending>,
    settings: &DriverSettings,
) -> Result<Bytes, WriterStop> {
    let (bytes, entry) = match op {
        Op::Request {
            bytes,
            replies,
            blocking,
            tx,
        } => {
            let deadline = (!blocking).then(|| Instant::now() + settings.timeout);
            (
                bytes,
                Some(Pending::Replies {
                    count: replies,
                    deadline,
                    tx,
                }),
            )
        }
        Op::Stream { bytes, sink } => (bytes, Some(Pending::Stream(sink))),
        Op::Write(bytes) => (bytes, None),
    };
    if let Some(entry) = entry {
        pending.send(entry).map_err(|_| WriterStop::ReaderGone)?;
    }
    Ok(bytes)
}

async fn read_replies(
    read: Arc<TcpStream>,
    mut pending_rx: mpsc::UnboundedReceiver<Pending>,
    mut writer_failed: oneshot::Receiver<UpstreamError>,
    in_flight: Arc<AtomicUsize>,
    settings: DriverSettings,
) -> Option<UpstreamError> {
    let mut queue: VecDeque<Pending> = VecDeque::new();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // Progress through the front batch's replies: bytes and frames seen.
    let mut scanned = 0usize;
    let mut frames = 0u32;
    let mut writer_done = false;
    let error = loop {
        while let Ok(p) = pending_rx.try_recv() {
            queue.push_back(p);
        }
        if let Err(e) = deliver(
            &mut buf,
            &mut queue,
            &mut scanned,
            &mut frames,
            &in_flight,
            &settings,
        )
        .await
        {
            break e;
        }
        // Every handle is gone: finish what is owed, then close. A stream
        // owes nothing (a subscriber whose app left), so it closes at once.
        if writer_done && queue.iter().all(|p| matches!(p, Pending::Stream(_))) {
            return None;
        }
        let deadline = match queue.front() {
            Some(Pending::Replies { deadline, .. }) => *deadline,
            _ => None,
        };
        tokio::select! {
            read = read_some(&read, &mut buf, READ_CHUNK) => match read {
                Ok(0) => break UpstreamError::Closed(settings.id.clone()),
                Ok(_) => {}
                Err(e) => break UpstreamError::Io(settings.id.clone(), e.to_string().into()),
            },
            p = pending_rx.recv(), if !writer_done => match p {
                Some(p) => queue.push_back(p),
                None => writer_done = true,
            },
            _ = sleep_until(deadline) => break UpstreamError::Timeout(settings.id.clone(), settings.timeout),
            e = &mut writer_failed, if !writer_done => match e {
                Ok(e) => break e,
                Err(_) => writer_done = true,
            },
        }
    };
    debug!(upstream = %settings.id, error = %error, "upstream connection failed");
    // Fail everything waiting, including requests the writer registered but
    // the reader had not picked up yet.
    pending_rx.close();
    while let Ok(p) = pending_rx.try_recv() {
        queue.push_back(p);
    }
    for p in queue {
        if let Pending::Replies { tx, .. } = p {
            in_flight.fetch_sub(1, Ordering::Relaxed);
            let _ = tx.send(Err(error.clone()));
        }
    }
    Some(error)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Hands complete replies in `buf` to the batches waiting for them.
async fn deliver(
    buf: &mut BytesMut,
    queue: &mut VecDeque<Pending>,
    scanned: &mut usize,
    frames: &mut u32,
    in_flight: &AtomicUsize,
    settings: &DriverSettings,
) -> Result<(), UpstreamError> {
    let resp3 = settings.protocol.is_resp3();
    let protocol_error = |e: frame::ProtocolError| {
        UpstreamError::Protocol(settings.id.clone(), e.to_string().into())
    };
    loop {
        match queue.front() {
            None => {
                // Nothing expected: only RESP3 pushes (e.g. a stray
                // invalidation) may arrive; drop them. Anything else means
                // the stream is out of step and cannot be trusted.
                while !buf.is_empty() {
                    match frame::reply_len(buf, resp3).map_err(protocol_error)? {
                        Some(n) if frame::is_push(buf) => {
                            let _ = buf.split_to(n);
                        }
                        Some(_) => {
                            return Err(UpstreamError::Protocol(
                                settings.id.clone(),
                                "reply to no request".into(),
                            ))
                        }
                        None => break,
                    }
                }
                return Ok(());
            }
            Some(Pending::Stream(sink)) => {
                if !buf.is_empty() {
                    let chunk = buf.split().freeze();
                    if sink.send(chunk).await.is_err() {
                        return Err(UpstreamError::Closed(settings.id.clone()));
                    }
                }
                return Ok(());
            }
            Some(Pending::Replies { count, .. }) => {
                let count = *count;
                while *frames < count {
                    let rest = &buf[*scanned..];
                    match frame::reply_len(rest, resp3).map_err(protocol_error)? {
                        Some(n) if resp3 && frame::is_push(rest) => {
                            // An out-of-band push inside a batch: cut it out.
                            let tail = buf.split_off(*scanned);
                            let mut tail = tail;
                            let _ = tail.split_to(n);
                            buf.unsplit(tail);
                        }
                        Some(n) => {
                            *scanned += n;
                            *frames += 1;
                        }
                        None => return Ok(()),
                    }
                }
                let replies = buf.split_to(*scanned).freeze();
                *scanned = 0;
                *frames = 0;
                if let Some(Pending::Replies { tx, .. }) = queue.pop_front() {
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                    // A closed receiver means the app left: its replies are
                    // consumed here and reach nobody.
                    let _ = tx.send(Ok(replies));
                }
            }
        }
    }
}
