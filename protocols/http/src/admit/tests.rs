use http::{Request, StatusCode};

use super::*;
use crate::upstream::Upstream;

fn up(text: &str) -> Upstream {
    text.parse().unwrap()
}

fn gate(fallback: Option<&str>) -> Gate {
    let routes = RouteTable::new(
        vec![
            Route::new("/v1/", None, up("https://api.example.com/base"), true).unwrap(),
            Route::new(
                "/",
                Some("Admin.Local"),
                up("https://admin.example.com"),
                false,
            )
            .unwrap(),
        ],
        fallback.map(up),
    )
    .unwrap();
    Gate::new(routes, "127.0.0.1:8080".parse().unwrap(), ["app.internal"]).unwrap()
}

fn req(method: Method, uri: &str, version: Version, host: Option<&str>) -> Parts {
    let mut b = Request::builder().method(method).uri(uri).version(version);
    if let Some(host) = host {
        b = b.header(HOST, host);
    }
    b.body(()).unwrap().into_parts().0
}

fn get(uri: &str, host: &str) -> Parts {
    req(Method::GET, uri, Version::HTTP_11, Some(host))
}

/// The forwarded URI, or the refusal's status and kind.
fn verdict(g: &Gate, r: &Parts) -> Result<String, (StatusCode, &'static str)> {
    match g.admit(r) {
        Admission::Forward(f) => Ok(f.uri.to_string()),
        Admission::Refuse(e) => Err((e.status(), e.kind())),
    }
}

#[test]
fn forwards_local_requests_to_their_route() {
    let g = gate(None);
    assert_eq!(
        verdict(&g, &get("/v1/users?id=7", "localhost:8080")),
        Ok("https://api.example.com/base/users?id=7".into())
    );
    for host in [
        "127.0.0.1",
        "127.0.0.1:8080",
        "LOCALHOST",
        "[::1]:8080",
        "app.internal",
    ] {
        assert!(verdict(&g, &get("/v1/x", host)).is_ok(), "{host}");
    }
    assert_eq!(
        verdict(&g, &get("/anything", "admin.local:8080")),
        Ok("https://admin.example.com/anything".into())
    );
    match g.admit(&get("/v1/x", "localhost")) {
        Admission::Forward(f) => {
            assert_eq!(f.route.index(), Some(0));
            assert!(!f.upgrade);
        }
        Admission::Refuse(e) => panic!("{e}"),
    }
}

#[test]
fn never_an_open_proxy() {
    let g = gate(Some("https://default.example.com"));
    let refused = Err((StatusCode::FORBIDDEN, "proxy-refused"));
    assert_eq!(
        verdict(
            &g,
            &req(
                Method::CONNECT,
                "evil.example:443",
                Version::HTTP_11,
                Some("evil.example:443")
            )
        ),
        refused
    );
    assert_eq!(
        verdict(
            &g,
            &req(
                Method::CONNECT,
                "localhost:8080",
                Version::HTTP_11,
                Some("localhost")
            )
        ),
        refused
    );
    assert_eq!(
        verdict(&g, &get("http://evil.example/", "evil.example")),
        refused
    );
    // Even when the absolute URI and Host name the listener itself.
    assert_eq!(
        verdict(&g, &get("http://localhost:8080/v1/x", "localhost:8080")),
        refused
    );
    assert_eq!(
        verdict(&g, &get("https://127.0.0.1/v1/x", "127.0.0.1")),
        refused
    );
    // Authority form outside CONNECT.
    assert_eq!(verdict(&g, &get("evil.example:80", "localhost")), refused);
    // HTTP/1.0 too.
    assert_eq!(
        verdict(
            &g,
            &req(Method::GET, "http://evil.example/", Version::HTTP_10, None)
        ),
        refused
    );
}

