//! Test PKI (rcgen, in a temp dir) and `redis-server` with TLS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{count_replies, free_port, wait_for_port, RedisServer};

/// A CA, and certificates it issued, as PEM files in a temp dir:
///
/// - `ca.pem`: the CA; `server.crt`/`server.key`: for `localhost` and
///   `127.0.0.1` (an IP SAN); `client.crt`/`client.key`: for mutual TLS;
/// - `other-ca.pem`, `other-client.crt`/`other-client.key`: an unrelated
///   CA and a client certificate it issued.
pub struct TestPki {
    dir: tempfile::TempDir,
}

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// A leaf certificate and its key, as PEM.
    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "attache test");
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

impl TestPki {
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, pem: &str| std::fs::write(dir.path().join(name), pem).unwrap();

        let ca = Ca::new("attache test CA");
        write("ca.pem", &ca.cert.pem());
        let (cert, key) = ca.issue(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        write("server.crt", &cert);
        write("server.key", &key);
        let (cert, key) = ca.issue(&["client"], ExtendedKeyUsagePurpose::ClientAuth);
        write("client.crt", &cert);
        write("client.key", &key);

        let other = Ca::new("unrelated CA");
        write("other-ca.pem", &other.cert.pem());
        let (cert, key) = other.issue(&["client"], ExtendedKeyUsagePurpose::ClientAuth);
        write("other-client.crt", &cert);
        write("other-client.key", &key);
        Self { dir }
    }

    /// One of the files above.
    pub fn path(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        assert!(path.exists(), "no test PKI file {name}");
        path
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A `redis-server` with a TLS port (and its plain port, which the harness
/// uses for readiness and `cli`). Clients need no certificate unless
/// `extra` says `--tls-auth-clients yes`; later arguments win.
pub struct TlsRedis {
    pub server: RedisServer,
    pub tls_port: u16,
}

impl TlsRedis {
    pub fn start(pki: &TestPki, extra: &[&str]) -> Self {
        let tls_port = free_port().to_string();
        let files = [
            pki.path("server.crt"),
            pki.path("server.key"),
            pki.path("ca.pem"),
        ]
        .map(|p| p.display().to_string());
        let mut args = vec![
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            &files[0],
            "--tls-key-file",
            &files[1],
            "--tls-ca-cert-file",
            &files[2],
            "--tls-auth-clients",
            "no",
        ];
        args.extend_from_slice(extra);
        let server = RedisServer::start_with(&args);
        let tls_port = tls_port.parse().unwrap();
        wait_for_port(tls_port);
        Self { server, tls_port }
    }

    /// A TCP connection to the TLS port.
    pub async fn tcp(&self) -> TcpStream {
        TcpStream::connect(("127.0.0.1", self.tls_port))
            .await
            .expect("connect to the TLS port")
    }
}

/// Writes `bytes` and reads until `replies` complete replies arrived; a
/// connection closed before then is an `UnexpectedEof` error.
pub async fn exchange<S>(stream: &mut S, bytes: &[u8], replies: usize) -> std::io::Result<Vec<u8>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(bytes).await?;
    stream.flush().await?;
    let mut buf = Vec::new();
    while count_replies(&buf) < replies {
        let mut chunk = [0u8; 16 * 1024];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "timed out waiting for {replies} replies; got {:?}",
                    String::from_utf8_lossy(&buf)
                )
            })?;
        if read == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed after {:?}",
                    String::from_utf8_lossy(&buf)
                ),
            ));
        }
        buf.extend_from_slice(&chunk[..read]);
    }
    Ok(buf)
}
