//! The TLS connector against a real `redis-server` with TLS: a tokio
//! `TcpStream`, the connector's handshake, then raw RESP over the session.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use attache::tls::{
    TlsConfig, TlsConnector, TlsError, TlsFailure, TlsVersion, RELOAD_CHECK_INTERVAL,
};
use support::cmd;
use support::tls::{exchange, TestPki, TlsRedis};

fn trusting(ca_file: PathBuf) -> TlsConfig {
    TlsConfig {
        ca_file: Some(ca_file),
        ..TlsConfig::default()
    }
}

/// `PING`, `SET`, `GET` over a fresh session to `host`; the first error,
/// handshake or session, described by the connector.
async fn talk(connector: &TlsConnector, redis: &TlsRedis, host: &str) -> Result<(), TlsError> {
    let mut tls = connector.connect(host, redis.tcp().await).await?;
    let io = |e| connector.session_error(host, e);
    let pong = exchange(&mut tls, &cmd(&["PING"]), 1).await.map_err(io)?;
    assert_eq!(pong, b"+PONG\r\n");
    let set = exchange(&mut tls, &cmd(&["SET", "tls:key", host]), 1)
        .await
        .map_err(io)?;
    assert_eq!(set, b"+OK\r\n");
    let get = exchange(&mut tls, &cmd(&["GET", "tls:key"]), 1)
        .await
        .map_err(io)?;
    assert_eq!(get, format!("${}\r\n{host}\r\n", host.len()).as_bytes());
    Ok(())
}

async fn refused(connector: &TlsConnector, redis: &TlsRedis, host: &str) -> TlsError {
    match talk(connector, redis, host).await {
        Ok(()) => panic!("connected to {host}, but should not have"),
        Err(e) => {
            // Shown with --nocapture: what an operator would read.
            println!("{e}");
            e
        }
    }
}

/// Lets the connector notice changed files.
async fn after_reload_check() {
    tokio::time::sleep(RELOAD_CHECK_INTERVAL + Duration::from_millis(200)).await;
}

/// Replaces `path` the way a careful writer does: a new file renamed over.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn verified_by_ca_file_by_name_and_by_ip() {
    let pki = TestPki::generate();
    let redis = TlsRedis::start(&pki, &[]);
    let connector = TlsConnector::new(&trusting(pki.path("ca.pem")), "cache").unwrap();
    talk(&connector, &redis, "localhost").await.unwrap();
    talk(&connector, &redis, "127.0.0.1").await.unwrap();
    // What the sessions wrote is what the server holds.
    assert_eq!(redis.server.cli(&["GET", "tls:key"]), "127.0.0.1");
}

#[tokio::test]
async fn server_name_overrides_the_host() {
    let pki = TestPki::generate();
    let redis = TlsRedis::start(&pki, &[]);
    // The certificate is not for this host...
    let plain = TlsConnector::new(&trusting(pki.path("ca.pem")), "cache").unwrap();
    let err = refused(&plain, &redis, "cache.internal").await;
    assert_eq!(err.failure(), Some(TlsFailure::NameMismatch), "{err}");
    // ...but is for the name configured.
    let config = TlsConfig {
        server_name: Some("localhost".into()),
        ..trusting(pki.path("ca.pem"))
    };
    let connector = TlsConnector::new(&config, "cache").unwrap();
    talk(&connector, &redis, "cache.internal").await.unwrap();
}

#[tokio::test]
async fn mutual_tls_needs_a_trusted_client_certificate() {
    let pki = TestPki::generate();
    let redis = TlsRedis::start(&pki, &["--tls-auth-clients", "yes"]);
    let with_cert = |cert: &str, key: &str| TlsConfig {
        cert_file: Some(pki.path(cert)),
        key_file: Some(pki.path(key)),
        ..trusting(pki.path("ca.pem"))
    };

    let connector = TlsConnector::new(&with_cert("client.crt", "client.key"), "cache").unwrap();
    talk(&connector, &redis, "localhost").await.unwrap();

    let without = TlsConnector::new(&trusting(pki.path("ca.pem")), "cache").unwrap();
    let err = refused(&without, &redis, "localhost").await;
    assert_eq!(
        err.failure(),
        Some(TlsFailure::ClientCertificateRejected),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.starts_with("upstream cache (localhost): TLS"), "{msg}");
    assert!(msg.contains("requires a client certificate"), "{msg}");

    let untrusted =
        TlsConnector::new(&with_cert("other-client.crt", "other-client.key"), "cache").unwrap();
    let err = refused(&untrusted, &redis, "localhost").await;
    assert_eq!(
        err.failure(),
        Some(TlsFailure::ClientCertificateRejected),
        "{err}"
    );
}

#[tokio::test]
async fn an_untrusted_server_certificate_is_refused() {
    let pki = TestPki::generate();
    let redis = TlsRedis::start(&pki, &[]);
    let connector = TlsConnector::new(&trusting(pki.path("other-ca.pem")), "cache").unwrap();
    let err = refused(&connector, &redis, "localhost").await;
    assert!(matches!(err, TlsError::Handshake { .. }), "{err:?}");
    assert_eq!(err.failure(), Some(TlsFailure::UntrustedCertificate));
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "upstream cache (localhost): TLS handshake failed: invalid peer certificate: UnknownIssuer"
        ),
        "{msg}"
    );
    assert!(msg.contains("not trusted"), "{msg}");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let pki = TestPki::generate();
    let redis = TlsRedis::start(&pki, &[]);
    let config = TlsConfig {
        server_name: Some("wrong.example".into()),
        ..trusting(pki.path("ca.pem"))
    };
    let connector = TlsConnector::new(&config, "cache").unwrap();
    let err = refused(&connector, &redis, "127.0.0.1").await;
    assert_eq!(err.failure(), Some(TlsFailure::NameMismatch));
    let msg = err.to_string();
    assert!(
        msg.starts_with("upstream cache (127.0.0.1): TLS handshake failed"),
        "{msg}"
    );
    assert!(
        msg.contains("certificate not valid for name \"wrong.example\""),
        "{msg}"
    );
}

