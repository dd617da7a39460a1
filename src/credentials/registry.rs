//! [`TokenRegistry`]: every `[tokens.NAME]`, each with its refresh task
//! running on the runtime given at start.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;

use super::aws::AwsProvider;
use super::azure::AzureProvider;
use super::config::TokenConfig;
use super::engine::{self, Fetch};
use super::gcp::GcpProvider;
use super::oauth2::OAuth2Provider;
use super::source::{Shared, TokenSource};
use super::static_token::StaticProvider;
use super::{http, CredentialError};

/// The configured token sources, by name. Each source's refresh task runs
/// on the runtime passed to [`start`](Self::start) until the registry and
/// every clone of the source are dropped.
#[derive(Debug, Default, Clone)]
pub struct TokenRegistry {
    sources: BTreeMap<String, TokenSource>,
}

impl TokenRegistry {
    /// Validates every config and starts its refresh task on `runtime`
    /// (which must stay up: workers on other runtimes read the sources).
    /// The first fetch starts at once; [`TokenSource::wait_ready`] waits
    /// for it.
    pub fn start(
        configs: &BTreeMap<String, TokenConfig>,
        runtime: &Handle,
    ) -> Result<Self, CredentialError> {
        let mut client = None;
        let mut sources = BTreeMap::new();
        for (name, config) in configs {
            let invalid = |key: &str, message: String| CredentialError::Config {
                name: name.clone(),
                key: key.to_owned(),
                message,
            };
            config.validate().map_err(|(key, msg)| invalid(key, msg))?;
            let mut http = || -> Result<reqwest::Client, CredentialError> {
                if client.is_none() {
                    client = Some(http::client().map_err(|e| invalid("provider", e))?);
                }
                Ok(client.clone().expect("just set"))
            };
            let shared = Shared::new(name);
            let timeout = config.fetch_timeout();
            let task = match config {
                TokenConfig::Static(c) => {
                    spawn_with(runtime, &shared, StaticProvider::new(c), timeout)
                }
                TokenConfig::OAuth2ClientCredentials(c) => {
                    let provider =
                        OAuth2Provider::new(http()?, c).map_err(|e| invalid("token_url", e))?;
                    spawn_with(runtime, &shared, provider, timeout)
                }
                TokenConfig::AzureEntra(c) => {
                    let provider =
                        AzureProvider::new(http()?, c).map_err(|(key, e)| invalid(key, e))?;
                    spawn_with(runtime, &shared, provider, timeout)
                }
                TokenConfig::Gcp(c) => {
                    let provider =
                        GcpProvider::new(http()?, c).map_err(|e| invalid("token_url", e))?;
                    spawn_with(runtime, &shared, provider, timeout)
                }
                TokenConfig::AwsElasticacheIam(c) => {
                    let provider =
                        AwsProvider::new(http()?, c).map_err(|(key, e)| invalid(key, e))?;
                    spawn_with(runtime, &shared, provider, timeout)
                }
            };
            sources.insert(name.clone(), TokenSource::new(shared, task));
        }
        Ok(Self { sources })
    }

    /// The source `[tokens.NAME]`.
    pub fn get(&self, name: &str) -> Option<TokenSource> {
        self.sources.get(name).cloned()
    }

    /// Every source, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &TokenSource)> {
        self.sources
            .iter()
            .map(|(name, source)| (name.as_str(), source))
    }

    /// Whether every source has had its first token (the startup probe).
    pub fn is_ready(&self) -> bool {
        self.sources.values().all(TokenSource::is_ready)
    }
}

fn spawn_with<F: Fetch>(
    runtime: &Handle,
    shared: &Arc<Shared>,
    provider: F,
    timeout: Duration,
) -> tokio::task::AbortHandle {
    runtime
        .spawn(engine::run(shared.clone(), provider, timeout))
        .abort_handle()
}
