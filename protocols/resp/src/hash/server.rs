//! Server lines in twemproxy's syntax: `host:port:weight [name]`.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// The port twemproxy leaves out of a server's ketama name (libmemcached
/// compatibility): an unnamed `10.0.0.1:11211:1` hashes as `10.0.0.1`.
const KETAMA_DEFAULT_PORT: u16 = 11211;

/// One upstream server as written in a twemproxy `servers:` list.
///
/// Accepted forms:
/// - `host:port:weight name` and `host:port:weight` (twemproxy's forms);
/// - `host:port name` and `host:port`, with weight 1 (attache only:
///   twemproxy 0.5 refuses a line without a weight);
/// - IPv6 as `[::1]:6379:1` or, as twemproxy parses it, `::1:6379:1`.
///
/// Unix socket paths (`/path:weight`) are refused: attache does not dial
/// them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerSpec {
    /// Host name or IP address, IPv6 without brackets.
    pub host: String,
    /// TCP port, never 0.
    pub port: u16,
    /// Relative share of the keyspace, at least 1.
    pub weight: u32,
    /// Optional name; when set it alone places the server on the ketama
    /// continuum, so servers can move without moving keys.
    pub name: Option<String>,
}

impl ServerSpec {
    /// The string twemproxy feeds to ketama for this server: the name if
    /// there is one, else `host:port`, else just `host` on port 11211.
    ///
    /// An IPv6 host appears without brackets (`::1:6379`): twemproxy keeps
    /// the brackets of `[::1]:6379:1` in its name but then fails to resolve
    /// `[::1]`, so only the bare form ever served keys there.
    pub fn ketama_name(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None if self.port == KETAMA_DEFAULT_PORT => self.host.clone(),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

impl fmt::Display for ServerSpec {
    /// The canonical twemproxy line, IPv6 in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        write!(f, ":{}:{}", self.port, self.weight)?;
        if let Some(name) = &self.name {
            write!(f, " {name}")?;
        }
        Ok(())
    }
}

/// Why a server line was refused; every message quotes the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerSpecError {
    /// Nothing but whitespace.
    #[error("server line is empty (expected \"host:port[:weight] [name]\")")]
    Empty,
    /// A `/path:weight` unix socket.
    #[error("server {line:?}: unix sockets are not supported, use host:port")]
    UnixSocket {
        /// The line as given.
        line: String,
    },
    /// No `:port` after the host.
    #[error("server {line:?}: missing port (expected \"host:port[:weight] [name]\")")]
    MissingPort {
        /// The line as given.
        line: String,
    },
    /// The host is empty, has an unclosed `[`, or is not valid IPv6 inside
    /// brackets or around colons.
    #[error("server {line:?}: invalid host {host:?}")]
    InvalidHost {
        /// The line as given.
        line: String,
        /// The host part as written.
        host: String,
    },
    /// The port is not a number in 1..=65535.
    #[error("server {line:?}: port {port:?} is not a number in 1..=65535")]
    InvalidPort {
        /// The line as given.
        line: String,
        /// The port part as written.
        port: String,
    },
    /// The weight is not a whole number of at least 1.
    #[error("server {line:?}: weight {weight:?} is not a whole number of at least 1")]
    InvalidWeight {
        /// The line as given.
        line: String,
        /// The weight part as written.
        weight: String,
    },
    /// The name contains whitespace (twemproxy would take only its last word).
    #[error("server {line:?}: name {name:?} must be one word")]
    InvalidName {
        /// The line as given.
        line: String,
        /// The name part as written.
        name: String,
    },
}

impl FromStr for ServerSpec {
    type Err = ServerSpecError;

    fn from_str(line: &str) -> Result<Self, Self::Err> {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            return Err(ServerSpecError::Empty);
        }
        let owned = || trimmed.to_owned();
        if trimmed.starts_with('/') {
            return Err(ServerSpecError::UnixSocket { line: owned() });
        }

        let (address, name) = match trimmed.split_once(char::is_whitespace) {
            Some((address, name)) => (address, Some(name.trim_start())),
            None => (trimmed, None),
        };
        if let Some(name) = name.filter(|name| name.contains(char::is_whitespace)) {
            return Err(ServerSpecError::InvalidName {
                line: owned(),
                name: name.to_owned(),
            });
        }

        if address.starts_with('[') && !address.contains(']') {
            return Err(ServerSpecError::InvalidHost {
                line: owned(),
                host: address.to_owned(),
            });
        }
        let (host, port, weight) =
            split_address(address).ok_or_else(|| ServerSpecError::MissingPort { line: owned() })?;
        let host = parse_host(host).ok_or_else(|| ServerSpecError::InvalidHost {
            line: owned(),
            host: host.to_owned(),
        })?;
        let port = parse_digits(port)
            .and_then(|port| u16::try_from(port).ok())
            .filter(|&port| port != 0)
            .ok_or_else(|| ServerSpecError::InvalidPort {
                line: owned(),
                port: port.to_owned(),
            })?;
        let weight = match weight {
            None => 1,
            Some(weight) => parse_digits(weight).filter(|&w| w >= 1).ok_or_else(|| {
                ServerSpecError::InvalidWeight {
                    line: owned(),
                    weight: weight.to_owned(),
                }
            })?,
        };

        Ok(ServerSpec {
            host,
            port,
            weight,
            name: name.map(str::to_owned),
        })
    }
}

