//! Header rules: what crosses attache in each direction, and what attache
//! adds on the way up.
//!
//! Upstream-bound, in this order ([`HeaderPolicy::request`]):
//! 1. hop-by-hop headers are removed ([`strip_hop_by_hop`]), except that an
//!    upgrade request (WebSocket) keeps `Upgrade` and `Connection: upgrade`,
//!    and `TE: trailers` is kept (gRPC needs it; it is the one `TE` value
//!    HTTP/2 allows);
//! 2. `Host` becomes the upstream's authority (with HTTP/2 the runtime also
//!    puts it in the URI, which becomes `:authority`);
//! 3. optionally `x-forwarded-for` / `x-forwarded-proto` (off by default);
//! 4. the static `headers`, replacing the app's headers of the same names;
//! 5. the credential, replacing the app's own header of that name, only
//!    when the listener has a token: without one the app's is passed on.
//!
//! App-bound ([`HeaderPolicy::response`]): hop-by-hop headers are removed,
//! except on a `101 Switching Protocols`.

use std::net::IpAddr;

use http::header::{
    HeaderValue, CONNECTION, HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName, StatusCode, Version};

use crate::upstream::Upstream;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// plus the old `Keep-Alive` and `Proxy-Connection`.
pub const HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Whether `name` is one of [`HOP_BY_HOP`].
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// Whether a request asks to switch protocols (WebSocket and friends): an
/// HTTP/1.1 request with an `Upgrade` header and `upgrade` among its
/// `Connection` options. HTTP/2 has no such upgrade (RFC 9113 §8.6).
pub fn is_upgrade(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11
        && headers.contains_key(UPGRADE)
        && connection_options(headers).any(|o| o.eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop headers and every header `Connection` names. With
/// `keep_upgrade` (an upgrade request, or a `101` response) `Upgrade` is
/// kept and `Connection` becomes just `upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = connection_options(headers)
        .filter_map(|o| HeaderName::from_bytes(o.as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        if !(keep_upgrade && *name == UPGRADE) {
            headers.remove(name);
        }
    }
    if keep_upgrade && headers.contains_key(UPGRADE) {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The comma-separated options of every `Connection` header, trimmed.
fn connection_options(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|o| !o.is_empty())
}

/// Whether the `TE` headers offer `trailers`.
fn wants_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|o| {
            let coding = o.split(';').next().unwrap_or("").trim();
            coding.eq_ignore_ascii_case("trailers")
        })
}

/// Where the token goes: header name and scheme (default
/// `Authorization: Bearer <token>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialHeader {
    name: HeaderName,
    /// `None`: the bare token (e.g. `x-api-key: <token>`).
    scheme: Option<String>,
}

/// A token that cannot be a header value (control characters). The message
/// never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the token has characters a header value cannot hold")]
pub struct InvalidCredential;

impl Default for CredentialHeader {
    fn default() -> Self {
        Self {
            name: http::header::AUTHORIZATION,
            scheme: Some("Bearer".to_owned()),
        }
    }
}

impl CredentialHeader {
    /// `name: <scheme> <token>`, or `name: <token>` when `scheme` is empty.
    pub fn new(name: HeaderName, scheme: &str) -> Self {
        let scheme = (!scheme.is_empty()).then(|| scheme.to_owned());
        Self { name, scheme }
    }

    /// The header name.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// The value for `token`, marked sensitive (never HPACK-indexed, and
    /// shown as `Sensitive` by `Debug`). Build it once per token refresh and
    /// clone it per request: a clone shares the bytes.
    pub fn value(&self, token: &str) -> Result<HeaderValue, InvalidCredential> {
        let text = match &self.scheme {
            Some(scheme) => format!("{scheme} {token}"),
            None => token.to_owned(),
        };
        let mut value = HeaderValue::try_from(text).map_err(|_| InvalidCredential)?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// Puts `value` in place of every header of this name; with `None` (no
    /// token configured) leaves the app's own header alone.
    pub fn apply(&self, headers: &mut HeaderMap, value: Option<&HeaderValue>) {
        if let Some(value) = value {
            headers.insert(self.name.clone(), value.clone());
        }
    }
}

/// The listener's static `headers`, resolved by the runtime (files and
/// environment variables read), each value marked sensitive since any of
/// them may be a secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtraHeaders(Vec<(HeaderName, HeaderValue)>);

impl ExtraHeaders {
    /// No extra headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one; the value is marked sensitive. A later value for the same
    /// name replaces the earlier.
    pub fn insert(&mut self, name: HeaderName, mut value: HeaderValue) {
        value.set_sensitive(true);
        self.0.retain(|(n, _)| *n != name);
        self.0.push((name, value));
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sets each, replacing the app's headers of the same name.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.0 {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// A listener's header rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderPolicy {
    /// Where the token goes.
    pub credential: CredentialHeader,
    /// Static headers added to every request.
    pub extra: ExtraHeaders,
    /// Add `x-forwarded-for` (the app's address, appended to any the app
    /// sent) and `x-forwarded-proto: http`. Off by default: the app is in
    /// the same pod, so its address tells the upstream nothing.
    pub forwarded: bool,
}

/// What [`HeaderPolicy::request`] needs to know about one request.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext<'a> {
    /// The upstream the request goes to.
    pub upstream: &'a Upstream,
    /// The credential value ([`CredentialHeader::value`]) when the listener
    /// has a token, else `None`.
    pub credential: Option<&'a HeaderValue>,
    /// The app's address, for `x-forwarded-for`.
    pub client: Option<IpAddr>,
    /// Whether it is an upgrade request ([`is_upgrade`], computed before
    /// any header is touched).
    pub upgrade: bool,
}

impl HeaderPolicy {
    /// Rewrites an app request's headers for the upstream (see the module
    /// doc for the order).
    pub fn request(&self, headers: &mut HeaderMap, cx: &RequestContext<'_>) {
        let trailers = wants_trailers(headers);
        strip_hop_by_hop(headers, cx.upgrade);
        if trailers {
            headers.insert(TE, HeaderValue::from_static("trailers"));
        }
        // An authority is always a valid header value.
        if let Ok(host) = HeaderValue::from_str(cx.upstream.authority().as_str()) {
            headers.insert(HOST, host);
        }
        if self.forwarded {
            if let Some(value) = cx.client.and_then(|c| forwarded_for(headers, c)) {
                headers.insert(X_FORWARDED_FOR, value);
            }
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        }
        self.extra.apply(headers);
        self.credential.apply(headers, cx.credential);
    }

    /// Rewrites an upstream response's headers for the app.
    pub fn response(&self, status: StatusCode, headers: &mut HeaderMap) {
        strip_hop_by_hop(headers, status == StatusCode::SWITCHING_PROTOCOLS);
    }
}

/// `x-forwarded-for` with `client` appended to what the app sent, as one
/// comma-separated line (some servers read only the first line).
fn forwarded_for(headers: &HeaderMap, client: IpAddr) -> Option<HeaderValue> {
    let mut line = String::new();
    for earlier in headers.get_all(X_FORWARDED_FOR).iter() {
        line.push_str(earlier.to_str().ok()?);
        line.push_str(", ");
    }
    line.push_str(&client.to_string());
    HeaderValue::try_from(line).ok()
}

#[cfg(test)]
mod tests;