#[tokio::test]
async fn insecure_skip_verify_accepts_any_certificate() {
    let pki = TestPki::generate();
    let redis = TlsRedis::start(&pki, &[]);
    let config = TlsConfig {
        insecure_skip_verify: true,
        server_name: Some("wrong.example".into()),
        ..trusting(pki.path("other-ca.pem"))
    };
    let connector = TlsConnector::new(&config, "cache").unwrap();
    talk(&connector, &redis, "localhost").await.unwrap();
}

#[tokio::test]
async fn min_version_13_refuses_a_tls_12_server() {
    let pki = TestPki::generate();
    let redis = TlsRedis::start(&pki, &["--tls-protocols", "TLSv1.2"]);
    let config = trusting(pki.path("ca.pem"));
    let connector = TlsConnector::new(&config, "cache").unwrap();
    talk(&connector, &redis, "localhost").await.unwrap();

    let config = TlsConfig {
        min_version: TlsVersion::Tls13,
        ..config
    };
    let connector = TlsConnector::new(&config, "cache").unwrap();
    let err = refused(&connector, &redis, "localhost").await;
    assert_eq!(err.failure(), Some(TlsFailure::ProtocolVersion), "{err}");
    assert!(err.to_string().contains("tls.min_version"), "{err}");
}

#[tokio::test]
async fn a_replaced_ca_file_is_used_without_restart() {
    let pki = TestPki::generate();
    let redis = TlsRedis::start(&pki, &[]);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, pki.read("other-ca.pem")).unwrap();
    let connector = TlsConnector::new(&trusting(ca_file.clone()), "cache").unwrap();
    let err = refused(&connector, &redis, "localhost").await;
    assert_eq!(err.failure(), Some(TlsFailure::UntrustedCertificate));

    replace(&ca_file, &pki.read("ca.pem"));
    after_reload_check().await;
    talk(&connector, &redis, "localhost").await.unwrap();
    assert_eq!(connector.reload_error(), None);

    // Half-written, then garbage: the last good CA stays in use.
    let good = pki.read("other-ca.pem");
    std::fs::write(&ca_file, &good[..good.len() / 2]).unwrap();
    after_reload_check().await;
    talk(&connector, &redis, "localhost").await.unwrap();
    let why = connector.reload_error().expect("the bad file is reported");
    assert!(
        why.contains("ca_file") && why.contains("no END line"),
        "{why}"
    );

    replace(&ca_file, "garbage\n");
    after_reload_check().await;
    talk(&connector, &redis, "localhost").await.unwrap();
    let why = connector.reload_error().expect("the bad file is reported");
    assert!(why.contains("no certificates found"), "{why}");
}

/// A Kubernetes Secret volume: `name -> ..data/name`, `..data -> ..v1`;
/// an update writes `..v2` and renames a new `..data` link over the old.
struct SecretVolume {
    dir: tempfile::TempDir,
    version: u32,
}

impl SecretVolume {
    fn new(files: &[(&str, String)]) -> Self {
        let mut volume = Self {
            dir: tempfile::tempdir().unwrap(),
            version: 0,
        };
        volume.update(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), volume.path(name)).unwrap();
        }
        volume
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn update(&mut self, files: &[(&str, String)]) {
        self.version += 1;
        let version = format!("..v{}", self.version);
        std::fs::create_dir(self.path(&version)).unwrap();
        for (name, contents) in files {
            std::fs::write(self.path(&version).join(name), contents).unwrap();
        }
        std::os::unix::fs::symlink(&version, self.path("..data_tmp")).unwrap();
        std::fs::rename(self.path("..data_tmp"), self.path("..data")).unwrap();
    }
}

#[tokio::test]
async fn a_swapped_secret_volume_is_used_without_restart() {
    let pki = TestPki::generate();
    let redis = TlsRedis::start(&pki, &["--tls-auth-clients", "yes"]);
    let files = |cert: &str, key: &str| {
        [
            ("ca.crt", pki.read("ca.pem")),
            ("tls.crt", pki.read(cert)),
            ("tls.key", pki.read(key)),
        ]
    };
    let mut volume = SecretVolume::new(&files("other-client.crt", "other-client.key"));
    let config = TlsConfig {
        cert_file: Some(volume.path("tls.crt")),
        key_file: Some(volume.path("tls.key")),
        ..trusting(volume.path("ca.crt"))
    };
    let connector = TlsConnector::new(&config, "cache").unwrap();
    let err = refused(&connector, &redis, "localhost").await;
    assert_eq!(
        err.failure(),
        Some(TlsFailure::ClientCertificateRejected),
        "{err}"
    );

    volume.update(&files("client.crt", "client.key"));
    after_reload_check().await;
    talk(&connector, &redis, "localhost").await.unwrap();
    assert_eq!(connector.reload_error(), None);

    // A new certificate without its key: a mismatch, so the last good pair
    // stays in use until the key arrives.
    volume.update(&files("other-client.crt", "client.key"));
    after_reload_check().await;
    talk(&connector, &redis, "localhost").await.unwrap();
    let why = connector.reload_error().expect("the mismatch is reported");
    assert!(why.contains("does not belong"), "{why}");
}
