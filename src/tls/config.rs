//! `[… .tls]`: what an upstream TLS connection trusts and presents.

use std::path::PathBuf;

use rustls_pki_types::ServerName;
use serde::{Deserialize, Serialize};

/// `[redis.NAME.tls]` / `[http.NAME.tls]`: TLS to the upstream. The files
/// are read at startup (a bad one fails the config check) and re-read when
/// they change on disk, so a rotated Kubernetes Secret reaches new
/// connections without a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM bundle of CA certificates the upstream's certificate must chain
    /// to. When set, only these roots are trusted and `roots` is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Trust roots used when `ca_file` is unset: `webpki` (default; the
    /// Mozilla roots built into attache, so it works in distroless images)
    /// or `system` (the OS store, read once at startup).
    #[serde(default)]
    pub roots: RootStore,
    /// PEM certificate chain attache presents to the upstream (mutual TLS),
    /// leaf first. Requires `key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `cert_file`. Requires
    /// `cert_file`. Its contents never appear in logs or errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Name sent as SNI and checked against the upstream's certificate.
    /// Default: the upstream's host; an IP address is checked against the
    /// certificate's IP SANs and sends no SNI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Oldest TLS version offered: `"1.2"` (default) or `"1.3"`.
    #[serde(default)]
    pub min_version: TlsVersion,
    /// Accept any server certificate (the handshake's signatures are still
    /// checked, but not who signed the certificate nor its name). For tests
    /// only: anyone on the path can impersonate the upstream. Default
    /// `false`; a warning is logged whenever it is in effect.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// `roots`: where trusted CAs come from when `ca_file` is unset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RootStore {
    /// Mozilla's roots, bundled in the binary (`webpki-roots`).
    #[default]
    Webpki,
    /// The operating system's store (`/etc/ssl/certs` and friends).
    System,
}

/// `min_version`: the oldest TLS version attache offers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    Tls13,
}

impl TlsConfig {
    /// Checks what types alone cannot; the error names the key (relative to
    /// the `tls` table) and the problem. Files are checked by
    /// [`TlsConnector::new`](super::TlsConnector::new), which reads them.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => {
                return Err((
                    "key_file",
                    "cert_file is set but key_file is not; mutual TLS needs both".into(),
                ))
            }
            (None, Some(_)) => {
                return Err((
                    "cert_file",
                    "key_file is set but cert_file is not; mutual TLS needs both".into(),
                ))
            }
            _ => {}
        }
        if let Some(name) = &self.server_name {
            parse_server_name(name).map_err(|e| ("server_name", e))?;
        }
        Ok(())
    }
}

/// A DNS name or an IP literal (`[…]` around IPv6 allowed), as rustls
/// verifies it.
pub(super) fn parse_server_name(name: &str) -> Result<ServerName<'static>, String> {
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    ServerName::try_from(bare.to_owned())
        .map_err(|_| format!("{name:?} is not a valid DNS name or IP address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<TlsConfig, toml::de::Error> {
        toml::from_str(toml)
    }

    #[test]
    fn defaults_verify_against_bundled_roots() {
        let config = parse("").unwrap();
        assert_eq!(config, TlsConfig::default());
        assert_eq!(config.roots, RootStore::Webpki);
        assert_eq!(config.min_version, TlsVersion::Tls12);
        assert!(!config.insecure_skip_verify);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn parses_every_field() {
        let config = parse(
            r#"
            ca_file = "/etc/attache/ca.pem"
            roots = "system"
            cert_file = "/etc/attache/tls.crt"
            key_file = "/etc/attache/tls.key"
            server_name = "redis.internal"
            min_version = "1.3"
            insecure_skip_verify = true
            "#,
        )
        .unwrap();
        assert_eq!(config.ca_file, Some("/etc/attache/ca.pem".into()));
        assert_eq!(config.roots, RootStore::System);
        assert_eq!(config.cert_file, Some("/etc/attache/tls.crt".into()));
        assert_eq!(config.key_file, Some("/etc/attache/tls.key".into()));
        assert_eq!(config.server_name.as_deref(), Some("redis.internal"));
        assert_eq!(config.min_version, TlsVersion::Tls13);
        assert!(config.insecure_skip_verify);
        assert_eq!(config.validate(), Ok(()));
        // What serializes parses back the same.
        assert_eq!(parse(&toml::to_string(&config).unwrap()).unwrap(), config);
    }

    #[test]
    fn rejects_unknown_keys_and_values() {
        let err = parse("ca_cert = \"x\"").unwrap_err().to_string();
        assert!(err.contains("ca_cert"), "{err}");
        let err = parse("min_version = \"1.1\"").unwrap_err().to_string();
        assert!(err.contains("1.1") && err.contains("1.2"), "{err}");
        let err = parse("roots = \"mozilla\"").unwrap_err().to_string();
        assert!(err.contains("webpki"), "{err}");
    }

    #[test]
    fn cert_and_key_come_together() {
        let only_cert = parse("cert_file = \"c.pem\"").unwrap();
        let (key, msg) = only_cert.validate().unwrap_err();
        assert_eq!(key, "key_file");
        assert!(msg.contains("cert_file is set"), "{msg}");

        let only_key = parse("key_file = \"k.pem\"").unwrap();
        let (key, msg) = only_key.validate().unwrap_err();
        assert_eq!(key, "cert_file");
        assert!(msg.contains("key_file is set"), "{msg}");
    }

    #[test]
    fn server_name_must_be_a_name_or_an_address() {
        for good in ["redis.internal", "10.0.0.7", "::1", "[::1]"] {
            let config = TlsConfig {
                server_name: Some(good.into()),
                ..TlsConfig::default()
            };
            assert_eq!(config.validate(), Ok(()), "{good}");
        }
        let config = TlsConfig {
            server_name: Some("not a name".into()),
            ..TlsConfig::default()
        };
        let (key, msg) = config.validate().unwrap_err();
        assert_eq!(key, "server_name");
        assert!(msg.contains("not a valid DNS name"), "{msg}");
    }
}
