//! `[http.NAME]`: one local HTTP listener's config, its validation, and the
//! [`Policy`] built from it. Every field's doc comment is its reference in
//! the README.
//!
//! TLS to the upstreams (`[http.NAME.tls]`) is the runtime's
//! (`attache::tls::TlsConfig`), so this crate does not name its type: the
//! struct takes it as a parameter, and the runtime's config model uses
//! `HttpListenerConfig<attache::tls::TlsConfig>`. (`#[serde(flatten)]`
//! would not do: it cannot be combined with `deny_unknown_fields`.)

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::admit::Gate;
use crate::headers::{is_hop_by_hop, CredentialHeader, ExtraHeaders, HeaderPolicy};
use crate::retry::{RetryBudget, RetryPolicy, DEFAULT_FLOOR_PER_SEC};
use crate::route::{parse_host_name, Route, RouteError, RouteTable};
use crate::upstream::Upstream;

/// `[http.NAME]`: a local HTTP listener and the upstreams behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "Tls: Deserialize<'de>"))]
pub struct HttpListenerConfig<Tls = NoTls> {
    /// Local address apps send plain HTTP to, e.g. `127.0.0.1:8080`.
    /// Loopback only unless `allow_remote = true`.
    pub listen: SocketAddr,
    /// Allow a non-loopback `listen` address. Default `false`: the listener
    /// adds credentials to whatever it forwards, so it must not be
    /// reachable from outside the pod by accident.
    #[serde(default)]
    pub allow_remote: bool,
    /// Base URL requests are forwarded to, e.g.
    /// `https://api.payments.example.com/v2`: `http` or `https`, a host, an
    /// optional base path that request paths are appended to, no query, no
    /// credentials. With `routes`, it is the catch-all for requests no
    /// route matches; leave it out and those get a 404.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Routes by path prefix (and optionally Host), longest prefix first;
    /// routes with a `host` take precedence for that host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    /// Name of the `[tokens.NAME]` source whose token is sent upstream in
    /// `token_header`, replacing any the app sent. Unset: no token is
    /// added and the app's own header passes through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Header that carries the token. Default `authorization`.
    #[serde(default = "default_token_header")]
    pub token_header: String,
    /// Scheme written before the token: `Bearer` (default) gives
    /// `authorization: Bearer <token>`; `""` sends the bare token (for
    /// headers such as `x-api-key`).
    #[serde(default = "default_token_scheme")]
    pub token_scheme: String,
    /// Extra headers sent upstream with every request, replacing the app's
    /// of the same name: `name = { value = "…" }`, `{ value_file = "/path" }`
    /// (read at startup, trailing newline ignored) or `{ value_env = "VAR" }`.
    /// Values are treated as secrets: never logged, and `attache check`
    /// prints inline values as `<redacted>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, HeaderValueConfig>,
    /// Add `x-forwarded-for` (the app's address) and `x-forwarded-proto:
    /// http`. Default `false`: the app is in the same pod.
    #[serde(default)]
    pub forwarded_headers: bool,
    /// How long a whole request may take, from sending it upstream to the
    /// end of the response headers, retries included; the app then gets a
    /// 504. Default `30s`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How long connecting to an upstream (DNS, TCP, TLS) may take before
    /// the attempt counts as a connect failure. Default `2s`.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long an unused upstream connection is kept open for reuse.
    /// Default `90s`.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Most app connections this listener serves at once; one more gets a
    /// `503` (`x-attache-error: max-connections`) and is closed. Default
    /// `10000`.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most idle HTTP/1.1 connections kept per upstream address (each
    /// address a host name resolves to; per worker). HTTP/2 upstreams need
    /// one connection per address. Default `32`.
    #[serde(default = "default_max_idle_per_host")]
    pub max_idle_per_host: usize,
    /// Most retries of a failed request (connect failures; for idempotent
    /// methods also lost connections and 502/503/504). `0` disables them.
    /// Default `2`, so at most 3 attempts. A 401 while `token` is set gets
    /// one more, after refreshing the token.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Retries may add at most this percentage to the requests sent
    /// upstream (plus 10 per second), so that retries cannot multiply the
    /// load on an upstream in trouble. Default `20`.
    #[serde(default = "default_retry_budget_percent")]
    pub retry_budget_percent: u32,
    /// Host names the app may use besides `localhost`, `127.0.0.1`,
    /// `[::1]`, the `listen` address and the routes' hosts (e.g. the pod's
    /// name). Requests for other hosts get a 403.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accept_hosts: Vec<String>,
    /// TLS to the upstreams; see the module doc.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
}

