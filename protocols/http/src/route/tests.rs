use super::*;

fn up(text: &str) -> Upstream {
    text.parse().unwrap()
}

fn route(prefix: &str, host: Option<&str>, upstream: &str) -> Route {
    Route::new(prefix, host, up(upstream), false).unwrap()
}

fn table(routes: Vec<Route>, fallback: Option<&str>) -> RouteTable {
    RouteTable::new(routes, fallback.map(up)).unwrap()
}

/// Which upstream host a request lands on, or `-` for none.
fn lands(t: &RouteTable, host: Option<&str>, path: &str) -> String {
    t.find(host, path)
        .map_or("-".into(), |r| r.upstream().host().to_owned())
}

#[test]
fn prefixes_match_whole_segments() {
    let v1 = route("/v1", None, "https://a");
    let v1_slash = route("/v1/", None, "https://a");
    let root = route("/", None, "https://a");
    for (path, want) in [
        ("/v1", true),
        ("/v1/", true),
        ("/v1/x", true),
        ("/v1//x", true),
        ("/v10", false),
        ("/v1.0", false),
        ("/v1%2Fx", false),
        ("/V1", false),
        ("/", false),
        ("", false),
        ("/x/v1", false),
    ] {
        assert_eq!(v1.matches_path(path), want, "/v1 vs {path:?}");
        assert_eq!(v1_slash.matches_path(path), want, "/v1/ vs {path:?}");
        assert!(root.matches_path(path), "/ vs {path:?}");
    }
    assert_eq!(v1_slash.prefix(), "/v1");
    assert_eq!(root.prefix(), "");
}

#[test]
fn longest_prefix_wins_regardless_of_order() {
    let t = table(
        vec![
            route("/", None, "https://root"),
            route("/v1", None, "https://v1"),
            route("/v1/admin", None, "https://admin"),
        ],
        None,
    );
    assert_eq!(lands(&t, None, "/v1/admin/users"), "admin");
    assert_eq!(lands(&t, None, "/v1/administrator"), "v1");
    assert_eq!(lands(&t, None, "/v1"), "v1");
    assert_eq!(lands(&t, None, "/v2"), "root");
    // Config positions survive the sort.
    assert_eq!(t.find(None, "/v1/admin").unwrap().index(), Some(2));
}

#[test]
fn host_routes_come_first_then_any_host_then_fallback() {
    let t = table(
        vec![
            route("/v1", None, "https://v1"),
            route("/", Some("Admin.Local"), "https://admin"),
            route("/v2", Some("api.local"), "https://api-v2"),
        ],
        Some("https://default"),
    );
    // Host routes are virtual hosts: `/` on admin.local beats `/v1`.
    assert_eq!(lands(&t, Some("admin.local"), "/v1/x"), "admin");
    assert_eq!(lands(&t, Some("api.local"), "/v2/x"), "api-v2");
    // No host route matches the path: fall through to host-less routes.
    assert_eq!(lands(&t, Some("api.local"), "/v1/x"), "v1");
    // Other hosts never see host routes.
    assert_eq!(lands(&t, Some("localhost"), "/v2/x"), "default");
    assert_eq!(lands(&t, None, "/v2/x"), "default");
    let fallback = t.find(None, "/zzz").unwrap();
    assert_eq!(fallback.index(), None);
    assert_eq!(t.fallback(), Some(fallback));
}

#[test]
fn without_fallback_unmatched_is_none() {
    let t = table(vec![route("/v1", None, "https://v1")], None);
    assert!(t.find(Some("localhost"), "/v2").is_none());
    assert!(t.find(None, "/").is_none());
    // Empty routes and no upstream: nothing is ever forwarded.
    assert!(table(vec![], None).find(None, "/").is_none());
    // Empty routes and an upstream: everything goes there.
    assert_eq!(lands(&table(vec![], Some("https://d")), None, "/any"), "d");
}

