//! The credential refresh engine against an in-process token endpoint
//! (`token_endpoint`): tokens that live 2–3 s, refreshed ahead of expiry,
//! kept through outages while valid, and never handed out once expired.
//! Real time, with generous deadlines and no exact timing: the schedule's
//! numbers are tested on paused time in `src/credentials`.

mod token_endpoint;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use attache::credentials::{TokenConfig, TokenRegistry, TokenSource};
use token_endpoint::{Mode, TokenEndpoint, OID};
use tokio::time::Instant;

const READY: Duration = Duration::from_secs(15);

fn start(toml: &str) -> TokenRegistry {
    let configs: BTreeMap<String, TokenConfig> = toml::from_str(toml).unwrap();
    TokenRegistry::start(&configs, &tokio::runtime::Handle::current()).unwrap()
}

fn write(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.display().to_string()
}

/// Polls `check` every 50 ms until it returns `Some`, for up to `deadline`.
async fn eventually<T, F: Future<Output = Option<T>>>(
    deadline: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < until, "not within {deadline:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `[tokens.payments]` against `endpoint`, client secret in a file.
fn oauth2_config(endpoint: &TokenEndpoint, secret_file: &str, fetch_timeout: &str) -> String {
    format!(
        r#"[payments]
provider = "oauth2_client_credentials"
token_url = "{}"
client_id = "attache-app"
client_secret_file = "{secret_file}"
scopes = ["redis.read", "redis.write"]
audience = "https://cache.example"
username = "svc"
fetch_timeout = "{fetch_timeout}"
[payments.extra_params]
resource = "cache-1"
"#,
        endpoint.url("/token")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_tokens_refresh_ahead_of_expiry() {
    let endpoint = TokenEndpoint::start(3).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = write(dir.path(), "secret", "client s3cr3t\n");
    // The engine runs on a runtime of its own; this test reads from another.
    let engine = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let configs: BTreeMap<String, TokenConfig> =
        toml::from_str(&oauth2_config(&endpoint, &secret, "5s")).unwrap();
    let registry = TokenRegistry::start(&configs, engine.handle()).unwrap();
    let source = registry.get("payments").unwrap();
    assert_eq!(source.name(), "payments");
    let mut previous = source.wait_ready(READY).await.unwrap();
    assert!(registry.is_ready());
    assert_eq!(previous.username.as_deref(), Some("svc"));
    let mut generations = source.subscribe();
    while source.generation() < 4 {
        tokio::time::timeout(READY, generations.changed())
            .await
            .expect("a refresh")
            .unwrap();
        let token = source.current().unwrap();
        assert!(
            Instant::now() < previous.expires_at.unwrap(),
            "the new token came after the old one expired"
        );
        assert_ne!(token.secret, previous.secret);
        previous = token;
    }
    let stats = source.stats();
    assert!(
        stats.refreshes >= 4 && stats.refresh_failures == 0,
        "{stats:?}"
    );

    let seen = endpoint.seen();
    let request = &seen[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/token")
    );
    assert_eq!(
        request.basic,
        Some(("attache-app".into(), "client s3cr3t".into()))
    );
    let form = &request.form;
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["scope"], "redis.read redis.write");
    assert_eq!(form["audience"], "https://cache.example");
    assert_eq!(form["resource"], "cache-1");
    drop((registry, source));
    engine.shutdown_background();
}

/// The endpoint fails in `mode`: the valid token is still handed out, then
/// an error naming the credential and the failure; then it recovers.
async fn outage(mode: Mode, fetch_timeout: &str, expected: &str) {
    let endpoint = TokenEndpoint::start(3).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = write(dir.path(), "secret", "client-s3cr3t");
    let registry = start(&oauth2_config(&endpoint, &secret, fetch_timeout));
    let source = registry.get("payments").unwrap();
    source.wait_ready(READY).await.unwrap();
    endpoint.set_mode(mode).await;
    let last = source.current().unwrap();

    let error = eventually(Duration::from_secs(30), "the token expires", || async {
        match source.current() {
            Ok(token) => {
                // Only ever the last good token (or one that raced the
                // switch), and only while it is valid.
                assert!(Instant::now() < token.expires_at.unwrap());
                assert!(token.secret == last.secret || source.generation() > 1);
                None
            }
            Err(error) => Some(error.to_string()),
        }
    })
    .await;
    assert!(
        error.starts_with("credential \"payments\": token expired ")
            && error.contains("; last refresh error: token endpoint http://127.0.0.1:")
            && error.to_lowercase().contains(expected),
        "{error}"
    );
    assert!(
        !error.contains("s3cr3t") && !error.contains("token-"),
        "{error}"
    );
    let stats = source.stats();
    assert!(stats.refresh_failures >= 1 && stats.seconds_to_expiry.unwrap() < 0.0);

    endpoint.set_mode(Mode::Ok).await;
    let recovered = source.wait_ready(Duration::from_secs(60)).await.unwrap();
    assert_ne!(recovered.secret, last.secret);
    assert_eq!(source.stats().last_error, None);
}

#[tokio::test]
async fn endpoint_down_then_back() {
    outage(Mode::Down, "5s", "connection refused").await;
}

#[tokio::test]
async fn endpoint_slower_than_the_fetch_timeout() {
    outage(
        Mode::Slow(Duration::from_secs(5)),
        "1s",
        "timed out after 1s",
    )
    .await;
}

#[tokio::test]
async fn endpoint_answers_500() {
    outage(Mode::Error500, "5s", "http 500: server_error").await;
}

#[tokio::test]
async fn endpoint_answers_garbage() {
    outage(Mode::Garbage, "5s", "malformed response: not a json object").await;
}

#[tokio::test]
async fn endpoint_answers_an_empty_token() {
    outage(
        Mode::EmptyToken,
        "5s",
        "malformed response: empty access_token",
    )
    .await;
}

#[tokio::test]
async fn force_refresh_fetches_now_and_callers_share_it() {
    let endpoint = TokenEndpoint::start(60).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = write(dir.path(), "secret", "client-s3cr3t");
    let registry = start(&oauth2_config(&endpoint, &secret, "5s"));
    let source = registry.get("payments").unwrap();
    let first = source.wait_ready(READY).await.unwrap();
    // Past the 1 s within which a forced refresh reuses the last fetch.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    endpoint.set_latency(Duration::from_millis(300));
    let before = endpoint.seen().len();
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let source = source.clone();
            tokio::spawn(async move { source.force_refresh().await })
        })
        .collect();
    let mut tokens = Vec::new();
    for caller in callers {
        tokens.push(caller.await.unwrap().unwrap());
    }
    assert_eq!(
        endpoint.seen().len(),
        before + 1,
        "one fetch for eight callers"
    );
    assert_ne!(tokens[0].secret, first.secret);
    assert!(tokens.iter().all(|t| t == &tokens[0]));
    assert_eq!(source.current().unwrap(), tokens[0]);
    assert_eq!(source.generation(), 2);
}

