//! HTTP for the token providers: one client (rustls with its own `ring`
//! provider, so HTTPS works without a process-wide default), the token
//! request, and the response reading every OAuth2-shaped endpoint shares.
//!
//! Errors never carry a secret: request bodies are never echoed, and from a
//! response only the status and the OAuth2 `error` / `error_description`
//! fields are kept (an unparseable body is described, not quoted).

use std::error::Error as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Client, RequestBuilder, Url};
use serde_json::Value;

use super::{jwt, Secret};

/// One fetch failed. The engine retries every kind with backoff.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// The endpoint answered with a non-success status.
    #[error("{endpoint}: HTTP {status}{detail}")]
    Status {
        endpoint: String,
        status: u16,
        /// `: invalid_client: …` when the body is an OAuth2 error.
        detail: String,
    },
    /// No answer: refused, reset, DNS, TLS.
    #[error("{endpoint}: {reason}")]
    Request { endpoint: String, reason: String },
    /// No answer within the fetch timeout.
    #[error("{endpoint}: timed out after {after:?}")]
    Timeout { endpoint: String, after: Duration },
    /// An answer, but not a usable token.
    #[error("{endpoint}: malformed response: {reason}")]
    Malformed { endpoint: String, reason: String },
    /// A local file (secret, token, assertion) could not be read.
    #[error("{what} {}: {reason}", .path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// A required environment variable is unset or empty.
    #[error("environment variable {var} ({what}) is not set")]
    Env { what: &'static str, var: String },
    /// Something the provider needs is missing (e.g. AWS credentials).
    #[error("{0}")]
    Missing(String),
}

/// Where a secret is read from, at every fetch (so rotation is picked up).
#[derive(Debug, Clone)]
pub(crate) enum SecretSource {
    File(PathBuf),
    Env(String),
}

impl SecretSource {
    pub(crate) fn from_parts(file: Option<&PathBuf>, env: Option<&String>) -> Option<Self> {
        match (file, env) {
            (Some(path), _) => Some(Self::File(path.clone())),
            (None, Some(var)) => Some(Self::Env(var.clone())),
            (None, None) => None,
        }
    }

    /// Reads the secret; trailing newlines are not part of it, and an empty
    /// one is an error. `what` names it in errors (`client secret file`).
    pub(crate) fn read(&self, what: &'static str) -> Result<Secret, FetchError> {
        match self {
            // A few hundred bytes from a local (tmpfs) file: blocking the
            // refresh task for that is cheaper than a thread hop.
            Self::File(path) => {
                let file_error = |reason: String| FetchError::File {
                    what,
                    path: path.clone(),
                    reason,
                };
                let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
                let value = text.trim_end_matches(['\r', '\n']);
                if value.is_empty() {
                    return Err(file_error("empty".into()));
                }
                Ok(Secret::new(value))
            }
            Self::Env(var) => match std::env::var(var) {
                Ok(value) if !value.is_empty() => Ok(Secret::new(value)),
                _ => Err(FetchError::Env {
                    what,
                    var: var.clone(),
                }),
            },
        }
    }
}

/// The HTTP client every provider shares. Redirects are not followed: a
/// token endpoint that redirects is misconfigured, and following would
/// resend credentials elsewhere.
pub(crate) fn client() -> Result<Client, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("attache/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// Sends a token request and reads the RFC 6749 §5.1 answer.
pub(crate) async fn request_token(
    request: RequestBuilder,
    endpoint: &str,
) -> Result<(Secret, Duration), FetchError> {
    let body = send(request, endpoint).await?;
    parse_token_response(endpoint, &body)
}

/// `token endpoint https://host/path` (the query, if any, left out).
pub(crate) fn describe(what: &str, url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    let _ = shown.set_password(None);
    format!("{what} {shown}")
}

/// Sends `request` and returns the body of a 2xx answer.
pub(crate) async fn send(request: RequestBuilder, endpoint: &str) -> Result<Vec<u8>, FetchError> {
    let response = request.send().await.map_err(|e| FetchError::Request {
        endpoint: endpoint.to_owned(),
        reason: error_chain(&e),
    })?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| FetchError::Request {
        endpoint: endpoint.to_owned(),
        reason: error_chain(&e),
    })?;
    if !status.is_success() {
        return Err(FetchError::Status {
            endpoint: endpoint.to_owned(),
            status: status.as_u16(),
            detail: error_detail(&body),
        });
    }
    Ok(body.to_vec())
}

