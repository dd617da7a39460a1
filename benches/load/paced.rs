//! The paced (open-loop) load generator: a total rate R spread evenly over
//! the connections, pipeline 1. Request k of connection c (of n) is due at
//! t0 + (k·n + c) / R: every connection keeps its own schedule, one request
//! per n / R, each offset by c / R so that they take turns.
//!
//! A pacer thread (not the tokio runtime, whose timers tick in whole
//! milliseconds) sleeps until each request's intended time, with its timer
//! slack lowered to 1 µs when the kernel lets it, and writes the request
//! itself. If the connection's previous reply is not back yet, the request
//! is late: the connection's reader task sends it as soon as that reply
//! arrives. Either way latency is measured from the **intended** time, so a
//! stall of the target counts against every request it delays (no
//! coordinated omission), and late requests are counted.
//!
//! Who writes is decided by one atomic counter per connection, `due`: the
//! requests whose time has come and whose reply has not. The pacer
//! increments it; only a 0 → 1 step sends (nothing is in flight). The
//! reader decrements it after each reply; if requests are still due, it
//! sends the next one. So exactly one side writes each request, and never
//! while another is in flight.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::loadgen::{connect_many, LoadError, LoadSpec, ReplyReader};
use crate::outcome::{LoadOutcome, Window};
use crate::wire::{Batch, Rng};

/// When each request is due.
#[derive(Clone, Copy, Debug)]
struct Schedule {
    start: Instant,
    /// Requests per second, all connections together.
    rate: f64,
    conns: u64,
}

impl Schedule {
    /// The intended send time of request `k` of connection `conn`.
    fn intended(&self, conn: u64, k: u64) -> Instant {
        let slot = k * self.conns + conn;
        self.start + Duration::from_secs_f64(slot as f64 / self.rate)
    }
}

/// Runs `spec` (pipeline 1) against `addr` at `rate` requests per second
/// in total, and returns the merged measurements; their `late` counts the
/// requests due in the measured window that were sent late.
pub(crate) async fn run(
    addr: SocketAddr,
    spec: LoadSpec,
    rate: f64,
) -> Result<LoadOutcome, LoadError> {
    let io = |source| LoadError::Io { addr, source };
    let streams = connect_many(addr, spec.conns).await?;
    let window = Window::starting_now(spec.warmup, spec.duration);
    let schedule = Schedule {
        start: Instant::now(),
        rate,
        conns: streams.len() as u64,
    };
    // The pacer drops the sender when it ends (its work done, or failed):
    // readers then finish the requests in flight and stop.
    let (stop_tx, stop_rx) = watch::channel(());
    let mut writers = Vec::with_capacity(streams.len());
    let mut tasks = Vec::with_capacity(streams.len());
    for (conn, stream) in streams.into_iter().enumerate() {
        // A second handle on the same socket, for the pacer thread.
        let std_stream = stream.into_std().map_err(io)?;
        let writer = std_stream.try_clone().map_err(io)?;
        let stream = TcpStream::from_std(std_stream).map_err(io)?;
        let due = Arc::new(AtomicU32::new(0));
        let seed = conn as u64 + 1;
        writers.push(Writer {
            stream: writer,
            due: due.clone(),
            batch: Batch::new(spec.op, 1, spec.keyspace, spec.value_size),
            rng: Rng::new(seed),
        });
        let reader = Reader {
            conn: conn as u64,
            schedule,
            due,
            window,
            stop: stop_rx.clone(),
        };
        tasks.push(tokio::spawn(reader.drive(stream, addr, spec, seed)));
    }
    drop(stop_rx);
    let pacer = std::thread::Builder::new()
        .name("paced-load".into())
        .spawn(move || pace(writers, schedule, window, stop_tx))
        .map_err(io)?;
    let outcome = LoadOutcome::join(tasks).await?;
    // Every reader has seen the pacer end: joining does not block.
    match pacer.join() {
        Ok(Ok(())) => Ok(outcome),
        Ok(Err(source)) => Err(io(source)),
        Err(_) => panic!("the pacer thread panicked"),
    }
}

/// The pacer's side of a connection.
struct Writer {
    stream: std::net::TcpStream,
    due: Arc<AtomicU32>,
    batch: Batch,
    rng: Rng,
}

