//! Building a rustls `ClientConfig` from the configured files.
//!
//! Files are read once per build and the same bytes are both parsed and
//! hashed, so the digest always describes exactly what is in use.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

use super::{TlsConfig, TlsError, TlsVersion};

/// The contents of every configured file, as read at one moment.
pub(super) struct Files {
    ca: Option<Vec<u8>>,
    cert: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
}

/// A hash of [`Files`]: equal digests mean nothing changed on disk.
pub(super) type FilesDigest = [u8; 32];

impl Files {
    /// Reads the configured files. Symlinks are followed, so a Kubernetes
    /// Secret's `..data` swap shows up as new contents.
    pub(super) fn read(config: &TlsConfig, upstream: &Arc<str>) -> Result<Self, TlsError> {
        let read = |key, path: &Option<PathBuf>| {
            path.as_deref()
                .map(|path| {
                    std::fs::read(path).map_err(|e| file_error(upstream, key, path, e.to_string()))
                })
                .transpose()
        };
        Ok(Self {
            ca: read("ca_file", &config.ca_file)?,
            cert: read("cert_file", &config.cert_file)?,
            key: read("key_file", &config.key_file)?,
        })
    }

    pub(super) fn digest(&self) -> FilesDigest {
        let mut hash = Sha256::new();
        for file in [&self.ca, &self.cert, &self.key] {
            match file {
                // The length keeps ("ab", "c") apart from ("a", "bc").
                Some(bytes) => {
                    hash.update((bytes.len() as u64 + 1).to_le_bytes());
                    hash.update(bytes);
                }
                None => hash.update(0u64.to_le_bytes()),
            }
        }
        hash.finalize().into()
    }
}

/// Roots that come from no file: resolved once per connector.
pub(super) fn base_roots(
    config: &TlsConfig,
    upstream: &Arc<str>,
) -> Result<Option<Arc<RootCertStore>>, TlsError> {
    if config.ca_file.is_some() || config.insecure_skip_verify {
        return Ok(None);
    }
    let mut roots = RootCertStore::empty();
    match config.roots {
        super::RootStore::Webpki => {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        super::RootStore::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                return Err(TlsError::Roots {
                    upstream: upstream.clone(),
                    problem: format!("no usable certificates in the system store{why}"),
                });
            }
        }
    }
    Ok(Some(Arc::new(roots)))
}

/// Builds the client config from `files` (read from `config`'s paths).
pub(super) fn build(
    config: &TlsConfig,
    upstream: &Arc<str>,
    base_roots: Option<&Arc<RootCertStore>>,
    files: &Files,
    alpn: &[Vec<u8>],
) -> Result<ClientConfig, TlsError> {
    // Explicitly ring: a process-wide default provider may be unset, or
    // set by another crate to something else.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match config.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config {
            upstream: upstream.clone(),
            key: "min_version",
            problem: e.to_string(),
        })?;

    let builder = if config.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SkipVerification(
                provider.signature_verification_algorithms,
            )))
    } else if let (Some(path), Some(pem)) = (&config.ca_file, &files.ca) {
        builder.with_root_certificates(ca_roots(upstream, path, pem)?)
    } else {
        let roots = base_roots
            .cloned()
            .unwrap_or_else(|| Arc::new(RootCertStore::empty()));
        builder.with_root_certificates(roots)
    };

    let mut client = match (&config.cert_file, &files.cert, &config.key_file, &files.key) {
        (Some(cert_path), Some(cert_pem), Some(key_path), Some(key_pem)) => {
            let chain = certificates(upstream, "cert_file", cert_path, cert_pem)?;
            let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
                let problem = match e {
                    pem::Error::NoItemsFound => {
                        "no private key found (expected a PKCS#8, PKCS#1 or SEC1 PEM block)".into()
                    }
                    e => pem_problem(&e),
                };
                file_error(upstream, "key_file", key_path, problem)
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::File {
                    upstream: upstream.clone(),
                    key: "key_file",
                    path: key_path.clone(),
                    problem: format!(
                        "not usable with cert_file {}: {}",
                        cert_path.display(),
                        key_problem(&e)
                    ),
                })?
        }
        _ => builder.with_no_client_auth(),
    };
    client.alpn_protocols = alpn.to_vec();
    Ok(client)
}

fn ca_roots(upstream: &Arc<str>, path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in certificates(upstream, "ca_file", path, pem)?
        .into_iter()
        .enumerate()
    {
        roots.add(cert).map_err(|e| {
            file_error(
                upstream,
                "ca_file",
                path,
                format!("certificate #{}: {e}", i + 1),
            )
        })?;
    }
    Ok(roots)
}

fn certificates(
    upstream: &Arc<str>,
    key: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(upstream, key, path, pem_problem(&e)))?;
    if certs.is_empty() {
        return Err(file_error(
            upstream,
            key,
            path,
            "no certificates found (expected PEM \"BEGIN CERTIFICATE\" blocks)".into(),
        ));
    }
    Ok(certs)
}

/// A PEM error in words that never quote the file: its lines may be key
/// material.
fn pem_problem(error: &pem::Error) -> String {
    match error {
        pem::Error::MissingSectionEnd { .. } => {
            "a PEM block has no END line (truncated or half-written file?)".into()
        }
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".into(),
        pem::Error::Base64Decode(_) => "a PEM block is not valid base64".into(),
        pem::Error::Io(e) => e.to_string(),
        pem::Error::NoItemsFound => "no PEM blocks found".into(),
        _ => "not valid PEM".into(),
    }
}

/// rustls's complaint about a cert/key pair, without quoting either.
fn key_problem(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            "the private key does not belong to the certificate".into()
        }
        rustls::Error::InconsistentKeys(_) => "the key does not match the certificate".into(),
        _ => "the private key is invalid or of an unsupported type".into(),
    }
}

fn file_error(upstream: &Arc<str>, key: &'static str, path: &Path, problem: String) -> TlsError {
    TlsError::File {
        upstream: upstream.clone(),
        key,
        path: path.to_owned(),
        problem,
    }
}

/// `insecure_skip_verify`: any certificate is accepted, but the handshake
/// signatures are still checked (so the peer holds the certificate's key).
#[derive(Debug)]
struct SkipVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for SkipVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