#[test]
fn strip_prefix_and_join() {
    let strip = Route::new("/v1/", None, up("https://h/base/"), true).unwrap();
    let keep = Route::new("/v1/", None, up("https://h/base/"), false).unwrap();
    let root_strip = Route::new("/", None, up("https://h"), true).unwrap();
    for (r, path, query, want) in [
        (&strip, "/v1/x", Some("a=1"), "https://h/base/x?a=1"),
        (&strip, "/v1", None, "https://h/base/"),
        (&strip, "/v1", Some("q"), "https://h/base/?q"),
        (&strip, "/v1/", None, "https://h/base/"),
        (&strip, "/v1//x", None, "https://h/base//x"),
        (&strip, "/v1/a%2Fb", None, "https://h/base/a%2Fb"),
        (&strip, "/v1/../x", None, "https://h/base/../x"),
        (&keep, "/v1/x", None, "https://h/base/v1/x"),
        (&keep, "/v1", None, "https://h/base/v1"),
        (&root_strip, "/x", None, "https://h/x"),
        (&root_strip, "/", None, "https://h/"),
    ] {
        let got = r.upstream_uri(path, query).unwrap().to_string();
        assert_eq!(got, want, "{path:?} {query:?}");
    }
}

#[test]
fn dot_segments_never_change_the_route() {
    let t = table(
        vec![
            route("/v1", None, "https://v1"),
            route("/admin", None, "https://admin"),
        ],
        None,
    );
    assert_eq!(lands(&t, None, "/v1/../admin"), "v1");
    assert_eq!(lands(&t, None, "/v1/./../admin/x"), "v1");
    assert_eq!(lands(&t, None, "/admin/../v1"), "admin");
    assert_eq!(lands(&t, None, "/./v1"), "-");
    assert_eq!(lands(&t, None, "/x/../v1"), "-");
    let r = t.find(None, "/v1/../admin").unwrap();
    assert_eq!(
        r.upstream_uri("/v1/../admin", None).unwrap().path(),
        "/v1/../admin"
    );
}