/// An upstream that refuses the token while the endpoint fails cannot
/// drive the endpoint faster than once a second through forced refreshes.
#[tokio::test]
async fn forced_refreshes_against_a_failing_endpoint_are_coalesced() {
    let endpoint = TokenEndpoint::start(60).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = write(dir.path(), "secret", "client-s3cr3t");
    let registry = start(&oauth2_config(&endpoint, &secret, "5s"));
    let source = registry.get("payments").unwrap();
    source.wait_ready(READY).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    endpoint.set_mode(Mode::Error500).await;
    let before = endpoint.seen().len();
    for _ in 0..20 {
        let error = source.force_refresh().await.unwrap_err().to_string();
        assert!(error.contains("HTTP 500"), "{error}");
    }
    let fetches = endpoint.seen().len() - before;
    assert!(fetches <= 2, "{fetches} fetches for 20 forced refreshes");
}

fn azure_config(endpoint: &TokenEndpoint, credential: &str) -> String {
    format!(
        "[entra]\nprovider = \"azure_entra\"\ntenant_id = \"tenant-1\"\n\
         client_id = \"client-1\"\nauthority_host = \"{}\"\n{credential}\n",
        endpoint.url("")
    )
}

#[tokio::test]
async fn azure_entra_with_a_client_secret() {
    let endpoint = TokenEndpoint::start(3).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = write(dir.path(), "secret", "entra-s3cr3t\n");
    let registry = start(&azure_config(
        &endpoint,
        &format!("client_secret_file = \"{secret}\""),
    ));
    let token = registry
        .get("entra")
        .unwrap()
        .wait_ready(READY)
        .await
        .unwrap();
    assert_eq!(
        token.username.as_deref(),
        Some(OID),
        "username from the oid claim"
    );
    let seen = &endpoint.seen()[0];
    assert_eq!(seen.path, "/tenant-1/oauth2/v2.0/token");
    assert_eq!(seen.form["client_id"], "client-1");
    assert_eq!(seen.form["client_secret"], "entra-s3cr3t");
    assert_eq!(seen.form["grant_type"], "client_credentials");
    assert_eq!(seen.form["scope"], "https://redis.azure.com/.default");
    assert!(!seen.form.contains_key("client_assertion"));
}

