//! `[tokens.NAME]`: where a credential that expires comes from. One variant
//! per provider, chosen by `provider = "…"`. Secrets are never in the config
//! itself: it names the file or environment variable that holds them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One credential, tagged by `provider`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum TokenConfig {
    /// A token that does not expire, from a file (re-read when it changes)
    /// or an environment variable.
    Static(StaticTokenConfig),
    /// OAuth 2.0 client-credentials grant (RFC 6749 §4.4) at any token URL.
    #[serde(rename = "oauth2_client_credentials")]
    OAuth2ClientCredentials(OAuth2Config),
    /// Microsoft Entra ID (Azure Cache for Redis / Azure Managed Redis).
    AzureEntra(AzureEntraConfig),
    /// Google Cloud: the metadata server's service-account token
    /// (Memorystore IAM auth).
    Gcp(GcpConfig),
    /// AWS ElastiCache IAM auth: a SigV4-presigned token, 15 minutes.
    AwsElasticacheIam(AwsElastiCacheConfig),
}

/// `provider = "static"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticTokenConfig {
    /// File holding the token (trailing newline ignored); polled every
    /// second, and a change is a new token. Set this or `token_env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the token. Set this or `token_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// ACL username presented with the token; omit for the `default` user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// How an OAuth2 client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with the form-encoded id and secret (`client_secret_basic`,
    /// which RFC 6749 §2.3.1 requires every server to accept).
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body (`client_secret_post`).
    RequestBody,
}

/// `provider = "oauth2_client_credentials"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Config {
    /// The token endpoint, `http://` or `https://`.
    pub token_url: String,
    /// The client id.
    pub client_id: String,
    /// File holding the client secret, re-read at every fetch so a rotated
    /// secret is picked up. Set this or `client_secret_env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// Environment variable holding the client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_env: Option<String>,
    /// How the client id and secret are sent: `basic` (default) or
    /// `request_body`.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Scopes to request, sent space-separated as `scope`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// `audience` form parameter (Auth0, Okta and others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// More form parameters, sent as given.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_params: BTreeMap<String, String>,
    /// ACL username presented with the token; omit for the `default` user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// How long one token request may take before it counts as failed.
    #[serde(default = "default_fetch_timeout", with = "humantime_serde")]
    pub fetch_timeout: Duration,
}

/// `provider = "azure_entra"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureEntraConfig {
    /// The directory (tenant) id.
    pub tenant_id: String,
    /// The application (client) id, or the managed identity's client id.
    pub client_id: String,
    /// File holding a client secret. Omit to use workload identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// Workload identity: the projected service-account token file, sent as
    /// the client assertion and re-read at every fetch. Default: the
    /// `AZURE_FEDERATED_TOKEN_FILE` environment variable (set by the Azure
    /// workload identity webhook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federated_token_file: Option<PathBuf>,
    /// Scope to request.
    #[serde(default = "default_azure_scope")]
    pub scope: String,
    /// The Entra authority.
    #[serde(default = "default_authority_host")]
    pub authority_host: String,
    /// The Redis username: the identity's object id. Default: the `oid`
    /// claim of each access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_id: Option<String>,
    /// How long one token request may take before it counts as failed.
    #[serde(default = "default_fetch_timeout", with = "humantime_serde")]
    pub fetch_timeout: Duration,
}

/// `provider = "gcp"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpConfig {
    /// Where the token comes from; sent `Metadata-Flavor: Google`.
    #[serde(default = "default_gcp_token_url")]
    pub token_url: String,
    /// ACL username presented with the token; omit for the `default` user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// How long one token request may take before it counts as failed.
    #[serde(default = "default_fetch_timeout", with = "humantime_serde")]
    pub fetch_timeout: Duration,
}

