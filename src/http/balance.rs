//! Which of an upstream's addresses takes the next request, and which are
//! out of rotation.
//!
//! **Power of two choices**: two addresses are drawn at random and the one
//! with fewer requests in flight wins; on a tie, the one with the lower
//! latency (an EWMA of the time to response headers, weight
//! [`EWMA_WEIGHT`]). This spreads load nearly as well as "least loaded"
//! without every worker converging on the same address.
//!
//! **Ejection**: after [`EJECT_AFTER`] consecutive connect failures or
//! lost connections, an address is out of rotation for [`EJECT_BASE`],
//! doubling with each ejection in a row up to [`EJECT_MAX`]; one success
//! resets both. The last address in rotation is never ejected: when every
//! address fails, attache keeps trying them rather than failing fast on a
//! guess.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::client::conn::http2;

use super::body::Body;
use super::h1::H1Connection;

/// Consecutive failures that eject an address.
pub(crate) const EJECT_AFTER: u32 = 3;
/// How long a first ejection lasts.
pub(crate) const EJECT_BASE: Duration = Duration::from_secs(5);
/// The longest ejection.
pub(crate) const EJECT_MAX: Duration = Duration::from_secs(60);
/// Weight of a new latency sample in the EWMA.
pub(crate) const EWMA_WEIGHT: f64 = 0.3;

/// One resolved address of an upstream, with its connections and health.
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    in_flight: AtomicUsize,
    /// EWMA of the time to response headers, in microseconds (0: none yet).
    latency_micros: AtomicU64,
    failures: AtomicU32,
    ejections_in_a_row: AtomicU32,
    ejected_until: Mutex<Option<Instant>>,
    /// Idle HTTP/1 connections, most recently used last.
    pub(crate) idle: Mutex<Vec<(H1Connection, Instant)>>,
    /// The multiplexed HTTP/2 connection, when the upstream chose h2.
    pub(crate) h2: Mutex<Option<http2::SendRequest<Body>>>,
}

/// What a failure did to the endpoint.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ejected {
    No,
    For(Duration),
}

impl Endpoint {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            in_flight: AtomicUsize::new(0),
            latency_micros: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            ejections_in_a_row: AtomicU32::new(0),
            ejected_until: Mutex::new(None),
            idle: Mutex::default(),
            h2: Mutex::default(),
        }
    }

    fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| now < until)
    }

    fn load(&self) -> (usize, u64) {
        (
            self.in_flight.load(Ordering::Relaxed),
            self.latency_micros.load(Ordering::Relaxed),
        )
    }

    /// A request starts on this endpoint; the guard ends it.
    pub(crate) fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Response headers arrived after `elapsed`.
    pub(crate) fn succeeded(&self, elapsed: Duration) {
        self.failures.store(0, Ordering::Relaxed);
        self.ejections_in_a_row.store(0, Ordering::Relaxed);
        let sample = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let old = self.latency_micros.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            (old as f64 * (1.0 - EWMA_WEIGHT) + sample as f64 * EWMA_WEIGHT) as u64
        };
        self.latency_micros.store(new, Ordering::Relaxed);
    }

    /// Consecutive failures so far (0 after a success or an ejection).
    pub(crate) fn failure_streak(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// A connect failed or a connection was lost. `others_in_rotation`:
    /// whether another address of the upstream would still take requests.
    pub(crate) fn failed(&self, others_in_rotation: bool) -> Ejected {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < EJECT_AFTER || !others_in_rotation {
            return Ejected::No;
        }
        self.failures.store(0, Ordering::Relaxed);
        let row = self.ejections_in_a_row.fetch_add(1, Ordering::Relaxed);
        let period = EJECT_BASE.saturating_mul(1 << row.min(8)).min(EJECT_MAX);
        *self.ejected_until.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + period);
        // Its connections go with it: they would be picked up again first.
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
        *self.h2.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ejected::For(period)
    }
}

