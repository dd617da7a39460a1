//! The HTTP ambassador in the real binary, as ops run it: a listener added
//! by editing the config file serves; a bad edit is refused naming the
//! key; `/config`, `/metrics` and `attache check` show the HTTP listeners
//! with header values redacted; SIGTERM lets in-flight requests finish.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use hyper::Request;
use support::binary::{attache, Process};
use support::free_port;
use support::http::{empty, handler, send, text, TestUpstream};

fn listener(name: &str, port: u16, upstream: &TestUpstream, extra: &str) -> String {
    format!(
        "[http.{name}]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"http://{}\"\n{extra}\n",
        upstream.addr
    )
}

/// Polls `GET path` on `port` until it answers 200; panics with the log.
async fn until_served(port: u16, path: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            let (status, _, _) = send(addr, Request::get(path).body(empty()).unwrap()).await;
            if status == 200 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "port {port} not serving {path}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_a_listener_and_sigterm_lets_requests_finish() {
    let upstream = TestUpstream::plain(handler(|request| async move {
        if request.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
        text(200, request.uri().path())
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("attache.toml");
    let (admin, one, two) = (free_port(), free_port(), free_port());
    let head = format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n");
    let first = format!("{head}{}", listener("one", one, &upstream, ""));
    std::fs::write(&path, &first).unwrap();
    let log = dir.path().join("attache.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let child = attache()
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let mut process = Process(child);
    until_served(one, "/one", &log).await;

    // Added by editing the file: served within the watcher's second.
    let secret = "s3cret-api-key";
    let second = listener(
        "two",
        two,
        &upstream,
        &format!("[http.two.headers]\nx-api-key = {{ value = \"{secret}\" }}"),
    );
    std::fs::write(&path, format!("{first}{second}")).unwrap();
    until_served(two, "/two", &log).await;
    let sent = upstream
        .seen()
        .into_iter()
        .find(|s| s.path == "/two")
        .unwrap();
    assert_eq!(sent.headers["x-api-key"], secret);

    let admin_addr = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
    let (_, _, config) = send(admin_addr, Request::get("/config").body(empty()).unwrap()).await;
    assert!(
        config.contains("\"two\"") && config.contains("<redacted>"),
        "{config}"
    );
    assert!(!config.contains(secret), "{config}");
    let (_, _, metrics) = send(admin_addr, Request::get("/metrics").body(empty()).unwrap()).await;
    for expected in [
        "attache_http_requests_total{listener=\"two\",route=\"upstream\",class=\"2xx\"} ",
        "attache_http_upstream_connects_total{listener=\"one\"} ",
        "attache_http_upstream_connections{listener=\"one\"} ",
        "attache_listener_connections_total{listener=\"two\"} ",
        "# TYPE attache_http_request_duration_seconds histogram",
        "attache_http_request_duration_seconds_bucket{listener=\"two\",route=\"upstream\",le=\"+Inf\"} ",
        "attache_http_request_duration_seconds_count{listener=\"two\",route=\"upstream\"} ",
    ] {
        assert!(metrics.contains(expected), "{expected} missing:\n{metrics}");
    }

    // A bad edit names the key; the running config stays.
    std::fs::write(
        &path,
        format!(
            "{first}{}token = \"missing\"\n",
            listener("two", two, &upstream, "")
        ),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("http.two.token")
    {
        assert!(
            Instant::now() < deadline,
            "no reload error naming http.two.token"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    until_served(two, "/still", &log).await;

    // SIGTERM during a request: it finishes, then attache exits 0.
    let slow = tokio::spawn(send(
        std::net::SocketAddr::from(([127, 0, 0, 1], one)),
        Request::get("/slow").body(empty()).unwrap(),
    ));
    while !upstream.seen().iter().any(|s| s.path == "/slow") {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    process.signal("TERM");
    let (status, _, body) = slow.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "/slow"));
    let status = tokio::task::spawn_blocking(move || {
        let status = process.wait_for_exit(Duration::from_secs(10));
        (status, process)
    })
    .await
    .unwrap()
    .0
    .expect("attache exits after SIGTERM");
    assert!(status.success(), "{status}");
}

#[test]
fn check_prints_http_listeners_with_header_values_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("attache.toml");
    std::fs::write(
        &path,
        "[http.api]\nlisten = \"127.0.0.1:8080\"\nupstream = \"https://api.example.com\"\n\
         [http.api.headers]\nx-api-key = { value = \"hunter2\" }\n",
    )
    .unwrap();
    let out = attache()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("[http.api]"), "{stdout}");
    assert!(stdout.contains("<redacted>"), "{stdout}");
    assert!(!stdout.contains("hunter2"), "{stdout}");
}
