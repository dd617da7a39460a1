//! Responses attache writes itself, when it cannot or will not forward.
//!
//! Each cause picks a status, a kind (sent as `x-attache-error: <kind>`, so
//! an app or a dashboard can tell attache's own errors from the upstream's)
//! and a one-line plain-text body naming the upstream and the cause. Bodies
//! are built from request paths (never the query, which may carry API
//! keys), host names, upstream URLs (which cannot hold credentials) and
//! cause texts the runtime supplies; never from header values or tokens.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderName, Method, Response, StatusCode};

use crate::upstream::Upstream;

/// The header naming an attache-made response's kind.
pub const ERROR_HEADER: HeaderName = HeaderName::from_static("x-attache-error");

/// Longest app-supplied text (a path, a Host) quoted in a body.
const QUOTE_MAX: usize = 200;

/// Why attache answered a request itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalError {
    /// No route matches and the listener has no catch-all `upstream`.
    #[error("no route matches {method} {path} (host {host})")]
    NoRoute {
        /// The request method.
        method: Method,
        /// The request path, without the query, shortened if long.
        path: Quoted,
        /// The request's Host, or `none`.
        host: Quoted,
    },
    /// `CONNECT` or an absolute-form target: attache is not a forward proxy.
    #[error("{what} is refused: attache forwards only to its configured upstreams")]
    ProxyRefused {
        /// What was asked, e.g. `CONNECT` or `absolute-form request target`.
        what: &'static str,
    },
    /// The Host is not a name this listener answers to.
    #[error("host {host} is not served here; add it to accept_hosts if it should be")]
    HostRefused {
        /// The Host as sent.
        host: Quoted,
    },
    /// Malformed request: no or several Host headers, a target that is not
    /// a path, an unusable header.
    #[error("bad request: {reason}")]
    BadRequest {
        /// What is wrong, in a few words.
        reason: &'static str,
    },
    /// The request body is larger than the runtime will accept.
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The app did not send its (small, read whole) request body within
    /// the listener's `timeout`: nothing went upstream.
    #[error("the request body did not arrive within {after:?}")]
    RequestTimeout {
        /// The timeout that ran out.
        after: Duration,
    },
    /// No connection to the upstream could be made (DNS, TCP, TLS).
    #[error("cannot connect to upstream {upstream}: {cause}")]
    ConnectFailed {
        /// The upstream URL.
        upstream: String,
        /// The I/O, DNS or TLS error, as text.
        cause: String,
    },
    /// The connection broke before a response came.
    #[error("upstream {upstream} closed the connection before responding: {cause}")]
    UpstreamReset {
        /// The upstream URL.
        upstream: String,
        /// The I/O or protocol error, as text.
        cause: String,
    },
    /// No response within the listener's `timeout`.
    #[error("upstream {upstream} did not respond within {after:?}")]
    Timeout {
        /// The upstream URL.
        upstream: String,
        /// The timeout that ran out.
        after: Duration,
    },
    /// The listener's token source has no usable token yet.
    #[error("no token from source {source_name:?} for upstream {upstream}: {cause}")]
    NoToken {
        /// The upstream URL.
        upstream: String,
        /// The `[tokens.NAME]` name.
        source_name: String,
        /// Why (e.g. the token endpoint's status), never the token itself.
        cause: String,
    },
}

/// Who caused an attache-made response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The app's request (a 4xx).
    Downstream,
    /// attache itself (its credentials).
    Attache,
    /// The upstream, or the way to it.
    Upstream,
}

impl LocalError {
    /// A no-route error; quotes at most 200 bytes of path and host.
    pub fn no_route(method: &Method, path: &str, host: Option<&str>) -> Self {
        Self::NoRoute {
            method: method.clone(),
            path: Quoted::new(path),
            host: Quoted::new(host.unwrap_or("none")),
        }
    }

    /// A refused-Host error; quotes at most 200 bytes of the host.
    pub fn host_refused(host: &str) -> Self {
        Self::HostRefused {
            host: Quoted::new(host),
        }
    }

