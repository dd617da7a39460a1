//! When a failed attempt is tried again, after how long, and how many
//! retries a listener may spend at all.
//!
//! The rules, in order ([`RetryPolicy::decide`]):
//! - a `401` from the upstream, when the listener injects a token: refresh
//!   the token and retry once, at once, whatever the method (the upstream
//!   refused the request at the door), if the body can be sent again. This
//!   retry is outside `retries` and happens at most once per request;
//! - no more than `retries` retries otherwise;
//! - the body must be sendable again: replayable (buffered by the runtime),
//!   or not a byte of it sent yet;
//! - connect failures, and streams the upstream refused unprocessed
//!   (HTTP/2 `REFUSED_STREAM`, or above a `GOAWAY`'s last stream): always
//!   retried, since the upstream never saw the request;
//! - a connection lost before the response, or a `502`/`503`/`504`: retried
//!   only for idempotent methods, since the upstream may have acted on it;
//! - a timeout: never. `timeout` bounds the whole request, so a timed-out
//!   attempt leaves nothing to retry in, and retrying a slow upstream is
//!   how retry storms start;
//! - any other status is the upstream's answer and goes to the app.
//!
//! Backoff before retry `n` (1-based) is `25 ms × 2^(n-1)`, capped at 1 s,
//! with "equal jitter": half of it fixed, half random, so that retries from
//! many requests that failed together spread out but never fire at once.
//!
//! Every retry also needs a coin from the listener's [`RetryBudget`].

use std::time::{Duration, Instant};

use http::{Method, StatusCode};

/// Whether a method may be sent twice with the effect of once (RFC 9110
/// §9.2.2): GET, HEAD, OPTIONS, TRACE, PUT, DELETE.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// How an attempt ended, as far as retrying goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No connection could be made: nothing was sent.
    ConnectFailed,
    /// The upstream said it did not process the request (HTTP/2
    /// `REFUSED_STREAM`, or a stream above a `GOAWAY`'s last stream id).
    Refused,
    /// The connection broke after the request (or part of it) went out and
    /// before a response came.
    ResetBeforeResponse,
    /// The listener's `timeout` ran out.
    Timeout,
    /// A response came with this status.
    Status(StatusCode),
}

/// One finished attempt.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// The request method.
    pub method: &'a Method,
    /// Attempts made so far, this one included (the first is 1).
    pub number: u32,
    /// How it ended.
    pub outcome: Outcome,
    /// The runtime kept the whole body and can send it again (an empty body
    /// counts as replayable).
    pub body_replayable: bool,
    /// Some of the body was handed to the upstream connection.
    pub body_sent: bool,
    /// This request already had its one token refresh after a `401`.
    pub token_refreshed: bool,
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try again after `after`, first refreshing the token if asked.
    Retry {
        /// The backoff.
        after: Duration,
        /// Get a fresh token first (the upstream answered `401`).
        refresh_token: bool,
    },
    /// Give the app this outcome.
    Stop(Stop),
}

/// Why an attempt is not retried, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A response the app should see, or a timeout.
    Final,
    /// `retries` are used up.
    AttemptsExhausted,
    /// The upstream may have acted on a non-idempotent request.
    NotIdempotent,
    /// The body was partly sent and not kept.
    BodyNotReplayable,
}

/// A listener's retry rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most retries after the first attempt (not counting the `401`
    /// refresh). `0` disables retries.
    pub max_retries: u32,
    /// Backoff before the first retry; doubled for each after.
    pub base_backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// Refresh the token and retry once on `401`: set when the listener
    /// injects a token (without one, a `401` is about the app's own
    /// credentials and goes back to it).
    pub refresh_on_unauthorized: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 2,
            base_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_secs(1),
            refresh_on_unauthorized: false,
        }
    }
}

