//! Why a TLS connection could not be set up, in words an operator can act
//! on: every message names the upstream, and a failed handshake says what
//! the cause most likely means for the config.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::{AlertDescription, CertificateError};

/// A TLS failure. Messages name the upstream and the cause; they never
/// contain key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The config is inconsistent (see [`TlsConfig::validate`](super::TlsConfig::validate)).
    #[error("upstream {upstream}: TLS {key}: {problem}")]
    Config {
        /// The upstream's label.
        upstream: Arc<str>,
        /// The offending key of the `tls` table.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A configured file could not be read or holds nothing usable.
    #[error("upstream {upstream}: TLS {key} {}: {problem}", path.display())]
    File {
        /// The upstream's label.
        upstream: Arc<str>,
        /// `ca_file`, `cert_file` or `key_file`.
        key: &'static str,
        /// The configured path.
        path: PathBuf,
        /// What is wrong with it (never its contents).
        problem: String,
    },
    /// The trust roots could not be assembled (`roots = "system"`).
    #[error("upstream {upstream}: TLS roots: {problem}")]
    Roots {
        /// The upstream's label.
        upstream: Arc<str>,
        /// What is wrong.
        problem: String,
    },
    /// The host is neither a DNS name nor an IP address.
    #[error("upstream {upstream} ({host}): {host:?} is not a valid TLS server name; set tls.server_name")]
    ServerName {
        /// The upstream's label.
        upstream: Arc<str>,
        /// The host attache connected to.
        host: String,
    },
    /// The handshake failed (or the connection was lost during it).
    #[error("upstream {upstream} ({host}): TLS handshake failed: {io}{}", failure.hint())]
    Handshake {
        /// The upstream's label.
        upstream: Arc<str>,
        /// The host attache connected to.
        host: String,
        /// What the failure most likely means.
        failure: TlsFailure,
        /// The error from the handshake (a rustls error inside, when TLS
        /// itself failed).
        io: io::Error,
    },
    /// The established session failed; with TLS 1.3 a server that refuses
    /// the client certificate says so only after the handshake.
    #[error("upstream {upstream} ({host}): TLS session failed: {io}{}", failure.hint())]
    Session {
        /// The upstream's label.
        upstream: Arc<str>,
        /// The host attache connected to.
        host: String,
        /// What the failure most likely means.
        failure: TlsFailure,
        /// The error from the stream.
        io: io::Error,
    },
}

impl TlsError {
    /// What a handshake or session failure most likely means; `None` for
    /// config and file errors.
    pub fn failure(&self) -> Option<TlsFailure> {
        match self {
            TlsError::Handshake { failure, .. } | TlsError::Session { failure, .. } => {
                Some(*failure)
            }
            _ => None,
        }
    }
}

/// What a failed handshake most likely means. Failures other than
/// [`TlsFailure::Other`] are config problems: retrying will not help
/// until the config, the certificates or the server change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The server's certificate does not chain to a trusted CA.
    UntrustedCertificate,
    /// The server's certificate is not valid for the name (or IP) checked.
    NameMismatch,
    /// The server's certificate has expired or is not valid yet.
    CertificateExpired,
    /// Another problem with the server's certificate (revoked, bad
    /// encoding, wrong key usage, …).
    InvalidCertificate,
    /// The server requires a client certificate and got none, or does not
    /// accept the one attache presented.
    ClientCertificateRejected,
    /// No TLS version both sides accept (`min_version`).
    ProtocolVersion,
    /// The server does not speak TLS on this port.
    NotTls,
    /// Anything else (I/O, an unusual alert); may be transient.
    Other,
}

impl TlsFailure {
    /// Classifies an error from a TLS stream.
    pub fn of(error: &io::Error) -> Self {
        let Some(tls) = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        else {
            return TlsFailure::Other;
        };
        use CertificateError as C;
        match tls {
            rustls::Error::InvalidCertificate(C::UnknownIssuer) => TlsFailure::UntrustedCertificate,
            rustls::Error::InvalidCertificate(
                C::NotValidForName | C::NotValidForNameContext { .. },
            ) => TlsFailure::NameMismatch,
            rustls::Error::InvalidCertificate(
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. },
            ) => TlsFailure::CertificateExpired,
            rustls::Error::InvalidCertificate(_) => TlsFailure::InvalidCertificate,
            rustls::Error::AlertReceived(
                AlertDescription::CertificateRequired
                | AlertDescription::BadCertificate
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateUnknown
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateRevoked
                | AlertDescription::UnknownCA,
            ) => TlsFailure::ClientCertificateRejected,
            rustls::Error::AlertReceived(AlertDescription::ProtocolVersion)
            | rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::ServerDoesNotSupportTls12Or13
                | rustls::PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig
                | rustls::PeerIncompatible::SupportedVersionsExtensionRequired,
            ) => TlsFailure::ProtocolVersion,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
                TlsFailure::NotTls
            }
            _ => TlsFailure::Other,
        }
    }

    /// What the failure means for the config, appended to messages.
    fn hint(self) -> &'static str {
        match self {
            TlsFailure::UntrustedCertificate => {
                " (the server's certificate is not trusted: it is not signed by a CA in tls.ca_file, or in tls.roots when ca_file is unset)"
            }
            TlsFailure::NameMismatch => {
                " (the server's certificate does not match the name checked; tls.server_name sets the name to check)"
            }
            TlsFailure::CertificateExpired => {
                " (the server's certificate is expired or not valid yet)"
            }
            TlsFailure::InvalidCertificate => " (the server's certificate is not acceptable)",
            TlsFailure::ClientCertificateRejected => {
                " (the server requires a client certificate it trusts: check tls.cert_file and tls.key_file)"
            }
            TlsFailure::ProtocolVersion => {
                " (the server supports no TLS version allowed by tls.min_version)"
            }
            TlsFailure::NotTls => " (the server does not speak TLS on this port)",
            TlsFailure::Other => "",
        }
    }
}
