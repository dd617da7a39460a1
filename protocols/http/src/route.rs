//! The route table: which upstream a request goes to, and the upstream URI.
//!
//! # Matching
//!
//! 1. Routes that name a `host` are tried first, and only for requests whose
//!    Host is that name (ASCII case-insensitive, port ignored, a trailing dot
//!    ignored). Like virtual hosts: `host = "admin.local"` with prefix `/`
//!    takes every `admin.local` request, even one a longer host-less prefix
//!    would match.
//! 2. Then routes without a `host`, for any Host.
//! 3. Within each group the longest prefix wins. Prefixes match whole path
//!    segments: `/v1` (or `/v1/`, the same route) matches `/v1`, `/v1/` and
//!    `/v1/x`, never `/v10`; `/` matches everything.
//! 4. Nothing matched: the listener's `upstream` if one is configured (the
//!    catch-all), else no route (the app gets a 404).
//!
//! Paths are compared byte for byte as the app sent them, with no decoding
//! and no normalisation: `%2F` is not a slash (so `/v1%2Fx` does not match
//! `/v1`), `%7E` is not `~`, and `.`/`..` segments are not resolved, so
//! `/v1/../admin` matches the `/v1` route and is forwarded as is. Resolving
//! it here could only move a request to another route; forwarding it
//! untouched keeps it on the upstream the `/v1` route names, which is free
//! to resolve or refuse it. A route is therefore a choice of upstream, not
//! an access control on paths within that upstream.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::net::Ipv6Addr;

use http::uri::{Authority, PathAndQuery, Uri};

use crate::upstream::Upstream;

/// One route: a path prefix (and optionally a Host) and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Position in the config's `routes`; `None` for the listener's own
    /// `upstream` (the catch-all).
    index: Option<usize>,
    /// `""` for `/`, else `/a[/b…]` without a trailing slash.
    prefix: String,
    /// Lower-case host name, no port, no trailing dot.
    host: Option<String>,
    upstream: Upstream,
    strip_prefix: bool,
}

/// Why a route was refused. Messages follow a config key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The prefix does not start with `/`.
    #[error("must start with /")]
    PrefixNotAbsolute,
    /// The prefix has a `?` or `#`: routes match paths only.
    #[error("must be a path, without ? or #")]
    PrefixNotAPath,
    /// The prefix has characters a request path cannot have.
    #[error("not a valid path: {0}")]
    PrefixInvalid(String),
    /// The host is not a plain host name.
    #[error(transparent)]
    Host(#[from] HostNameError),
    /// Two routes with the same host and prefix: the second could never match.
    #[error("same host and prefix as routes[{first}]")]
    Duplicate {
        /// The later route, which is refused.
        index: usize,
        /// The route it repeats.
        first: usize,
    },
}

impl Route {
    /// A route for requests under `prefix` (and to `host`, if given).
    pub fn new(
        prefix: &str,
        host: Option<&str>,
        upstream: Upstream,
        strip_prefix: bool,
    ) -> Result<Self, RouteError> {
        if !prefix.starts_with('/') {
            return Err(RouteError::PrefixNotAbsolute);
        }
        if prefix.contains(['?', '#']) {
            return Err(RouteError::PrefixNotAPath);
        }
        PathAndQuery::try_from(prefix).map_err(|e| RouteError::PrefixInvalid(e.to_string()))?;
        let host = host.map(parse_host_name).transpose()?;
        Ok(Self {
            index: None,
            prefix: prefix.trim_end_matches('/').to_owned(),
            host,
            upstream,
            strip_prefix,
        })
    }

    /// The catch-all: every path, any Host, nothing stripped.
    pub fn catch_all(upstream: Upstream) -> Self {
        Self {
            index: None,
            prefix: String::new(),
            host: None,
            upstream,
            strip_prefix: false,
        }
    }

    /// Position in the config's `routes`, for logs and metrics; `None` for
    /// the listener's own `upstream`.
    pub fn index(&self) -> Option<usize> {
        self.index
    }

    /// The prefix, normalised: `""` for `/`, else without trailing slash.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Host this route is limited to (lower case), if any.
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// Where matching requests go.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Whether the prefix is removed before joining onto the upstream.
    pub fn strip_prefix(&self) -> bool {
        self.strip_prefix
    }

    /// Whether `path` is under this route's prefix, segment by segment.
    pub fn matches_path(&self, path: &str) -> bool {
        match path.strip_prefix(self.prefix.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/') || self.prefix.is_empty(),
            None => false,
        }
    }

    /// The upstream URI for a request this route matched: the upstream's
    /// base path, then `path` (less the prefix if `strip_prefix`; `/v1`
    /// stripped of `/v1` is `/`), then `?query`.
    pub fn upstream_uri(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let path = if self.strip_prefix {
            path.strip_prefix(self.prefix.as_str()).unwrap_or(path)
        } else {
            path
        };
        self.upstream.uri_for(path, query)
    }

