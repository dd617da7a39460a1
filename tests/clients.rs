//! Real client libraries, with their default handshakes (HELLO 3, CLIENT
//! SETINFO …), driven through attache in front of a real `redis-server`:
//! redis-py (tests/clients/redis_py_compat.py), ioredis
//! (tests/clients/ioredis_compat.js) and node-redis
//! (tests/clients/node_redis_compat.js). Each script exercises everyday
//! usage and exits non-zero naming what differed; its output is printed
//! when it fails.
//!
//! The libraries are not vendored: `bash scripts/test.sh --install-deps`
//! installs them (`python3 -m pip install 'redis>=5'`,
//! `npm ci --prefix tests/clients`). A missing library fails the test.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Longest a script may run before it is killed and the test fails.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(25);

/// What a script exits with when its client library cannot be loaded.
const EXIT_MISSING_LIBRARY: i32 = 3;

const INSTALL_HINT: &str =
    "install the client libraries with `bash scripts/test.sh --install-deps`";

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Starts a fresh redis-server and attache in front of it, runs
/// `program script HOST PORT` against attache, and fails the test (with the
/// script's output) unless it exits 0.
async fn run_client_script(program: &str, script: &str, library: &str, install: &str) {
    let server = RedisServer::start();
    let (_attache, addr) = attache_for(&server, "").await;
    let path = clients_dir().join(script);

    // Output goes to files (no pipe to drain); the child runs on a blocking
    // thread so attache keeps serving on the runtime's workers meanwhile.
    let out_dir = tempfile::tempdir().expect("temp dir");
    let stdout_path = out_dir.path().join("stdout");
    let stderr_path = out_dir.path().join("stderr");
    let stdout_file = std::fs::File::create(&stdout_path).expect("stdout file");
    let stderr_file = std::fs::File::create(&stderr_path).expect("stderr file");
    let started = Instant::now();
    let mut child = Command::new(program)
        .arg(&path)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .current_dir(clients_dir())
        .stdin(Stdio::null())
        .stdout(stdout_file)
        .stderr(stderr_file)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{program}` for {library} ({e}): {program} must be installed; {INSTALL_HINT}"
            )
        });
    let status = tokio::task::spawn_blocking(move || loop {
        if let Some(status) = child.try_wait().expect("wait for the client script") {
            return Some(status);
        }
        if started.elapsed() > SCRIPT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    })
    .await
    .expect("waiting thread");
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let report = format!("--- stdout ---\n{stdout}--- stderr ---\n{stderr}");
    let Some(status) = status else {
        panic!(
            "{script} ({library}) did not finish within {SCRIPT_TIMEOUT:?} and was killed: \
             attache (or the client) hangs\n{report}"
        );
    };

    match status.code() {
        Some(0) => println!(
            "{library} through attache: {:.1}s\n{stdout}",
            started.elapsed().as_secs_f64()
        ),
        Some(EXIT_MISSING_LIBRARY) => {
            panic!("{library} is not installed: {INSTALL_HINT} (or run `{install}`)\n{report}")
        }
        _ => panic!("{library} through attache failed ({}): \n{report}", status),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_default_handshake_and_usage() {
    run_client_script(
        "python3",
        "redis_py_compat.py",
        "redis-py",
        "python3 -m pip install 'redis>=5'",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ioredis_default_handshake_and_usage() {
    run_client_script(
        "node",
        "ioredis_compat.js",
        "ioredis",
        "npm ci --prefix tests/clients",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_redis_default_handshake_and_usage() {
    run_client_script(
        "node",
        "node_redis_compat.js",
        "node-redis",
        "npm ci --prefix tests/clients",
    )
    .await;
}
