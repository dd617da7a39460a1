//! `provider = "aws_elasticache_iam"`: ElastiCache IAM auth tokens, signed
//! locally (`sigv4`) with credentials from the environment or from STS
//! `AssumeRoleWithWebIdentity` (EKS IRSA). STS credentials are kept until
//! 20 minutes before they expire (a fresh token always has its full 15
//! minutes); the token itself is re-signed at every fetch.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use reqwest::{Client, Url};

use super::config::AwsElastiCacheConfig;
use super::engine::{Fetch, Fetched};
use super::http::{self, FetchError, SecretSource};
use super::sigv4::{self, AwsCredentials, ELASTICACHE_TOKEN_LIFETIME};
use super::Secret;

/// Assume the role for this long (STS's default; the role's maximum is at
/// least that).
const STS_SESSION: Duration = Duration::from_secs(3600);
/// Re-assume when the session has less than this left.
const STS_RENEW_BEFORE: Duration = Duration::from_secs(20 * 60);

struct WebIdentity {
    role_arn: String,
    token_file: PathBuf,
    session_name: String,
}

pub(crate) struct AwsProvider {
    http: Client,
    cache_name: String,
    user_id: String,
    region: String,
    serverless: bool,
    /// From config; else looked up in the environment at each fetch.
    web_identity: Option<WebIdentity>,
    session_name: Option<String>,
    sts_url: Url,
    sts_endpoint: String,
    /// The last STS credentials and when they expire.
    assumed: Mutex<Option<(AwsCredentials, SystemTime)>>,
}

impl AwsProvider {
    pub(crate) fn new(
        http: Client,
        config: &AwsElastiCacheConfig,
    ) -> Result<Self, (&'static str, String)> {
        let sts = config
            .sts_endpoint
            .clone()
            .unwrap_or_else(|| format!("https://sts.{}.amazonaws.com/", config.region));
        let sts_url = Url::parse(&sts).map_err(|e| ("sts_endpoint", format!("{sts}: {e}")))?;
        let web_identity = match (&config.role_arn, &config.web_identity_token_file) {
            (Some(role_arn), Some(token_file)) => Some(WebIdentity {
                role_arn: role_arn.clone(),
                token_file: token_file.clone(),
                session_name: session_name(config.role_session_name.as_deref()),
            }),
            _ => None,
        };
        Ok(Self {
            http,
            cache_name: config.cache_name.to_lowercase(),
            user_id: config.user_id.clone(),
            region: config.region.clone(),
            serverless: config.serverless,
            web_identity,
            session_name: config.role_session_name.clone(),
            sts_endpoint: http::describe("STS", &sts_url),
            sts_url,
            assumed: Mutex::new(None),
        })
    }

