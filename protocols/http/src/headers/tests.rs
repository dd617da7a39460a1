use http::header::AUTHORIZATION;

use super::*;

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    headers
}

fn names(headers: &HeaderMap) -> Vec<&str> {
    let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
    names.sort_unstable();
    names
}

fn upstream() -> Upstream {
    "https://api.example.com:8443/base".parse().unwrap()
}

fn cx(upstream: &Upstream) -> RequestContext<'_> {
    RequestContext {
        upstream,
        credential: None,
        client: None,
        upgrade: false,
    }
}

#[test]
fn hop_by_hop_and_connection_named_headers_go() {
    let mut h = map(&[
        ("connection", "keep-alive, X-Secret-Hop"),
        ("connection", "close"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("proxy-authorization", "Basic eA=="),
        ("proxy-authenticate", "Basic"),
        ("te", "gzip"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("x-secret-hop", "1"),
        ("accept", "*/*"),
        ("content-type", "text/plain"),
    ]);
    strip_hop_by_hop(&mut h, false);
    assert_eq!(names(&h), ["accept", "content-type"]);
    for name in &HOP_BY_HOP {
        assert!(is_hop_by_hop(name));
    }
    assert!(!is_hop_by_hop(&AUTHORIZATION));
}

#[test]
fn trailer_names_the_messages_trailers_and_stays() {
    let mut h = map(&[("trailer", "x-checksum"), ("te", "trailers")]);
    strip_hop_by_hop(&mut h, false);
    assert_eq!(names(&h), ["trailer"]);
    assert!(!is_hop_by_hop(&http::header::TRAILER));
}

#[test]
fn junk_in_connection_is_ignored() {
    let mut h = map(&[
        ("connection", " , ,bad header name,, accept"),
        ("accept", "a"),
    ]);
    strip_hop_by_hop(&mut h, false);
    assert!(h.is_empty());
}

#[test]
fn upgrades_keep_upgrade_and_connection_upgrade_only() {
    let ws = map(&[
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("keep-alive", "timeout=5"),
    ]);
    assert!(is_upgrade(Version::HTTP_11, &ws));
    assert!(!is_upgrade(Version::HTTP_10, &ws));
    assert!(!is_upgrade(Version::HTTP_2, &ws));
    assert!(!is_upgrade(
        Version::HTTP_11,
        &map(&[("upgrade", "websocket")])
    ));
    assert!(!is_upgrade(
        Version::HTTP_11,
        &map(&[("connection", "upgrade")])
    ));

    let mut h = ws.clone();
    strip_hop_by_hop(&mut h, true);
    assert_eq!(names(&h), ["connection", "sec-websocket-key", "upgrade"]);
    assert_eq!(h[CONNECTION], "upgrade");
    assert_eq!(h[UPGRADE], "websocket");

    let mut h = ws;
    strip_hop_by_hop(&mut h, false);
    assert_eq!(names(&h), ["sec-websocket-key"]);
}

#[test]
fn responses_keep_upgrade_only_on_101() {
    let policy = HeaderPolicy::default();
    let upgraded = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
    let mut h = upgraded.clone();
    policy.response(StatusCode::SWITCHING_PROTOCOLS, &mut h);
    assert_eq!(names(&h), ["connection", "upgrade"]);
    let mut h = upgraded;
    policy.response(StatusCode::OK, &mut h);
    assert!(h.is_empty());

    let mut h = map(&[("transfer-encoding", "chunked"), ("content-type", "x")]);
    policy.response(StatusCode::OK, &mut h);
    assert_eq!(names(&h), ["content-type"]);
}

#[test]
fn host_is_the_upstream_authority() {
    let up = upstream();
    let mut h = map(&[("host", "localhost:8080")]);
    HeaderPolicy::default().request(&mut h, &cx(&up));
    assert_eq!(h[HOST], "api.example.com:8443");
    assert_eq!(h.get_all(HOST).iter().count(), 1);
}

#[test]
fn te_trailers_survives_for_grpc() {
    let up = upstream();
    let mut h = map(&[("te", "gzip, Trailers;q=1"), ("connection", "te")]);
    HeaderPolicy::default().request(&mut h, &cx(&up));
    assert_eq!(h[TE], "trailers");
    let mut h = map(&[("te", "gzip")]);
    HeaderPolicy::default().request(&mut h, &cx(&up));
    assert!(!h.contains_key(TE));
}

#[test]
fn credential_replaces_the_apps_only_when_there_is_a_token() {
    let up = upstream();
    let policy = HeaderPolicy::default();
    let token = policy.credential.value("t0k3n").unwrap();
    assert!(token.is_sensitive());
    assert_eq!(token, "Bearer t0k3n");

    let mut h = map(&[
        ("authorization", "Basic app"),
        ("authorization", "Bearer app2"),
    ]);
    let with_token = RequestContext {
        credential: Some(&token),
        ..cx(&up)
    };
    policy.request(&mut h, &with_token);
    let all: Vec<_> = h.get_all(AUTHORIZATION).iter().collect();
    assert_eq!(all, [&token]);

    let mut h = map(&[("authorization", "Basic app")]);
    policy.request(&mut h, &cx(&up));
    assert_eq!(h[AUTHORIZATION], "Basic app");
}

#[test]
fn credential_header_name_and_scheme_are_configurable() {
    let api_key = CredentialHeader::new(HeaderName::from_static("x-api-key"), "");
    assert_eq!(api_key.value("k").unwrap(), "k");
    let custom = CredentialHeader::new(AUTHORIZATION, "Token");
    assert_eq!(custom.value("k").unwrap(), "Token k");
    assert_eq!(custom.name(), &AUTHORIZATION);
    let bad = CredentialHeader::default()
        .value("line\nbreak-secret")
        .unwrap_err();
    assert!(!bad.to_string().contains("secret"));
}

#[test]
fn extra_headers_replace_and_are_sensitive() {
    let up = upstream();
    let mut extra = ExtraHeaders::new();
    assert!(extra.is_empty());
    extra.insert(
        HeaderName::from_static("x-api-key"),
        HeaderValue::from_static("first"),
    );
    extra.insert(
        HeaderName::from_static("x-api-key"),
        HeaderValue::from_static("s3cr3t"),
    );
    extra.insert(
        HeaderName::from_static("x-tenant"),
        HeaderValue::from_static("acme"),
    );
    let debug = format!("{extra:?}");
    assert!(!debug.contains("s3cr3t"), "{debug}");
    assert!(!debug.contains("acme"), "{debug}");

    let policy = HeaderPolicy {
        extra,
        ..HeaderPolicy::default()
    };
    let mut h = map(&[("x-api-key", "app's"), ("x-tenant", "other")]);
    policy.request(&mut h, &cx(&up));
    assert_eq!(h["x-api-key"], "s3cr3t");
    assert_eq!(h["x-tenant"], "acme");
    assert_eq!(h.get_all("x-api-key").iter().count(), 1);
    assert!(h["x-api-key"].is_sensitive());
}

#[test]
fn credential_wins_over_a_connection_trick() {
    // An app cannot drop the injected token by naming it in Connection:
    // stripping happens before injection.
    let up = upstream();
    let policy = HeaderPolicy::default();
    let token = policy.credential.value("t").unwrap();
    let mut h = map(&[("connection", "authorization, host")]);
    policy.request(
        &mut h,
        &RequestContext {
            credential: Some(&token),
            ..cx(&up)
        },
    );
    assert_eq!(h[AUTHORIZATION], "Bearer t");
    assert_eq!(h[HOST], "api.example.com:8443");
    assert!(!h.contains_key(CONNECTION));
}

#[test]
fn forwarded_headers_are_off_by_default() {
    let up = upstream();
    let client = Some("127.0.0.1".parse().unwrap());
    let mut h = map(&[("x-forwarded-for", "10.0.0.1")]);
    HeaderPolicy::default().request(&mut h, &RequestContext { client, ..cx(&up) });
    assert_eq!(h["x-forwarded-for"], "10.0.0.1");
    assert!(!h.contains_key("x-forwarded-proto"));

    let policy = HeaderPolicy {
        forwarded: true,
        ..HeaderPolicy::default()
    };
    let mut h = map(&[
        ("x-forwarded-for", "10.0.0.1"),
        ("x-forwarded-for", "10.0.0.2"),
    ]);
    policy.request(&mut h, &RequestContext { client, ..cx(&up) });
    assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    let mut h = HeaderMap::new();
    let v6 = Some("::1".parse().unwrap());
    policy.request(
        &mut h,
        &RequestContext {
            client: v6,
            ..cx(&up)
        },
    );
    assert_eq!(h["x-forwarded-for"], "::1");
}

#[test]
fn upgrade_requests_pass_through_request() {
    let up = upstream();
    let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
    let upgrade = is_upgrade(Version::HTTP_11, &h);
    HeaderPolicy::default().request(&mut h, &RequestContext { upgrade, ..cx(&up) });
    assert_eq!(h[CONNECTION], "upgrade");
    assert_eq!(h[UPGRADE], "websocket");
}

#[test]
fn hop_by_hop_positions_match_the_list() {
    for (index, name) in HOP_BY_HOP.iter().enumerate() {
        assert_eq!(hop_by_hop_index(name.as_str().as_bytes()), Some(index));
    }
    assert_eq!(hop_by_hop_index(b"Connection"), None);
    assert_eq!(hop_by_hop_index(b"host"), None);
}

#[test]
fn connection_options_name_headers_in_any_case() {
    let mut h = map(&[
        ("connection", "KEEP-ALIVE, X-Custom-Hop,\tCLOSE "),
        ("keep-alive", "timeout=5"),
        ("x-custom-hop", "1"),
        ("close", "2"),
        ("x-custom", "kept: names must match whole"),
        ("accept", "*/*"),
    ]);
    strip_hop_by_hop(&mut h, false);
    assert_eq!(names(&h), ["accept", "x-custom"]);
}

#[test]
fn messages_without_hop_by_hop_headers_are_left_alone() {
    let before = map(&[
        ("host", "localhost:8080"),
        ("accept", "*/*"),
        ("x-te", "trailers"),
        ("x-connection", "close"),
    ]);
    let mut h = before.clone();
    strip_hop_by_hop(&mut h, false);
    assert_eq!(h, before);
    strip_hop_by_hop(&mut h, true);
    assert_eq!(h, before);
    let up = upstream();
    HeaderPolicy::default().request(&mut h, &cx(&up));
    assert!(!h.contains_key(TE));
}

/// The rules written the obvious way: every option parsed into a name,
/// every name removed.
fn reference_strip(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = connection_options(headers)
        .filter_map(|o| HeaderName::from_bytes(o).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        if !(keep_upgrade && *name == UPGRADE) {
            headers.remove(name);
        }
    }
    if keep_upgrade && headers.contains_key(UPGRADE) {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

#[test]
fn stripping_agrees_with_the_reference() {
    let connections = [
        None,
        Some("keep-alive"),
        Some("Close"),
        Some("upgrade, Keep-Alive"),
        Some("X-Hop, te"),
        Some("x-hop , , bad name, Accept"),
        Some("UPGRADE,x-other"),
    ];
    let others: [&[(&str, &str)]; 5] = [
        &[],
        &[("x-hop", "1"), ("accept", "a")],
        &[("upgrade", "websocket"), ("te", "trailers")],
        &[("keep-alive", "5"), ("x-other", "o"), ("trailer", "x")],
        &[("transfer-encoding", "chunked"), ("proxy-connection", "c")],
    ];
    for connection in connections {
        for other in others {
            let mut pairs = other.to_vec();
            if let Some(c) = connection {
                pairs.push(("connection", c));
                pairs.push(("connection", "close"));
            }
            for keep_upgrade in [false, true] {
                let mut want = map(&pairs);
                reference_strip(&mut want, keep_upgrade);
                let mut got = map(&pairs);
                strip_hop_by_hop(&mut got, keep_upgrade);
                assert_eq!(got, want, "{pairs:?} keep_upgrade={keep_upgrade}");
            }
        }
    }
}