/// Splits `host:port[:weight]` into its parts, right to left as twemproxy
/// does, so an unbracketed IPv6 host keeps its colons.
fn split_address(address: &str) -> Option<(&str, &str, Option<&str>)> {
    if let Some(rest) = address.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let host = &address[..inside.len() + 2];
        let after = after.strip_prefix(':')?;
        return Some(match after.split_once(':') {
            Some((port, weight)) => (host, port, Some(weight)),
            None => (host, after, None),
        });
    }
    let (before, last) = address.rsplit_once(':')?;
    match before.rsplit_once(':') {
        Some((host, port)) => Some((host, port, Some(last))),
        None => Some((before, last, None)),
    }
}

/// The host without IPv6 brackets; `None` if empty or malformed.
fn parse_host(host: &str) -> Option<String> {
    if let Some(inside) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inside.parse::<Ipv6Addr>().ok().map(|_| inside.to_owned());
    }
    let valid = !host.is_empty()
        && !host.contains(['[', ']'])
        && (!host.contains(':') || host.parse::<Ipv6Addr>().is_ok());
    valid.then(|| host.to_owned())
}

/// Digits only, as twemproxy's `nc_atoi` (no sign, no spaces).
fn parse_digits(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(line: &str) -> ServerSpec {
        line.parse().unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    #[test]
    fn twemproxy_forms() {
        let s = spec("10.0.0.7:6379:3 cache-a");
        assert_eq!(
            s,
            ServerSpec {
                host: "10.0.0.7".into(),
                port: 6379,
                weight: 3,
                name: Some("cache-a".into()),
            }
        );
        assert_eq!(s.ketama_name(), "cache-a");
        assert_eq!(s.to_string(), "10.0.0.7:6379:3 cache-a");

        let s = spec("redis.internal:6380:1");
        assert_eq!(
            (s.host.as_str(), s.port, s.weight),
            ("redis.internal", 6380, 1)
        );
        assert_eq!(s.name, None);
        assert_eq!(s.ketama_name(), "redis.internal:6380");
    }

    #[test]
    fn weight_defaults_to_one() {
        let s = spec("10.0.0.7:6379");
        assert_eq!((s.port, s.weight, s.name), (6379, 1, None));
        let s = spec("  10.0.0.7:6379   shard-1 ");
        assert_eq!((s.weight, s.name.as_deref()), (1, Some("shard-1")));
    }

    #[test]
    fn port_11211_is_left_out_of_the_ketama_name() {
        assert_eq!(spec("10.0.0.1:11211:1").ketama_name(), "10.0.0.1");
        assert_eq!(spec("10.0.0.1:11211:1 m").ketama_name(), "m");
    }

    #[test]
    fn ipv6() {
        let s = spec("[::1]:6379:2 six");
        assert_eq!((s.host.as_str(), s.port, s.weight), ("::1", 6379, 2));
        assert_eq!(s.to_string(), "[::1]:6379:2 six");
        let s = spec("[2001:db8::1]:6379");
        assert_eq!(
            (s.host.as_str(), s.port, s.weight),
            ("2001:db8::1", 6379, 1)
        );
        // twemproxy's own (and only working) IPv6 form, and its ketama name.
        let s = spec("::1:6379:1");
        assert_eq!((s.host.as_str(), s.port, s.weight), ("::1", 6379, 1));
        assert_eq!(s.ketama_name(), "::1:6379");
        assert_eq!(spec("[::1]:6379:1").ketama_name(), "::1:6379");
    }

    #[test]
    fn errors_name_the_line_and_the_part() {
        let err = |line: &str| line.parse::<ServerSpec>().unwrap_err();
        assert_eq!(err("  "), ServerSpecError::Empty);
        assert!(matches!(
            err("/tmp/redis.sock:1"),
            ServerSpecError::UnixSocket { .. }
        ));
        assert!(matches!(
            err("10.0.0.1"),
            ServerSpecError::MissingPort { .. }
        ));
        assert!(matches!(err("[::1]"), ServerSpecError::MissingPort { .. }));
        assert!(matches!(
            err("[::1:6379:1"),
            ServerSpecError::InvalidHost { .. }
        ));
        assert!(matches!(
            err(":6379:1"),
            ServerSpecError::InvalidHost { .. }
        ));
        assert!(matches!(
            err("[zz]:6379:1"),
            ServerSpecError::InvalidHost { .. }
        ));
        assert!(matches!(
            err("a:b:6379:1"),
            ServerSpecError::InvalidHost { .. }
        ));
        assert!(matches!(err("h:0:1"), ServerSpecError::InvalidPort { .. }));
        assert!(matches!(
            err("h:65536:1"),
            ServerSpecError::InvalidPort { .. }
        ));
        assert!(matches!(err("h:+1:1"), ServerSpecError::InvalidPort { .. }));
        assert!(matches!(
            err("h:6379:0"),
            ServerSpecError::InvalidWeight { .. }
        ));
        assert!(matches!(
            err("h:6379:-1"),
            ServerSpecError::InvalidWeight { .. }
        ));
        assert!(matches!(
            err("h:6379:x"),
            ServerSpecError::InvalidWeight { .. }
        ));
        assert!(matches!(
            err("h:6379:1 two words"),
            ServerSpecError::InvalidName { .. }
        ));

        let message = err("cache:6379:0 a").to_string();
        assert_eq!(
            message,
            "server \"cache:6379:0 a\": weight \"0\" is not a whole number of at least 1"
        );
    }
}
