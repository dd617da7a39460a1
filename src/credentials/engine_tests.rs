//! The refresh loop on paused time, driven by a scripted provider.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{sleep, sleep_until, Instant};

use super::*;
use crate::credentials::config::StaticTokenConfig;
use crate::credentials::source::TokenSource;
use crate::credentials::static_token::StaticProvider;

#[derive(Clone, Copy)]
enum Mode {
    Ok,
    Fail,
    Hang,
}

#[derive(Clone)]
struct Script {
    state: Arc<Mutex<ScriptState>>,
}

struct ScriptState {
    mode: Mode,
    lifetime: Duration,
    /// How long a fetch takes.
    latency: Duration,
    /// When each fetch started.
    calls: Vec<Instant>,
}

impl Script {
    fn new(lifetime: Duration) -> Self {
        Self {
            state: Arc::new(Mutex::new(ScriptState {
                mode: Mode::Ok,
                lifetime,
                latency: Duration::ZERO,
                calls: Vec::new(),
            })),
        }
    }

    fn set(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    fn calls(&self) -> Vec<Instant> {
        self.state.lock().unwrap().calls.clone()
    }
}

impl Fetch for Script {
    async fn fetch(&self) -> Result<Fetched, FetchError> {
        let (mode, lifetime, latency, n) = {
            let mut state = self.state.lock().unwrap();
            state.calls.push(Instant::now());
            (state.mode, state.lifetime, state.latency, state.calls.len())
        };
        sleep(latency).await;
        match mode {
            Mode::Ok => Ok(Fetched {
                username: Some("app".into()),
                secret: Secret::new(format!("s3cr3t-{n}")),
                lifetime: Some(lifetime),
            }),
            Mode::Fail => Err(FetchError::Status {
                endpoint: "scripted".into(),
                status: 500,
                detail: String::new(),
            }),
            Mode::Hang => std::future::pending().await,
        }
    }

