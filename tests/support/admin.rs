//! attache's admin listener as a client sees it: HTTP requests to it, the
//! binary started in front of real redis-servers, Prometheus samples.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use super::binary::{attache, Process};
use super::{free_port, RedisServer};

/// `(status, body)` of one HTTP/1.1 request; `None` if nothing listens.
pub fn http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let status = answer.get(9..12)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

pub fn eventually(what: &str, log: &Path, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; attache log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub struct Setup {
    pub process: Process,
    pub admin: u16,
    pub redis: u16,
    pub log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// attache in front of `upstream`, with `extra` config appended.
pub fn start(upstream: &RedisServer, extra: &str) -> Setup {
    start_servers(&[upstream], extra)
}

/// attache's listener `cache` in front of `upstreams`, with `extra`
/// config appended (to the `[redis.cache]` table, unless it opens another).
pub fn start_servers(upstreams: &[&RedisServer], extra: &str) -> Setup {
    let addrs: Vec<String> = upstreams.iter().map(|u| u.addr()).collect();
    start_addrs(&addrs, extra)
}

/// attache's listener `cache` with `servers` (`host:port` each).
pub fn start_addrs(addrs: &[String], extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (admin, redis) = (free_port(), free_port());
    let config = dir.path().join("attache.toml");
    let servers: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    std::fs::write(
        &config,
        format!(
            "[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n[redis.cache]\nlisten = \"127.0.0.1:{redis}\"\nservers = [{}]\n{extra}",
            servers.join(", ")
        ),
    )
    .unwrap();
    let log = dir.path().join("attache.log");
    let file = std::fs::File::create(&log).unwrap();
    let child = attache()
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "debug")
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    Setup {
        process: Process(child),
        admin,
        redis,
        log,
        _dir: dir,
    }
}

pub fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}
