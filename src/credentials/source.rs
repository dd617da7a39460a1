//! [`TokenSource`]: what consumers on any runtime read. The refresh task
//! (`engine`) writes into the same shared state; readers take a short
//! `std` mutex (no await inside) and are woken through `watch` channels, so
//! a source works from every worker's runtime at once.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::schedule::FORCE_COALESCE;
use super::{CredentialError, LastError, Secret};

/// A credential to present upstream. `Debug` shows the secret redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// ACL username; `None` means the `default` user.
    pub username: Option<String>,
    /// The token, for `AUTH` / `HELLO … AUTH` (or a bearer header).
    pub secret: Secret,
    /// When it stops being accepted; `None` for tokens that do not expire.
    pub expires_at: Option<Instant>,
}

impl Token {
    fn is_valid_at(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

/// Counters for metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenStats {
    /// Seconds until the current token expires (negative once it has);
    /// `None` without a token or for a token that does not expire.
    pub seconds_to_expiry: Option<f64>,
    /// Fetches that produced a token (a static file re-read that found no
    /// change is not counted).
    pub refreshes: u64,
    /// Fetches that failed.
    pub refresh_failures: u64,
    /// The error of the last fetch, if it failed.
    pub last_error: Option<String>,
}

/// One credential's current token, kept fresh by a refresh task. Cheap to
/// clone; the refresh task stops when the last clone is dropped.
#[derive(Clone)]
pub struct TokenSource {
    shared: Arc<Shared>,
    _task: Arc<TaskGuard>,
}

/// Aborts the refresh task when the last [`TokenSource`] goes.
pub(crate) struct TaskGuard(pub(crate) AbortHandle);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the refresh task and the readers share.
pub(crate) struct Shared {
    pub(crate) name: String,
    state: Mutex<State>,
    generation: watch::Sender<u64>,
    /// Completed fetch rounds, for [`TokenSource::force_refresh`] to wait on.
    rounds: watch::Sender<u64>,
    /// Wakes the refresh task for a forced refresh.
    pub(crate) wake: Notify,
}

#[derive(Default)]
struct State {
    token: Option<Token>,
    last_error: Option<String>,
    refreshes: u64,
    failures: u64,
    fetching: bool,
    force_pending: bool,
    rounds: u64,
    last_success: Option<Instant>,
    /// When the last fetch failed, if it did.
    last_failure: Option<Instant>,
}

impl Shared {
    pub(crate) fn new(name: &str) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            state: Mutex::default(),
            generation: watch::Sender::new(0),
            rounds: watch::Sender::new(0),
            wake: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The refresh task starts a fetch: forced requests from now on wait
    /// for this one.
    pub(crate) fn begin_round(&self) {
        let mut state = self.lock();
        state.fetching = true;
        state.force_pending = false;
    }

    /// A fetch produced `token`. The generation moves only if the secret or
    /// username changed.
    pub(crate) fn succeed(&self, token: Token) {
        let mut state = self.lock();
        let changed = state
            .token
            .as_ref()
            .is_none_or(|old| old.secret != token.secret || old.username != token.username);
        if changed || token.expires_at.is_some() {
            state.refreshes += 1;
        }
        state.token = Some(token);
        state.last_error = None;
        state.last_success = Some(Instant::now());
        state.last_failure = None;
        self.end_round(state);
        if changed {
            self.generation.send_modify(|g| *g += 1);
        }
    }

    /// A fetch failed; the current token (if still valid) stays.
    pub(crate) fn fail(&self, error: String) {
        let mut state = self.lock();
        state.failures += 1;
        state.last_error = Some(error);
        state.last_failure = Some(Instant::now());
        self.end_round(state);
    }

    fn end_round(&self, mut state: MutexGuard<'_, State>) {
        state.fetching = false;
        state.rounds += 1;
        let rounds = state.rounds;
        drop(state);
        self.rounds.send_replace(rounds);
    }

    /// Whether a forced refresh is waiting (the task was woken for it).
    pub(crate) fn take_force(&self) -> bool {
        std::mem::take(&mut self.lock().force_pending)
    }

