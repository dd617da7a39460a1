//! `provider = "gcp"`: the service account's access token from the GCE /
//! GKE metadata server (Memorystore for Redis IAM auth).

use reqwest::{Client, Url};

use super::config::GcpConfig;
use super::engine::{Fetch, Fetched};
use super::http::{self, FetchError};

pub(crate) struct GcpProvider {
    http: Client,
    token_url: Url,
    endpoint: String,
    username: Option<String>,
}

impl GcpProvider {
    pub(crate) fn new(http: Client, config: &GcpConfig) -> Result<Self, String> {
        let token_url = Url::parse(&config.token_url).map_err(|e| e.to_string())?;
        Ok(Self {
            http,
            endpoint: http::describe("token endpoint", &token_url),
            token_url,
            username: config.username.clone(),
        })
    }
}

impl Fetch for GcpProvider {
    async fn fetch(&self) -> Result<Fetched, FetchError> {
        let request = self
            .http
            .get(self.token_url.clone())
            .header("Metadata-Flavor", "Google");
        let (secret, lifetime) = http::request_token(request, &self.endpoint).await?;
        Ok(Fetched {
            username: self.username.clone(),
            secret,
            lifetime: Some(lifetime),
        })
    }

    fn describe(&self) -> String {
        self.endpoint.clone()
    }
}
