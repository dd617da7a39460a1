//! Upstream base URLs (`https://api.example.com/base`): parsing, the checks
//! that make one safe to forward to, and joining a request path onto one.

use std::fmt;
use std::str::FromStr;

use http::uri::{self, Authority, PathAndQuery, Scheme, Uri};
use http::HeaderValue;

/// Where a route forwards to: scheme, authority and a base path that every
/// forwarded path is appended to.
///
/// Its `Display` is the URL as configured, normalised (no trailing slash on
/// the base path); it never holds credentials, because URLs with userinfo
/// are refused, so it is safe in logs and error bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    /// `""` for the root, else `/seg[/seg…]` without a trailing slash.
    base_path: String,
    /// `authority` as a header value, built once: cloning it shares the
    /// bytes, where building one per request copies them.
    host_header: HeaderValue,
}

/// Why an upstream URL was refused. Messages are written to follow a config
/// key: `http.payments.upstream: scheme must be http or https`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// Not a URL at all.
    #[error("not a valid URL: {0}")]
    Invalid(String),
    /// No scheme, or one other than `http` / `https`.
    #[error("scheme must be http or https")]
    Scheme,
    /// No host (`https:///x`, `/just/a/path`).
    #[error("a host is required")]
    MissingHost,
    /// `user:password@` in the URL: credentials come from `token` or
    /// `headers`, where they are read from files and never printed.
    #[error("credentials in the URL are not allowed; use token or headers")]
    Userinfo,
    /// `?…` in the base URL: the app's query is what gets forwarded.
    #[error("the base URL must not have a query")]
    Query,
    /// `#…` in the base URL: fragments are never sent over HTTP.
    #[error("the base URL must not have a fragment")]
    Fragment,
}

impl Upstream {
    /// The scheme, `http` or `https`.
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// `host[:port]` as configured; also the `Host` header sent upstream.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// [`Upstream::authority`] as a `Host` header value.
    pub fn host_header(&self) -> &HeaderValue {
        &self.host_header
    }

    /// The host (IPv6 literals keep their brackets).
    pub fn host(&self) -> &str {
        self.authority.host()
    }

    /// The port to connect to: the explicit one, else 443 / 80 by scheme.
    pub fn port(&self) -> u16 {
        self.authority
            .port_u16()
            .unwrap_or(if self.is_https() { 443 } else { 80 })
    }

    /// Whether connections to it use TLS.
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// The base path: `""` for the root, else `/a/b` (no trailing slash).
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// The upstream URI for a request `path` (which starts with `/`) and
    /// optional `query`: the base path joined with `path`, so
    /// `https://h/base` + `/x` is `https://h/base/x` and never `//x`.
    ///
    /// The path is used byte for byte: percent-escapes (`%2F`) stay
    /// encoded and `.`/`..` segments are not resolved; see the crate doc.
    pub fn uri_for(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let path_and_query = PathAndQuery::try_from(join_path(&self.base_path, path, query))?;
        self.uri_with(path_and_query)
    }

    /// The upstream URI for `path_and_query` as it is, with no base path
    /// joined: for a root base path, a request's own.
    pub(crate) fn uri_with(&self, path_and_query: PathAndQuery) -> Result<Uri, http::Error> {
        // Parts, not `Uri::builder()`: the scheme and authority are already
        // parsed, and the builder's `TryInto` steps would move them through
        // a `Result` each.
        let mut parts = uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Ok(Uri::from_parts(parts)?)
    }
}

/// `base` (`""` or `/a` without trailing slash) + `path` (starting with
/// `/`, or empty meaning `/`) + `?query`.
pub(crate) fn join_path(base: &str, path: &str, query: Option<&str>) -> String {
    let path = if path.is_empty() { "/" } else { path };
    let mut joined =
        String::with_capacity(base.len() + path.len() + query.map_or(0, |q| q.len() + 1));
    joined.push_str(base);
    joined.push_str(path);
    if let Some(query) = query {
        joined.push('?');
        joined.push_str(query);
    }
    joined
}

