//! The `attache` binary as ops run it: `--help`, `check` on good and bad
//! files, and `run` in front of a real `redis-server`, stopped by SIGTERM.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use support::binary::{attache, Process};
use support::{free_port, RedisServer};

fn check(config: &Path) -> Output {
    attache()
        .arg("check")
        .arg("--config")
        .arg(config)
        .output()
        .expect("run attache check")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &tempfile::TempDir, name: &str, contents: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).expect("write config");
    path
}

const GOOD: &str = "[redis.cache]\nlisten = \"127.0.0.1:6379\"\nservers = [\"10.0.0.7:6379\"]\n";

#[test]
fn help_lists_the_commands() {
    let out = attache()
        .arg("--help")
        .output()
        .expect("run attache --help");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let help = text(&out.stdout);
    for word in ["run", "check", "--config"] {
        assert!(
            help.contains(word),
            "--help does not mention {word}:\n{help}"
        );
    }
}

#[test]
fn check_prints_the_effective_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = write(&dir, "good.toml", GOOD);
    let out = check(&good);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&format!("# {}: valid", good.display())),
        "{stdout}"
    );
    // Defaults are filled in.
    for line in [
        "[redis.cache]",
        "timeout = \"5s\"",
        "server_connections = 2",
        "listen = \"127.0.0.1:9901\"",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    // The effective config is itself a valid config that checks the same.
    let again = write(&dir, "effective.toml", &stdout);
    let out = check(&again);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let body = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&text(&out.stdout)), body(&stdout));
}

#[test]
fn check_reads_yaml() {
    let dir = tempfile::tempdir().expect("temp dir");
    let yaml = write(
        &dir,
        "good.yaml",
        "redis:\n  cache:\n    listen: 127.0.0.1:6379\n    servers: [\"10.0.0.7:6379\"]\n    timeout: 250ms\n",
    );
    let out = check(&yaml);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("timeout = \"250ms\""),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn check_rejects_bad_files_naming_file_key_and_problem() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases: &[(&str, String, &[&str])] = &[
        (
            "unknown-key.toml",
            format!("{GOOD}timeout_ms = 5\n"),
            &["redis.cache.timeout_ms", "unknown field"],
        ),
        (
            "bad-duration.toml",
            format!("{GOOD}timeout = \"soon\"\n"),
            &["redis.cache.timeout", "\"soon\"", "duration"],
        ),
        (
            "remote.toml",
            GOOD.replace("127.0.0.1:6379", "0.0.0.0:6379"),
            &["redis.cache.listen", "loopback", "allow_remote"],
        ),
        (
            "two-servers.toml",
            GOOD.replace("\"10.0.0.7:6379\"", "\"10.0.0.7:6379\", \"10.0.0.8:6379\""),
            &["redis.cache.servers", "exactly one"],
        ),
        (
            "no-port.toml",
            GOOD.replace("10.0.0.7:6379", "10.0.0.7"),
            &["redis.cache.servers", "missing port"],
        ),
        (
            "no-servers.toml",
            "[redis.cache]\nlisten = \"127.0.0.1:6379\"\n".into(),
            &["redis.cache", "missing field `servers`"],
        ),
        ("empty.toml", String::new(), &["redis", "no listeners"]),
        ("syntax.toml", "[redis.cache\n".into(), &["TOML parse error", "line 1"]),
        (
            "bad.yaml",
            "redis:\n  cache:\n    listen: 127.0.0.1:6379\n    servers: [\"a:1\"]\n    timeout: soon\n"
                .into(),
            &["redis.cache.timeout", "duration"],
        ),
        ("attache.json", "{}".into(), &["unknown config format"]),
    ];
    for (name, contents, expected) in cases {
        let out = check(&write(&dir, name, contents));
        let stderr = text(&out.stderr);
        assert!(
            !out.status.success(),
            "{name}: accepted:\n{}",
            text(&out.stdout)
        );
        assert!(out.stdout.is_empty(), "{name}: printed a config");
        assert!(
            stderr.contains(name),
            "{name}: stderr does not name the file: {stderr}"
        );
        for what in *expected {
            assert!(
                stderr.contains(what),
                "{name}: stderr lacks {what:?}: {stderr}"
            );
        }
    }
}