    /// Credentials to sign with, and when they stop working (`None`: not
    /// known to expire).
    async fn credentials(&self) -> Result<(AwsCredentials, Option<SystemTime>), FetchError> {
        if let Some(identity) = &self.web_identity {
            return self.assumed(identity).await;
        }
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let (Some(access_key_id), Some(secret)) =
            (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"))
        {
            let creds = AwsCredentials {
                access_key_id,
                secret_access_key: Secret::new(secret),
                session_token: var("AWS_SESSION_TOKEN").map(Secret::new),
            };
            return Ok((creds, None));
        }
        if let (Some(role_arn), Some(token_file)) =
            (var("AWS_ROLE_ARN"), var("AWS_WEB_IDENTITY_TOKEN_FILE"))
        {
            let identity = WebIdentity {
                role_arn,
                token_file: token_file.into(),
                session_name: session_name(self.session_name.as_deref()),
            };
            return self.assumed(&identity).await;
        }
        Err(FetchError::Missing(
            "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
             or AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE (or role_arn and \
             web_identity_token_file)"
                .into(),
        ))
    }

    async fn assumed(
        &self,
        identity: &WebIdentity,
    ) -> Result<(AwsCredentials, Option<SystemTime>), FetchError> {
        let cached = self
            .assumed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some((creds, expires)) = cached {
            if expires > SystemTime::now() + STS_RENEW_BEFORE {
                return Ok((creds, Some(expires)));
            }
        }
        let (creds, expires) = self.assume_role(identity).await?;
        *self.assumed.lock().unwrap_or_else(|e| e.into_inner()) = Some((creds.clone(), expires));
        Ok((creds, Some(expires)))
    }

    /// STS `AssumeRoleWithWebIdentity` (unsigned: the web identity token is
    /// the proof). POSTed, so the token stays out of URLs and logs.
    async fn assume_role(
        &self,
        identity: &WebIdentity,
    ) -> Result<(AwsCredentials, SystemTime), FetchError> {
        let token =
            SecretSource::File(identity.token_file.clone()).read("web identity token file")?;
        let duration = STS_SESSION.as_secs().to_string();
        let form = [
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", identity.role_arn.as_str()),
            ("RoleSessionName", identity.session_name.as_str()),
            ("WebIdentityToken", token.expose()),
            ("DurationSeconds", duration.as_str()),
        ];
        let request = self.http.post(self.sts_url.clone()).form(&form);
        let body = http::send(request, &self.sts_endpoint).await?;
        parse_sts_response(&self.sts_endpoint, &String::from_utf8_lossy(&body))
    }
}

fn session_name(configured: Option<&str>) -> String {
    configured
        .map(str::to_owned)
        .or_else(|| std::env::var("AWS_ROLE_SESSION_NAME").ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "attache".into())
}

impl Fetch for AwsProvider {
    async fn fetch(&self) -> Result<Fetched, FetchError> {
        let (creds, creds_expire) = self.credentials().await?;
        let now = SystemTime::now();
        let secret = sigv4::elasticache_token(
            &self.cache_name,
            &self.user_id,
            &self.region,
            self.serverless,
            &creds,
            now,
        );
        // A token signed with session credentials dies with them.
        let lifetime = creds_expire
            .map(|at| at.duration_since(now).unwrap_or_default())
            .map_or(ELASTICACHE_TOKEN_LIFETIME, |left| {
                left.min(ELASTICACHE_TOKEN_LIFETIME)
            });
        Ok(Fetched {
            username: Some(self.user_id.clone()),
            secret,
            lifetime: Some(lifetime),
        })
    }

    fn describe(&self) -> String {
        self.sts_endpoint.clone()
    }
}

/// The `<Credentials>` of an `AssumeRoleWithWebIdentityResponse`.
fn parse_sts_response(
    endpoint: &str,
    xml: &str,
) -> Result<(AwsCredentials, SystemTime), FetchError> {
    let field = |tag: &str| {
        http::xml_text(xml, tag).ok_or_else(|| FetchError::Malformed {
            endpoint: endpoint.to_owned(),
            reason: format!("no <{tag}>"),
        })
    };
    let expiration = field("Expiration")?;
    let expires = sigv4::parse_utc(&expiration).ok_or_else(|| FetchError::Malformed {
        endpoint: endpoint.to_owned(),
        reason: format!("<Expiration> {expiration:?} is not a UTC time"),
    })?;
    let creds = AwsCredentials {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: Secret::new(field("SecretAccessKey")?),
        session_token: Some(Secret::new(field("SessionToken")?)),
    };
    Ok((creds, expires))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESPONSE: &str = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <SessionToken>AQoDYXdzE&amp;Pa</SessionToken>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <Expiration>2014-10-24T23:00:23Z</Expiration>
      <AccessKeyId>ASgeIAIOSFODNN7EXAMPLE</AccessKeyId>
    </Credentials>
  </AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>"#;

    #[test]
    fn reads_sts_credentials() {
        let (creds, expires) = parse_sts_response("STS x", RESPONSE).unwrap();
        assert_eq!(creds.access_key_id, "ASgeIAIOSFODNN7EXAMPLE");
        assert_eq!(creds.session_token.unwrap().expose(), "AQoDYXdzE&Pa");
        assert_eq!(expires, sigv4::parse_utc("2014-10-24T23:00:23Z").unwrap());
        let broken = RESPONSE.replace("<AccessKeyId>", "<Id>");
        let error = parse_sts_response("STS x", &broken)
            .err()
            .unwrap()
            .to_string();
        assert_eq!(error, "STS x: malformed response: no <AccessKeyId>");
        assert!(
            !format!("{error} {:?}", parse_sts_response("STS x", RESPONSE)).contains("EXAMPLEKEY")
        );
    }
}
