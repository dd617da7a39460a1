//! `provider = "azure_entra"`: Microsoft Entra ID client credentials, with
//! a client secret or with workload identity (the projected Kubernetes
//! service-account token as a federated client assertion). The Redis
//! username is the identity's object id.

use std::path::PathBuf;

use reqwest::{Client, Url};

use super::config::AzureEntraConfig;
use super::engine::{Fetch, Fetched};
use super::http::{self, FetchError, SecretSource};
use super::jwt;

/// Set by the Azure workload identity webhook.
pub(crate) const FEDERATED_TOKEN_FILE_ENV: &str = "AZURE_FEDERATED_TOKEN_FILE";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

enum ClientCredential {
    Secret(SecretSource),
    FederatedToken(SecretSource),
}

pub(crate) struct AzureProvider {
    http: Client,
    token_url: Url,
    endpoint: String,
    client_id: String,
    credential: ClientCredential,
    scope: String,
    object_id: Option<String>,
}

impl AzureProvider {
    /// Fails (naming the key) without a client secret file, a federated
    /// token file, or `AZURE_FEDERATED_TOKEN_FILE`.
    pub(crate) fn new(
        http: Client,
        config: &AzureEntraConfig,
    ) -> Result<Self, (&'static str, String)> {
        let credential = match (&config.client_secret_file, &config.federated_token_file) {
            (Some(path), _) => ClientCredential::Secret(SecretSource::File(path.clone())),
            (None, Some(path)) => {
                ClientCredential::FederatedToken(SecretSource::File(path.clone()))
            }
            (None, None) => match std::env::var_os(FEDERATED_TOKEN_FILE_ENV) {
                Some(path) if !path.is_empty() => {
                    ClientCredential::FederatedToken(SecretSource::File(PathBuf::from(path)))
                }
                _ => {
                    return Err((
                        "federated_token_file",
                        format!(
                            "set client_secret_file or federated_token_file \
                             ({FEDERATED_TOKEN_FILE_ENV} is not set either)"
                        ),
                    ))
                }
            },
        };
        let url = format!(
            "{}/{}/oauth2/v2.0/token",
            config.authority_host.trim_end_matches('/'),
            config.tenant_id
        );
        let token_url = Url::parse(&url).map_err(|e| ("authority_host", format!("{url}: {e}")))?;
        Ok(Self {
            http,
            endpoint: http::describe("token endpoint", &token_url),
            token_url,
            client_id: config.client_id.clone(),
            credential,
            scope: config.scope.clone(),
            object_id: config.object_id.clone(),
        })
    }
}

impl Fetch for AzureProvider {
    async fn fetch(&self) -> Result<Fetched, FetchError> {
        let proof = match &self.credential {
            ClientCredential::Secret(source) => {
                ("client_secret", source.read("client secret file")?)
            }
            ClientCredential::FederatedToken(source) => {
                ("client_assertion", source.read("federated token file")?)
            }
        };
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("scope", self.scope.as_str()),
            (proof.0, proof.1.expose()),
        ];
        if matches!(self.credential, ClientCredential::FederatedToken(_)) {
            form.push(("client_assertion_type", JWT_BEARER));
        }
        let request = self
            .http
            .post(self.token_url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form);
        let (secret, lifetime) = http::request_token(request, &self.endpoint).await?;
        let username = match &self.object_id {
            Some(oid) => oid.clone(),
            None => jwt::claim(secret.expose(), "oid")
                .and_then(|oid| oid.as_str().map(str::to_owned))
                .ok_or_else(|| FetchError::Malformed {
                    endpoint: self.endpoint.clone(),
                    reason: "the access token has no oid claim; set object_id".into(),
                })?,
        };
        Ok(Fetched {
            username: Some(username),
            secret,
            lifetime: Some(lifetime),
        })
    }

    fn describe(&self) -> String {
        self.endpoint.clone()
    }
}
