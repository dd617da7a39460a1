//! `provider = "static"`: a token that does not expire. From a file it is
//! re-read every second and a changed content is a new token (a rotated
//! Kubernetes Secret); from the environment it is read once.

use std::time::Duration;

use super::config::StaticTokenConfig;
use super::engine::{Fetch, Fetched};
use super::http::{FetchError, SecretSource};
use super::schedule::FILE_POLL;

pub(crate) struct StaticProvider {
    source: SecretSource,
    username: Option<String>,
}

impl StaticProvider {
    /// Validation guarantees exactly one source.
    pub(crate) fn new(config: &StaticTokenConfig) -> Self {
        let source =
            SecretSource::from_parts(config.token_file.as_ref(), config.token_env.as_ref())
                .unwrap_or_else(|| SecretSource::Env(String::new()));
        Self {
            source,
            username: config.username.clone(),
        }
    }
}

impl Fetch for StaticProvider {
    async fn fetch(&self) -> Result<Fetched, FetchError> {
        Ok(Fetched {
            username: self.username.clone(),
            secret: self.source.read("token file")?,
            lifetime: None,
        })
    }

    fn describe(&self) -> String {
        match &self.source {
            SecretSource::File(path) => format!("token file {}", path.display()),
            SecretSource::Env(var) => format!("environment variable {var}"),
        }
    }

    fn poll_interval(&self) -> Option<Duration> {
        matches!(self.source, SecretSource::File(_)).then_some(FILE_POLL)
    }
}
