//! The background task that keeps one `(host, port)` answer fresh, and the
//! status it reports.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::{ProtoError, ProtoErrorKind};
use hickory_resolver::ResolveError;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::DnsError;

/// One answer: its addresses and how long they may be used.
pub(crate) struct Answer {
    /// A and AAAA records, in any order, possibly repeated.
    pub(crate) ips: Vec<IpAddr>,
    /// The answer's remaining TTL, before clamping.
    pub(crate) ttl: Duration,
}

/// Asks DNS for a name's addresses: hickory in production, a script in the
/// unit tests (which run on paused time).
pub(crate) trait Lookup: Send + Sync + 'static {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Answer, ResolveError>> + Send + 'a>>;
}

/// When to re-resolve.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RefreshPolicy {
    /// `[dns] min_ttl`: the shortest wait, also the retry delay after a failure.
    pub(crate) min_ttl: Duration,
    /// `[dns] max_ttl`: the longest wait (before jitter).
    pub(crate) max_ttl: Duration,
}

impl RefreshPolicy {
    /// How long to wait after an answer with `ttl`: the TTL clamped to
    /// `[min_ttl, max_ttl]`, plus a random 0–10% so names resolved together
    /// (every upstream at startup) do not stay in lockstep. Never earlier
    /// than the clamped TTL: hickory's cache holds the answer until then, so
    /// an earlier query would only return the cached answer.
    pub(crate) fn delay(&self, ttl: Duration) -> Duration {
        let base = ttl.clamp(self.min_ttl, self.max_ttl);
        let tenth = u64::try_from(base.as_nanos() / 10).unwrap_or(u64::MAX);
        base.saturating_add(Duration::from_nanos(fastrand::u64(0..=tenth)))
    }

    /// `now` plus [`delay`](Self::delay): a `[dns]` TTL bound that the
    /// clock cannot add (they are checked for order, not size) puts the
    /// refresh out of reach.
    fn due(&self, now: Instant, ttl: Duration) -> Instant {
        crate::clock::after(now, self.delay(ttl))
    }
}

/// How one watched name is doing, for metrics and the admin endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsStatus {
    /// When the last successful answer arrived (the current addresses are at
    /// least that fresh). `None` only for an IP literal, which is never
    /// resolved.
    pub last_success: Option<Instant>,
    /// Failed refreshes since the last success (0 when healthy). While it is
    /// above 0 the last good answer is still served.
    pub consecutive_failures: u32,
    /// Failed refreshes since the name was first watched.
    pub total_failures: u64,
    /// The latest failure's message; kept after a recovery for inspection.
    pub last_error: Option<String>,
    /// When the next refresh is due. `None` for an IP literal.
    pub next_refresh: Option<Instant>,
}

/// How the first resolution of a name went: `watch` waits for it.
#[derive(Debug, Clone)]
pub(crate) enum FirstAnswer {
    Pending,
    Ready,
    Failed(DnsError),
}

/// Everything the background task of one `(host, port)` owns.
pub(crate) struct Refresher {
    pub(crate) host: Arc<str>,
    pub(crate) port: u16,
    pub(crate) lookup: Arc<dyn Lookup>,
    pub(crate) policy: RefreshPolicy,
    pub(crate) addrs: watch::Sender<Arc<[SocketAddr]>>,
    pub(crate) status: Arc<Mutex<DnsStatus>>,
    pub(crate) first: watch::Sender<FirstAnswer>,
}