impl Writer {
    fn send(&mut self) -> std::io::Result<()> {
        self.batch.draw_keys(&mut self.rng);
        // The socket is non-blocking (tokio's), but one small request with
        // nothing else in flight always fits its send buffer.
        let mut bytes = &self.batch.bytes[..];
        while !bytes.is_empty() {
            match self.stream.write(bytes) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::yield_now();
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The pacer thread: every request's turn, in time order, until the end
/// of the window.
fn pace(
    mut writers: Vec<Writer>,
    schedule: Schedule,
    window: Window,
    _stop: watch::Sender<()>,
) -> std::io::Result<()> {
    lower_timer_slack();
    let conns = writers.len() as u64;
    for k in 0u64.. {
        for conn in 0..conns {
            let intended = schedule.intended(conn, k);
            if window.is_over(intended) {
                return Ok(());
            }
            let now = Instant::now();
            if intended > now {
                std::thread::sleep(intended - now);
            }
            let writer = &mut writers[conn as usize];
            if writer.due.fetch_add(1, Ordering::AcqRel) == 0 {
                writer.send()?;
            }
        }
    }
    Ok(())
}

/// Sets this thread's timer slack to 1 µs (the default, 50 µs, would delay
/// every wake-up by about that much). Not fatal: without it requests are
/// sent a little after their time, which the latency then includes.
fn lower_timer_slack() {
    // /proc/thread-self → "PID/task/TID"; /proc/TID/timerslack_ns is the
    // thread's own.
    let Ok(link) = std::fs::read_link("/proc/thread-self") else {
        return;
    };
    if let Some(tid) = link.file_name() {
        let path = std::path::Path::new("/proc")
            .join(tid)
            .join("timerslack_ns");
        let _ = std::fs::write(path, "1000");
    }
}

/// The reader task's side of a connection.
struct Reader {
    conn: u64,
    schedule: Schedule,
    due: Arc<AtomicU32>,
    window: Window,
    stop: watch::Receiver<()>,
}

impl Reader {
    async fn drive(
        mut self,
        mut stream: TcpStream,
        addr: SocketAddr,
        spec: LoadSpec,
        seed: u64,
    ) -> Result<LoadOutcome, LoadError> {
        // Its own keys: the reader's sends are the late ones.
        let mut rng = Rng::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut batch = Batch::new(spec.op, 1, spec.keyspace, spec.value_size);
        let mut replies = ReplyReader::new();
        let mut out = LoadOutcome::new();
        let mut stopped = false;
        let mut k = 0u64;
        loop {
            let reply = if stopped {
                // The pacer has ended: only the requests in flight remain.
                if self.due.load(Ordering::Acquire) == 0 {
                    return Ok(out);
                }
                replies.next(&mut stream, addr).await?
            } else {
                tokio::select! {
                    reply = replies.next(&mut stream, addr) => reply?,
                    _ = self.stop.changed() => {
                        stopped = true;
                        continue;
                    }
                }
            };
            let (arrived, is_error) = reply;
            let intended = self.schedule.intended(self.conn, k);
            record(&mut out, &self.window, intended, arrived, is_error);
            k += 1;
            if self.due.fetch_sub(1, Ordering::AcqRel) > 1 {
                // The next request's time has passed: send it now, late.
                let next = self.schedule.intended(self.conn, k);
                out.late += u64::from(self.window.contains(next));
                batch.draw_keys(&mut rng);
                stream
                    .write_all(&batch.bytes)
                    .await
                    .map_err(|source| LoadError::Io { addr, source })?;
            }
        }
    }
}

/// A paced request's reply: its latency is from `intended`, the time the
/// schedule meant it to be sent, and is recorded if `intended` is inside the
/// window, whenever the reply arrived (the run waits for it). The reply
/// counts towards the window's rate if it arrived inside.
fn record(
    out: &mut LoadOutcome,
    window: &Window,
    intended: Instant,
    arrived: Instant,
    error: bool,
) {
    out.total += 1;
    out.errors += u64::from(error);
    out.measured += u64::from(window.contains(arrived));
    if window.contains(intended) {
        out.record_latency(intended, arrived);
    }
}
