use std::collections::BTreeMap;

use http::header::AUTHORIZATION;
use http::request::Parts;
use http::{HeaderMap, Request};

use super::*;
use crate::admit::Admission;
use crate::headers::RequestContext;

type Config = HttpListenerConfig;

/// `[http.NAME]` sections, as the runtime's config would hold them.
fn parse(toml_text: &str) -> BTreeMap<String, Config> {
    #[derive(Deserialize)]
    struct File {
        http: BTreeMap<String, Config>,
    }
    toml::from_str::<File>(toml_text).unwrap().http
}

fn one(toml_text: &str) -> Config {
    parse(toml_text).remove("t").unwrap()
}

fn error_of(toml_text: &str) -> String {
    one(toml_text).validate("t").unwrap_err().to_string()
}

fn no_reads(_: HeaderValueSource<'_>) -> Result<String, String> {
    panic!("nothing to read")
}

fn get(path: &str) -> Parts {
    Request::get(path)
        .header("host", "localhost")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

#[test]
fn the_design_example_parses_with_defaults() {
    let all = parse(
        r#"
        [http.payments]                    # a local HTTP listener named "payments"
        listen = "127.0.0.1:8080"
        upstream = "https://api.payments.example.com"
        # token = "payments"
        "#,
    );
    let c = all["payments"].clone().validate("payments").unwrap();
    assert_eq!(c.token_header, "authorization");
    assert_eq!(c.token_scheme, "Bearer");
    assert_eq!(c.timeout, Duration::from_secs(30));
    assert_eq!(c.connect_timeout, Duration::from_secs(2));
    assert_eq!(c.idle_timeout, Duration::from_secs(90));
    assert_eq!(c.max_idle_per_host, 32);
    assert_eq!(c.retries, 2);
    assert_eq!(c.retry_budget_percent, 20);
    assert!(!c.allow_remote && !c.forwarded_headers);
    assert!(c.routes.is_empty() && c.headers.is_empty() && c.accept_hosts.is_empty());
    assert_eq!(c.tls, None);

    let p = c.policy("payments", no_reads).unwrap();
    assert!(!p.retry.refresh_on_unauthorized);
    assert_eq!(p.retry.max_retries, 2);
    match p.gate.admit(&get("/charges?limit=1")) {
        Admission::Forward(f) => {
            assert_eq!(f.uri, "https://api.payments.example.com/charges?limit=1")
        }
        Admission::Refuse(e) => panic!("{e}"),
    }
}

#[test]
fn a_full_listener() {
    let c = one(r#"
        [http.t]
        listen = "127.0.0.1:8080"
        upstream = "https://default.example.com/"
        token = "payments"
        token_header = "X-Api-Key"
        token_scheme = ""
        forwarded_headers = true
        timeout = "5s"
        connect_timeout = "250ms"
        idle_timeout = "1m"
        max_idle_per_host = 4
        retries = 3
        retry_budget_percent = 10
        accept_hosts = ["my-pod"]
        headers.x-tenant = { value = "acme" }
        headers.x-signature = { value_file = "/var/run/secrets/sig" }
        headers.x-region = { value_env = "REGION" }

        [[http.t.routes]]
        prefix = "/v1/"
        upstream = "https://api.payments.example.com/base"
        strip_prefix = true

        [[http.t.routes]]
        prefix = "/"
        host = "admin.local"
        upstream = "http://10.0.0.9:8081"
        "#);
    assert_eq!(c.timeout, Duration::from_secs(5));
    assert_eq!(c.connect_timeout, Duration::from_millis(250));
    assert_eq!(c.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.routes.len(), 2);
    assert!(c.routes[0].strip_prefix && c.routes[1].host.as_deref() == Some("admin.local"));

    let p = c
        .policy("t", |source| match source {
            HeaderValueSource::File(path) => {
                assert_eq!(path, Path::new("/var/run/secrets/sig"));
                Ok("s1g\n".to_owned())
            }
            HeaderValueSource::Env(var) => {
                assert_eq!(var, "REGION");
                Ok::<_, String>("eu-west-1".to_owned())
            }
        })
        .unwrap();
    assert!(p.retry.refresh_on_unauthorized);
    assert_eq!(p.retry.max_retries, 3);
    assert_eq!(p.retry_budget_percent, 10);
    assert!(p.headers.forwarded);
    assert!(p.gate.accepted_hosts().contains(&"my-pod".to_owned()));
    assert!(p.gate.accepted_hosts().contains(&"admin.local".to_owned()));
    let mut budget = p.retry_budget();
    assert!(budget.try_withdraw(std::time::Instant::now()));

    let Admission::Forward(f) = p.gate.admit(&get("/v1/charges")) else {
        panic!("not forwarded")
    };
    assert_eq!(f.uri, "https://api.payments.example.com/base/charges");
    let token = p.headers.credential.value("k3y").unwrap();
    let mut h = HeaderMap::new();
    h.insert(AUTHORIZATION, HeaderValue::from_static("app's own"));
    p.headers.request(
        &mut h,
        &RequestContext {
            upstream: f.route.upstream(),
            credential: Some(&token),
            client: None,
            upgrade: false,
        },
    );
    assert_eq!(h["x-api-key"], "k3y");
    assert_eq!(h[AUTHORIZATION], "app's own");
    assert_eq!(h["x-tenant"], "acme");
    assert_eq!(h["x-signature"], "s1g");
    assert_eq!(h["x-region"], "eu-west-1");
    assert_eq!(h["host"], "api.payments.example.com");
}

#[test]
fn routes_without_upstream_give_404s_elsewhere() {
    let c = one(r#"
        [http.t]
        listen = "127.0.0.1:8080"
        routes = [{ prefix = "/v1", upstream = "https://a.example.com" }]
        "#);
    let p = c.policy("t", no_reads).unwrap();
    assert!(p.gate.routes().fallback().is_none());
    match p.gate.admit(&get("/v2")) {
        Admission::Refuse(e) => assert_eq!(e.status(), http::StatusCode::NOT_FOUND),
        Admission::Forward(f) => panic!("{f:?}"),
    }
}

const HEAD: &str = "[http.t]\nlisten = \"127.0.0.1:8080\"\n";

#[test]
fn errors_name_the_key() {
    let cases = [
        ("", "http.t.upstream: set upstream, or add routes"),
        ("upstream = \"ftp://x\"", "http.t.upstream: scheme must be http or https"),
        (
            "upstream = \"https://u:p@x\"",
            "http.t.upstream: credentials in the URL are not allowed",
        ),
        (
            "routes = [{ prefix = \"/a\", upstream = \"https://a\" }, { prefix = \"/b\", upstream = \"a.example.com\" }]",
            "http.t.routes[1].upstream: scheme must be http or https",
        ),
        (
            "routes = [{ prefix = \"a\", upstream = \"https://a\" }]",
            "http.t.routes[0].prefix: must start with /",
        ),
        (
            "routes = [{ prefix = \"/\", host = \"a:1\", upstream = \"https://a\" }]",
            "http.t.routes[0].host: must not have a port",
        ),
        (
            "routes = [{ prefix = \"/a\", upstream = \"https://a\" }, { prefix = \"/a/\", upstream = \"https://b\" }]",
            "http.t.routes[1]: same host and prefix as routes[0]",
        ),
        ("upstream = \"https://a\"\ntoken = \"\"", "http.t.token: must name"),
        (
            "upstream = \"https://a\"\ntoken_header = \"bad header\"",
            "http.t.token_header: \"bad header\" is not a valid header name",
        ),
        (
            "upstream = \"https://a\"\ntoken_header = \"Connection\"",
            "http.t.token_header: connection is set by attache itself",
        ),
        (
            "upstream = \"https://a\"\ntoken_scheme = \"Bearer token\"",
            "http.t.token_scheme: must be one word",
        ),
        (
            "upstream = \"https://a\"\nheaders.host = { value = \"x\" }",
            "http.t.headers.host: host is set by attache itself",
        ),
        (
            "upstream = \"https://a\"\nheaders.x-a = { value = \"x\", value_env = \"X\" }",
            "http.t.headers.x-a: set only one of",
        ),
        (
            "upstream = \"https://a\"\nheaders.x-a = {}",
            "http.t.headers.x-a: set one of value",
        ),
        (
            "upstream = \"https://a\"\ntoken = \"p\"\nheaders.Authorization = { value_env = \"X\" }",
            "http.t.headers.Authorization: is token_header",
        ),
        ("upstream = \"https://a\"\ntimeout = \"0s\"", "http.t.timeout: must be greater than zero"),
        ("upstream = \"https://a\"\nidle_timeout = \"0s\"", "http.t.idle_timeout: must be greater"),
        ("upstream = \"https://a\"\nretries = 11", "http.t.retries: must be at most 10"),
        (
            "upstream = \"https://a\"\nretry_budget_percent = 101",
            "http.t.retry_budget_percent: must be between 0 and 100",
        ),
        (
            "upstream = \"https://a\"\naccept_hosts = [\"ok\", \"x:80\"]",
            "http.t.accept_hosts[1]: must not have a port",
        ),
    ];
    for (body, want) in cases {
        let got = error_of(&format!("{HEAD}{body}"));
        assert!(got.starts_with(want), "{body}\n got: {got}\nwant: {want}");
    }
}

#[test]
fn listen_must_be_loopback_unless_allowed() {
    let remote = "[http.t]\nlisten = \"0.0.0.0:8080\"\nupstream = \"https://a\"\n";
    assert!(error_of(remote).starts_with("http.t.listen: 0.0.0.0:8080 is not a loopback address"));
    one(&format!("{remote}allow_remote = true"))
        .validate("t")
        .unwrap();
    one("[http.t]\nlisten = \"[::1]:8080\"\nupstream = \"https://a\"")
        .validate("t")
        .unwrap();
}

#[test]
fn unknown_keys_are_errors() {
    for body in [
        "upstream = \"https://a\"\nupstreams = []",
        "routes = [{ prefix = \"/\", upstream = \"https://a\", strip = true }]",
        "upstream = \"https://a\"\nheaders.x = { value = \"v\", secret = true }",
    ] {
        let text = format!("{HEAD}{body}");
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct File {
            http: BTreeMap<String, Config>,
        }
        let err = toml::from_str::<File>(&text).unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{err}");
    }
}

#[test]
fn read_failures_and_bad_values_name_the_header_not_the_value() {
    let c = one(&format!(
        "{HEAD}upstream = \"https://a\"\nheaders.x-a = {{ value_file = \"/nope\" }}"
    ));
    let e = c
        .policy("t", |_| Err("cannot read /nope: not found"))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "http.t.headers.x-a: cannot read /nope: not found"
    );
    let e = c
        .policy("t", |_| Ok::<_, String>("s3cr3t\u{7}".into()))
        .unwrap_err();
    assert_eq!(e.key, "http.t.headers.x-a");
    assert!(!e.to_string().contains("s3cr3t"));
    let c = one(&format!(
        "{HEAD}upstream = \"https://a\"\nheaders.x-a = {{ value = \"bad\\nvalue\" }}"
    ));
    assert!(c
        .validate("t")
        .unwrap_err()
        .to_string()
        .starts_with("http.t.headers.x-a:"));
}

#[test]
fn inline_header_values_never_print() {
    let c = one(&format!(
        "{HEAD}upstream = \"https://a\"\nheaders.x-api-key = {{ value = \"s3cr3t\" }}\nheaders.x-b = {{ value_env = \"B\" }}"
    ));
    assert!(!format!("{c:?}").contains("s3cr3t"));
    let printed = toml::to_string(&c).unwrap();
    assert!(!printed.contains("s3cr3t"), "{printed}");
    assert!(printed.contains("<redacted>"));
    assert!(printed.contains("value_env = \"B\""));
    let p = c.policy("t", |_| Ok::<_, String>("b".into())).unwrap();
    assert!(!format!("{p:?}").contains("s3cr3t"));
}

#[test]
fn tls_is_the_runtimes_type() {
    let err = toml::from_str::<BTreeMap<String, BTreeMap<String, Config>>>(&format!(
        "{HEAD}upstream = \"https://a\"\ntls = {{ ca_file = \"/ca.pem\" }}"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("tls is read by the attache runtime"), "{err}");

    // What the runtime does: name its TLS config type.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Tls {
        ca_file: String,
    }
    #[derive(Deserialize)]
    struct File {
        http: BTreeMap<String, HttpListenerConfig<Tls>>,
    }
    let file: File = toml::from_str(&format!(
        "{HEAD}upstream = \"https://a\"\n[http.t.tls]\nca_file = \"/ca.pem\""
    ))
    .unwrap();
    let c = file.http["t"].clone().validate("t").unwrap();
    assert_eq!(c.tls.unwrap().ca_file, "/ca.pem");
}