/// `[[http.NAME.routes]]`: requests under a path prefix go to an upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Path prefix, matched by whole segments: `/v1/` (or `/v1`) matches
    /// `/v1`, `/v1/…`, not `/v10`. Compared as sent: no percent-decoding,
    /// no `..` resolution.
    pub prefix: String,
    /// Only for requests with this Host (case-insensitive, port ignored).
    /// Default: any host the listener accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Base URL, as for the listener's `upstream`.
    pub upstream: String,
    /// Remove `prefix` from the path before appending it to the upstream's
    /// base path (`/v1/users` → `/users`). Default `false`.
    #[serde(default)]
    pub strip_prefix: bool,
}

/// One `headers` entry: exactly one of `value`, `value_file`, `value_env`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderValueConfig {
    /// The value itself.
    #[serde(default)]
    pub value: Option<String>,
    /// A file holding the value (e.g. a mounted Secret).
    #[serde(default)]
    pub value_file: Option<PathBuf>,
    /// An environment variable holding the value.
    #[serde(default)]
    pub value_env: Option<String>,
}

/// Where a `headers` value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderValueSource<'a> {
    /// A file to read.
    File(&'a Path),
    /// An environment variable to read.
    Env(&'a str),
}

/// The TLS parameter of a config without TLS: `tls` must be absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoTls {}

/// A config value that cannot be used; `key` is the full dotted key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct InvalidConfig {
    /// E.g. `http.payments.routes[1].upstream`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

/// Everything the runtime needs from one listener's config, checked.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Admission and routes.
    pub gate: Gate,
    /// Header rules, with the static `headers` resolved.
    pub headers: HeaderPolicy,
    /// Retry rules.
    pub retry: RetryPolicy,
    /// `retry_budget_percent`.
    pub retry_budget_percent: u32,
}

impl Policy {
    /// A fresh retry budget (one per listener per worker).
    pub fn retry_budget(&self) -> RetryBudget {
        RetryBudget::new(self.retry_budget_percent, DEFAULT_FLOOR_PER_SEC)
    }
}

impl<Tls> HttpListenerConfig<Tls> {
    /// Checks everything this crate can, without reading files or the
    /// environment; errors name the key under `http.{name}`.
    pub fn validate(self, name: &str) -> Result<Self, InvalidConfig> {
        self.policy(name, |_| Ok::<_, String>("placeholder".to_owned()))?;
        Ok(self)
    }

    /// Builds the listener's [`Policy`]. `read` fetches `value_file` /
    /// `value_env` header values (inline values need no help); a trailing
    /// newline is dropped from what it returns.
    pub fn policy<E: fmt::Display>(
        &self,
        name: &str,
        mut read: impl FnMut(HeaderValueSource<'_>) -> Result<String, E>,
    ) -> Result<Policy, InvalidConfig> {
        let invalid = |field: &str, message: String| InvalidConfig {
            key: format!("http.{name}.{field}"),
            message,
        };
        if !self.allow_remote && !self.listen.ip().is_loopback() {
            return Err(invalid(
                "listen",
                format!(
                    "{} is not a loopback address; set allow_remote = true to listen on it",
                    self.listen
                ),
            ));
        }
        let routes = self
            .route_table()
            .map_err(|(field, m)| invalid(&field, m))?;
        for (i, host) in self.accept_hosts.iter().enumerate() {
            parse_host_name(host)
                .map_err(|e| invalid(&format!("accept_hosts[{i}]"), e.to_string()))?;
        }
        let gate = Gate::new(routes, self.listen, &self.accept_hosts)
            .map_err(|e| invalid("accept_hosts", e.to_string()))?;

        if self.token.as_deref() == Some("") {
            return Err(invalid("token", "must name a [tokens.NAME] source".into()));
        }
        let token_header =
            forwardable_header(&self.token_header).map_err(|m| invalid("token_header", m))?;
        if !self.token_scheme.bytes().all(is_tchar) {
            return Err(invalid(
                "token_scheme",
                "must be one word (e.g. Bearer), or empty for a bare token".into(),
            ));
        }
        let mut extra = ExtraHeaders::new();
        for (header, source) in &self.headers {
            let key = format!("headers.{header}");
            let header_name = forwardable_header(header).map_err(|m| invalid(&key, m))?;
            if self.token.is_some() && header_name == token_header {
                return Err(invalid(
                    &key,
                    "is token_header, which the token fills; remove one of them".into(),
                ));
            }
            let text = match source.source().map_err(|m| invalid(&key, m.into()))? {
                Ok(inline) => inline.to_owned(),
                Err(outside) => read(outside)
                    .map_err(|e| invalid(&key, e.to_string()))?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            };
            // The message must not quote the value: it may be a secret.
            let value = HeaderValue::try_from(text).map_err(|_| {
                invalid(&key, "the value has characters a header cannot hold".into())
            })?;
            extra.insert(header_name, value);
        }

        for (field, value) in [
            ("timeout", self.timeout),
            ("connect_timeout", self.connect_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(field, "must be greater than zero".into()));
            }
        }
        if self.max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1".into()));
        }
        if self.retries > 10 {
            return Err(invalid("retries", "must be at most 10".into()));
        }
        if self.retry_budget_percent > 100 {
            return Err(invalid(
                "retry_budget_percent",
                "must be between 0 and 100".into(),
            ));
        }
        Ok(Policy {
            gate,
            headers: HeaderPolicy {
                credential: CredentialHeader::new(token_header, &self.token_scheme),
                extra,
                forwarded: self.forwarded_headers,
            },
            retry: RetryPolicy {
                max_retries: self.retries,
                refresh_on_unauthorized: self.token.is_some(),
                ..RetryPolicy::default()
            },
            retry_budget_percent: self.retry_budget_percent,
        })
    }

    /// The routes and catch-all; errors are `(field, message)`.
    fn route_table(&self) -> Result<RouteTable, (String, String)> {
        if self.upstream.is_none() && self.routes.is_empty() {
            return Err((
                "upstream".into(),
                "set upstream, or add routes ([[http.NAME.routes]])".into(),
            ));
        }
        let fallback = self
            .upstream
            .as_deref()
            .map(str::parse::<Upstream>)
            .transpose()
            .map_err(|e| ("upstream".to_owned(), e.to_string()))?;
        let mut routes = Vec::with_capacity(self.routes.len());
        for (i, route) in self.routes.iter().enumerate() {
            let field = |f: &str| format!("routes[{i}].{f}");
            let upstream: Upstream = route
                .upstream
                .parse()
                .map_err(|e: crate::upstream::UpstreamError| (field("upstream"), e.to_string()))?;
            let route = Route::new(
                &route.prefix,
                route.host.as_deref(),
                upstream,
                route.strip_prefix,
            )
            .map_err(|e| match e {
                RouteError::Host(_) => (field("host"), e.to_string()),
                _ => (field("prefix"), e.to_string()),
            })?;
            routes.push(route);
        }
        RouteTable::new(routes, fallback).map_err(|e| match e {
            RouteError::Duplicate { index, .. } => (format!("routes[{index}]"), e.to_string()),
            other => ("routes".into(), other.to_string()),
        })
    }
}

