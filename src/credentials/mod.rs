//! Credentials attache presents upstream: a static password read at every
//! connect ([`RedisCredentials`]), and tokens that expire, kept fresh by one
//! refresh engine ([`TokenRegistry`]).
//!
//! # Layout
//!
//! - [`config`]: `[tokens.NAME]`, one variant per provider, with validation.
//! - `engine`: the refresh loop every provider shares (refresh-ahead,
//!   backoff, forced refreshes); `schedule` holds its numbers.
//! - `source`: [`TokenSource`], what consumers on any runtime read.
//! - `registry`: [`TokenRegistry`], every configured source, started.
//! - Providers: `static_token`, `oauth2`, `azure`, `gcp`, `aws` (with the
//!   pure signing in `sigv4`); their HTTP plumbing is in `http`, JWT claim
//!   reading in `jwt`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

mod aws;
mod azure;
pub mod config;
mod engine;
mod gcp;
mod http;
mod jwt;
mod oauth2;
mod registry;
mod schedule;
mod sigv4;
mod source;
mod static_token;

pub use config::TokenConfig;
pub use registry::TokenRegistry;
pub use source::{Token, TokenSource, TokenStats};

use crate::config::RedisAuthConfig;

/// A secret string. Its `Debug` and `Display` never print the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the wire only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A credential source could not produce a credential.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialError {
    /// The password file could not be read.
    #[error("password file {path}: {reason}")]
    File {
        /// The configured file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The environment variable is not set.
    #[error("password environment variable {0} is not set")]
    Env(String),
    /// A token source has not obtained its first token yet.
    #[error("credential \"{name}\": no token yet{last_error}")]
    NotReady {
        /// The credential (`[tokens.NAME]`).
        name: String,
        /// Why the last refresh failed, if one did.
        last_error: LastError,
    },
    /// The last token expired and no refresh has replaced it.
    #[error("credential \"{name}\": token expired {:.1}s ago{last_error}", .ago.as_secs_f64())]
    Expired {
        /// The credential (`[tokens.NAME]`).
        name: String,
        /// How long ago it expired.
        ago: Duration,
        /// Why the last refresh failed.
        last_error: LastError,
    },
    /// A forced refresh did not produce a token.
    #[error("credential \"{name}\": refresh failed: {error}")]
    RefreshFailed {
        /// The credential (`[tokens.NAME]`).
        name: String,
        /// What went wrong.
        error: String,
    },
    /// No usable token within the time the caller would wait.
    #[error("credential \"{name}\": no valid token after {:.1}s{last_error}", .waited.as_secs_f64())]
    Timeout {
        /// The credential (`[tokens.NAME]`).
        name: String,
        /// How long the caller waited.
        waited: Duration,
        /// Why the last refresh failed, if one did.
        last_error: LastError,
    },
    /// The refresh task is gone (its runtime shut down).
    #[error("credential \"{0}\": the refresh task has stopped")]
    Stopped(String),
    /// A `[tokens.NAME]` section cannot be started.
    #[error("tokens.{name}.{key}: {message}")]
    Config {
        /// The credential (`[tokens.NAME]`).
        name: String,
        /// The offending key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// The last refresh error, rendered as `; last refresh error: …` (or
/// nothing) after a [`CredentialError`]'s message. Provider errors never
/// carry secret values, so neither does this.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastError(pub Option<String>);

impl fmt::Display for LastError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(error) => write!(f, "; last refresh error: {error}"),
            None => Ok(()),
        }
    }
}

/// Username and password for the upstream's `AUTH` / `HELLO … AUTH`.
#[derive(Debug, Clone)]
pub struct RedisCredential {
    /// ACL user; `None` means the `default` user.
    pub username: Option<String>,
    /// The password.
    pub password: Secret,
}

/// Where a Redis upstream's credential comes from.
#[derive(Debug, Clone)]
pub struct RedisCredentials {
    username: Option<String>,
    source: PasswordSource,
}

