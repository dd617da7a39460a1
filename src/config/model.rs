//! Config types. Every field has a doc comment, which is also the reference
//! in README.md; every struct denies unknown keys.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use attache_resp::hash::{Distribution, HashFunction, HashTag, ServerSpec};
use serde::{Deserialize, Serialize};

use crate::credentials::TokenConfig;
use crate::dns::DnsConfig;
use crate::tls::TlsConfig;

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
    /// How upstream host names are resolved and re-resolved.
    #[serde(default)]
    pub dns: DnsConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Local Redis listeners, keyed by name (`[redis.cache]`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub redis: BTreeMap<String, RedisListenerConfig>,
    /// Local HTTP listeners, keyed by name (`[http.payments]`); see
    /// [`HttpListenerConfig`] for their keys.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub http: BTreeMap<String, HttpListenerConfig>,
    /// Credential sources, keyed by name (`[tokens.payments]`), referred to
    /// by `[redis.NAME.auth] token = "payments"` and `[http.NAME] token =
    /// "payments"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tokens: BTreeMap<String, TokenConfig>,
}

/// `[http.NAME]`: one local HTTP listener (the struct and its field docs
/// live in `attache-http`), with TLS to its upstreams as for Redis.
pub type HttpListenerConfig = attache_http::HttpListenerConfig<TlsConfig>;

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

/// `[log]`: where the logs go is stderr; this sets their shape and level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default, for people) or `json` (one object per line, for
    /// log pipelines).
    #[serde(default)]
    pub format: LogFormat,
    /// Level or filter directives (`info`, `attache=debug,warn`). `RUST_LOG`
    /// overrides it. Default `info`.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            level: default_log_level(),
        }
    }
}

/// `log.format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
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
    /// On `SIGTERM` (or `POST /quitquitquit`): `/ready` turns 503,
    /// listeners stop accepting, app connections close as soon as they are
    /// idle (every reply delivered), and attache exits 0 when all are closed
    /// or after this long, whichever is first. A second `SIGTERM` exits at
    /// once. Default `10s`.
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            workers: default_workers(),
            shutdown_grace: default_shutdown_grace(),
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
    #[serde(with = "server_list")]
    pub servers: Vec<ServerSpec>,
    /// Hash function for `ketama` and `modula`, by twemproxy's names
    /// (`fnv1a_64`, `md5`, `murmur`, `crc32a`, …). Default `fnv1a_64`.
    #[serde(default, with = "as_text")]
    pub hash: HashFunction,
    /// Two characters; only the part of a key between them is hashed, so
    /// `{user:1}:a` and `{user:1}:b` land together. Default: none.
    #[serde(
        default,
        with = "optional_tag",
        skip_serializing_if = "Option::is_none"
    )]
    pub hash_tag: Option<HashTag>,
    /// Take a server out of the ring after `server_failure_limit`
    /// consecutive failures, for `server_retry_timeout` (its keys go to the
    /// next server meanwhile). Default `false`, as in twemproxy.
    #[serde(default)]
    pub auto_eject_hosts: bool,
    /// Consecutive failures (connect errors, lost connections, timeouts)
    /// that eject a server. Default `2`.
    #[serde(default = "default_failure_limit")]
    pub server_failure_limit: u32,
    /// How long an ejected server stays out. Default `30s`.
    #[serde(default = "default_retry_timeout", with = "humantime_serde")]
    pub server_retry_timeout: Duration,
    /// Cluster mode: where read-only commands go. `primary` (default),
    /// `replica` (an online replica of the slot; `-CLUSTERDOWN` when it has
    /// none) or `prefer_replica` (a replica, else the primary).
    #[serde(default)]
    pub read_from: ReadFrom,
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
    /// Most app connections this listener serves at once; one more is
    /// answered `-ERR max number of clients reached` and closed, as Redis
    /// itself does. Default `10000`.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Largest request accepted, checked against declared lengths before
    /// buffering. Default 512 MiB, like Redis's `proto-max-bulk-len`.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Credentials attache presents to the upstream (the app sends none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RedisAuthConfig>,
    /// TLS to every upstream connection, including cluster nodes found in
    /// the topology. Plain TCP when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

/// `mode`: how keys map to servers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One upstream server; every command Redis accepts is forwarded.
    #[default]
    Single,
    /// twemproxy's ketama consistent hashing over `servers`.
    Ketama,
    /// twemproxy's modula: hash modulo the (weighted) server count.
    Modula,
    /// twemproxy's random: any server for each request.
    Random,
    /// Redis Cluster: `servers` are seed nodes; the topology comes from
    /// `CLUSTER SHARDS` and follows MOVED/ASK and failovers.
    Cluster,
}

/// `read_from`: which nodes of a cluster serve reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    /// Every command goes to the slot's primary.
    #[default]
    Primary,
    /// Read-only commands go to a replica (`READONLY` connections), and
    /// fail when the slot has none online.
    Replica,
    /// Read-only commands go to a replica when one is online, else to the
    /// primary.
    PreferReplica,
}

impl Mode {
    /// The twemproxy distribution of a hashed mode.
    pub fn distribution(self) -> Option<Distribution> {
        match self {
            Mode::Single | Mode::Cluster => None,
            Mode::Ketama => Some(Distribution::Ketama),
            Mode::Modula => Some(Distribution::Modula),
            Mode::Random => Some(Distribution::Random),
        }
    }
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
    /// Name of a `[tokens.NAME]` source whose token is the password; live
    /// connections re-`AUTH` in-band whenever it refreshes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `servers` as twemproxy's `"host:port[:weight] [name]"` strings.
mod server_list {
    use attache_resp::hash::ServerSpec;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        servers: &[ServerSpec],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(servers.iter().map(ToString::to_string))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<ServerSpec>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|line| line.parse().map_err(serde::de::Error::custom))
            .collect()
    }
}

/// Values written as their `Display` / `FromStr` text (hash names, tags).
mod as_text {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub(super) fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// `hash_tag`, optional.
mod optional_tag {
    use attache_resp::hash::HashTag;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(tag: &Option<HashTag>, s: S) -> Result<S::Ok, S::Error> {
        match tag {
            Some(tag) => s.collect_str(tag),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<HashTag>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => text.parse().map(Some).map_err(serde::de::Error::custom),
        }
    }
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9901))
}
fn default_failure_limit() -> u32 {
    2
}
fn default_retry_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_log_level() -> String {
    "info".into()
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