impl RetryPolicy {
    /// Whether and when to retry `attempt`. `jitter` is a random number in
    /// `[0, 1)` (e.g. `fastrand::f64()`), passed in so this stays pure.
    pub fn decide(&self, attempt: &Attempt<'_>, jitter: f64) -> Decision {
        let can_resend = attempt.body_replayable || !attempt.body_sent;
        if attempt.outcome == Outcome::Status(StatusCode::UNAUTHORIZED)
            && self.refresh_on_unauthorized
            && !attempt.token_refreshed
        {
            return if can_resend {
                Decision::Retry {
                    after: Duration::ZERO,
                    refresh_token: true,
                }
            } else {
                Decision::Stop(Stop::BodyNotReplayable)
            };
        }
        let needs_idempotent = match attempt.outcome {
            Outcome::ConnectFailed | Outcome::Refused => false,
            Outcome::ResetBeforeResponse => true,
            Outcome::Status(status) if is_retryable_status(status) => true,
            Outcome::Status(_) | Outcome::Timeout => return Decision::Stop(Stop::Final),
        };
        if attempt.number > self.max_retries {
            return Decision::Stop(Stop::AttemptsExhausted);
        }
        if needs_idempotent && !is_idempotent(attempt.method) {
            return Decision::Stop(Stop::NotIdempotent);
        }
        if !can_resend {
            return Decision::Stop(Stop::BodyNotReplayable);
        }
        Decision::Retry {
            after: self.backoff(attempt.number, jitter),
            refresh_token: false,
        }
    }

    /// Backoff before retry `n` (1-based): `base × 2^(n-1)` capped at
    /// `max_backoff`, then half of it fixed and half scaled by `jitter`.
    pub fn backoff(&self, n: u32, jitter: f64) -> Duration {
        let doublings = n.saturating_sub(1).min(20);
        let full = self
            .base_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff);
        let jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        let half = full / 2;
        half + half.mul_f64(jitter)
    }
}

/// `502`, `503`, `504`: the gateway or the service said it could not serve
/// the request now.
fn is_retryable_status(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

/// A token bucket that caps retries at a share of requests, so that an
/// upstream in trouble sees at most `1 + percent/100` times its normal load
/// from attache, not `1 + retries` times.
///
/// Each request deposits `percent / 100` of a retry; each retry withdraws a
/// whole one. So that a quiet listener can still retry, a floor of
/// `floor_per_sec` retries per second trickles in over time. The balance is
/// capped at ten seconds' worth of floor but at least 100 retries (100 with
/// the default floor of 10/s), so a long calm does not bank a retry storm.
/// It starts with one second's worth of floor.
///
/// Pure: the caller passes the time. Not shared between threads: each
/// worker keeps one per listener (so the floor is per worker).
#[derive(Debug, Clone)]
pub struct RetryBudget {
    /// In millionths of a retry, so that the floor earns exactly
    /// `floor_per_sec` units per microsecond.
    balance: u64,
    per_request: u64,
    floor_per_sec: u64,
    cap: u64,
    last_refill: Option<Instant>,
}

/// The floor of retries per second a listener always has.
pub const DEFAULT_FLOOR_PER_SEC: u32 = 10;

/// One retry, in the budget's units.
const RETRY: u64 = 1_000_000;

impl RetryBudget {
    /// Retries up to `percent`% of requests (clamped to 100) plus
    /// `floor_per_sec` per second.
    pub fn new(percent: u32, floor_per_sec: u32) -> Self {
        let floor_per_sec = u64::from(floor_per_sec);
        Self {
            balance: floor_per_sec * RETRY,
            per_request: u64::from(percent.min(100)) * (RETRY / 100),
            floor_per_sec,
            cap: (floor_per_sec * 10).max(100) * RETRY,
            last_refill: None,
        }
    }

    /// Records a request (call once per request, not per attempt).
    pub fn deposit(&mut self) {
        self.balance = (self.balance + self.per_request).min(self.cap);
    }

    /// Takes one retry's worth if there is one.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.balance >= RETRY {
            self.balance -= RETRY;
            true
        } else {
            false
        }
    }

    /// Whole retries available now (for metrics).
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        self.balance / RETRY
    }

    fn refill(&mut self, now: Instant) {
        let Some(last) = self.last_refill else {
            self.last_refill = Some(now);
            return;
        };
        // `floor_per_sec` retries per second is `floor_per_sec` units per
        // microsecond. Whole microseconds only, and `last_refill` moves by
        // exactly those, so frequent calls lose no fraction.
        let micros = now.saturating_duration_since(last).as_micros();
        let micros = u64::try_from(micros).unwrap_or(u64::MAX);
        let earned = self.floor_per_sec.saturating_mul(micros);
        self.balance = self.balance.saturating_add(earned).min(self.cap);
        self.last_refill = Some(
            last.checked_add(Duration::from_micros(micros))
                .unwrap_or(now),
        );
    }
}

#[cfg(test)]
mod tests;