    fn describe(&self) -> String {
        "scripted".into()
    }
}

fn start<F: Fetch>(name: &str, provider: F, timeout: Duration) -> TokenSource {
    let shared = Shared::new(name);
    let task = tokio::spawn(run(shared.clone(), provider, timeout));
    TokenSource::new(shared, task.abort_handle())
}

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn refreshes_ahead_of_expiry_with_jitter() {
    let script = Script::new(MINUTE);
    let source = start("cache", script.clone(), Duration::from_secs(10));
    let first = source.wait_ready(Duration::from_secs(1)).await.unwrap();
    assert_eq!(first.secret.expose(), "s3cr3t-1");
    assert_eq!(first.username.as_deref(), Some("app"));
    let mut generations = source.subscribe();
    let mut previous = first;
    for _ in 0..10 {
        generations.changed().await.unwrap();
        let token = source.current().unwrap();
        assert_ne!(token.secret, previous.secret);
        assert!(
            Instant::now() < previous.expires_at.unwrap(),
            "refreshed after expiry"
        );
        previous = token;
    }
    assert_eq!(source.generation(), 11);
    let calls = script.calls();
    for pair in calls.windows(2) {
        let gap = pair[1] - pair[0];
        // Half of 60 s, up to 10 % earlier.
        assert!(
            gap >= Duration::from_secs(27) && gap <= Duration::from_secs(30),
            "{gap:?}"
        );
    }
    let stats = source.stats();
    assert_eq!((stats.refreshes, stats.refresh_failures), (11, 0));
    assert!(stats.seconds_to_expiry.unwrap() > 29.0);
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_keep_the_valid_token_then_name_the_credential() {
    let script = Script::new(MINUTE);
    let source = start("payments", script.clone(), Duration::from_secs(10));
    let token = source.wait_ready(Duration::from_secs(1)).await.unwrap();
    script.set(Mode::Fail);
    let expires_at = token.expires_at.unwrap();
    sleep_until(expires_at - Duration::from_millis(1)).await;
    assert_eq!(
        source.current().unwrap(),
        token,
        "still valid: still handed out"
    );
    sleep_until(expires_at).await;
    let error = source.current().unwrap_err().to_string();
    assert_eq!(
        error,
        "credential \"payments\": token expired 0.0s ago; last refresh error: scripted: HTTP 500"
    );
    sleep(Duration::from_secs(120)).await;
    let calls = script.calls();
    let gaps: Vec<Duration> = calls[1..].windows(2).map(|p| p[1] - p[0]).collect();
    for (attempt, gap) in gaps.iter().enumerate() {
        let base = Duration::from_secs([1, 2, 4, 8, 16, 30][attempt.min(5)]);
        assert!(
            *gap >= base.mul_f64(0.8) && *gap <= base,
            "retry {attempt}: {gap:?}"
        );
    }
    assert!(source.stats().refresh_failures >= 6);

    script.set(Mode::Ok);
    // The next retry (at most 30 s away) recovers. Checked as soon as it
    // has: the recovered token's own refresh comes 27-30 s after it, which
    // a fixed 31 s sleep could include.
    let mut waited = 0;
    while source.current().is_err() {
        assert!(waited < 31, "not recovered within the 30 s backoff");
        sleep(Duration::from_secs(1)).await;
        waited += 1;
    }
    let recovered = source.current().unwrap();
    assert_ne!(recovered, token);
    let stats = source.stats();
    assert_eq!(stats.last_error, None);
    assert_eq!(stats.refreshes, 2);
}

#[tokio::test(start_paused = true)]
async fn a_fetch_that_hangs_times_out_and_is_retried() {
    let script = Script::new(MINUTE);
    script.set(Mode::Hang);
    let source = start("slow", script.clone(), Duration::from_secs(10));
    let error = source.wait_ready(Duration::from_secs(5)).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "credential \"slow\": no valid token after 5.0s"
    );
    sleep(Duration::from_secs(6)).await;
    assert_eq!(
        source.current().unwrap_err().to_string(),
        "credential \"slow\": no token yet; last refresh error: scripted: timed out after 10s"
    );
    assert!(!source.is_ready());
    script.set(Mode::Ok);
    let token = source.wait_ready(Duration::from_secs(30)).await.unwrap();
    assert!(source.is_ready());
    assert_eq!(
        token.secret.expose(),
        format!("s3cr3t-{}", script.calls().len())
    );
}

#[tokio::test(start_paused = true)]
async fn forced_refreshes_share_one_fetch() {
    let script = Script::new(Duration::from_secs(3600));
    script.state.lock().unwrap().latency = Duration::from_secs(2);
    let source = start("cache", script.clone(), Duration::from_secs(10));
    let first = source.wait_ready(Duration::from_secs(5)).await.unwrap();
    // Within a second of a fetch, its token is the answer.
    assert_eq!(source.force_refresh().await.unwrap(), first);
    sleep(Duration::from_secs(5)).await;

    let forced = futures::future::join_all((0..8).map(|_| source.force_refresh())).await;
    assert_eq!(script.calls().len(), 2, "eight callers, one fetch");
    let second = forced[0].clone().unwrap();
    assert_ne!(second, first);
    assert!(forced.iter().all(|r| r.as_ref().unwrap() == &second));
    assert_eq!(source.generation(), 2);

    // A forced refresh that fails says so, though the old token is valid.
    sleep(Duration::from_secs(2)).await;
    script.set(Mode::Fail);
    let error = source.force_refresh().await.unwrap_err().to_string();
    assert_eq!(
        error,
        "credential \"cache\": refresh failed: scripted: HTTP 500"
    );
    assert_eq!(source.current().unwrap(), second);
    assert_eq!(script.calls().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_changed_token_file_is_a_new_generation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "s3cr3t-one\n").unwrap();
    let provider = StaticProvider::new(&StaticTokenConfig {
        token_file: Some(path.clone()),
        token_env: None,
        username: Some("app".into()),
    });
    let source = start("static", provider, Duration::from_secs(10));
    let token = source.wait_ready(Duration::from_secs(1)).await.unwrap();
    assert_eq!(
        (token.secret.expose(), token.expires_at),
        ("s3cr3t-one", None)
    );
    sleep(Duration::from_secs(5)).await;
    assert_eq!(source.generation(), 1, "unchanged content: same generation");
    assert_eq!(source.stats().refreshes, 1);

    std::fs::write(&path, "s3cr3t-two").unwrap();
    sleep(Duration::from_millis(1500)).await;
    assert_eq!(source.generation(), 2);
    assert_eq!(source.current().unwrap().secret.expose(), "s3cr3t-two");

    // A missing file is an error to report, not a reason to drop the token.
    std::fs::remove_file(&path).unwrap();
    sleep(Duration::from_millis(1500)).await;
    assert_eq!(source.current().unwrap().secret.expose(), "s3cr3t-two");
    let stats = source.stats();
    assert!(stats.last_error.unwrap().starts_with("token file "));
    assert_eq!(stats.seconds_to_expiry, None);
}

#[tokio::test(start_paused = true)]
async fn secrets_never_print() {
    let script = Script::new(MINUTE);
    let source = start("cache", script.clone(), Duration::from_secs(10));
    let token = source.wait_ready(Duration::from_secs(1)).await.unwrap();
    script.set(Mode::Fail);
    sleep(MINUTE).await;
    let error = source.current().unwrap_err();
    let shown = format!(
        "{token:?} {} {:?} {source:?} {:?} {error} {error:?}",
        token.secret,
        token.secret,
        source.stats()
    );
    assert!(!shown.contains("s3cr3t"), "{shown}");
}
