//! Deadlines from durations. A configured duration may be more than the
//! clock can add (`timeout = "500000000000years"` parses): its deadline is
//! then out of reach, not a panic.

use std::time::Duration;

/// Far enough never to come, near enough for any clock: 30 years.
const OUT_OF_REACH: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// An instant a duration can be added to (std's and tokio's).
pub(crate) trait Clock: Copy {
    fn plus(self, d: Duration) -> Option<Self>;
}

impl Clock for std::time::Instant {
    fn plus(self, d: Duration) -> Option<Self> {
        self.checked_add(d)
    }
}

impl Clock for tokio::time::Instant {
    fn plus(self, d: Duration) -> Option<Self> {
        self.checked_add(d)
    }
}

/// `now + d`, or a deadline out of reach when the clock cannot add `d`.
pub(crate) fn after<I: Clock>(now: I, d: Duration) -> I {
    now.plus(d)
        .or_else(|| now.plus(OUT_OF_REACH))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_past_the_clock_is_out_of_reach_not_a_panic() {
        let now = std::time::Instant::now();
        assert_eq!(
            after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert_eq!(after(now, Duration::MAX), now + OUT_OF_REACH);
        let now = tokio::time::Instant::now();
        assert_eq!(after(now, Duration::MAX), now + OUT_OF_REACH);
    }
}