#[test]
fn refuses_bad_routes() {
    let err = |prefix: &str, host: Option<&str>| {
        Route::new(prefix, host, up("https://h"), false).unwrap_err()
    };
    assert_eq!(err("v1", None), RouteError::PrefixNotAbsolute);
    assert_eq!(err("", None), RouteError::PrefixNotAbsolute);
    assert_eq!(err("/v1?x", None), RouteError::PrefixNotAPath);
    assert_eq!(err("/v1#x", None), RouteError::PrefixNotAPath);
    assert!(matches!(err("/v 1", None), RouteError::PrefixInvalid(_)));
    assert_eq!(
        err("/", Some("api.local:8080")),
        RouteError::Host(HostNameError::HasPort)
    );
    for bad in ["a b", "", "u@api.local", "http://x", "."] {
        assert!(
            matches!(
                err("/", Some(bad)),
                RouteError::Host(HostNameError::Invalid(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(parse_host_name("x:abc"), Err(HostNameError::HasPort));
    assert_eq!(parse_host_name("API.local."), Ok("api.local".into()));
    assert_eq!(parse_host_name("[::1]"), Ok("[::1]".into()));

    let dup = RouteTable::new(
        vec![
            route("/v1", None, "https://a"),
            route("/v2", Some("x"), "https://a"),
            route("/v1/", None, "https://b"),
        ],
        None,
    );
    assert_eq!(dup, Err(RouteError::Duplicate { index: 2, first: 0 }));
    // Same prefix on different hosts is fine.
    RouteTable::new(
        vec![
            route("/v1", None, "https://a"),
            route("/v1", Some("x"), "https://a"),
            route("/v1", Some("y"), "https://a"),
        ],
        None,
    )
    .unwrap();
}

#[test]
fn host_names_are_normalised() {
    let name = |text: &str| host_name(&Authority::try_from(text).unwrap());
    assert_eq!(name("API.Local"), Some("api.local".into()));
    assert_eq!(name("api.local:8080"), Some("api.local".into()));
    assert_eq!(name("localhost."), Some("localhost".into()));
    assert_eq!(name("127.0.0.1:8080"), Some("127.0.0.1".into()));
    assert_eq!(name("[::1]:8080"), Some("[::1]".into()));
    assert_eq!(name("[0:0:0:0:0:0:0:1]"), Some("[::1]".into()));
    assert_eq!(name("[::FFFF:7f00:1]"), Some("[::ffff:127.0.0.1]".into()));
}

// Property-style checks: every prefix against every path built from a
// small alphabet of awkward segments, against a reference written the
// obvious way.

const SEGMENTS: [&str; 9] = ["v1", "v10", "v1.0", "..", ".", "%2F", "v1%2Fx", "", "a"];

fn paths(depth: usize) -> Vec<String> {
    let mut all = vec![String::new(), "/".to_owned()];
    let mut layer = vec![String::new()];
    for _ in 0..depth {
        layer = layer
            .iter()
            .flat_map(|p| SEGMENTS.iter().map(move |s| format!("{p}/{s}")))
            .collect();
        all.extend(layer.iter().cloned());
    }
    all
}

#[test]
fn matching_agrees_with_the_segment_reference() {
    let prefixes: Vec<String> = paths(2)
        .into_iter()
        .filter(|p| p.starts_with('/'))
        .collect();
    let paths = paths(3);
    for prefix in &prefixes {
        let r = Route::new(prefix, None, up("https://h"), true).unwrap();
        let norm = prefix.trim_end_matches('/');
        for path in &paths {
            let reference =
                norm.is_empty() || path == norm || path.starts_with(&format!("{norm}/"));
            assert_eq!(r.matches_path(path), reference, "{prefix:?} vs {path:?}");
        }
    }
}

#[test]
fn the_chosen_route_is_the_longest_matching_prefix() {
    let prefixes = [
        "/", "/v1", "/v1/v1", "/v10", "/v1/..", "/..", "/v1%2Fx", "/a/.",
    ];
    let routes: Vec<Route> = prefixes
        .iter()
        .map(|p| Route::new(p, None, up("https://h"), false).unwrap())
        .collect();
    let t = RouteTable::new(routes.clone(), None).unwrap();
    for path in paths(3) {
        let best = routes
            .iter()
            .filter(|r| r.matches_path(&path))
            .max_by_key(|r| r.prefix().len());
        assert_eq!(
            t.find(None, &path).map(Route::prefix),
            best.map(Route::prefix),
            "{path:?}"
        );
    }
}

#[test]
fn joined_paths_are_base_plus_remainder() {
    let bases = [
        "https://h",
        "https://h/",
        "https://h/base",
        "https://h/base/",
        "https://h/a/b//",
    ];
    for base in bases {
        for prefix in ["/", "/v1", "/v1/"] {
            for strip in [false, true] {
                let r = Route::new(prefix, None, up(base), strip).unwrap();
                let base_path = r.upstream().base_path().to_owned();
                assert!(!base_path.ends_with('/'), "{base}");
                for path in paths(3).into_iter().filter(|p| r.matches_path(p)) {
                    let uri = r.upstream_uri(&path, Some("q=1")).unwrap();
                    let rest = if strip {
                        path.strip_prefix(r.prefix()).unwrap()
                    } else {
                        &path
                    };
                    let rest = if rest.is_empty() { "/" } else { rest };
                    assert_eq!(
                        uri.path(),
                        format!("{base_path}{rest}"),
                        "{base} {prefix} {path}"
                    );
                    assert_eq!(uri.query(), Some("q=1"));
                    // No slash is ever added at the join; only the app's own remain.
                    assert!(
                        uri.path().matches("//").count() <= path.matches("//").count(),
                        "{uri}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_requests_own_target_gives_the_joined_uri() {
    let routes = [
        Route::new("/", None, up("http://h:8080"), false).unwrap(),
        Route::new("/", None, up("http://h:8080"), true).unwrap(),
        Route::new("/v1", None, up("http://h:8080"), false).unwrap(),
        Route::new("/v1", None, up("http://h:8080"), true).unwrap(),
        Route::new("/v1", None, up("https://h/base"), false).unwrap(),
        Route::catch_all(up("https://h")),
    ];
    let targets = [
        "/",
        "/v1",
        "/v1/x?a=1&b",
        "/v1?",
        "/v1/x?q#frag",
        "//x",
        "/a%2Fb/../c",
        "http://localhost:8080/v1/x?y",
        "http://localhost:8080",
    ];
    for route in &routes {
        for target in targets {
            let target: Uri = target.parse().unwrap();
            let want = route.upstream_uri(target.path(), target.query()).unwrap();
            let got = route.upstream_uri_for(&target).unwrap();
            assert_eq!(got, want, "{target}");
            assert_eq!(got.to_string(), want.to_string(), "{target}");
        }
    }
}
