//! `provider = "oauth2_client_credentials"`: RFC 6749 §4.4 at any token
//! endpoint. The client secret is re-read at every fetch.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use reqwest::{Client, Url};

use super::config::{ClientAuth, OAuth2Config};
use super::engine::{Fetch, Fetched};
use super::http::{self, FetchError, SecretSource};

pub(crate) struct OAuth2Provider {
    http: Client,
    token_url: Url,
    endpoint: String,
    client_id: String,
    client_secret: SecretSource,
    client_auth: ClientAuth,
    scope: String,
    audience: Option<String>,
    extra_params: BTreeMap<String, String>,
    username: Option<String>,
}

impl OAuth2Provider {
    /// Validation guarantees a URL and one secret source.
    pub(crate) fn new(http: Client, config: &OAuth2Config) -> Result<Self, String> {
        let token_url = Url::parse(&config.token_url).map_err(|e| e.to_string())?;
        let client_secret = SecretSource::from_parts(
            config.client_secret_file.as_ref(),
            config.client_secret_env.as_ref(),
        )
        .ok_or("no client secret source")?;
        Ok(Self {
            http,
            endpoint: http::describe("token endpoint", &token_url),
            token_url,
            client_id: config.client_id.clone(),
            client_secret,
            client_auth: config.client_auth,
            scope: config.scopes.join(" "),
            audience: config.audience.clone(),
            extra_params: config.extra_params.clone(),
            username: config.username.clone(),
        })
    }
}

impl Fetch for OAuth2Provider {
    async fn fetch(&self) -> Result<Fetched, FetchError> {
        let secret = self.client_secret.read("client secret")?;
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        if !self.scope.is_empty() {
            form.push(("scope", &self.scope));
        }
        if let Some(audience) = &self.audience {
            form.push(("audience", audience));
        }
        form.extend(
            self.extra_params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let mut request = self.http.post(self.token_url.clone());
        match self.client_auth {
            ClientAuth::Basic => {
                // RFC 6749 §2.3.1: each part form-encoded before Basic.
                let pair = format!(
                    "{}:{}",
                    form_encode(&self.client_id),
                    form_encode(secret.expose())
                );
                request = request.header(
                    reqwest::header::AUTHORIZATION,
                    format!("Basic {}", STANDARD.encode(pair)),
                );
            }
            ClientAuth::RequestBody => {
                form.push(("client_id", &self.client_id));
                form.push(("client_secret", secret.expose()));
            }
        }
        let (secret, lifetime) = http::request_token(
            request
                .header(reqwest::header::ACCEPT, "application/json")
                .form(&form),
            &self.endpoint,
        )
        .await?;
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

/// `application/x-www-form-urlencoded` for one value.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn basic_auth_parts_are_form_encoded() {
        assert_eq!(super::form_encode("a b:c/d~é"), "a+b%3Ac%2Fd%7E%C3%A9");
    }
}
