//! `[dns]`: how attache resolves upstream host names and how often it
//! re-resolves them.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::DnsError;

/// The shortest `min_ttl` accepted: a record with TTL 0 would otherwise be
/// re-resolved in a busy loop.
const MIN_TTL_FLOOR: Duration = Duration::from_secs(1);

/// `[dns]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// An answer is kept at least this long before it is re-resolved, however
    /// short its TTL (TTL 0 included), and a failed refresh is retried after
    /// this long. At least `1s`. Default `5s`.
    #[serde(default = "default_min_ttl", with = "humantime_serde")]
    pub min_ttl: Duration,
    /// An answer is re-resolved after at most this long (plus 0–10% jitter,
    /// as every wait), however long its TTL: a moved upstream is noticed
    /// within `max_ttl` even behind a record with a TTL of hours. At least
    /// `min_ttl`. Default `60s`.
    #[serde(default = "default_max_ttl", with = "humantime_serde")]
    pub max_ttl: Duration,
    /// Nameservers to ask, over UDP with a TCP fallback, e.g.
    /// `["10.96.0.10:53"]`. Default empty: the system's `/etc/resolv.conf`,
    /// with its search domains and `ndots` (which is what makes a short
    /// Kubernetes service name like `redis` resolve). When set, names are
    /// resolved as given, without search domains.
    #[serde(default)]
    pub nameservers: Vec<SocketAddr>,
    /// How long one query to one nameserver may take before it counts as
    /// failed (and the next attempt or nameserver is tried). Default `2s`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            min_ttl: default_min_ttl(),
            max_ttl: default_max_ttl(),
            nameservers: Vec::new(),
            timeout: default_timeout(),
        }
    }
}

impl DnsConfig {
    /// Checks the values serde cannot; the error names the offending key
    /// (`dns.min_ttl`, …).
    pub fn validate(self) -> Result<Self, DnsError> {
        let invalid = |key: String, message: String| Err(DnsError::InvalidConfig { key, message });
        if self.min_ttl < MIN_TTL_FLOOR {
            return invalid(
                "dns.min_ttl".into(),
                format!(
                    "{:?} is too short: at least {MIN_TTL_FLOOR:?} (a TTL-0 record would be \
                     re-resolved in a loop)",
                    self.min_ttl,
                ),
            );
        }
        if self.max_ttl < self.min_ttl {
            return invalid(
                "dns.max_ttl".into(),
                format!(
                    "{:?} is shorter than dns.min_ttl ({:?})",
                    self.max_ttl, self.min_ttl,
                ),
            );
        }
        if self.timeout.is_zero() {
            return invalid("dns.timeout".into(), "must be longer than 0s".into());
        }
        if let Some(i) = self.nameservers.iter().position(|ns| ns.port() == 0) {
            return invalid(
                format!("dns.nameservers[{i}]"),
                format!("{} has port 0", self.nameservers[i]),
            );
        }
        Ok(self)
    }
}

fn default_min_ttl() -> Duration {
    Duration::from_secs(5)
}

fn default_max_ttl() -> Duration {
    Duration::from_secs(60)
}

fn default_timeout() -> Duration {
    Duration::from_secs(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(config: DnsConfig) -> String {
        match config.validate() {
            Err(DnsError::InvalidConfig { key, .. }) => key,
            other => panic!("expected an invalid config, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid_and_an_empty_section_means_them() {
        let parsed: DnsConfig = toml::from_str("").unwrap();
        assert_eq!(parsed, DnsConfig::default());
        assert_eq!(parsed.clone().validate().unwrap(), parsed);
        assert_eq!(parsed.min_ttl, Duration::from_secs(5));
        assert_eq!(parsed.max_ttl, Duration::from_secs(60));
        assert_eq!(parsed.timeout, Duration::from_secs(2));
        assert!(parsed.nameservers.is_empty());
    }

    #[test]
    fn parses_every_key() {
        let parsed: DnsConfig = toml::from_str(
            r#"
            min_ttl = "1s"
            max_ttl = "5m"
            nameservers = ["10.96.0.10:53", "[fd00::a]:5353"]
            timeout = "500ms"
            "#,
        )
        .unwrap();
        assert_eq!(parsed.min_ttl, Duration::from_secs(1));
        assert_eq!(parsed.max_ttl, Duration::from_secs(300));
        assert_eq!(parsed.timeout, Duration::from_millis(500));
        assert_eq!(parsed.nameservers.len(), 2);
        parsed.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<DnsConfig>("min_tll = \"1s\"").unwrap_err();
        assert!(err.to_string().contains("min_tll"), "{err}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        let base = DnsConfig::default;
        assert_eq!(
            key_of(DnsConfig {
                min_ttl: Duration::from_millis(10),
                ..base()
            }),
            "dns.min_ttl"
        );
        assert_eq!(
            key_of(DnsConfig {
                max_ttl: Duration::from_secs(1),
                ..base()
            }),
            "dns.max_ttl"
        );
        assert_eq!(
            key_of(DnsConfig {
                timeout: Duration::ZERO,
                ..base()
            }),
            "dns.timeout"
        );
        assert_eq!(
            key_of(DnsConfig {
                nameservers: vec![
                    "127.0.0.1:53".parse().unwrap(),
                    "127.0.0.1:0".parse().unwrap()
                ],
                ..base()
            }),
            "dns.nameservers[1]"
        );
        let err = DnsConfig {
            max_ttl: Duration::from_secs(1),
            ..base()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "dns.max_ttl: 1s is shorter than dns.min_ttl (5s)"
        );
    }
}