impl Refresher {
    /// Resolves once for `watch`, then forever (until aborted, when the last
    /// `Watched` is dropped). A failed first resolution ends the task: the
    /// caller gets the error and there is no good answer to keep.
    pub(crate) async fn run(self) {
        let mut due = match self.resolve().await {
            Ok(due) => {
                self.first.send_replace(FirstAnswer::Ready);
                due
            }
            Err((error, _)) => {
                debug!(host = %self.host, %error, "first resolution failed");
                self.first.send_replace(FirstAnswer::Failed(error));
                return;
            }
        };
        loop {
            tokio::time::sleep_until(due).await;
            due = match self.resolve().await {
                Ok(due) => due,
                Err((error, retry)) => {
                    let failures = self.update_status(|s| s.consecutive_failures);
                    if failures == 1 {
                        warn!(
                            host = %self.host,
                            %error,
                            retry_in = ?retry.saturating_duration_since(Instant::now()),
                            "DNS refresh failed; keeping the last good addresses"
                        );
                    } else {
                        debug!(host = %self.host, %error, failures, "DNS refresh failed again");
                    }
                    retry
                }
            };
        }
    }

    /// One resolution: on success publishes the addresses (if they changed);
    /// on failure (an empty answer included) publishes nothing, so the last
    /// good addresses stay. Either way returns when to resolve next: after
    /// the answer's TTL, or after `min_ttl` to retry a failure. The status is
    /// updated before the addresses, so a woken subscriber sees both agree.
    async fn resolve(&self) -> Result<Instant, (DnsError, Instant)> {
        let outcome = match self.lookup.lookup(&self.host).await {
            Ok(answer) if answer.ips.is_empty() => Err(DnsError::NoAddresses {
                host: self.host.to_string(),
            }),
            Ok(answer) => Ok(answer),
            Err(source) => Err(lookup_error(&self.host, source)),
        };
        let now = Instant::now();
        let answer = match outcome {
            Ok(answer) => answer,
            Err(error) => {
                let retry = self.policy.due(now, Duration::ZERO);
                self.update_status(|s| {
                    s.consecutive_failures += 1;
                    s.total_failures += 1;
                    s.last_error = Some(error.to_string());
                    s.next_refresh = Some(retry);
                });
                return Err((error, retry));
            }
        };
        let due = self.policy.due(now, answer.ttl);
        let failures = self.update_status(|s| {
            s.last_success = Some(now);
            s.next_refresh = Some(due);
            std::mem::take(&mut s.consecutive_failures)
        });
        if failures > 0 {
            info!(host = %self.host, failures, "DNS refresh recovered");
        }
        let mut addrs: Vec<SocketAddr> = answer
            .ips
            .iter()
            .map(|ip| SocketAddr::new(*ip, self.port))
            .collect();
        addrs.sort_unstable();
        addrs.dedup();
        let addrs: Arc<[SocketAddr]> = addrs.into();
        let changed = self.addrs.send_if_modified(|current| {
            let changed = *current != addrs;
            if changed {
                *current = addrs.clone();
            }
            changed
        });
        if changed {
            debug!(host = %self.host, addrs = ?addrs, "DNS answer changed");
        }
        Ok(due)
    }

    fn update_status<T>(&self, f: impl FnOnce(&mut DnsStatus) -> T) -> T {
        f(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// hickory reports every negative answer as "no records found for Query
/// {…}"; this names what the nameserver actually said.
fn lookup_error(host: &str, source: ResolveError) -> DnsError {
    let host = host.to_owned();
    match source.proto().map(ProtoError::kind) {
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) => {
            if *response_code == ResponseCode::NoError {
                DnsError::NoAddresses { host }
            } else {
                DnsError::Answered {
                    host,
                    code: *response_code,
                }
            }
        }
        _ => DnsError::Resolve { host, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_is_the_clamped_ttl_plus_at_most_a_tenth() {
        let policy = RefreshPolicy {
            min_ttl: Duration::from_secs(5),
            max_ttl: Duration::from_secs(60),
        };
        for (ttl, base) in [(0, 5), (3, 5), (30, 30), (3600, 60)] {
            for _ in 0..100 {
                let d = policy.delay(Duration::from_secs(ttl));
                let base = Duration::from_secs(base);
                assert!(d >= base && d <= base + base / 10, "ttl {ttl}: {d:?}");
            }
        }
    }
}