/// Counts a request in flight on an endpoint until dropped.
pub(crate) struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Picks an endpoint by power of two choices among those in rotation,
/// avoiding `avoid` (the address that just failed) when there is another.
/// `None` only when `endpoints` is empty.
pub(crate) fn pick(
    endpoints: &[Arc<Endpoint>],
    avoid: Option<SocketAddr>,
) -> Option<Arc<Endpoint>> {
    // The common case (one address): nothing to choose.
    if let [only] = endpoints {
        return Some(only.clone());
    }
    let now = Instant::now();
    let healthy: Vec<&Arc<Endpoint>> = endpoints.iter().filter(|e| !e.is_ejected(now)).collect();
    let pool: Vec<&Arc<Endpoint>> = if healthy.is_empty() {
        endpoints.iter().collect()
    } else {
        healthy
    };
    let preferred: Vec<&Arc<Endpoint>> = pool
        .iter()
        .copied()
        .filter(|e| Some(e.addr) != avoid)
        .collect();
    let choices = if preferred.is_empty() {
        pool
    } else {
        preferred
    };
    match choices.len() {
        0 => None,
        1 => Some(choices[0].clone()),
        n => {
            let a = fastrand::usize(..n);
            let b = (a + 1 + fastrand::usize(..n - 1)) % n;
            let (x, y) = (choices[a], choices[b]);
            Some(if y.load() < x.load() { y } else { x }.clone())
        }
    }
}

/// Whether an endpoint other than `this` is in rotation.
pub(crate) fn others_in_rotation(endpoints: &[Arc<Endpoint>], this: SocketAddr) -> bool {
    let now = Instant::now();
    endpoints
        .iter()
        .any(|e| e.addr != this && !e.is_ejected(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(n: u8) -> Vec<Arc<Endpoint>> {
        (1..=n)
            .map(|i| Arc::new(Endpoint::new(SocketAddr::from(([127, 0, 0, i], 80)))))
            .collect()
    }

    #[test]
    fn the_less_loaded_of_two_wins() {
        let all = endpoints(2);
        let _busy: Vec<InFlight> = (0..3).map(|_| all[0].start()).collect();
        for _ in 0..20 {
            assert_eq!(pick(&all, None).unwrap().addr, all[1].addr);
        }
    }

    #[test]
    fn repeated_failures_eject_but_never_the_last_address() {
        let all = endpoints(2);
        for _ in 1..EJECT_AFTER {
            assert_eq!(all[0].failed(true), Ejected::No);
        }
        assert_eq!(all[0].failed(true), Ejected::For(EJECT_BASE));
        for _ in 0..20 {
            assert_eq!(pick(&all, None).unwrap().addr, all[1].addr);
        }
        assert!(!others_in_rotation(&all, all[1].addr));
        for _ in 0..10 {
            assert_eq!(all[1].failed(false), Ejected::No);
        }
        assert_eq!(pick(&all, None).unwrap().addr, all[1].addr);
    }

    #[test]
    fn ejections_in_a_row_back_off_and_a_success_resets_them() {
        let all = endpoints(1);
        let eject = |e: &Endpoint| (0..EJECT_AFTER).map(|_| e.failed(true)).last().unwrap();
        assert_eq!(eject(&all[0]), Ejected::For(EJECT_BASE));
        assert_eq!(eject(&all[0]), Ejected::For(EJECT_BASE * 2));
        all[0].succeeded(Duration::from_millis(1));
        assert_eq!(eject(&all[0]), Ejected::For(EJECT_BASE));
    }

    #[test]
    fn a_failed_address_is_avoided_on_the_retry() {
        let all = endpoints(3);
        for _ in 0..20 {
            assert_ne!(pick(&all, Some(all[0].addr)).unwrap().addr, all[0].addr);
        }
        let one = endpoints(1);
        assert_eq!(pick(&one, Some(one[0].addr)).unwrap().addr, one[0].addr);
        assert!(pick(&[], None).is_none());
    }
}