    fn current(&self) -> Result<Token, CredentialError> {
        let state = self.lock();
        let now = Instant::now();
        let last_error = LastError(state.last_error.clone());
        match &state.token {
            Some(token) if token.is_valid_at(now) => Ok(token.clone()),
            Some(token) => Err(CredentialError::Expired {
                name: self.name.clone(),
                ago: token.expires_at.map_or(Duration::ZERO, |at| now - at),
                last_error,
            }),
            None => Err(CredentialError::NotReady {
                name: self.name.clone(),
                last_error,
            }),
        }
    }
}

impl TokenSource {
    pub(crate) fn new(shared: Arc<Shared>, task: AbortHandle) -> Self {
        Self {
            shared,
            _task: Arc::new(TaskGuard(task)),
        }
    }

    /// The credential's name (`[tokens.NAME]`).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The current token. Never an expired one: past expiry (or before the
    /// first token) the error names the credential and the last refresh
    /// error.
    pub fn current(&self) -> Result<Token, CredentialError> {
        self.shared.current()
    }

    /// Moves on every new token (a new secret or username).
    pub fn generation(&self) -> u64 {
        *self.shared.generation.borrow()
    }

    /// Notified with the generation on every new token.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.generation.subscribe()
    }

    /// Whether a first token has been obtained (for the startup probe). It
    /// stays true after that token expires: [`current`](Self::current) says
    /// whether one is usable now.
    pub fn is_ready(&self) -> bool {
        self.shared.lock().token.is_some()
    }

    /// Waits up to `timeout` for a valid token.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<Token, CredentialError> {
        let mut generations = self.subscribe();
        let wait = async {
            loop {
                if let Ok(token) = self.current() {
                    return Ok(token);
                }
                if generations.changed().await.is_err() {
                    return Err(CredentialError::Stopped(self.shared.name.clone()));
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(result) => result,
            Err(_) => Err(CredentialError::Timeout {
                name: self.shared.name.clone(),
                waited: timeout,
                last_error: LastError(self.shared.lock().last_error.clone()),
            }),
        }
    }

    /// Fetches a new token now (upstream rejected the current one:
    /// `WRONGPASS`, HTTP 401) and returns it. Concurrent callers share one
    /// fetch, as do callers within 1 s of the last successful fetch (they
    /// get its token) or of a failed one (they get its error).
    pub async fn force_refresh(&self) -> Result<Token, CredentialError> {
        let mut rounds = self.shared.rounds.subscribe();
        let target = {
            let mut state = self.shared.lock();
            let now = Instant::now();
            if let (Some(at), Some(token)) = (state.last_success, &state.token) {
                if now.duration_since(at) < FORCE_COALESCE && token.is_valid_at(now) {
                    return Ok(token.clone());
                }
            }
            // Nor faster than that while fetches fail: the last failure
            // is the answer.
            if let (Some(at), Some(error)) = (state.last_failure, &state.last_error) {
                if now.duration_since(at) < FORCE_COALESCE {
                    return Err(CredentialError::RefreshFailed {
                        name: self.shared.name.clone(),
                        error: error.clone(),
                    });
                }
            }
            if !state.fetching {
                state.force_pending = true;
                self.shared.wake.notify_one();
            }
            state.rounds + 1
        };
        if rounds.wait_for(|r| *r >= target).await.is_err() {
            return Err(CredentialError::Stopped(self.shared.name.clone()));
        }
        let failed = {
            let state = self.shared.lock();
            state.last_error.clone()
        };
        match failed {
            Some(error) => Err(CredentialError::RefreshFailed {
                name: self.shared.name.clone(),
                error,
            }),
            None => self.current(),
        }
    }

    /// Counters for metrics.
    pub fn stats(&self) -> TokenStats {
        let state = self.shared.lock();
        let now = Instant::now();
        TokenStats {
            seconds_to_expiry: state.token.as_ref().and_then(|t| t.expires_at).map(|at| {
                if at >= now {
                    (at - now).as_secs_f64()
                } else {
                    -(now - at).as_secs_f64()
                }
            }),
            refreshes: state.refreshes,
            refresh_failures: state.failures,
            last_error: state.last_error.clone(),
        }
    }
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("name", &self.shared.name)
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}