#[tokio::test]
async fn azure_entra_with_workload_identity() {
    let endpoint = TokenEndpoint::start(3).await;
    let dir = tempfile::tempdir().unwrap();
    let assertion = write(
        dir.path(),
        "azure-identity-token",
        "eyJhbGciOi.kubelet.jwt\n",
    );
    let registry = start(&azure_config(
        &endpoint,
        &format!("federated_token_file = \"{assertion}\"\nobject_id = \"configured-oid\""),
    ));
    let token = registry
        .get("entra")
        .unwrap()
        .wait_ready(READY)
        .await
        .unwrap();
    assert_eq!(token.username.as_deref(), Some("configured-oid"));
    let seen = &endpoint.seen()[0];
    assert_eq!(
        seen.form["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert_eq!(seen.form["client_assertion"], "eyJhbGciOi.kubelet.jwt");
    assert_eq!(seen.form["client_id"], "client-1");
    assert!(!seen.form.contains_key("client_secret"));
}

#[tokio::test]
async fn gcp_metadata_server() {
    let endpoint = TokenEndpoint::start(3).await;
    let registry = start(&format!(
        "[memorystore]\nprovider = \"gcp\"\ntoken_url = \"{}\"\nusername = \"default\"\n",
        endpoint.url("/computeMetadata/v1/instance/service-accounts/default/token")
    ));
    let token = registry
        .get("memorystore")
        .unwrap()
        .wait_ready(READY)
        .await
        .unwrap();
    assert_eq!(token.secret.expose(), "token-1");
    assert_eq!(token.username.as_deref(), Some("default"));
    let seen = &endpoint.seen()[0];
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.headers["metadata-flavor"], "Google");
}

#[tokio::test]
async fn aws_elasticache_with_web_identity() {
    let endpoint = TokenEndpoint::start(3).await;
    let dir = tempfile::tempdir().unwrap();
    let identity = write(dir.path(), "eks-token", "eks.oidc.jwt\n");
    let registry = start(&format!(
        "[elasticache]\nprovider = \"aws_elasticache_iam\"\ncache_name = \"My-Cache\"\n\
         user_id = \"app-user\"\nregion = \"us-east-1\"\nserverless = true\n\
         role_arn = \"arn:aws:iam::123456789012:role/attache\"\n\
         web_identity_token_file = \"{identity}\"\nsts_endpoint = \"{}\"\n",
        endpoint.url("/sts")
    ));
    let source = registry.get("elasticache").unwrap();
    let token = source.wait_ready(READY).await.unwrap();
    assert_eq!(token.username.as_deref(), Some("app-user"));
    let left = token.expires_at.unwrap() - Instant::now();
    assert!(left <= Duration::from_secs(900) && left > Duration::from_secs(800));

    let text = token.secret.expose();
    let rest = text
        .strip_prefix(
            "my-cache/?Action=connect&ResourceType=ServerlessCache&User=app-user\
             &X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIATEST1%2F",
        )
        .unwrap_or_else(|| panic!("{text}"));
    assert!(rest.contains("%2Fus-east-1%2Felasticache%2Faws4_request&X-Amz-Date="));
    assert!(rest.contains(
        "&X-Amz-Expires=900&X-Amz-Security-Token=session%2Ftoken%2B1%3D\
         &X-Amz-SignedHeaders=host&X-Amz-Signature="
    ));
    let signature = rest.rsplit("&X-Amz-Signature=").next().unwrap();
    assert!(signature.len() == 64 && signature.bytes().all(|b| b.is_ascii_hexdigit()));

    let sts = &endpoint.seen()[0];
    assert_eq!((sts.method.as_str(), sts.path.as_str()), ("POST", "/sts"));
    assert_eq!(sts.form["Action"], "AssumeRoleWithWebIdentity");
    assert_eq!(
        sts.form["RoleArn"],
        "arn:aws:iam::123456789012:role/attache"
    );
    assert_eq!(sts.form["WebIdentityToken"], "eks.oidc.jwt");
    assert_eq!(sts.form["Version"], "2011-06-15");

    // A new token is signed locally: STS credentials are reused.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = source.force_refresh().await.unwrap();
    assert!(again.secret.expose().contains("ASIATEST1%2F"));
    assert_eq!(endpoint.seen().len(), 1);
}

#[tokio::test]
async fn a_static_token_file_is_reread_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "token", "static-s3cr3t-1\n");
    let registry = start(&format!(
        "[static]\nprovider = \"static\"\ntoken_file = \"{file}\"\nusername = \"app\"\n"
    ));
    let source = registry.get("static").unwrap();
    let token = source.wait_ready(READY).await.unwrap();
    assert_eq!(token.secret.expose(), "static-s3cr3t-1");
    assert_eq!(token.expires_at, None);
    let generation = source.generation();
    std::fs::write(&file, "static-s3cr3t-2\n").unwrap();
    let mut generations = source.subscribe();
    tokio::time::timeout(READY, generations.changed())
        .await
        .expect("the change is noticed")
        .unwrap();
    assert_eq!(source.generation(), generation + 1);
    assert_eq!(source.current().unwrap().secret.expose(), "static-s3cr3t-2");
}

