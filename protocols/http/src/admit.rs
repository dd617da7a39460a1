//! Admission: which requests attache forwards at all. attache is an
//! ambassador for named upstreams, never an open proxy, so before routing:
//!
//! - `CONNECT` is refused (403): no tunnels.
//! - An HTTP/1 request-target in absolute form (`GET http://evil.example/`)
//!   or authority form is refused (403), even when it names the listener
//!   itself: a client that sends one believes it talks to a forward proxy.
//!   HTTP/2 requests always carry scheme and authority (`:scheme`,
//!   `:authority`); there the authority is checked like a Host header.
//! - The Host must be one the listener answers to (403 otherwise):
//!   `localhost`, `127.0.0.1`, `[::1]`, the listen address, every route's
//!   `host`, and `accept_hosts`. This keeps a browser page that
//!   DNS-rebinds a name to 127.0.0.1 away from the app's credentials. An
//!   HTTP/1.1 request without Host (or with two) is a 400; HTTP/1.0 may
//!   omit it, and then only routes without a `host` match.
//! - The target must be a path (400 for `OPTIONS *`).
//! - A route must match (404 otherwise).

use std::net::{IpAddr, SocketAddr};

use http::header::HOST;
use http::request::Parts;
use http::uri::Authority;
use http::{HeaderValue, Method, Uri, Version};

use crate::error::LocalError;
use crate::headers::is_upgrade;
use crate::route::{
    normalise_host, parse_host_name, port_is_numeric, HostBuf, HostNameError, Route, RouteTable,
};

/// The admission rules and route table of one listener.
#[derive(Debug, Clone)]
pub struct Gate {
    routes: RouteTable,
    /// Normalised names (see [`host_name`](crate::route::host_name)).
    accepted: Vec<String>,
}

/// The gate's verdict on a request.
#[derive(Debug)]
pub enum Admission<'a> {
    /// Forward it.
    Forward(Forward<'a>),
    /// Answer it with this error's response.
    Refuse(LocalError),
}

/// A request to forward.
#[derive(Debug)]
pub struct Forward<'a> {
    /// The route it matched.
    pub route: &'a Route,
    /// The full upstream URI (scheme, authority, joined path, query).
    pub uri: Uri,
    /// Whether it asks for a protocol upgrade (WebSocket); see
    /// [`is_upgrade`].
    pub upgrade: bool,
}

impl Gate {
    /// A gate answering to the default local names, `listen`'s address,
    /// every route's host and `accept_hosts`.
    pub fn new<S: AsRef<str>>(
        routes: RouteTable,
        listen: SocketAddr,
        accept_hosts: impl IntoIterator<Item = S>,
    ) -> Result<Self, HostNameError> {
        let mut accepted: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        accepted.push(match listen.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        });
        accepted.extend(
            routes
                .routes()
                .iter()
                .filter_map(|r| r.host().map(str::to_owned)),
        );
        for name in accept_hosts {
            accepted.push(parse_host_name(name.as_ref())?);
        }
        accepted.sort();
        accepted.dedup();
        Ok(Self { routes, accepted })
    }

    /// The route table.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// Every accepted Host name, normalised and sorted.
    pub fn accepted_hosts(&self) -> &[String] {
        &self.accepted
    }

    /// Decides on a request as the app sent it (`uri` untouched by the
    /// runtime).
    pub fn admit(&self, request: &Parts) -> Admission<'_> {
        match self.check(request) {
            Ok(forward) => Admission::Forward(forward),
            Err(error) => Admission::Refuse(error),
        }
    }

    fn check(&self, request: &Parts) -> Result<Forward<'_>, LocalError> {
        if request.method == Method::CONNECT {
            return Err(LocalError::ProxyRefused { what: "CONNECT" });
        }
        let host = request_host(request)?;
        let mut buf = HostBuf::new();
        let name = match &host {
            Some(host) => {
                let name = normalise_host(host.host(), &mut buf).ok_or(LocalError::BadRequest {
                    reason: "empty Host",
                })?;
                if self
                    .accepted
                    .binary_search_by(|a| a.as_str().cmp(&name))
                    .is_err()
                {
                    return Err(LocalError::host_refused(host.as_str()));
                }
                Some(name)
            }
            None => None,
        };
        let path = request.uri.path();
        if !path.starts_with('/') {
            return Err(LocalError::BadRequest {
                reason: "the request target must be a path",
            });
        }
        let route = self
            .routes
            .find(name.as_deref(), path)
            .ok_or_else(|| LocalError::no_route(&request.method, path, name.as_deref()))?;
        let uri = route
            .upstream_uri_for(&request.uri)
            .map_err(|_| LocalError::BadRequest {
                reason: "the request target cannot be forwarded",
            })?;
        Ok(Forward {
            route,
            uri,
            upgrade: is_upgrade(request.version, &request.headers),
        })
    }
}