/// A header name attache may set upstream: valid, not hop-by-hop, not Host.
fn forwardable_header(name: &str) -> Result<HeaderName, String> {
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))?;
    if is_hop_by_hop(&header) || header == http::header::HOST {
        return Err(format!("{header} is set by attache itself"));
    }
    Ok(header)
}

/// RFC 9110 `tchar`: what a token (such as an auth scheme) is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl HeaderValueConfig {
    /// `Ok(inline value)` or `Err(where to read it)`; an error message when
    /// not exactly one of the three is set.
    pub fn source(&self) -> Result<Result<&str, HeaderValueSource<'_>>, &'static str> {
        match (&self.value, &self.value_file, &self.value_env) {
            (Some(v), None, None) => Ok(Ok(v)),
            (None, Some(f), None) => Ok(Err(HeaderValueSource::File(f))),
            (None, None, Some(e)) => Ok(Err(HeaderValueSource::Env(e))),
            (None, None, None) => Err("set one of value, value_file, value_env"),
            _ => Err("set only one of value, value_file, value_env"),
        }
    }
}

/// Redacts `value`, which may be a secret.
impl fmt::Debug for HeaderValueConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeaderValueConfig")
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .field("value_file", &self.value_file)
            .field("value_env", &self.value_env)
            .finish()
    }
}

/// Writes `value` as `<redacted>`: serialising is for `attache check`'s
/// printout, which must not show secrets.
impl Serialize for HeaderValueConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        if self.value.is_some() {
            map.serialize_entry("value", "<redacted>")?;
        }
        if let Some(file) = &self.value_file {
            map.serialize_entry("value_file", file)?;
        }
        if let Some(env) = &self.value_env {
            map.serialize_entry("value_env", env)?;
        }
        map.end()
    }
}

impl Serialize for NoTls {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        match *self {}
    }
}

impl<'de> Deserialize<'de> for NoTls {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom(
            "tls is read by the attache runtime, which knows its type",
        ))
    }
}

fn default_token_header() -> String {
    "authorization".into()
}
fn default_token_scheme() -> String {
    "Bearer".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(90)
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_idle_per_host() -> usize {
    32
}
fn default_retries() -> u32 {
    2
}
fn default_retry_budget_percent() -> u32 {
    20
}

#[cfg(test)]
mod tests;
