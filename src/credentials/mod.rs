//! Credentials attache presents upstream. Today: a static password from a
//! file or an environment variable, read at every connect so that a rotated
//! Secret file reaches new connections. The refreshing token providers plug
//! in behind the same [`RedisCredentials`] seam.

use std::fmt;
use std::path::PathBuf;

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
}

impl RedisCredentials {
    /// From `[redis.NAME.auth]`; validation guarantees exactly one source.
    pub fn from_config(auth: &RedisAuthConfig) -> Self {
        let source = match (&auth.password_file, &auth.password_env) {
            (Some(path), _) => PasswordSource::File(path.clone()),
            (None, Some(var)) => PasswordSource::Env(var.clone()),
            (None, None) => PasswordSource::Env(String::new()),
        };
        Self {
            username: auth.username.clone(),
            source,
        }
    }

    /// Bumps when the credential changes; `None` for sources read at each
    /// connect (a password file or variable), which never re-`AUTH`.
    pub fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// Asks the source for a fresh credential (the upstream refused this
    /// one). Sources read at each connect have nothing to refresh.
    pub fn refresh_soon(&self) {}

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
        let creds = RedisCredentials::from_config(&RedisAuthConfig {
            username: None,
            password_file: Some(path.clone()),
            password_env: None,
        });
        assert_eq!(creds.current().unwrap().password.expose(), "one");
        std::fs::write(&path, "two").unwrap();
        assert_eq!(creds.current().unwrap().password.expose(), "two");
        std::fs::remove_file(&path).unwrap();
        assert!(creds.current().is_err());
    }
}