/// A request's Host or `:authority`, checked.
enum RequestHost<'a> {
    /// A Host header of the usual plain form ([`plain_host`]), read in
    /// place: parsing it into an `Authority` would copy it.
    Plain(&'a str),
    /// Any other Host header.
    Parsed(Authority),
    /// The `:authority` of an HTTP/2 or 3 request.
    Uri(&'a Authority),
}

impl RequestHost<'_> {
    /// As sent.
    fn as_str(&self) -> &str {
        match self {
            Self::Plain(text) => text,
            Self::Parsed(authority) => authority.as_str(),
            Self::Uri(authority) => authority.as_str(),
        }
    }

    /// Without the port, as `Authority::host` has it.
    fn host(&self) -> &str {
        match self {
            Self::Plain(text) => text.split(':').next().unwrap_or(text),
            Self::Parsed(authority) => authority.host(),
            Self::Uri(authority) => authority.host(),
        }
    }
}

/// A Host header that is a name or IPv4 address of letters, digits, `.`
/// and `-`, then optionally `:` and a numeric port: what local clients
/// send, and always a valid authority with no userinfo and that host.
/// Anything else (`None`) takes the full `Authority` parse.
fn plain_host(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    let mut port = false;
    let plain = text.bytes().all(|b| match b {
        b':' if !port => {
            port = true;
            true
        }
        b'0'..=b'9' => true,
        b'a'..=b'z' | b'A'..=b'Z' | b'.' | b'-' => !port,
        _ => false,
    });
    (plain && !text.starts_with(':') && !text.is_empty()).then_some(text)
}

/// The Host the request is for: the Host header, or with HTTP/2 and 3 the
/// `:authority` (which must agree with a Host header if both are sent).
/// `None` only for HTTP/1.0 and older without Host.
fn request_host(request: &Parts) -> Result<Option<RequestHost<'_>>, LocalError> {
    let mut headers = request.headers.get_all(HOST).iter();
    let header = headers.next();
    if headers.next().is_some() {
        return Err(LocalError::BadRequest {
            reason: "more than one Host header",
        });
    }
    let header = match header {
        None => None,
        Some(value) => match plain_host(value) {
            Some(text) => Some(RequestHost::Plain(text)),
            None => {
                let authority = Authority::try_from(value.as_bytes())
                    .ok()
                    .filter(|a| !a.as_str().contains('@') && port_is_numeric(a))
                    .ok_or(LocalError::BadRequest {
                        reason: "invalid Host header",
                    })?;
                Some(RequestHost::Parsed(authority))
            }
        },
    };
    let multiplexed = matches!(request.version, Version::HTTP_2 | Version::HTTP_3);
    if !multiplexed {
        if request.uri.scheme().is_some() || request.uri.authority().is_some() {
            return Err(LocalError::ProxyRefused {
                what: "an absolute-form request target",
            });
        }
        if header.is_none() && request.version == Version::HTTP_11 {
            return Err(LocalError::BadRequest {
                reason: "missing Host header",
            });
        }
        return Ok(header);
    }
    match (request.uri.authority(), header) {
        (Some(authority), Some(header)) if !same_host(authority.host(), header.host()) => {
            Err(LocalError::BadRequest {
                reason: "Host and :authority differ",
            })
        }
        (Some(authority), _) if authority.as_str().contains('@') || !port_is_numeric(authority) => {
            Err(LocalError::BadRequest {
                reason: "invalid :authority",
            })
        }
        (Some(authority), _) => Ok(Some(RequestHost::Uri(authority))),
        (None, Some(header)) => Ok(Some(header)),
        (None, None) => Err(LocalError::BadRequest {
            reason: "missing :authority and Host",
        }),
    }
}

/// Whether two hosts have the same [`host_name`](crate::route::host_name).
fn same_host(a: &str, b: &str) -> bool {
    let (mut a_buf, mut b_buf) = (HostBuf::new(), HostBuf::new());
    normalise_host(a, &mut a_buf) == normalise_host(b, &mut b_buf)
}

#[cfg(test)]
mod tests;
