//! Loading: the file (TOML or YAML by extension), then `ATTACHE_…`
//! environment overrides, then validation. Errors name the file and key.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml, Yaml};
use figment::Figment;

use attache_resp::hash::Distributor;

use super::model::{Config, Mode, RedisListenerConfig};

/// A config that cannot be used. The message names the file (or the
/// environment variable) and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed, or a key has the wrong type.
    #[error("{file}: {message}")]
    Parse {
        /// The config file.
        file: PathBuf,
        /// What is wrong, with the key and its source.
        message: String,
    },
    /// Parsed, but a value is not acceptable.
    #[error("{file}: {key}: {message}")]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// The dotted key, e.g. `redis.cache.servers`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Loads and validates the config at `path`, with environment overrides.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let parse_error = |message: String| ConfigError::Parse {
        file: path.to_owned(),
        message,
    };
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let file_provider = match ext {
        "toml" => Figment::from(Toml::file_exact(path)),
        "yaml" | "yml" => Figment::from(Yaml::file_exact(path)),
        other => {
            return Err(parse_error(format!(
                "unknown config format '.{other}': use .toml, .yaml or .yml"
            )))
        }
    };
    let env = Env::prefixed("ATTACHE_")
        .split("__")
        // Every config key has at least two levels, so single-level names
        // are never overrides: `ATTACHE_CONFIG` names the file itself, and
        // Kubernetes injects `ATTACHE_SERVICE_HOST` and friends for a Service
        // named attache; neither may break the sidecar.
        .filter(|key| key.as_str().contains('.') || key.as_str().contains("__"));
    let config: Config = file_provider
        .merge(env)
        .extract()
        .map_err(|e| parse_error(describe(e)))?;
    config
        .validate()
        .map_err(|(key, message)| ConfigError::Invalid {
            file: path.to_owned(),
            key,
            message,
        })
}

