//! What a run (closed loop, or paced: `paced`) measured: per connection, then merged. The RESP
//! and the HTTP generators count the same way, so that the two benches'
//! numbers mean the same.

use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The part of a run that is recorded: after the warm-up, before the stop.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    record_from: Instant,
    stop: Instant,
}

impl Window {
    /// From now: `warmup` unrecorded, then `duration` recorded.
    pub(crate) fn starting_now(warmup: Duration, duration: Duration) -> Self {
        let record_from = Instant::now() + warmup;
        Self {
            record_from,
            stop: record_from + duration,
        }
    }

    /// Whether a request sent at `now` would end past the window: the
    /// connection stops sending.
    pub(crate) fn is_over(&self, now: Instant) -> bool {
        now >= self.stop
    }

    /// Whether `t` is in the recorded part.
    pub(crate) fn contains(&self, t: Instant) -> bool {
        t >= self.record_from && t < self.stop
    }
}

/// Replies (or responses) counted and their latencies.
pub(crate) struct LoadOutcome {
    /// Received inside the measured window.
    pub(crate) measured: u64,
    /// Received during warm-up and the window: what the target's CPU time
    /// was spent on.
    pub(crate) total: u64,
    /// Error replies, or responses other than the expected one (counted in
    /// the totals above).
    pub(crate) errors: u64,
    /// Paced runs only: requests due in the measured window that were sent
    /// late, because the previous reply on their connection was not back.
    pub(crate) late: u64,
    /// Per-request latency in nanoseconds, measured window only.
    latency_ns: Histogram<u64>,
}

impl LoadOutcome {
    pub(crate) fn new() -> Self {
        Self {
            measured: 0,
            total: 0,
            errors: 0,
            late: 0,
            // 100 ns to 10 s at 3 significant digits: ~150 KiB each.
            latency_ns: Histogram::new_with_bounds(100, 10_000_000_000, 3)
                .expect("static histogram bounds"),
        }
    }

    /// One reply to a request sent at `sent`, complete at `arrived`; its
    /// latency is recorded if both are inside `window`.
    pub(crate) fn record(&mut self, window: &Window, sent: Instant, arrived: Instant, error: bool) {
        self.total += 1;
        self.errors += u64::from(error);
        if window.contains(sent) && window.contains(arrived) {
            self.measured += 1;
            self.record_latency(sent, arrived);
        }
    }

    /// Adds one latency, from `from` to `to`, to the histogram.
    pub(crate) fn record_latency(&mut self, from: Instant, to: Instant) {
        let ns = to.saturating_duration_since(from).as_nanos() as u64;
        self.latency_ns.saturating_record(ns.max(100));
    }

    pub(crate) fn quantile_us(&self, q: f64) -> f64 {
        self.latency_ns.value_at_quantile(q) as f64 / 1000.0
    }

    /// The connections' outcomes merged, or the first error.
    pub(crate) async fn join<E>(tasks: Vec<JoinHandle<Result<Self, E>>>) -> Result<Self, E> {
        let mut outcome = Self::new();
        for task in tasks {
            let conn = task.await.expect("load task panicked")?;
            outcome.measured += conn.measured;
            outcome.total += conn.total;
            outcome.errors += conn.errors;
            outcome.late += conn.late;
            outcome
                .latency_ns
                .add(&conn.latency_ns)
                .expect("histograms share bounds");
        }
        Ok(outcome)
    }
}