    /// A connect failure to `upstream`; `cause` must not hold secrets
    /// (I/O, DNS and TLS errors don't).
    pub fn connect_failed(upstream: &Upstream, cause: impl fmt::Display) -> Self {
        Self::ConnectFailed {
            upstream: upstream.to_string(),
            cause: cause.to_string(),
        }
    }

    /// A connection lost before the response; `cause` as for
    /// [`connect_failed`](Self::connect_failed).
    pub fn upstream_reset(upstream: &Upstream, cause: impl fmt::Display) -> Self {
        Self::UpstreamReset {
            upstream: upstream.to_string(),
            cause: cause.to_string(),
        }
    }

    /// The listener's `timeout` ran out.
    pub fn timeout(upstream: &Upstream, after: Duration) -> Self {
        Self::Timeout {
            upstream: upstream.to_string(),
            after,
        }
    }

    /// No token: `cause` says why, and must not hold the token or the
    /// client secret.
    pub fn no_token(upstream: &Upstream, source_name: &str, cause: impl fmt::Display) -> Self {
        Self::NoToken {
            upstream: upstream.to_string(),
            source_name: source_name.to_owned(),
            cause: cause.to_string(),
        }
    }

    /// The status the app gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute { .. } => StatusCode::NOT_FOUND,
            Self::ProxyRefused { .. } | Self::HostRefused { .. } => StatusCode::FORBIDDEN,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::ConnectFailed { .. } | Self::UpstreamReset { .. } => StatusCode::BAD_GATEWAY,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::NoToken { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `x-attache-error` value; also a good metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoRoute { .. } => "no-route",
            Self::ProxyRefused { .. } => "proxy-refused",
            Self::HostRefused { .. } => "host-refused",
            Self::BadRequest { .. } => "bad-request",
            Self::BodyTooLarge { .. } => "body-too-large",
            Self::RequestTimeout { .. } => "request-timeout",
            Self::ConnectFailed { .. } => "connect-failed",
            Self::UpstreamReset { .. } => "upstream-reset",
            Self::Timeout { .. } => "upstream-timeout",
            Self::NoToken { .. } => "no-token",
        }
    }

    /// Whose fault it is, for logs and metrics.
    pub fn origin(&self) -> Origin {
        match self {
            Self::NoRoute { .. }
            | Self::ProxyRefused { .. }
            | Self::HostRefused { .. }
            | Self::BadRequest { .. }
            | Self::BodyTooLarge { .. }
            | Self::RequestTimeout { .. } => Origin::Downstream,
            Self::NoToken { .. } => Origin::Attache,
            Self::ConnectFailed { .. } | Self::UpstreamReset { .. } | Self::Timeout { .. } => {
                Origin::Upstream
            }
        }
    }

    /// The response: status, `x-attache-error`, `text/plain` body
    /// `attache: <message>\n`, `cache-control: no-store`, and
    /// `retry-after: 1` for `no-token` (a refresh is under way). For a
    /// `HEAD` request the runtime sends it without the body.
    pub fn to_response(&self) -> Response<Bytes> {
        let body = Bytes::from(format!("attache: {self}\n"));
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(ERROR_HEADER, HeaderValue::from_static(self.kind()));
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if matches!(self, Self::NoToken { .. }) {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        *response.body_mut() = body;
        response
    }
}

/// App-supplied text quoted in an error body: at most 200 bytes (cut on a
/// character boundary, `…` appended), control characters shown as `?` so a
/// body stays one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quoted(String);

impl Quoted {
    /// Quotes `text`.
    pub fn new(text: &str) -> Self {
        let mut end = text.len().min(QUOTE_MAX);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut quoted: String = text[..end]
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        if end < text.len() {
            quoted.push('…');
        }
        Self(quoted)
    }

