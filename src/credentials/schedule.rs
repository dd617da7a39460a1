//! When the refresh engine fetches: the numbers, as pure functions of a
//! lifetime (or an attempt count) and a random draw, so tests need no clock.

use std::time::Duration;

/// Refresh no later than this long before expiry.
pub(crate) const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);
/// Never refresh sooner than this after a fetch (unless half the lifetime
/// is sooner still): a 4-minute token is refreshed every 30 s, not in a loop.
pub(crate) const MIN_REFRESH_DELAY: Duration = Duration::from_secs(30);
/// Never wait longer than this between refreshes, whatever the lifetime.
pub(crate) const MAX_REFRESH_DELAY: Duration = Duration::from_secs(12 * 60 * 60);
/// The refresh is moved earlier by up to this fraction, so that sidecars
/// started together do not refresh together.
pub(crate) const REFRESH_JITTER: f64 = 0.1;

/// First retry after a failed fetch.
pub(crate) const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Retries back off up to this.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A token file (static provider) is re-read this often.
pub(crate) const FILE_POLL: Duration = Duration::from_secs(1);

/// A forced refresh within this long of the last successful fetch returns
/// that fetch's token instead of fetching again: the callers who raced to
/// report `WRONGPASS` share one fetch, and an upstream that rejects every
/// token cannot drive the token endpoint faster than once a second.
pub(crate) const FORCE_COALESCE: Duration = Duration::from_secs(1);

/// How long after a fetch to refresh a token that lives `lifetime`.
///
/// Refresh-ahead: at the earlier of half the lifetime and 5 minutes
/// ([`REFRESH_BEFORE`]) before expiry, clamped to at least
/// min(half the lifetime, 30 s) and at most 12 h, then moved up to 10 %
/// earlier by `jitter` (a draw in `[0, 1)`). So:
///
/// | lifetime | refresh after |
/// |---|---|
/// | 24 h (long-lived) | 12 h − up to 10 % |
/// | 60–90 min (Entra, GCP) | 30–45 min − up to 10 % |
/// | 15 min (ElastiCache IAM) | 7.5 min − up to 10 % |
/// | 6 min | 1 min − up to 10 % |
/// | 4 min | 30 s − up to 10 % |
/// | 2 s (tests) | 1 s − up to 10 % |
///
/// Half the lifetime is always left to retry in before the token expires.
pub(crate) fn refresh_delay(lifetime: Duration, jitter: f64) -> Duration {
    let half = lifetime / 2;
    let rule = half.min(lifetime.saturating_sub(REFRESH_BEFORE));
    let delay = rule.max(half.min(MIN_REFRESH_DELAY)).min(MAX_REFRESH_DELAY);
    delay.mul_f64(1.0 - REFRESH_JITTER * jitter.clamp(0.0, 1.0))
}

/// How long to wait before retry number `attempt` (0 for the first retry
/// after a success): 1 s, 2 s, 4 s … doubling up to 30 s, each drawn from
/// the top fifth below that (`[0.8, 1.0] ×`) by `jitter` in `[0, 1)`.
pub(crate) fn backoff_delay(attempt: u32, jitter: f64) -> Duration {
    let base = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_MAX);
    base.mul_f64(1.0 - 0.2 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn refresh_ahead_numbers() {
        assert_eq!(refresh_delay(secs(24 * 3600), 0.0), secs(12 * 3600));
        assert_eq!(refresh_delay(secs(30 * 24 * 3600), 0.0), secs(12 * 3600));
        assert_eq!(refresh_delay(secs(3600), 0.0), secs(1800));
        assert_eq!(refresh_delay(secs(900), 0.0), secs(450));
        assert_eq!(refresh_delay(secs(360), 0.0), secs(60));
        assert_eq!(refresh_delay(secs(240), 0.0), secs(30));
        assert_eq!(refresh_delay(secs(2), 0.0), Duration::from_millis(1000));
        assert_eq!(refresh_delay(Duration::ZERO, 0.0), Duration::ZERO);
    }

    #[test]
    fn jitter_only_moves_earlier_by_at_most_a_tenth() {
        for lifetime in [secs(2), secs(240), secs(900), secs(3600)] {
            let plain = refresh_delay(lifetime, 0.0);
            let early = refresh_delay(lifetime, 0.999);
            assert!(
                early <= plain && early >= plain.mul_f64(0.9),
                "{lifetime:?}"
            );
            assert!(early < lifetime);
        }
    }

    #[test]
    fn backoff_doubles_from_one_second_to_thirty() {
        let plain: Vec<u64> = (0..8).map(|a| backoff_delay(a, 0.0).as_secs()).collect();
        assert_eq!(plain, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff_delay(u32::MAX, 0.0), secs(30));
        let jittered = backoff_delay(0, 0.999);
        assert!(jittered >= Duration::from_millis(800) && jittered < secs(1));
    }
}