#[tokio::test]
async fn secrets_never_print() {
    let endpoint = TokenEndpoint::start(2).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = write(dir.path(), "secret", "client-s3cr3t");
    let registry = start(&oauth2_config(&endpoint, &secret, "5s"));
    let source = registry.get("payments").unwrap();
    let token = source.wait_ready(READY).await.unwrap();
    endpoint.set_mode(Mode::Error500).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let forced = source.force_refresh().await.unwrap_err();
    let expired = eventually(Duration::from_secs(30), "expiry", || async {
        source.current().err()
    })
    .await;
    let shown = format!(
        "{token:?} {} {:?} {source:?} {registry:?} {:?} {forced} {forced:?} {expired} {expired:?}",
        token.secret,
        token.secret,
        source.stats(),
    );
    assert!(shown.contains("HTTP 500"), "{shown}");
    for secret in ["client-s3cr3t", "token-1", "token-2"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

#[tokio::test]
async fn config_errors_name_the_key() {
    let configs: BTreeMap<String, TokenConfig> = toml::from_str(
        "[bad]\nprovider = \"gcp\"\ntoken_url = \"metadata.google.internal/token\"\n",
    )
    .unwrap();
    let error = TokenRegistry::start(&configs, &tokio::runtime::Handle::current()).unwrap_err();
    assert!(
        error.to_string().starts_with("tokens.bad.token_url: "),
        "{error}"
    );
}

#[test]
fn sources_are_shared_across_runtimes() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<TokenSource>();
    shareable::<TokenRegistry>();
}

/// HTTPS works with attache's own rustls provider (none is installed for
/// the process): the handshake runs and certificate verification rejects a
/// self-signed endpoint, as it must.
#[tokio::test]
async fn https_endpoints_are_verified() {
    use std::sync::Arc;

    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = acceptor.accept(stream).await;
        }
    });
    let registry = start(&format!(
        "[gcp]\nprovider = \"gcp\"\ntoken_url = \"https://{addr}/token\"\n"
    ));
    let source = registry.get("gcp").unwrap();
    let error = eventually(READY, "a failed handshake", || async {
        source.stats().last_error
    })
    .await;
    assert!(
        error.starts_with(&format!("token endpoint https://{addr}/token: "))
            && error.contains("certificate"),
        "{error}"
    );
    server.abort();
}
