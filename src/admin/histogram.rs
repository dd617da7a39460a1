//! A latency histogram cheap enough for the request path, rendered as a
//! Prometheus histogram (`_bucket{le=…}`, `_sum`, `_count`).
//!
//! Buckets are fixed, 25 µs to 10 s in 1-2.5-5 steps: a sidecar on
//! loopback answers in tens of microseconds when all is well, and a
//! request that takes seconds is an upstream or network problem whose
//! exact duration matters less than that it is there.
//!
//! One [`Histogram`] is one shard: an observation is a few compares to
//! find the bucket and two relaxed atomic adds, no lock, no allocation.
//! Keep one shard per worker thread (attache's workers are single-threaded
//! runtimes, so a worker's shard is written by that worker only and its
//! cache lines never bounce between cores), and add the shards'
//! [`HistogramSnapshot`]s when rendering.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the finite buckets, in microseconds; a last, implicit
/// bucket (`le="+Inf"`) takes everything above.
pub(crate) const BOUNDS_MICROS: [u64; 19] = [
    25,
    50,
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    u64::MAX,
];

/// Buckets, the `+Inf` one included.
const BUCKETS: usize = BOUNDS_MICROS.len();

/// One shard of a latency histogram.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    /// Observations per bucket (not cumulative: each lands in one).
    counts: [AtomicU64; BUCKETS],
    /// Sum of observations, in nanoseconds (overflows after 584 years).
    sum_nanos: AtomicU64,
}

// `observe` is for callers that time one request at a time (the HTTP
// proxy); the Redis side counts batches (`observe_n`).
impl Histogram {
    /// Records one observation.
    pub(crate) fn observe(&self, elapsed: Duration) {
        self.observe_n(elapsed, 1);
    }

    /// Records one observation of `micros` microseconds.
    #[cfg(test)]
    pub(crate) fn observe_micros(&self, micros: u64) {
        self.record(micros, micros.saturating_mul(1_000), 1);
    }

    /// Records `n` observations of the same duration (the commands of a
    /// pipelined batch, answered together), with the cost of one.
    pub(crate) fn observe_n(&self, elapsed: Duration, n: u64) {
        // Seconds and nanoseconds apart: no 128-bit arithmetic on this path.
        let secs = elapsed.as_secs();
        let subsec = u64::from(elapsed.subsec_nanos());
        let micros = secs
            .saturating_mul(1_000_000)
            .saturating_add(subsec / 1_000);
        let nanos = secs.saturating_mul(1_000_000_000).saturating_add(subsec);
        self.record(micros, nanos.saturating_mul(n), n);
    }

    fn record(&self, micros: u64, sum_nanos: u64, n: u64) {
        // Most observations are fast: a linear scan from the smallest
        // bucket ends after a few well-predicted compares. `u64::MAX` as the
        // last bound makes the scan always find one.
        let bucket = BOUNDS_MICROS
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(BUCKETS - 1);
        self.counts[bucket].fetch_add(n, Ordering::Relaxed);
        self.sum_nanos.fetch_add(sum_nanos, Ordering::Relaxed);
    }

    /// The shard's counts now.
    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        let mut snapshot = HistogramSnapshot::default();
        for (into, from) in snapshot.counts.iter_mut().zip(&self.counts) {
            *into = from.load(Ordering::Relaxed);
        }
        snapshot.sum_nanos = self.sum_nanos.load(Ordering::Relaxed);
        snapshot
    }
}

/// A histogram's counts at one moment; shards add up with [`Self::add`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct HistogramSnapshot {
    counts: [u64; BUCKETS],
    sum_nanos: u64,
}

impl HistogramSnapshot {
    /// Adds another shard's counts.
    pub(crate) fn add(&mut self, other: &HistogramSnapshot) {
        for (into, from) in self.counts.iter_mut().zip(&other.counts) {
            *into = into.wrapping_add(*from);
        }
        self.sum_nanos = self.sum_nanos.wrapping_add(other.sum_nanos);
    }

    /// Observations in total (`_count`).
    pub(crate) fn count(&self) -> u64 {
        self.counts
            .iter()
            .fold(0, |total, c| total.wrapping_add(*c))
    }

    /// The sum of observations, in seconds (`_sum`).
    pub(crate) fn sum_seconds(&self) -> f64 {
        self.sum_nanos as f64 / 1e9
    }