/// `provider = "aws_elasticache_iam"`. AWS credentials come from, in order:
/// `role_arn` + `web_identity_token_file` here; `AWS_ACCESS_KEY_ID` +
/// `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`); `AWS_ROLE_ARN` +
/// `AWS_WEB_IDENTITY_TOKEN_FILE` (EKS IRSA) through STS
/// `AssumeRoleWithWebIdentity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsElastiCacheConfig {
    /// Replication group id or serverless cache name (lowercased: the
    /// token is signed for the lowercase name).
    pub cache_name: String,
    /// The IAM-enabled ElastiCache user id; also the Redis username.
    pub user_id: String,
    /// The cache's region, e.g. `us-east-1`.
    pub region: String,
    /// A serverless cache (signs `ResourceType=ServerlessCache`).
    #[serde(default)]
    pub serverless: bool,
    /// Role to assume with the web identity token. Default:
    /// `AWS_ROLE_ARN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// The web identity (OIDC) token file. Default:
    /// `AWS_WEB_IDENTITY_TOKEN_FILE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_identity_token_file: Option<PathBuf>,
    /// STS session name. Default: `AWS_ROLE_SESSION_NAME`, else `attache`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_session_name: Option<String>,
    /// STS endpoint. Default: `https://sts.{region}.amazonaws.com/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sts_endpoint: Option<String>,
    /// How long one STS request may take before it counts as failed.
    #[serde(default = "default_fetch_timeout", with = "humantime_serde")]
    pub fetch_timeout: Duration,
}

fn default_fetch_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_azure_scope() -> String {
    "https://redis.azure.com/.default".into()
}

fn default_authority_host() -> String {
    "https://login.microsoftonline.com".into()
}

fn default_gcp_token_url() -> String {
    "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token"
        .into()
}

/// Form parameters attache sets itself; `extra_params` may not override them.
const RESERVED_PARAMS: &[&str] = &[
    "grant_type",
    "client_id",
    "client_secret",
    "scope",
    "audience",
];

