//! Config types. Every field has a doc comment, which is also the reference
//! in README.md; every struct denies unknown keys.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The admin listener (probes and metrics).
    #[serde(default)]
    pub admin: AdminConfig,
    /// Threads and event loops.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Local Redis listeners, keyed by name (`[redis.cache]`).
    #[serde(default)]
    pub redis: BTreeMap<String, RedisListenerConfig>,
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener. Default `127.0.0.1:9901`.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
        }
    }
}

/// `[runtime]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Worker threads. Each is a single-threaded event loop (like
    /// twemproxy) that accepts app connections from every listener and has
    /// its own upstream connections, so nothing crosses threads on the
    /// request path. Default 1, which suits a sidecar's CPU share; raise it
    /// when one core is not enough.
    #[serde(default = "default_workers")]
    pub workers: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            workers: default_workers(),
        }
    }
}

/// `[redis.NAME]`: one local Redis listener and the upstream behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisListenerConfig {
    /// Local address apps connect to, e.g. `127.0.0.1:6379`. Loopback only
    /// unless `allow_remote = true`.
    pub listen: SocketAddr,
    /// Allow a non-loopback `listen` address. Default `false`: the sidecar
    /// speaks plain, unauthenticated Redis and must not be reachable from
    /// outside the pod by accident.
    #[serde(default)]
    pub allow_remote: bool,
    /// How keys are spread over `servers`. Default `single`.
    #[serde(default)]
    pub mode: Mode,
    /// Upstream servers in twemproxy syntax: `"host:port[:weight] [name]"`.
    /// `single` mode takes exactly one.
    pub servers: Vec<ServerAddress>,
    /// How long a command may wait for its reply before the app gets an
    /// error and the upstream connection is reset (blocking commands such as
    /// `BLPOP` are exempt). Default `5s`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How long establishing an upstream connection (TCP and handshake) may
    /// take. Default `2s`.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Shared, multiplexed upstream connections per server, protocol
    /// version and worker. Default `2`.
    #[serde(default = "default_server_connections")]
    pub server_connections: usize,
    /// Most dedicated upstream connections per server, protocol version and
    /// worker,
    /// for clients in MULTI, blocking commands, pub/sub, SELECT, tracking.
    /// Default `256`.
    #[serde(default = "default_max_dedicated")]
    pub max_dedicated_connections: usize,
    /// Most app connections this listener accepts at once; more wait in the
    /// kernel's backlog. Default `10000`.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Largest request accepted, checked against declared lengths before
    /// buffering. Default 512 MiB, like Redis's `proto-max-bulk-len`.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Credentials attache presents to the upstream (the app sends none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RedisAuthConfig>,
}

/// `mode`: how keys map to servers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One upstream server; every command Redis accepts is forwarded.
    #[default]
    Single,
}

/// `[redis.NAME.auth]`: the upstream's `AUTH`. The password is read at
/// every connect, so a rotated file is picked up by new connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisAuthConfig {
    /// ACL username; omit for the `default` user (`AUTH password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// File holding the password (trailing newline ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
}

/// One `servers` entry: `"host:port[:weight] [name]"` (twemproxy syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Relative weight for hashed modes. Default 1.
    pub weight: u32,
    /// Optional name; twemproxy hashes by name when one is given.
    pub name: Option<String>,
}

impl ServerAddress {
    /// `host:port`, as used to connect and in error messages.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.authority(), self.weight)?;
        if let Some(name) = &self.name {
            write!(f, " {name}")?;
        }
        Ok(())
    }
}

impl FromStr for ServerAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split_whitespace();
        let addr = parts.next().ok_or("empty server address")?;
        let name = parts.next().map(str::to_owned);
        if parts.next().is_some() {
            return Err(format!("'{s}': expected \"host:port[:weight] [name]\""));
        }
        let (host, rest) = if let Some(v6) = addr.strip_prefix('[') {
            let (host, rest) = v6.split_once(']').ok_or(format!("'{s}': missing ']'"))?;
            let rest = rest
                .strip_prefix(':')
                .ok_or(format!("'{s}': missing port"))?;
            (host, rest)
        } else {
            addr.split_once(':').ok_or(format!("'{s}': missing port"))?
        };
        let (port, weight) = match rest.split_once(':') {
            Some((port, weight)) => (port, Some(weight)),
            None => (rest, None),
        };
        if host.is_empty() {
            return Err(format!("'{s}': missing host"));
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or(format!("'{s}': invalid port '{port}'"))?;
        let weight = match weight {
            None => 1,
            Some(w) => w
                .parse::<u32>()
                .ok()
                .filter(|w| *w > 0)
                .ok_or(format!("'{s}': invalid weight '{w}'"))?,
        };
        Ok(Self {
            host: host.to_owned(),
            port,
            weight,
            name,
        })
    }
}

impl Serialize for ServerAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ServerAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9901))
}
fn default_workers() -> usize {
    1
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_server_connections() -> usize {
    2
}
fn default_max_dedicated() -> usize {
    256
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_request_bytes() -> usize {
    512 * 1024 * 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_in_twemproxy_syntax() {
        let a: ServerAddress = "10.0.0.7:6379".parse().unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.weight, a.name),
            ("10.0.0.7", 6379, 1, None)
        );
        let b: ServerAddress = "redis-1.internal:7000:3 shard-a".parse().unwrap();
        assert_eq!(b.weight, 3);
        assert_eq!(b.name.as_deref(), Some("shard-a"));
        assert_eq!(b.to_string(), "redis-1.internal:7000:3 shard-a");
        let c: ServerAddress = "[::1]:6379".parse().unwrap();
        assert_eq!(c.authority(), "[::1]:6379");
        for bad in ["", "host", "host:0", "host:x", ":6379", "h:1:0", "h:1 a b"] {
            assert!(bad.parse::<ServerAddress>().is_err(), "{bad}");
        }
    }
}