    /// Writes the `name_bucket`, `name_sum` and `name_count` samples, each
    /// with `labels` (`listener="cache",family="string"`, or empty). The
    /// caller writes the family's `# HELP` and `# TYPE name histogram`.
    pub(crate) fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (bound, count) in BOUNDS_MICROS.iter().zip(&self.counts) {
            cumulative = cumulative.wrapping_add(*count);
            let le = match *bound {
                u64::MAX => "+Inf".to_owned(),
                micros => format_seconds(micros),
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let braced = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braced} {}", self.sum_seconds());
        let _ = writeln!(out, "{name}_count{braced} {cumulative}");
    }
}

/// `micros` as decimal seconds without float noise (`25` → `0.000025`).
fn format_seconds(micros: u64) -> String {
    let (whole, frac) = (micros / 1_000_000, micros % 1_000_000);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:06}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(text: &str) -> Vec<(String, u64)> {
        text.lines()
            .filter(|l| l.starts_with("lat_bucket"))
            .map(|l| {
                let le = l.split("le=\"").nth(1).unwrap().split('"').next().unwrap();
                let value = l.rsplit(' ').next().unwrap().parse().unwrap();
                (le.to_owned(), value)
            })
            .collect()
    }

    #[test]
    fn a_value_on_a_bound_counts_in_that_bucket_and_one_above_in_the_next() {
        let h = Histogram::default();
        h.observe_micros(25);
        h.observe_micros(26);
        h.observe(Duration::from_nanos(25_999)); // 25 µs, truncated
        let s = h.snapshot();
        assert_eq!(s.counts[0], 2);
        assert_eq!(s.counts[1], 1);
        assert_eq!(s.count(), 3);
    }

    #[test]
    fn zero_and_huge_values_land_in_the_first_and_the_infinite_bucket() {
        let h = Histogram::default();
        h.observe(Duration::ZERO);
        h.observe_micros(10_000_000);
        h.observe_micros(10_000_001);
        h.observe(Duration::MAX);
        let s = h.snapshot();
        assert_eq!(s.counts[0], 1);
        assert_eq!(s.counts[BUCKETS - 2], 1);
        assert_eq!(s.counts[BUCKETS - 1], 2);
    }

    #[test]
    fn sum_is_in_seconds_and_shards_add_up() {
        let a = Histogram::default();
        let b = Histogram::default();
        a.observe(Duration::from_micros(1_500));
        b.observe_micros(500);
        b.observe_n(Duration::from_millis(2), 3);
        let mut total = a.snapshot();
        total.add(&b.snapshot());
        assert_eq!(total.count(), 5);
        assert!((total.sum_seconds() - 0.008).abs() < 1e-12);
    }

    #[test]
    fn renders_cumulative_buckets_with_exact_bounds_then_sum_and_count() {
        let h = Histogram::default();
        h.observe_micros(10);
        h.observe_micros(300);
        h.observe_micros(300);
        h.observe(Duration::from_secs(11));
        let mut out = String::new();
        h.snapshot().render(&mut out, "lat", "listener=\"cache\"");
        let b = buckets(&out);
        assert_eq!(b.len(), BUCKETS);
        assert_eq!(b[0], ("0.000025".to_owned(), 1));
        assert_eq!(b[3], ("0.00025".to_owned(), 1));
        assert_eq!(b[4], ("0.0005".to_owned(), 3));
        assert_eq!(b[14], ("1".to_owned(), 3));
        assert_eq!(b[17], ("10".to_owned(), 3));
        assert_eq!(b[18], ("+Inf".to_owned(), 4));
        assert!(b.windows(2).all(|w| w[0].1 <= w[1].1));
        assert!(out.contains("lat_bucket{listener=\"cache\",le=\"2.5\"} 3\n"));
        assert!(out.contains("lat_sum{listener=\"cache\"} 11.00061\n"));
        assert!(out.contains("lat_count{listener=\"cache\"} 4\n"));
    }

    #[test]
    fn renders_without_labels() {
        let mut out = String::new();
        HistogramSnapshot::default().render(&mut out, "lat", "");
        assert!(out.contains("lat_bucket{le=\"+Inf\"} 0\n"));
        assert!(out.contains("lat_sum 0\n"));
        assert!(out.contains("lat_count 0\n"));
    }
}