/// reqwest's error and its causes (`…: tcp connect error: Connection
/// refused`), without the URL.
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = if error.is_connect() {
        "cannot connect".to_owned()
    } else if error.is_body() || error.is_decode() {
        "reading the response".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `: invalid_client: AADSTS7000215 …` from an OAuth2 error body (JSON
/// `error`, `error_description`) or an AWS one (XML `<Code>`, `<Message>`);
/// nothing else of the body.
fn error_detail(body: &[u8]) -> String {
    let parts = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => {
            let field = |name: &str| map.get(name).and_then(Value::as_str).map(str::to_owned);
            [field("error"), field("error_description")]
        }
        _ => {
            let xml = String::from_utf8_lossy(body);
            [xml_text(&xml, "Code"), xml_text(&xml, "Message")]
        }
    };
    let mut detail: String = parts
        .into_iter()
        .flatten()
        .map(|part| format!(": {part}"))
        .collect();
    if detail.len() > 300 {
        let cut = (0..=300)
            .rev()
            .find(|&i| detail.is_char_boundary(i))
            .unwrap_or(0);
        detail.truncate(cut);
        detail.push('…');
    }
    detail
}

/// `access_token` and its lifetime from an RFC 6749 §5.1 response (also the
/// GCP metadata server's). The lifetime is `expires_in`, which some servers
/// send as a string; without it, the access token's JWT `exp` claim.
pub(crate) fn parse_token_response(
    endpoint: &str,
    body: &[u8],
) -> Result<(Secret, Duration), FetchError> {
    let malformed = |reason: &str| FetchError::Malformed {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return Err(malformed("not a JSON object"));
    };
    let token = match map.get("access_token") {
        Some(Value::String(t)) if !t.trim().is_empty() => t.clone(),
        Some(Value::String(_)) => return Err(malformed("empty access_token")),
        Some(_) => return Err(malformed("access_token is not a string")),
        None => return Err(malformed("no access_token")),
    };
    let lifetime = match map.get("expires_in") {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
        None => jwt_lifetime(&token),
    };
    match lifetime {
        Some(secs) if secs.is_finite() && secs >= 1.0 => {
            Ok((Secret::new(token), Duration::from_secs_f64(secs.min(1e9))))
        }
        Some(_) => Err(malformed("expires_in is not a positive number of seconds")),
        None => Err(malformed("no expires_in (and no JWT exp claim)")),
    }
}

/// The unescaped text of the first `<tag>…</tag>`; `None` if absent or
/// empty. STS responses are flat enough that this is all the XML needed.
pub(crate) fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    let text = xml[start..end]
        .trim()
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&");
    (!text.is_empty()).then_some(text)
}

fn jwt_lifetime(token: &str) -> Option<f64> {
    let exp = jwt::claim(token, "exp")?.as_f64()?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    Some(exp - now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<(Secret, Duration), String> {
        parse_token_response("token endpoint http://x/", body.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn token_responses() {
        let (token, lifetime) = parse(r#"{"access_token":"abc","expires_in":60}"#).unwrap();
        assert_eq!((token.expose(), lifetime), ("abc", Duration::from_secs(60)));
        let (_, lifetime) = parse(r#"{"access_token":"abc","expires_in":"3599"}"#).unwrap();
        assert_eq!(lifetime, Duration::from_secs(3599));
        for (body, reason) in [
            ("<html>", "not a JSON object"),
            (
                r#"{"access_token":"","expires_in":5}"#,
                "empty access_token",
            ),
            (r#"{"access_token":7,"expires_in":5}"#, "not a string"),
            (r#"{"expires_in":5}"#, "no access_token"),
            (r#"{"access_token":"abc","expires_in":0}"#, "positive"),
            (r#"{"access_token":"abc"}"#, "no expires_in"),
        ] {
            let error = parse(body).unwrap_err();
            assert!(error.contains(reason), "{body}: {error}");
            assert!(error.starts_with("token endpoint http://x/: malformed response"));
        }
    }

    #[test]
    fn a_jwt_exp_stands_in_for_expires_in() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let jwt = jwt::tests::mint(&serde_json::json!({ "exp": now + 120 }));
        let (_, lifetime) = parse(&format!(r#"{{"access_token":"{jwt}"}}"#)).unwrap();
        assert!(lifetime > Duration::from_secs(100) && lifetime <= Duration::from_secs(121));
    }

    #[test]
    fn error_bodies_keep_only_code_and_description() {
        let body = br#"{"error":"invalid_client","error_description":"bad secret","client_secret":"s3cr3t"}"#;
        assert_eq!(error_detail(body), ": invalid_client: bad secret");
        assert_eq!(error_detail(b"access_token=s3cr3t"), "");
        let sts = b"<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>\
                    <Message>Not authorized</Message></Error></ErrorResponse>";
        assert_eq!(error_detail(sts), ": AccessDenied: Not authorized");
    }

    #[test]
    fn the_client_needs_no_process_default_crypto_provider() {
        // reqwest is built without a provider of its own: with a default
        // missing (nothing in attache installs one), building the client
        // from anything but our preconfigured TLS would panic here.
        client().unwrap();
    }
}