    /// The quoted text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Quoted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(e: &LocalError) -> String {
        String::from_utf8(e.to_response().into_body().to_vec()).unwrap()
    }

    #[test]
    fn each_cause_has_its_status_kind_and_origin() {
        let u: Upstream = "https://api.payments.example.com/base".parse().unwrap();
        let cases = [
            (
                LocalError::no_route(&Method::GET, "/x", Some("localhost")),
                404,
                "no-route",
                Origin::Downstream,
            ),
            (
                LocalError::ProxyRefused { what: "CONNECT" },
                403,
                "proxy-refused",
                Origin::Downstream,
            ),
            (
                LocalError::host_refused("evil.example"),
                403,
                "host-refused",
                Origin::Downstream,
            ),
            (
                LocalError::BadRequest {
                    reason: "missing Host header",
                },
                400,
                "bad-request",
                Origin::Downstream,
            ),
            (
                LocalError::BodyTooLarge { limit: 1024 },
                413,
                "body-too-large",
                Origin::Downstream,
            ),
            (
                LocalError::RequestTimeout {
                    after: Duration::from_secs(30),
                },
                408,
                "request-timeout",
                Origin::Downstream,
            ),
            (
                LocalError::connect_failed(&u, "connection refused"),
                502,
                "connect-failed",
                Origin::Upstream,
            ),
            (
                LocalError::upstream_reset(&u, "connection reset"),
                502,
                "upstream-reset",
                Origin::Upstream,
            ),
            (
                LocalError::timeout(&u, Duration::from_secs(30)),
                504,
                "upstream-timeout",
                Origin::Upstream,
            ),
            (
                LocalError::no_token(&u, "payments", "token endpoint answered 401"),
                503,
                "no-token",
                Origin::Attache,
            ),
        ];
        for (e, status, kind, origin) in cases {
            let r = e.to_response();
            assert_eq!(r.status().as_u16(), status, "{e}");
            assert_eq!(r.headers()[ERROR_HEADER], kind);
            assert_eq!(r.headers()[CONTENT_TYPE], "text/plain; charset=utf-8");
            assert_eq!(
                r.headers()[CONTENT_LENGTH],
                r.body().len().to_string().as_str()
            );
            assert_eq!(e.origin(), origin);
            assert!(r.body().ends_with(b"\n"));
        }
    }

    #[test]
    fn bodies_name_the_request_or_the_upstream_and_the_cause() {
        let u: Upstream = "https://api.payments.example.com/base".parse().unwrap();
        assert_eq!(
            body(&LocalError::no_route(&Method::GET, "/x", Some("localhost"))),
            "attache: no route matches GET /x (host localhost)\n"
        );
        assert_eq!(
            body(&LocalError::no_route(&Method::POST, "/x", None)),
            "attache: no route matches POST /x (host none)\n"
        );
        assert_eq!(
            body(&LocalError::connect_failed(&u, "connection refused")),
            "attache: cannot connect to upstream https://api.payments.example.com/base: connection refused\n"
        );
        assert_eq!(
            body(&LocalError::timeout(&u, Duration::from_millis(2500))),
            "attache: upstream https://api.payments.example.com/base did not respond within 2.5s\n"
        );
        let no_token = LocalError::no_token(&u, "payments", "token endpoint answered 401");
        assert_eq!(
            body(&no_token),
            "attache: no token from source \"payments\" for upstream https://api.payments.example.com/base: token endpoint answered 401\n"
        );
        assert_eq!(no_token.to_response().headers()[RETRY_AFTER], "1");
        assert!(body(&LocalError::ProxyRefused { what: "CONNECT" }).contains("CONNECT is refused"));
    }

    #[test]
    fn quoted_text_is_short_and_one_line() {
        let long = "é".repeat(300);
        let q = Quoted::new(&long);
        assert!(q.as_str().len() <= QUOTE_MAX + '…'.len_utf8());
        assert!(q.as_str().ends_with('…'));
        assert_eq!(Quoted::new("/a\r\nb").as_str(), "/a??b");
        assert_eq!(Quoted::new("/short").as_str(), "/short");
        let e = LocalError::no_route(&Method::GET, &"/x".repeat(1000), Some("h"));
        assert!(body(&e).len() < 300);
    }
}
