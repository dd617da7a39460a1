use super::*;

const ALL_OUTCOMES: [Outcome; 9] = [
    Outcome::ConnectFailed,
    Outcome::Refused,
    Outcome::ResetBeforeResponse,
    Outcome::Timeout,
    Outcome::Status(StatusCode::BAD_GATEWAY),
    Outcome::Status(StatusCode::SERVICE_UNAVAILABLE),
    Outcome::Status(StatusCode::GATEWAY_TIMEOUT),
    Outcome::Status(StatusCode::UNAUTHORIZED),
    Outcome::Status(StatusCode::INTERNAL_SERVER_ERROR),
];

fn attempt(method: &Method, number: u32, outcome: Outcome) -> Attempt<'_> {
    Attempt {
        method,
        number,
        outcome,
        body_replayable: true,
        body_sent: true,
        token_refreshed: false,
    }
}

fn with_token() -> RetryPolicy {
    RetryPolicy {
        refresh_on_unauthorized: true,
        ..RetryPolicy::default()
    }
}

fn retries(policy: &RetryPolicy, a: &Attempt<'_>) -> bool {
    matches!(policy.decide(a, 0.5), Decision::Retry { .. })
}

#[test]
fn idempotent_methods() {
    for m in [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ] {
        assert!(is_idempotent(&m), "{m}");
    }
    for m in [
        Method::POST,
        Method::PATCH,
        Method::CONNECT,
        Method::from_bytes(b"PURGE").unwrap(),
    ] {
        assert!(!is_idempotent(&m), "{m}");
    }
}

#[test]
fn connect_failures_and_refused_streams_always_retry() {
    let p = RetryPolicy::default();
    for outcome in [Outcome::ConnectFailed, Outcome::Refused] {
        for m in [Method::GET, Method::POST, Method::PATCH] {
            let a = Attempt {
                body_replayable: false,
                body_sent: false,
                ..attempt(&m, 1, outcome)
            };
            assert!(retries(&p, &a), "{m} {outcome:?}");
        }
    }
}

#[test]
fn resets_and_gateway_statuses_retry_only_idempotent_requests() {
    let p = RetryPolicy::default();
    for outcome in [
        Outcome::ResetBeforeResponse,
        Outcome::Status(StatusCode::BAD_GATEWAY),
        Outcome::Status(StatusCode::SERVICE_UNAVAILABLE),
        Outcome::Status(StatusCode::GATEWAY_TIMEOUT),
    ] {
        assert!(retries(&p, &attempt(&Method::GET, 1, outcome)));
        assert!(retries(&p, &attempt(&Method::PUT, 2, outcome)));
        assert_eq!(
            p.decide(&attempt(&Method::POST, 1, outcome), 0.5),
            Decision::Stop(Stop::NotIdempotent)
        );
        // Even a POST whose body never left: its headers did.
        let unsent = Attempt {
            body_sent: false,
            ..attempt(&Method::POST, 1, outcome)
        };
        assert!(!retries(&p, &unsent));
    }
}

#[test]
fn other_statuses_and_timeouts_are_final() {
    let p = with_token();
    for outcome in [
        Outcome::Timeout,
        Outcome::Status(StatusCode::OK),
        Outcome::Status(StatusCode::INTERNAL_SERVER_ERROR),
        Outcome::Status(StatusCode::TOO_MANY_REQUESTS),
        Outcome::Status(StatusCode::FORBIDDEN),
    ] {
        assert_eq!(
            p.decide(&attempt(&Method::GET, 1, outcome), 0.5),
            Decision::Stop(Stop::Final),
            "{outcome:?}"
        );
    }
}

#[test]
fn never_resend_a_body_that_is_gone() {
    let p = with_token();
    for outcome in ALL_OUTCOMES {
        for m in [Method::GET, Method::PUT, Method::POST] {
            let a = Attempt {
                body_replayable: false,
                body_sent: true,
                ..attempt(&m, 1, outcome)
            };
            assert!(!retries(&p, &a), "{m} {outcome:?}");
        }
    }
}

#[test]
fn never_retry_a_sent_non_idempotent_request_except_after_401() {
    // The property the runtime relies on, over every combination.
    let p = with_token();
    for outcome in ALL_OUTCOMES {
        for number in 1..5 {
            for (replayable, sent, refreshed) in [
                (false, true, false),
                (true, true, false),
                (false, true, true),
                (true, true, true),
            ] {
                let a = Attempt {
                    method: &Method::POST,
                    number,
                    outcome,
                    body_replayable: replayable,
                    body_sent: sent,
                    token_refreshed: refreshed,
                };
                let retry = retries(&p, &a);
                let allowed = match outcome {
                    // Never processed upstream, but the body must still be there.
                    Outcome::ConnectFailed | Outcome::Refused => {
                        replayable && number <= p.max_retries
                    }
                    Outcome::Status(StatusCode::UNAUTHORIZED) => replayable && !refreshed,
                    _ => false,
                };
                assert_eq!(retry, allowed, "{a:?}");
            }
        }
    }
}