    /// [`Route::upstream_uri`] for a request's own target. When there is
    /// nothing to join or strip, the target's path and query are shared
    /// rather than copied into a new string and parsed again.
    pub(crate) fn upstream_uri_for(&self, target: &Uri) -> Result<Uri, http::Error> {
        let as_sent =
            self.upstream.base_path().is_empty() && (!self.strip_prefix || self.prefix.is_empty());
        match target.path_and_query() {
            // Starting with `/`, its text is exactly `path[?query]`, what
            // joining would build.
            Some(target) if as_sent && target.as_str().starts_with('/') => {
                self.upstream.uri_with(target.clone())
            }
            _ => self.upstream_uri(target.path(), target.query()),
        }
    }
}

/// All of a listener's routes, in matching order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTable {
    /// Host routes first, then by prefix length, longest first.
    routes: Vec<Route>,
    fallback: Option<Route>,
}

impl RouteTable {
    /// Routes in config order (their positions become [`Route::index`]),
    /// and the listener's `upstream` as catch-all if it has one.
    pub fn new(routes: Vec<Route>, fallback: Option<Upstream>) -> Result<Self, RouteError> {
        let mut routes = routes;
        for (index, route) in routes.iter_mut().enumerate() {
            route.index = Some(index);
        }
        for (index, route) in routes.iter().enumerate() {
            if let Some(first) = routes[..index]
                .iter()
                .position(|r| r.prefix == route.prefix && r.host == route.host)
            {
                return Err(RouteError::Duplicate { index, first });
            }
        }
        // Stable: among equal keys config order stays, though with
        // duplicates refused two equal keys never match the same path.
        routes.sort_by_key(|r| (r.host.is_none(), Reverse(r.prefix.len())));
        Ok(Self {
            routes,
            fallback: fallback.map(Route::catch_all),
        })
    }

    /// The route for a request to `host` (already normalised by
    /// [`host_name`], `None` when the request had no Host) and `path`.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| (r.host.is_none() || r.host.as_deref() == host) && r.matches_path(path))
            .or(self.fallback.as_ref())
    }

    /// Every configured route (not the catch-all), in matching order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The catch-all route, if the listener has an `upstream`.
    pub fn fallback(&self) -> Option<&Route> {
        self.fallback.as_ref()
    }
}

/// A configured host name (a route's `host`, an `accept_hosts` entry) that
/// cannot match any request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostNameError {
    /// Not a host name or IP literal.
    #[error("not a valid host name: {0:?}")]
    Invalid(String),
    /// Has a port, which would never match: ports are ignored.
    #[error("must not have a port: the port of a request's Host is ignored")]
    HasPort,
}

/// A configured host name in the form [`host_name`] gives requests'.
pub fn parse_host_name(text: &str) -> Result<String, HostNameError> {
    let invalid = || HostNameError::Invalid(text.to_owned());
    if text.contains('@') {
        return Err(invalid());
    }
    let authority = Authority::try_from(text).map_err(|_| invalid())?;
    if authority.as_str().len() > authority.host().len() {
        return Err(HostNameError::HasPort);
    }
    host_name(&authority).ok_or_else(invalid)
}

/// Whether an authority's port, if any, is digits: `http` accepts
/// `host:port` and only fails when asked for the number.
pub(crate) fn port_is_numeric(authority: &Authority) -> bool {
    let rest = &authority.as_str()[authority.host().len()..];
    rest.strip_prefix(':')
        .is_none_or(|port| port.bytes().all(|b| b.is_ascii_digit()))
}

/// The comparable form of a Host: lower case, port dropped, one trailing
/// dot dropped, IPv6 literals in canonical form (`[0::1]` is `[::1]`).
/// `None` for an empty host.
pub fn host_name(authority: &Authority) -> Option<String> {
    let mut buf = HostBuf::new();
    normalise_host(authority.host(), &mut buf).map(Cow::into_owned)
}

/// Room to lower-case a Host in without allocating; longer names (rare,
/// and only when they have capitals) get a `String`.
pub(crate) struct HostBuf([u8; 128]);

impl HostBuf {
    pub(crate) fn new() -> Self {
        Self([0; 128])
    }
}

/// [`host_name`] of an authority's `host` part, borrowed when it is already
/// in that form (the usual `localhost`, `127.0.0.1`), else lower-cased into
/// `buf` when it fits.
pub(crate) fn normalise_host<'b>(host: &'b str, buf: &'b mut HostBuf) -> Option<Cow<'b, str>> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        if let Ok(ip) = inner.parse::<Ipv6Addr>() {
            return Some(Cow::Owned(format!("[{ip}]")));
        }
    }
    if !host.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some(Cow::Borrowed(host));
    }
    let Some(lower) = buf.0.get_mut(..host.len()) else {
        return Some(Cow::Owned(host.to_ascii_lowercase()));
    };
    lower.copy_from_slice(host.as_bytes());
    lower.make_ascii_lowercase();
    // ASCII case changes keep UTF-8 valid, so this never falls back.
    Some(match std::str::from_utf8(lower) {
        Ok(lower) => Cow::Borrowed(lower),
        Err(_) => Cow::Owned(host.to_ascii_lowercase()),
    })
}

#[cfg(test)]
mod tests;