#[test]
fn foreign_hosts_are_refused() {
    let g = gate(Some("https://default.example.com"));
    let refused = Err((StatusCode::FORBIDDEN, "host-refused"));
    for host in [
        "evil.example",
        "localhost.evil.example",
        "10.0.0.7",
        "[::2]",
        "api.example.com",
    ] {
        assert_eq!(verdict(&g, &get("/v1/x", host)), refused, "{host}");
    }
    match g.admit(&get("/v1/x", "evil.example:8080")) {
        Admission::Refuse(e) => assert!(e.to_string().contains("evil.example:8080")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn host_header_problems_are_bad_requests() {
    let g = gate(None);
    let bad = Err((StatusCode::BAD_REQUEST, "bad-request"));
    assert_eq!(
        verdict(&g, &req(Method::GET, "/v1/x", Version::HTTP_11, None)),
        bad
    );
    let two = Request::get("/v1/x")
        .header(HOST, "localhost")
        .header(HOST, "localhost")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    assert_eq!(verdict(&g, &two), bad);
    for host in ["", "user@localhost", "local host", "localhost:port"] {
        assert_eq!(verdict(&g, &get("/v1/x", host)), bad, "{host:?}");
    }
    // HTTP/1.0 may omit Host; only host-less routes can match then.
    assert!(verdict(&g, &req(Method::GET, "/v1/x", Version::HTTP_10, None)).is_ok());
    assert_eq!(
        verdict(&g, &req(Method::GET, "/other", Version::HTTP_10, None)),
        Err((StatusCode::NOT_FOUND, "no-route"))
    );
}

#[test]
fn asterisk_form_is_not_forwarded() {
    let g = gate(Some("https://default.example.com"));
    let r = req(Method::OPTIONS, "*", Version::HTTP_11, Some("localhost"));
    assert_eq!(
        verdict(&g, &r),
        Err((StatusCode::BAD_REQUEST, "bad-request"))
    );
}

#[test]
fn unmatched_requests_get_a_404_naming_them() {
    let g = gate(None);
    match g.admit(&get("/x?api_key=s3cr3t", "LocalHost:8080")) {
        Admission::Refuse(e) => {
            assert_eq!(e.status(), StatusCode::NOT_FOUND);
            assert_eq!(e.to_string(), "no route matches GET /x (host localhost)");
        }
        other => panic!("{other:?}"),
    }
    // With a catch-all the same request is forwarded.
    assert_eq!(
        verdict(
            &gate(Some("https://default.example.com")),
            &get("/x?a=1", "localhost")
        ),
        Ok("https://default.example.com/x?a=1".into())
    );
}

#[test]
fn http2_authority_stands_for_host() {
    let g = gate(None);
    let h2 = |uri: &str, host: Option<&str>| req(Method::GET, uri, Version::HTTP_2, host);
    assert_eq!(
        verdict(&g, &h2("http://localhost:8080/v1/x", None)),
        Ok("https://api.example.com/base/x".into())
    );
    assert_eq!(
        verdict(&g, &h2("http://evil.example/v1/x", None)),
        Err((StatusCode::FORBIDDEN, "host-refused"))
    );
    assert_eq!(
        verdict(&g, &h2("http://localhost/v1/x", Some("admin.local"))),
        Err((StatusCode::BAD_REQUEST, "bad-request"))
    );
    assert!(verdict(&g, &h2("http://localhost/v1/x", Some("LOCALHOST:1"))).is_ok());
    assert!(verdict(&g, &h2("/v1/x", Some("localhost"))).is_ok());
    assert_eq!(
        verdict(&g, &h2("/v1/x", None)),
        Err((StatusCode::BAD_REQUEST, "bad-request"))
    );
    assert_eq!(
        verdict(
            &g,
            &req(Method::CONNECT, "localhost:443", Version::HTTP_2, None)
        ),
        Err((StatusCode::FORBIDDEN, "proxy-refused"))
    );
}

#[test]
fn upgrades_are_flagged() {
    let g = gate(None);
    let r = Request::get("/v1/socket")
        .header(HOST, "localhost")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    match g.admit(&r) {
        Admission::Forward(f) => assert!(f.upgrade),
        Admission::Refuse(e) => panic!("{e}"),
    }
}

#[test]
fn accepted_names_include_listen_routes_and_extras() {
    let routes = RouteTable::new(
        vec![Route::new("/", Some("api.local"), up("https://a"), false).unwrap()],
        None,
    )
    .unwrap();
    let g = Gate::new(
        routes.clone(),
        "[::1]:8080".parse().unwrap(),
        ["Extra.Name."],
    )
    .unwrap();
    assert_eq!(
        g.accepted_hosts(),
        ["127.0.0.1", "[::1]", "api.local", "extra.name", "localhost"]
    );
    let g = Gate::new(routes.clone(), "127.0.0.2:8080".parse().unwrap(), [""; 0]).unwrap();
    assert!(g.accepted_hosts().contains(&"127.0.0.2".to_owned()));
    assert_eq!(
        Gate::new(routes, "127.0.0.1:1".parse().unwrap(), ["x:80"]).unwrap_err(),
        HostNameError::HasPort
    );
}

#[test]
fn encoded_and_dot_paths_route_by_their_raw_text() {
    let g = gate(Some("https://default.example.com"));
    assert_eq!(
        verdict(&g, &get("/v1%2Fusers", "localhost")),
        Ok("https://default.example.com/v1%2Fusers".into())
    );
    assert_eq!(
        verdict(&g, &get("/v1/../admin", "localhost")),
        Ok("https://api.example.com/base/../admin".into())
    );
}

#[test]
fn hosts_in_capitals_are_accepted() {
    let long = format!("{}.example", "a".repeat(200));
    let routes = RouteTable::new(
        vec![Route::new(
            "/",
            Some("Admin.Local"),
            up("https://admin.example.com"),
            false,
        )
        .unwrap()],
        Some(up("https://default.example.com")),
    )
    .unwrap();
    let g = Gate::new(routes, "127.0.0.1:8080".parse().unwrap(), [long.as_str()]).unwrap();
    for (host, want) in [
        ("ADMIN.local:8080", "https://admin.example.com/x"),
        ("Admin.Local.", "https://admin.example.com/x"),
        ("LocalHost", "https://default.example.com/x"),
        ("[0:0::1]:8080", "https://default.example.com/x"),
        (long.as_str(), "https://default.example.com/x"),
        // Longer than the stack buffer, so lower-cased into a `String`.
        (
            long.to_ascii_uppercase().as_str(),
            "https://default.example.com/x",
        ),
    ] {
        assert_eq!(verdict(&g, &get("/x", host)), Ok(want.into()), "{host}");
    }
    assert_eq!(
        verdict(&g, &get("/x", "ADMIN.LOCAL.EVIL")),
        Err((StatusCode::FORBIDDEN, "host-refused"))
    );
}

/// Every string of up to `len` characters from `alphabet`.
fn strings(alphabet: &[char], len: usize) -> Vec<String> {
    let mut all = vec![String::new()];
    let mut last = all.clone();
    for _ in 0..len {
        last = last
            .iter()
            .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
            .collect();
        all.extend(last.iter().cloned());
    }
    all
}

#[test]
fn plain_hosts_are_authorities_with_that_host() {
    let alphabet = ['a', 'Z', '0', '.', '-', ':', '@', '[', ']', '%', '_', ' '];
    let mut plain = 0;
    for text in strings(&alphabet, 4) {
        let value = HeaderValue::from_str(&text).unwrap();
        let Some(got) = plain_host(&value) else {
            continue;
        };
        plain += 1;
        let authority = Authority::try_from(text.as_str()).unwrap();
        assert!(!authority.as_str().contains('@') && port_is_numeric(&authority));
        assert_eq!(got, authority.as_str());
        assert_eq!(RequestHost::Plain(got).host(), authority.host(), "{text:?}");
    }
    assert!(plain > 500, "{plain}");
}