impl FromStr for Upstream {
    type Err = UpstreamError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // `http::Uri` drops a fragment silently; refuse it before parsing.
        if text.contains('#') {
            return Err(UpstreamError::Fragment);
        }
        let uri: Uri = text
            .parse()
            .map_err(|e: http::uri::InvalidUri| UpstreamError::Invalid(e.to_string()))?;
        let scheme = match uri.scheme() {
            Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS => s.clone(),
            _ => return Err(UpstreamError::Scheme),
        };
        let authority = uri.authority().ok_or(UpstreamError::MissingHost)?.clone();
        if authority.as_str().contains('@') {
            return Err(UpstreamError::Userinfo);
        }
        if authority.host().is_empty() {
            return Err(UpstreamError::MissingHost);
        }
        if uri.query().is_some() {
            return Err(UpstreamError::Query);
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        // Unreachable: an authority is visible ASCII, which any header
        // value may hold.
        let host_header = HeaderValue::from_str(authority.as_str())
            .map_err(|e| UpstreamError::Invalid(e.to_string()))?;
        Ok(Self {
            scheme,
            authority,
            base_path,
            host_header,
        })
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(text: &str) -> Upstream {
        text.parse().unwrap()
    }

    #[test]
    fn parses_and_normalises() {
        let u = up("https://api.payments.example.com/base/");
        assert_eq!(u.scheme(), &Scheme::HTTPS);
        assert_eq!(u.host(), "api.payments.example.com");
        assert_eq!(u.port(), 443);
        assert_eq!(u.base_path(), "/base");
        assert_eq!(u.to_string(), "https://api.payments.example.com/base");

        let u = up("http://10.0.0.7:8081");
        assert_eq!(u.port(), 8081);
        assert!(!u.is_https());
        assert_eq!(u.base_path(), "");
        assert_eq!(u.to_string(), "http://10.0.0.7:8081");

        assert_eq!(up("http://[::1]:9000/").host(), "[::1]");
        assert_eq!(up("http://[::1]:9000/").host_header(), "[::1]:9000");
        assert_eq!(up("https://H.example/x").host_header(), "H.example");
        assert_eq!(up("http://h///").base_path(), "");
    }

    #[test]
    fn refuses_what_cannot_be_an_upstream() {
        let err = |t: &str| t.parse::<Upstream>().unwrap_err();
        assert_eq!(err("ftp://h/"), UpstreamError::Scheme);
        assert_eq!(err("api.example.com"), UpstreamError::Scheme);
        assert_eq!(err("/just/a/path"), UpstreamError::Scheme);
        assert_eq!(err("https://user:pw@h/"), UpstreamError::Userinfo);
        assert_eq!(err("https://h/base?x=1"), UpstreamError::Query);
        assert_eq!(err("https://h/base#top"), UpstreamError::Fragment);
        assert!(matches!(err("https://"), UpstreamError::Invalid(_)));
        assert!(matches!(err("https://h h/"), UpstreamError::Invalid(_)));
        assert!(matches!(err(""), UpstreamError::Invalid(_)));
    }

    #[test]
    fn userinfo_never_reaches_the_error_text() {
        let e = "https://user:hunter2@h/".parse::<Upstream>().unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
    }

    #[test]
    fn uri_for_joins_without_double_slashes() {
        let base = up("https://h/base/");
        let root = up("https://h");
        let cases = [
            (&base, "/x", None, "https://h/base/x"),
            (&base, "/", None, "https://h/base/"),
            (&base, "", None, "https://h/base/"),
            (&base, "/x", Some("a=1&b"), "https://h/base/x?a=1&b"),
            (&base, "/x", Some(""), "https://h/base/x?"),
            (&root, "/", None, "https://h/"),
            (&root, "", Some("q"), "https://h/?q"),
            (&root, "/a/b/", None, "https://h/a/b/"),
            // The request's own slashes, escapes and dot segments are kept.
            (&base, "//x", None, "https://h/base//x"),
            (&base, "/a%2Fb", None, "https://h/base/a%2Fb"),
            (&base, "/../admin", None, "https://h/base/../admin"),
        ];
        for (upstream, path, query, want) in cases {
            let got = upstream.uri_for(path, query).unwrap();
            assert_eq!(got.to_string(), want, "{upstream} + {path:?} {query:?}");
        }
    }
}