#[test]
fn unauthorized_refreshes_once() {
    let p = with_token();
    let first = attempt(&Method::POST, 1, Outcome::Status(StatusCode::UNAUTHORIZED));
    assert_eq!(
        p.decide(&first, 0.9),
        Decision::Retry {
            after: Duration::ZERO,
            refresh_token: true
        }
    );
    // Outside the retry count: still allowed after the last retry.
    let late = Attempt { number: 3, ..first };
    assert!(retries(&p, &late));
    let again = Attempt {
        token_refreshed: true,
        ..first
    };
    assert_eq!(p.decide(&again, 0.5), Decision::Stop(Stop::Final));
    let gone = Attempt {
        body_replayable: false,
        ..first
    };
    assert_eq!(
        p.decide(&gone, 0.5),
        Decision::Stop(Stop::BodyNotReplayable)
    );
    // No token of ours: the 401 is the app's business.
    let p = RetryPolicy::default();
    assert_eq!(p.decide(&first, 0.5), Decision::Stop(Stop::Final));
}

#[test]
fn attempts_are_bounded() {
    let p = RetryPolicy::default();
    assert!(retries(
        &p,
        &attempt(&Method::GET, 1, Outcome::ConnectFailed)
    ));
    assert!(retries(
        &p,
        &attempt(&Method::GET, 2, Outcome::ConnectFailed)
    ));
    assert_eq!(
        p.decide(&attempt(&Method::GET, 3, Outcome::ConnectFailed), 0.5),
        Decision::Stop(Stop::AttemptsExhausted)
    );
    let off = RetryPolicy {
        max_retries: 0,
        ..RetryPolicy::default()
    };
    assert!(!retries(
        &off,
        &attempt(&Method::GET, 1, Outcome::ConnectFailed)
    ));
}

#[test]
fn backoff_doubles_with_equal_jitter_and_a_cap() {
    let p = RetryPolicy::default();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    assert_eq!(ms(p.backoff(1, 0.0)), 12.5);
    assert_eq!(ms(p.backoff(1, 1.0)), 25.0);
    assert_eq!(ms(p.backoff(2, 0.0)), 25.0);
    assert_eq!(ms(p.backoff(3, 0.5)), 75.0);
    assert_eq!(p.backoff(7, 1.0), Duration::from_secs(1));
    assert_eq!(p.backoff(u32::MAX, 1.0), Duration::from_secs(1));
    // Out-of-range jitter is clamped, never panics.
    assert_eq!(p.backoff(1, -3.0), p.backoff(1, 0.0));
    assert_eq!(p.backoff(1, f64::NAN), p.backoff(1, 0.0));
    assert_eq!(p.backoff(1, f64::INFINITY), p.backoff(1, 1.0));
    for n in 1..12 {
        for j in [0.0, 0.3, 0.999] {
            let d = p.backoff(n, j);
            assert!(d <= p.max_backoff && d >= p.backoff(n, 0.0));
        }
    }
    match p.decide(&attempt(&Method::GET, 2, Outcome::ConnectFailed), 0.0) {
        Decision::Retry {
            after,
            refresh_token,
        } => {
            assert_eq!(after, Duration::from_millis(25));
            assert!(!refresh_token);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn budget_allows_a_share_of_requests() {
    let t0 = Instant::now();
    let mut b = RetryBudget::new(20, 0);
    assert!(!b.try_withdraw(t0), "no floor, no requests, no retries");
    for _ in 0..100 {
        b.deposit();
    }
    let granted = (0..100).filter(|_| b.try_withdraw(t0)).count();
    assert_eq!(granted, 20);
}

#[test]
fn budget_floor_trickles_in_and_is_capped() {
    let t0 = Instant::now();
    let mut b = RetryBudget::new(20, 10);
    // One second's worth at the start.
    assert_eq!(b.available(t0), 10);
    assert_eq!((0..50).filter(|_| b.try_withdraw(t0)).count(), 10);
    assert!(!b.try_withdraw(t0 + Duration::from_millis(99)));
    assert!(b.try_withdraw(t0 + Duration::from_millis(100)));
    // Frequent calls lose nothing to rounding.
    let mut b = RetryBudget::new(0, 10);
    let mut now = t0;
    b.available(now);
    while b.try_withdraw(now) {}
    for _ in 0..100_000 {
        now += Duration::from_micros(1);
        b.available(now);
    }
    assert!(b.try_withdraw(now), "100 ms of 10/s is one retry");
    // A long calm banks ten seconds of floor, no more.
    let later = now + Duration::from_secs(3600);
    assert_eq!(b.available(later), 100);
    for _ in 0..10_000 {
        b.deposit();
    }
    assert_eq!(b.available(later), 100);
    // Time going backwards earns nothing and breaks nothing.
    assert_eq!(b.available(t0), 100);
}

#[test]
fn budget_percent_is_clamped() {
    let mut b = RetryBudget::new(500, 0);
    b.deposit();
    let now = Instant::now();
    assert!(b.try_withdraw(now));
    assert!(!b.try_withdraw(now));
}