#[test]
fn check_on_a_missing_file_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope.toml");
    let out = check(&missing);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    assert!(stderr.contains("No such file"), "{stderr}");
}

#[test]
fn environment_overrides_reach_the_binary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = write(&dir, "good.toml", GOOD);
    // ATTACHE_CONFIG names the file; the override changes one key.
    let out = attache()
        .arg("check")
        .env("ATTACHE_CONFIG", &good)
        .env("ATTACHE_REDIS__CACHE__LISTEN", "127.0.0.1:6380")
        .output()
        .expect("run attache check");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("listen = \"127.0.0.1:6380\""), "{stdout}");

    let out = attache()
        .args(["check", "--config"])
        .arg(&good)
        .env("ATTACHE_REDIS__CACHE__TIMEOUT", "soon")
        .output()
        .expect("run attache check");
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("ATTACHE_REDIS__CACHE__TIMEOUT"), "{stderr}");
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Polls until `port` accepts, failing early (with attache's log) if the
/// process exits.
fn connect_when_ready(attache: &mut Process, port: u16, log: &Path) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
            return stream;
        }
        if let Some(status) = attache.0.try_wait().expect("try_wait") {
            panic!(
                "attache exited ({status}) before listening:\n{}",
                log_of(log)
            );
        }
        assert!(
            Instant::now() < deadline,
            "attache did not listen on {port}:\n{}",
            log_of(log)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `request` and reads one line-terminated reply.
fn exchange(reader: &mut BufReader<TcpStream>, request: &[u8]) -> String {
    reader.get_mut().write_all(request).expect("write request");
    let mut line = String::new();
    reader.read_line(&mut line).expect("read reply");
    line
}

#[test]
fn run_serves_redis_and_exits_cleanly_on_sigterm() {
    serve_then_sigterm(1);
}

#[test]
fn several_workers_serve_and_exit_cleanly_on_sigterm() {
    serve_then_sigterm(3);
}

fn serve_then_sigterm(workers: usize) {
    let upstream = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = write(
        &dir,
        "attache.toml",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:{}\"\n[runtime]\nworkers = {workers}\n\n[redis.cache]\nlisten = \"127.0.0.1:{port}\"\nservers = [\"{}\"]\n",
            free_port(),
            upstream.addr()
        ),
    );
    let log = dir.path().join("attache.log");
    let log_file = std::fs::File::create(&log).expect("log file");
    let child = attache()
        .args(["run", "--config"])
        .arg(&config)
        .stdout(log_file.try_clone().expect("log file"))
        .stderr(log_file)
        .spawn()
        .expect("start attache run");
    let mut attache = Process(child);

    let stream = connect_when_ready(&mut attache, port, &log);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut app = BufReader::new(stream);
    assert_eq!(exchange(&mut app, b"*1\r\n$4\r\nPING\r\n"), "+PONG\r\n");
    assert_eq!(
        exchange(&mut app, b"*3\r\n$3\r\nSET\r\n$3\r\ncli\r\n$2\r\nok\r\n"),
        "+OK\r\n"
    );
    assert_eq!(
        upstream.cli(&["GET", "cli"]),
        "ok",
        "the SET reached the upstream"
    );
    // More app connections, spread over the workers, all served.
    for i in 0..8 {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let mut other = BufReader::new(stream);
        let reply = exchange(&mut other, b"*2\r\n$4\r\nINCR\r\n$7\r\ncounter\r\n");
        assert_eq!(reply, format!(":{}\r\n", i + 1));
    }

    // SIGTERM with the app still connected: attache must still exit, and 0.
    attache.signal("TERM");
    let status = attache
        .wait_for_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("attache ignored SIGTERM:\n{}", log_of(&log)));
    assert!(
        status.success(),
        "attache exited with {status}:\n{}",
        log_of(&log)
    );

    // The app sees its connection closed rather than hanging.
    let mut rest = Vec::new();
    if let Err(e) = app.read_to_end(&mut rest) {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the listener is closed"
    );
}