#[derive(Debug, Clone)]
enum PasswordSource {
    File(PathBuf),
    Env(String),
    Token(TokenSource),
}

impl RedisCredentials {
    /// From `[redis.NAME.auth]`; validation guarantees exactly one source,
    /// and that a `token` names a source in `tokens`.
    pub fn from_config(auth: &RedisAuthConfig, tokens: &TokenRegistry) -> Self {
        let source = match (&auth.password_file, &auth.password_env, &auth.token) {
            (Some(path), _, _) => PasswordSource::File(path.clone()),
            (None, Some(var), _) => PasswordSource::Env(var.clone()),
            (None, None, Some(name)) => match tokens.get(name) {
                Some(source) => PasswordSource::Token(source),
                None => PasswordSource::Env(format!("<no token source {name}>")),
            },
            (None, None, None) => PasswordSource::Env(String::new()),
        };
        Self {
            username: auth.username.clone(),
            source,
        }
    }

    /// Bumps when the credential changes: token sources, whose live
    /// connections re-`AUTH`. `None` for a password file or variable, read
    /// at each connect.
    pub fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        match &self.source {
            PasswordSource::Token(source) => Some(source.subscribe()),
            _ => None,
        }
    }

    /// The upstream refused the credential: asks a token source for a fresh
    /// one now, in the background (connections re-`AUTH` when it arrives).
    pub fn refresh_soon(&self) {
        if let PasswordSource::Token(source) = &self.source {
            let source = source.clone();
            tokio::spawn(async move {
                if let Err(e) = source.force_refresh().await {
                    tracing::warn!(credential = source.name(), error = %e, "forced refresh failed");
                }
            });
        }
    }

    /// Asks a token source for a fresh token and waits for it (the
    /// upstream refused the current one during a handshake). `false` when
    /// there is nothing to refresh or the refresh failed.
    pub async fn refresh_now(&self) -> bool {
        match &self.source {
            PasswordSource::Token(source) => source.force_refresh().await.is_ok(),
            _ => false,
        }
    }

    /// Waits (at most `timeout`) until a token source has its first token,
    /// so connections made at startup do not fail for want of one.
    pub async fn wait_ready(&self, timeout: Duration) {
        if let PasswordSource::Token(source) = &self.source {
            if !source.is_ready() {
                let _ = source.wait_ready(timeout).await;
            }
        }
    }

    /// The credential to use for a connection being made now.
    pub fn current(&self) -> Result<RedisCredential, CredentialError> {
        let password = match &self.source {
            PasswordSource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| CredentialError::File {
                    path: path.clone(),
                    reason: e.to_string(),
                })?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            PasswordSource::Env(var) => {
                std::env::var(var).map_err(|_| CredentialError::Env(var.clone()))?
            }
            PasswordSource::Token(source) => {
                let token = source.current()?;
                return Ok(RedisCredential {
                    username: self.username.clone().or(token.username),
                    password: token.secret,
                });
            }
        };
        Ok(RedisCredential {
            username: self.username.clone(),
            password: Secret(password),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let cred = RedisCredential {
            username: Some("app".into()),
            password: Secret::new("hunter2"),
        };
        let shown = format!("{cred:?} {} {:?}", cred.password, cred.password);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(cred.password.expose(), "hunter2");
    }

    #[test]
    fn password_file_is_reread_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "one\n").unwrap();
        let creds = RedisCredentials::from_config(
            &RedisAuthConfig {
                username: None,
                password_file: Some(path.clone()),
                password_env: None,
                token: None,
            },
            &TokenRegistry::default(),
        );
        assert_eq!(creds.current().unwrap().password.expose(), "one");
        std::fs::write(&path, "two").unwrap();
        assert_eq!(creds.current().unwrap().password.expose(), "two");
        std::fs::remove_file(&path).unwrap();
        assert!(creds.current().is_err());
    }
}
