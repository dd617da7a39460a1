//! The closed-loop load generator (the paced one is `paced`): each connection is a task that writes a
//! batch of `pipeline` commands in one syscall, reads until every reply is
//! back, records each request's latency, and repeats until the deadline.
//!
//! Nothing in the loop allocates: the batch is encoded once and only its key
//! digits are rewritten, the read buffer is reused, and each task records
//! into its own outcome (`outcome`), merged after the run.

use std::net::SocketAddr;
use std::time::Duration;

use futures::future::try_join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::outcome::{LoadOutcome, Window};
use crate::wire::{scan_reply, Batch, Keyspace, Op, Rng, UnexpectedReply};

/// What went wrong talking to a target.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error("{addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr}: {source}")]
    Protocol {
        addr: SocketAddr,
        source: UnexpectedReply,
    },
    #[error("{addr}: connection closed by the target")]
    Closed { addr: SocketAddr },
    #[error("{addr}: populating the keyspace: {reply}")]
    Populate { addr: SocketAddr, reply: String },
}

/// One run's load: identical for every target.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LoadSpec {
    pub(crate) op: Op,
    pub(crate) conns: usize,
    pub(crate) pipeline: usize,
    pub(crate) keyspace: Keyspace,
    pub(crate) value_size: usize,
    /// Load sent but not recorded, so the target's buffers and caches settle.
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    /// Paced (open loop) at this many requests per second in total, spread
    /// over the connections (pipeline 1; see `paced`); `None`: closed loop.
    pub(crate) rate: Option<f64>,
}

/// Opens `n` connections, at most 100 connecting at once, so a proxy's
/// listen backlog never overflows.
pub(crate) async fn connect_many(addr: SocketAddr, n: usize) -> Result<Vec<TcpStream>, LoadError> {
    let mut streams = Vec::with_capacity(n);
    while streams.len() < n {
        let chunk = (n - streams.len()).min(100);
        let connected = try_join_all((0..chunk).map(|_| async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok::<_, std::io::Error>(stream)
        }))
        .await
        .map_err(|source| LoadError::Io { addr, source })?;
        streams.extend(connected);
    }
    Ok(streams)
}

/// Opens `n` connections that each do one GET round trip (so the target has
/// set up its whole per-client state) and then stay silent.
pub(crate) async fn open_idle(
    addr: SocketAddr,
    n: usize,
    keyspace: Keyspace,
) -> Result<Vec<TcpStream>, LoadError> {
    let mut streams = connect_many(addr, n).await?;
    let batch = Batch::new(Op::Get, 1, keyspace, 0);
    for chunk in streams.chunks_mut(100) {
        try_join_all(
            chunk
                .iter_mut()
                .map(|s| round_trip(s, addr, &batch.bytes, 1)),
        )
        .await?;
    }
    Ok(streams)
}

/// Writes every key of the keyspace once through `addr`, so GETs hit.
pub(crate) async fn populate(
    addr: SocketAddr,
    keyspace: Keyspace,
    value_size: usize,
) -> Result<(), LoadError> {
    const DEPTH: usize = 100;
    let mut stream = connect_many(addr, 1).await?.remove(0);
    let mut batch = Batch::new(Op::Set, DEPTH, keyspace, value_size);
    let mut next = 0;
    while next < keyspace.size {
        for i in 0..DEPTH {
            // The last batch wraps around and rewrites a few early keys.
            batch.set_key(i, (next + i as u64) % keyspace.size);
        }
        let errors = round_trip(&mut stream, addr, &batch.bytes, DEPTH).await?;
        if errors > 0 {
            let reply = format!("{errors} of {DEPTH} SETs got an error reply");
            return Err(LoadError::Populate { addr, reply });
        }
        next += DEPTH as u64;
    }
    Ok(())
}

