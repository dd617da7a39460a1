//! The refresh loop every provider shares. A provider only knows how to
//! fetch once ([`Fetch`]); this loop decides when: ahead of expiry
//! ([`schedule::refresh_delay`]), after failures with backoff
//! ([`schedule::backoff_delay`]), at once when a consumer forces it, and
//! every second for a token file.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

use super::http::FetchError;
use super::schedule;
use super::source::{Shared, Token};
use super::Secret;

/// What one successful fetch yields.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) username: Option<String>,
    pub(crate) secret: Secret,
    /// How long the token lives, counted from when the fetch started;
    /// `None` if it does not expire.
    pub(crate) lifetime: Option<Duration>,
}

/// One provider: fetch a token once.
pub(crate) trait Fetch: Send + Sync + 'static {
    /// Fetches a token. The engine bounds it by `fetch_timeout`.
    fn fetch(&self) -> impl Future<Output = Result<Fetched, FetchError>> + Send;

    /// Where tokens come from, for a timeout message
    /// (`token endpoint https://…`).
    fn describe(&self) -> String;

    /// For tokens without expiry: how often to fetch again to notice a
    /// change (`None`: only when forced).
    fn poll_interval(&self) -> Option<Duration> {
        None
    }
}

/// Runs the refresh loop for one source until aborted.
pub(crate) async fn run<F: Fetch>(shared: Arc<Shared>, provider: F, fetch_timeout: Duration) {
    let mut failures = 0u32;
    loop {
        shared.begin_round();
        let started = Instant::now();
        let outcome = match tokio::time::timeout(fetch_timeout, provider.fetch()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(FetchError::Timeout {
                endpoint: provider.describe(),
                after: fetch_timeout,
            }),
        };
        let next = match outcome {
            Ok(fetched) => {
                failures = 0;
                let expires_at = fetched.lifetime.map(|l| started + l);
                tracing::debug!(
                    credential = %shared.name,
                    lifetime = ?fetched.lifetime,
                    "token refreshed"
                );
                shared.succeed(Token {
                    username: fetched.username,
                    secret: fetched.secret,
                    expires_at,
                });
                match fetched.lifetime {
                    Some(lifetime) => started + schedule::refresh_delay(lifetime, fastrand::f64()),
                    None => provider.poll_interval().map_or_else(far_future, |every| {
                        crate::clock::after(Instant::now(), every)
                    }),
                }
            }
            Err(error) => {
                let delay = schedule::backoff_delay(failures, fastrand::f64());
                failures = failures.saturating_add(1);
                tracing::warn!(
                    credential = %shared.name,
                    %error,
                    retry_in = ?delay,
                    "token refresh failed"
                );
                shared.fail(error.to_string());
                Instant::now() + delay
            }
        };
        wait_until(&shared, next).await;
    }
}

/// Sleeps until `at` or until a consumer forces a refresh.
async fn wait_until(shared: &Shared, at: Instant) {
    let sleep = sleep_until(at);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            () = &mut sleep => return,
            () = shared.wake.notified() => {
                // A stale wake-up (its request was served by the fetch that
                // just ran) leaves no pending force: keep sleeping.
                if shared.take_force() {
                    return;
                }
            }
        }
    }
}

/// "Never" for a sleep: a year, well inside `Instant`'s range.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 3600)
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