/// One line per figment error: `key redis.cache.timeout: invalid type … (from env ATTACHE_…)`.
fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let source = e
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    Some(figment::Source::File(_)) => String::new(),
                    // Only the environment provider has no source: name the
                    // variable, not the file, as the culprit.
                    None => format!(" (from env ATTACHE_{})", e.path.join("__").to_uppercase()),
                    Some(_) => format!(" (from {})", m.name),
                })
                .unwrap_or_default();
            if key.is_empty() {
                format!("{}{source}", e.kind)
            } else {
                format!("key {key}: {}{source}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl Config {
    /// Checks what types alone cannot; the error names the dotted key.
    pub fn validate(self) -> Result<Self, (String, String)> {
        if self.runtime.workers == 0 || self.runtime.workers > 256 {
            return Err(("runtime.workers".into(), "must be between 1 and 256".into()));
        }
        if self.redis.is_empty() && self.http.is_empty() {
            return Err((
                "redis".into(),
                "no listeners: add a [redis.NAME] or [http.NAME] section".into(),
            ));
        }
        match self.dns.clone().validate() {
            Ok(_) => {}
            Err(crate::dns::DnsError::InvalidConfig { key, message }) => {
                return Err((key, message))
            }
            Err(e) => return Err(("dns".into(), e.to_string())),
        }
        for (name, source) in &self.tokens {
            source
                .validate()
                .map_err(|(field, msg)| (format!("tokens.{name}.{field}"), msg))?;
        }
        let mut seen = std::collections::HashMap::new();
        for (name, listener) in &self.redis {
            if let Some(token) = listener.auth.as_ref().and_then(|a| a.token.as_ref()) {
                if !self.tokens.contains_key(token) {
                    return Err((
                        format!("redis.{name}.auth.token"),
                        format!("no [tokens.{token}] section defines this credential source"),
                    ));
                }
            }
            let key = |field: &str| format!("redis.{name}.{field}");
            listener
                .validate()
                .map_err(|(field, msg)| (key(&field), msg))?;
            if listener.listen.port() == 0 {
                continue;
            }
            if let Some(other) = seen.insert(listener.listen, format!("redis.{name}")) {
                return Err((
                    key("listen"),
                    format!("{} is also the address of {other}", listener.listen),
                ));
            }
        }
        for (name, listener) in &self.http {
            let key = |field: &str| format!("http.{name}.{field}");
            // Metrics and logs label listeners by name alone.
            if self.redis.contains_key(name) {
                return Err((
                    format!("http.{name}"),
                    format!("redis.{name} has the same name; listener names must be unique"),
                ));
            }
            let listener = listener
                .clone()
                .validate(name)
                .map_err(|e| (e.key, e.message))?;
            if let Some(token) = &listener.token {
                if !self.tokens.contains_key(token) {
                    return Err((
                        key("token"),
                        format!("no [tokens.{token}] section defines this credential source"),
                    ));
                }
            }
            if let Some(tls) = &listener.tls {
                tls.validate()
                    .map_err(|(k, m)| (key(&format!("tls.{k}")), m))?;
            }
            if listener.listen.port() == 0 {
                continue;
            }
            if let Some(other) = seen.insert(listener.listen, format!("http.{name}")) {
                return Err((
                    key("listen"),
                    format!("{} is also the address of {other}", listener.listen),
                ));
            }
        }
        self.refuse_loops(&seen)?;
        Ok(self)
    }

    /// An upstream written as one of attache's own listen addresses (an IP
    /// or `localhost`, on a listener's port): attache would proxy every
    /// request to itself. (A name that resolves there, or a listener on
    /// port 0, is caught at connect time.)
    fn refuse_loops(
        &self,
        listening: &std::collections::HashMap<std::net::SocketAddr, String>,
    ) -> Result<(), (String, String)> {
        let mut upstreams: Vec<(String, String, u16)> = Vec::new();
        for (name, listener) in &self.redis {
            for (i, server) in listener.servers.iter().enumerate() {
                let key = format!("redis.{name}.servers[{i}]");
                upstreams.push((key, server.host.clone(), server.port));
            }
        }
        for (name, listener) in &self.http {
            let routes = listener.routes.iter().enumerate();
            let routed = routes.map(|(i, r)| (format!("routes[{i}].upstream"), &r.upstream));
            let fallback = listener.upstream.iter().map(|u| ("upstream".to_owned(), u));
            for (field, text) in routed.chain(fallback) {
                if let Ok(upstream) = text.parse::<attache_http::Upstream>() {
                    let key = format!("http.{name}.{field}");
                    upstreams.push((key, upstream.host().to_owned(), upstream.port()));
                }
            }
        }
        for (key, host, port) in upstreams {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let ips: Vec<std::net::IpAddr> = match bare.parse() {
                Ok(ip) => vec![ip],
                Err(_) if bare.eq_ignore_ascii_case("localhost") => {
                    vec![[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()]
                }
                Err(_) => continue,
            };
            for ip in ips {
                let target = std::net::SocketAddr::new(ip, port);
                if let Some((own, other)) = listening
                    .iter()
                    .find(|(own, _)| crate::upstream::reaches(**own, target))
                {
                    return Err((
                        key,
                        format!(
                            "{host}:{port} is {other}'s own listen address ({own}): attache would proxy every request to itself"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl RedisListenerConfig {
    fn validate(&self) -> Result<(), (String, String)> {
        self.validate_fields().map_err(|(k, m)| (k.to_owned(), m))?;
        if let Some(tls) = &self.tls {
            tls.validate().map_err(|(k, m)| (format!("tls.{k}"), m))?;
        }
        Ok(())
    }

    fn validate_fields(&self) -> Result<(), (&'static str, String)> {
        if !self.allow_remote && !self.listen.ip().is_loopback() {
            return Err((
                "listen",
                format!(
                    "{} is not a loopback address; set allow_remote = true to listen on it",
                    self.listen
                ),
            ));
        }
        match (self.mode, self.servers.len()) {
            (_, 0) => return Err(("servers", "at least one server is required".into())),
            (Mode::Single, n) if n > 1 => {
                return Err((
                    "servers",
                    format!("mode \"single\" takes exactly one server, got {n}; use ketama, modula or random to shard"),
                ))
            }
            _ => {}
        }
        if let Some(distribution) = self.mode.distribution() {
            // Duplicate names, weights that overflow: what twemproxy refuses.
            Distributor::new(distribution, self.hash, self.hash_tag, &self.servers)
                .map_err(|e| ("servers", e.to_string()))?;
        }
        if self.server_failure_limit == 0 {
            return Err(("server_failure_limit", "must be at least 1".into()));
        }
        if self.server_connections == 0 {
            return Err(("server_connections", "must be at least 1".into()));
        }
        if self.max_dedicated_connections == 0 {
            return Err(("max_dedicated_connections", "must be at least 1".into()));
        }
        if self.max_connections == 0 {
            return Err(("max_connections", "must be at least 1".into()));
        }
        if self.max_request_bytes < 1024 {
            return Err(("max_request_bytes", "must be at least 1024".into()));
        }
        if self.timeout.is_zero() {
            return Err(("timeout", "must be greater than zero".into()));
        }
        if self.connect_timeout.is_zero() {
            return Err(("connect_timeout", "must be greater than zero".into()));
        }
        if let Some(auth) = &self.auth {
            let sources = [
                auth.password_file.is_some(),
                auth.password_env.is_some(),
                auth.token.is_some(),
            ];
            match sources.iter().filter(|&&set| set).count() {
                1 => {}
                0 => {
                    return Err((
                        "auth",
                        "set one of password_file, password_env and token".into(),
                    ))
                }
                _ => {
                    return Err((
                        "auth",
                        "set only one of password_file, password_env and token".into(),
                    ))
                }
            }
        }
        Ok(())
    }
}