/// Writes `bytes` and reads `replies` replies; returns how many were errors.
async fn round_trip(
    stream: &mut TcpStream,
    addr: SocketAddr,
    bytes: &[u8],
    replies: usize,
) -> Result<u64, LoadError> {
    let io = |source| LoadError::Io { addr, source };
    stream.write_all(bytes).await.map_err(io)?;
    let mut reader = ReplyReader::new();
    let mut errors = 0;
    for _ in 0..replies {
        errors += u64::from(reader.next(stream, addr).await?.1);
    }
    Ok(errors)
}

/// Runs `spec` against `addr` and returns the merged measurements.
pub(crate) async fn run(addr: SocketAddr, spec: LoadSpec) -> Result<LoadOutcome, LoadError> {
    if let Some(rate) = spec.rate {
        return crate::paced::run(addr, spec, rate).await;
    }
    let streams = connect_many(addr, spec.conns).await?;
    // One start for all: connecting 50 sockets is not part of the load.
    let window = Window::starting_now(spec.warmup, spec.duration);
    let tasks = streams
        .into_iter()
        .enumerate()
        .map(|(i, stream)| tokio::spawn(drive(stream, addr, spec, i as u64 + 1, window)))
        .collect();
    LoadOutcome::join(tasks).await
}

/// One connection's closed loop.
async fn drive(
    mut stream: TcpStream,
    addr: SocketAddr,
    spec: LoadSpec,
    seed: u64,
    window: Window,
) -> Result<LoadOutcome, LoadError> {
    let mut rng = Rng::new(seed);
    let mut batch = Batch::new(spec.op, spec.pipeline, spec.keyspace, spec.value_size);
    let mut reader = ReplyReader::new();
    let mut out = LoadOutcome::new();
    loop {
        batch.draw_keys(&mut rng);
        let sent = Instant::now();
        if window.is_over(sent) {
            return Ok(out);
        }
        stream
            .write_all(&batch.bytes)
            .await
            .map_err(|source| LoadError::Io { addr, source })?;
        for _ in 0..spec.pipeline {
            let (arrived, is_error) = reader.next(&mut stream, addr).await?;
            out.record(&window, sent, arrived, is_error);
        }
    }
}

/// A reused read buffer that yields one reply at a time, with the instant
/// the read that completed it returned.
pub(crate) struct ReplyReader {
    buf: Box<[u8]>,
    head: usize,
    tail: usize,
    last_read: Instant,
}

impl ReplyReader {
    pub(crate) fn new() -> Self {
        Self {
            buf: vec![0; 64 * 1024].into_boxed_slice(),
            head: 0,
            tail: 0,
            last_read: Instant::now(),
        }
    }

    pub(crate) async fn next(
        &mut self,
        stream: &mut TcpStream,
        addr: SocketAddr,
    ) -> Result<(Instant, bool), LoadError> {
        loop {
            let scanned = scan_reply(&self.buf[self.head..self.tail])
                .map_err(|source| LoadError::Protocol { addr, source })?;
            if let Some(reply) = scanned {
                self.head += reply.len;
                return Ok((self.last_read, reply.is_error));
            }
            if self.head == self.tail {
                (self.head, self.tail) = (0, 0);
            } else if self.tail == self.buf.len() && self.head > 0 {
                self.buf.copy_within(self.head..self.tail, 0);
                (self.head, self.tail) = (0, self.tail - self.head);
            } else if self.tail == self.buf.len() {
                // Only values near the buffer's size get here: grow, once.
                let mut bigger = vec![0; self.buf.len() * 2].into_boxed_slice();
                bigger[..self.tail].copy_from_slice(&self.buf[..self.tail]);
                self.buf = bigger;
            }
            let n = stream
                .read(&mut self.buf[self.tail..])
                .await
                .map_err(|source| LoadError::Io { addr, source })?;
            if n == 0 {
                return Err(LoadError::Closed { addr });
            }
            self.tail += n;
            self.last_read = Instant::now();
        }
    }
}