type Invalid = (&'static str, String);

impl TokenConfig {
    /// Checks what types alone cannot. The error names the key, relative to
    /// `tokens.NAME`.
    pub fn validate(&self) -> Result<(), Invalid> {
        match self {
            Self::Static(c) => one_of(
                ("token_file", c.token_file.is_some()),
                ("token_env", c.token_env.is_some()),
            ),
            Self::OAuth2ClientCredentials(c) => {
                http_url("token_url", &c.token_url)?;
                non_empty("client_id", &c.client_id)?;
                one_of(
                    ("client_secret_file", c.client_secret_file.is_some()),
                    ("client_secret_env", c.client_secret_env.is_some()),
                )?;
                if let Some(key) = c
                    .extra_params
                    .keys()
                    .find(|k| RESERVED_PARAMS.contains(&k.as_str()))
                {
                    return Err((
                        "extra_params",
                        format!("{key:?} is set by attache; use the dedicated key"),
                    ));
                }
                positive("fetch_timeout", c.fetch_timeout)
            }
            Self::AzureEntra(c) => {
                non_empty("tenant_id", &c.tenant_id)?;
                non_empty("client_id", &c.client_id)?;
                non_empty("scope", &c.scope)?;
                http_url("authority_host", &c.authority_host)?;
                if c.client_secret_file.is_some() && c.federated_token_file.is_some() {
                    return Err((
                        "client_secret_file",
                        "set client_secret_file or federated_token_file, not both".into(),
                    ));
                }
                positive("fetch_timeout", c.fetch_timeout)
            }
            Self::Gcp(c) => {
                http_url("token_url", &c.token_url)?;
                positive("fetch_timeout", c.fetch_timeout)
            }
            Self::AwsElasticacheIam(c) => {
                non_empty("cache_name", &c.cache_name)?;
                non_empty("user_id", &c.user_id)?;
                non_empty("region", &c.region)?;
                if let Some(endpoint) = &c.sts_endpoint {
                    http_url("sts_endpoint", endpoint)?;
                }
                if c.role_arn.is_some() != c.web_identity_token_file.is_some() {
                    return Err((
                        "role_arn",
                        "set role_arn and web_identity_token_file together".into(),
                    ));
                }
                positive("fetch_timeout", c.fetch_timeout)
            }
        }
    }

    /// How long one fetch may take (static tokens: reading a file).
    pub fn fetch_timeout(&self) -> Duration {
        match self {
            Self::Static(_) => default_fetch_timeout(),
            Self::OAuth2ClientCredentials(c) => c.fetch_timeout,
            Self::AzureEntra(c) => c.fetch_timeout,
            Self::Gcp(c) => c.fetch_timeout,
            Self::AwsElasticacheIam(c) => c.fetch_timeout,
        }
    }
}

fn one_of(a: (&'static str, bool), b: (&'static str, bool)) -> Result<(), Invalid> {
    match (a.1, b.1) {
        (true, true) => Err((a.0, format!("set {} or {}, not both", a.0, b.0))),
        (false, false) => Err((a.0, format!("set {} or {}", a.0, b.0))),
        _ => Ok(()),
    }
}

fn non_empty(key: &'static str, value: &str) -> Result<(), Invalid> {
    if value.trim().is_empty() {
        return Err((key, "must not be empty".into()));
    }
    Ok(())
}

fn positive(key: &'static str, value: Duration) -> Result<(), Invalid> {
    if value.is_zero() {
        return Err((key, "must be greater than zero".into()));
    }
    Ok(())
}

fn http_url(key: &'static str, value: &str) -> Result<(), Invalid> {
    match reqwest::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(()),
        Ok(_) => Err((key, format!("{value:?} is not an http:// or https:// URL"))),
        Err(e) => Err((key, format!("{value:?}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> TokenConfig {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn every_provider_parses_with_defaults() {
        let c = parse("provider = \"static\"\ntoken_file = \"/run/token\"");
        assert!(c.validate().is_ok());
        let c = parse(
            "provider = \"oauth2_client_credentials\"\ntoken_url = \"https://idp/token\"\n\
             client_id = \"app\"\nclient_secret_env = \"SECRET\"\nscopes = [\"a\", \"b\"]\n\
             fetch_timeout = \"3s\"\n[extra_params]\nresource = \"r\"",
        );
        assert!(c.validate().is_ok());
        assert_eq!(c.fetch_timeout(), Duration::from_secs(3));
        let TokenConfig::AzureEntra(c) =
            parse("provider = \"azure_entra\"\ntenant_id = \"t\"\nclient_id = \"c\"")
        else {
            panic!()
        };
        assert_eq!(c.scope, "https://redis.azure.com/.default");
        assert_eq!(c.authority_host, "https://login.microsoftonline.com");
        assert_eq!(c.fetch_timeout, Duration::from_secs(10));
        let TokenConfig::Gcp(c) = parse("provider = \"gcp\"") else {
            panic!()
        };
        assert!(c.token_url.starts_with("http://metadata.google.internal/"));
        let c = parse(
            "provider = \"aws_elasticache_iam\"\ncache_name = \"My-Cache\"\n\
             user_id = \"app\"\nregion = \"us-east-1\"\nserverless = true",
        );
        assert!(c.validate().is_ok());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<TokenConfig>(
            "provider = \"static\"\ntoken_file = \"/t\"\ntoken_flie = \"/t\"",
        )
        .unwrap_err();
        assert!(err.to_string().contains("token_flie"), "{err}");
        assert!(toml::from_str::<TokenConfig>("provider = \"kerberos\"").is_err());
    }

    #[test]
    fn errors_name_the_key() {
        let key = |toml: &str| parse(toml).validate().unwrap_err().0;
        assert_eq!(key("provider = \"static\""), "token_file");
        assert_eq!(
            key("provider = \"static\"\ntoken_file = \"/a\"\ntoken_env = \"B\""),
            "token_file"
        );
        let oauth = "provider = \"oauth2_client_credentials\"\nclient_id = \"c\"\n";
        assert_eq!(
            key(&format!(
                "{oauth}token_url = \"ftp://x\"\nclient_secret_env = \"S\""
            )),
            "token_url"
        );
        assert_eq!(
            key(&format!("{oauth}token_url = \"http://x\"")),
            "client_secret_file"
        );
        assert_eq!(
            key(&format!(
                "{oauth}token_url = \"http://x\"\nclient_secret_env = \"S\"\n\
                 fetch_timeout = \"0s\""
            )),
            "fetch_timeout"
        );
        assert_eq!(
            key(&format!(
                "{oauth}token_url = \"http://x\"\nclient_secret_env = \"S\"\n\
                 [extra_params]\ngrant_type = \"password\""
            )),
            "extra_params"
        );
        assert_eq!(
            key("provider = \"azure_entra\"\ntenant_id = \"\"\nclient_id = \"c\""),
            "tenant_id"
        );
        assert_eq!(
            key(
                "provider = \"aws_elasticache_iam\"\ncache_name = \"c\"\nuser_id = \"u\"\n\
                 region = \"r\"\nrole_arn = \"arn\""
            ),
            "role_arn"
        );
    }
}
