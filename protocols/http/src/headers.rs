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
    GetAll, HeaderValue, CONNECTION, HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE,
    TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName, StatusCode, Version};

use crate::upstream::Upstream;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// plus the old `Keep-Alive` and `Proxy-Connection`. Not `Trailer`: it
/// names the message's trailer fields, and hyper sends an app the trailers
/// it names (RFC 2616's list had `Trailers`, the `TE` value, instead).
pub const HOP_BY_HOP: [HeaderName; 8] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// [`HOP_BY_HOP`] to borrow from: each use of a `const` array builds (and
/// drops) a fresh copy.
static HOP_BY_HOP_NAMES: [HeaderName; 8] = HOP_BY_HOP;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Whether `name` is one of [`HOP_BY_HOP`].
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    hop_by_hop_index(name.as_str().as_bytes()).is_some()
}

/// The position of a (lower-case) name in [`HOP_BY_HOP`]. A `match` on the
/// text rejects most names on their length alone, where comparing with each
/// `HeaderName` in turn would not.
fn hop_by_hop_index(name: &[u8]) -> Option<usize> {
    Some(match name {
        b"connection" => 0,
        b"keep-alive" => 1,
        b"proxy-connection" => 2,
        b"proxy-authenticate" => 3,
        b"proxy-authorization" => 4,
        b"te" => 5,
        b"transfer-encoding" => 6,
        b"upgrade" => 7,
        _ => return None,
    })
}

/// Whether a `Connection` option names a hop-by-hop header, in any case.
fn names_hop_by_hop(option: &[u8]) -> bool {
    hop_by_hop_index(option).is_some()
        || HOP_BY_HOP_NAMES
            .iter()
            .any(|h| option.eq_ignore_ascii_case(h.as_str().as_bytes()))
}

/// Bits of [`HOP_BY_HOP`] positions, as [`hop_by_hop_present`] returns them.
const CONNECTION_BIT: u16 = 1 << 0;
const TE_BIT: u16 = 1 << 5;
const UPGRADE_BIT: u16 = 1 << 7;

/// Which of [`HOP_BY_HOP`] are in `headers`, one bit per position. A walk
/// over the keys hashes nothing, so a message with none (most requests)
/// costs a few comparisons per header.
fn hop_by_hop_present(headers: &HeaderMap) -> u16 {
    headers
        .keys()
        .filter_map(|name| hop_by_hop_index(name.as_str().as_bytes()))
        .fold(0, |present, index| present | 1 << index)
}

/// Whether `headers` offer `trailers` in `TE`; `present` is
/// [`hop_by_hop_present`], which saves the lookup when there is no `TE`.
fn offers_trailers(headers: &HeaderMap, present: u16) -> bool {
    present & TE_BIT != 0 && wants_trailers(headers)
}

/// Whether a request asks to switch protocols (WebSocket and friends): an
/// HTTP/1.1 request with an `Upgrade` header and `upgrade` among its
/// `Connection` options. HTTP/2 has no such upgrade (RFC 9113 §8.6).
pub fn is_upgrade(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11
        && headers.contains_key(UPGRADE)
        && connection_options(headers).any(|o| o.eq_ignore_ascii_case(b"upgrade"))
}

/// Removes hop-by-hop headers and every header `Connection` names. With
/// `keep_upgrade` (an upgrade request, or a `101` response) `Upgrade` is
/// kept and `Connection` becomes just `upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let present = hop_by_hop_present(headers);
    strip_present(headers, present, keep_upgrade);
}

/// [`strip_hop_by_hop`] given what [`hop_by_hop_present`] found.
fn strip_present(headers: &mut HeaderMap, present: u16, keep_upgrade: bool) {
    if present == 0 {
        return;
    }
    let named = if present & CONNECTION_BIT != 0 {
        connection_named(headers)
    } else {
        Vec::new()
    };
    for name in &named {
        headers.remove(name);
    }
    let mut remove = present;
    if keep_upgrade {
        remove &= !UPGRADE_BIT;
    }
    for (index, name) in HOP_BY_HOP_NAMES.iter().enumerate() {
        if remove & 1 << index != 0 {
            headers.remove(name);
        }
    }
    if keep_upgrade && present & UPGRADE_BIT != 0 {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The headers present that a `Connection` option names, other than the
/// hop-by-hop ones (removed anyway). Options are matched to names
/// case-insensitively, which is what parsing each into a `HeaderName`
/// would give, without the allocation a custom name costs; an option that
/// is no header name matches no header. Nothing is allocated unless a
/// header is named: `Connection: keep-alive` costs a look at its options,
/// `close` one more at each key.
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    let connection = headers.get_all(CONNECTION);
    if options(&connection).all(names_hop_by_hop) {
        return Vec::new();
    }
    headers
        .keys()
        .filter(|name| {
            !is_hop_by_hop(name)
                && options(&connection).any(|o| o.eq_ignore_ascii_case(name.as_str().as_bytes()))
        })
        .cloned()
        .collect()
}

/// The comma-separated options of every `Connection` header, trimmed.
fn connection_options(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    options(&headers.get_all(CONNECTION))
}

/// The comma-separated options of header lines, trimmed; lines `to_str`
/// refuses are skipped. Bytes, not `str`: splitting and trimming then
/// decode no characters, and a line `to_str` accepts has no whitespace but
/// space and tab, which `trim_ascii` trims as `str::trim` would.
fn options<'a>(values: &GetAll<'a, HeaderValue>) -> impl Iterator<Item = &'a [u8]> {
    values
        .iter()
        .filter(|v| v.to_str().is_ok())
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
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
        let present = hop_by_hop_present(headers);
        let trailers = offers_trailers(headers, present);
        strip_present(headers, present, cx.upgrade);
        if trailers {
            headers.insert(TE, HeaderValue::from_static("trailers"));
        }
        headers.insert(HOST, cx.upstream.host_header().clone());
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
