//! The connector without a server: file errors, secrets, reloads.

use std::path::{Path, PathBuf};

use super::*;

/// A self-signed certificate (usable as a CA root) and its key, as PEM.
fn self_signed(name: &str) -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    (certified.cert.pem(), certified.key_pair.serialize_pem())
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    // Write then rename, as a rotation would.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

fn with_ca(path: PathBuf) -> TlsConfig {
    TlsConfig {
        ca_file: Some(path),
        ..TlsConfig::default()
    }
}

/// Makes the next connect look at the files now.
fn check_now(connector: &TlsConnector) -> Arc<ClientConfig> {
    connector.inner.lock().next_check = Instant::now();
    connector.client_config()
}

#[test]
fn connectors_are_shareable() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<TlsConnector>();
}

#[test]
fn default_config_builds_with_bundled_roots() {
    let connector = TlsConnector::new(&TlsConfig::default(), "cache").unwrap();
    assert_eq!(connector.upstream(), "cache");
    assert!(connector.reload_error().is_none());
}

#[test]
fn a_missing_ca_file_is_named() {
    let err = TlsConnector::new(&with_ca("/nonexistent/ca.pem".into()), "cache").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("upstream cache: TLS ca_file /nonexistent/ca.pem: "),
        "{msg}"
    );
    assert!(msg.contains("No such file"), "{msg}");
}

#[test]
fn a_ca_file_without_certificates_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "ca.pem", "not a certificate\n");
    let err = TlsConnector::new(&with_ca(path.clone()), "cache").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "upstream cache: TLS ca_file {}: no certificates found (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            path.display()
        )
    );
}

#[test]
fn cert_without_key_names_the_key() {
    let config = TlsConfig {
        cert_file: Some("c.pem".into()),
        ..TlsConfig::default()
    };
    let msg = TlsConnector::new(&config, "cache").unwrap_err().to_string();
    assert!(msg.starts_with("upstream cache: TLS key_file: "), "{msg}");
}

#[test]
fn key_material_never_prints() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed("client");
    let (_, other_key) = self_signed("other");
    let cert_file = write(dir.path(), "tls.crt", &cert);
    let body = |pem: &str| pem.lines().nth(1).unwrap().to_owned();
    let truncated = &other_key[..other_key.len() / 2];
    let cases = [
        truncated.to_owned(),
        format!("-----BEGIN PRIVATE KEY-----{}\n", body(&key)),
        key.replace(&body(&key), &format!("{}!!", body(&key))),
        other_key.clone(),
    ];
    for contents in cases {
        let key_file = write(dir.path(), "tls.key", &contents);
        let config = TlsConfig {
            cert_file: Some(cert_file.clone()),
            key_file: Some(key_file),
            ..TlsConfig::default()
        };
        let msg = TlsConnector::new(&config, "cache").unwrap_err().to_string();
        assert!(msg.contains("TLS key_file"), "{msg}");
        for line in key
            .lines()
            .chain(other_key.lines())
            .filter(|l| !l.starts_with("-----"))
        {
            assert!(!msg.contains(line), "key material in {msg}");
        }
    }
    // A good pair loads; its Debug shows paths, never keys.
    let key_file = write(dir.path(), "tls.key", &key);
    let config = TlsConfig {
        cert_file: Some(cert_file),
        key_file: Some(key_file),
        ..TlsConfig::default()
    };
    let connector = TlsConnector::new(&config, "cache").unwrap();
    let debug = format!("{connector:?}");
    assert!(debug.contains("tls.key"), "{debug}");
    assert!(!debug.contains(&body(&key)), "{debug}");
}

#[test]
fn a_mismatched_key_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = self_signed("client");
    let (_, other_key) = self_signed("other");
    let config = TlsConfig {
        cert_file: Some(write(dir.path(), "tls.crt", &cert)),
        key_file: Some(write(dir.path(), "tls.key", &other_key)),
        ..TlsConfig::default()
    };
    let msg = TlsConnector::new(&config, "cache").unwrap_err().to_string();
    assert!(
        msg.contains("the private key does not belong to the certificate"),
        "{msg}"
    );
}

#[test]
fn changed_files_reload_and_bad_ones_keep_the_last_good() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "ca.pem", &self_signed("a").0);
    let connector = TlsConnector::new(&with_ca(path), "cache").unwrap();
    let first = connector.client_config();

    // Unchanged: the same config, without a rebuild.
    assert!(Arc::ptr_eq(&first, &check_now(&connector)));

    // Half-written: kept, and said why.
    let (next_ca, _) = self_signed("b");
    write(dir.path(), "ca.pem", &next_ca[..next_ca.len() / 2]);
    assert!(Arc::ptr_eq(&first, &check_now(&connector)));
    let why = connector.reload_error().expect("a reload error");
    assert!(
        why.contains("ca_file") && why.contains("no END line"),
        "{why}"
    );

    // Gone for a moment: still kept.
    std::fs::remove_file(dir.path().join("ca.pem")).unwrap();
    assert!(Arc::ptr_eq(&first, &check_now(&connector)));
    assert!(connector.reload_error().unwrap().contains("No such file"));

    // Complete: used, and the error clears.
    write(dir.path(), "ca.pem", &next_ca);
    let second = check_now(&connector);
    assert!(!Arc::ptr_eq(&first, &second));
    assert!(connector.reload_error().is_none());

    // Not looked at again before the interval.
    write(dir.path(), "ca.pem", "garbage");
    assert!(Arc::ptr_eq(&second, &connector.client_config()));
    assert!(connector.reload_error().is_none());
}

#[test]
fn alpn_connectors_offer_their_protocols_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "ca.pem", &self_signed("a").0);
    let plain = TlsConnector::new(&with_ca(path), "api").unwrap();
    let http = plain.with_alpn(vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    assert!(plain.client_config().alpn_protocols.is_empty());
    assert_eq!(
        http.client_config().alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    write(dir.path(), "ca.pem", &self_signed("b").0);
    let reloaded = check_now(&http);
    assert_eq!(reloaded.alpn_protocols.len(), 2);
    assert!(format!("{http:?}").contains("http/1.1"));
}

#[tokio::test]
async fn a_server_that_does_not_speak_tls_is_named_so() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // What a plain Redis answers, eventually, to a ClientHello.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let _ = socket.read(&mut [0; 1024]).await;
        let _ = socket.write_all(b"-ERR unknown command\r\n").await;
    });
    let connector = TlsConnector::new(&TlsConfig::default(), "cache").unwrap();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let err = connector.connect("localhost", stream).await.unwrap_err();
    assert_eq!(err.failure(), Some(TlsFailure::NotTls), "{err}");
    assert!(
        err.to_string()
            .starts_with("upstream cache (localhost): TLS handshake failed: "),
        "{err}"
    );
}

#[tokio::test]
async fn a_host_that_is_no_server_name_is_named() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let connector = TlsConnector::new(&TlsConfig::default(), "cache").unwrap();
    let err = connector.connect("not a host", stream).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "upstream cache (not a host): \"not a host\" is not a valid TLS server name; set tls.server_name"
    );
}

#[test]
fn system_roots_load_or_say_why() {
    let config = TlsConfig {
        roots: RootStore::System,
        ..TlsConfig::default()
    };
    // Containers may have no OS store at all; then the error says so.
    if let Err(err) = TlsConnector::new(&config, "cache") {
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "upstream cache: TLS roots: no usable certificates in the system store"
            ),
            "{msg}"
        );
    }
}
