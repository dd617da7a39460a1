//! The admin listener and the lifecycle, on the real binary: probes
//! (startup waits for the first token), metrics, the effective config,
//! `/quitquitquit`, SIGTERM with a request in flight, `attache wait`.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use support::admin::{eventually, http, metric, start};
use support::binary::{attache, Process};
use support::{free_port, refusing_port, RedisServer};

#[test]
fn probes_wait_for_the_first_token_and_metrics_and_config_answer() {
    let upstream = RedisServer::start_with(&["--requirepass", "s3cret-token-value"]);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let setup = start(
        &upstream,
        &format!(
            "[redis.cache.auth]\ntoken = \"redis\"\n\n[tokens.redis]\nprovider = \"static\"\ntoken_file = \"{}\"\n",
            token_file.display()
        ),
    );
    let (admin, log) = (setup.admin, &setup.log);
    eventually("/live", log, || {
        matches!(http(admin, "GET", "/live"), Some((200, _)))
    });
    // No token file yet: not started, not ready; alive all the same.
    let (status, body) = http(admin, "GET", "/startup").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("redis"), "{body}");
    assert_eq!(http(admin, "GET", "/ready").unwrap().0, 503);

    std::fs::write(&token_file, "s3cret-token-value\n").unwrap();
    eventually("/startup 200", log, || {
        matches!(http(admin, "GET", "/startup"), Some((200, _)))
    });
    assert_eq!(http(admin, "GET", "/ready").unwrap().0, 200);

    // The app is served with the token.
    let stream = TcpStream::connect(("127.0.0.1", setup.redis)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut app = BufReader::new(stream);
    app.get_mut().write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut line = String::new();
    app.read_line(&mut line).unwrap();
    assert_eq!(line, "+PONG\r\n");

    // Metrics: well-formed text, and the counters moved.
    let (status, metrics) = http(admin, "GET", "/metrics").unwrap();
    assert_eq!(status, 200);
    for sample in metrics.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = sample.rsplit_once(' ').expect("name value");
        assert!(
            name.chars().next().is_some_and(|c| c.is_ascii_lowercase()),
            "{sample}"
        );
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value: {sample}"));
    }
    assert_eq!(
        metric(
            &metrics,
            "attache_listener_connections_total{listener=\"cache\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "attache_listener_connections_open{listener=\"cache\"}"
        ),
        Some(1.0)
    );
    assert!(metric(
        &metrics,
        "attache_token_refreshes_total{credential=\"redis\"}"
    )
    .is_some_and(|n| n >= 1.0));
    assert_eq!(metric(&metrics, "attache_ready"), Some(1.0));
    assert!(
        metric(&metrics, "attache_redis_commands_total{listener=\"cache\"}")
            .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "attache_redis_upstream_connects_total{listener=\"cache\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "attache_redis_errors_total{listener=\"cache\"}"),
        Some(0.0)
    );
    assert!(metrics.contains("attache_config_info{hash=\""), "{metrics}");

    // The effective config: JSON, with file names but no secret values.
    let (status, config) = http(admin, "GET", "/config").unwrap();
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&config).expect("JSON");
    assert_eq!(json["redis"]["cache"]["auth"]["token"], "redis");
    assert!(!config.contains("s3cret-token-value"), "{config}");
    assert_eq!(http(admin, "GET", "/nope").unwrap().0, 404);
    assert_eq!(http(admin, "GET", "/quitquitquit").unwrap().0, 405);

    // /quitquitquit: graceful exit, 0.
    drop(app);
    assert_eq!(http(admin, "POST", "/quitquitquit").unwrap().0, 200);
    let mut process = setup.process;
    let status = process
        .wait_for_exit(Duration::from_secs(15))
        .expect("exited after /quitquitquit");
    assert!(status.success(), "{status}");
    let logs = std::fs::read_to_string(log).unwrap();
    assert!(
        !logs.contains("s3cret-token-value"),
        "a secret reached the logs"
    );
}

#[test]
fn sigterm_lets_requests_in_flight_finish_then_exits_0() {
    let upstream = RedisServer::start();
    let mut setup = start(&upstream, "[runtime]\nshutdown_grace = \"20s\"\n");
    let (admin, log) = (setup.admin, setup.log.clone());
    eventually("/ready", &log, || {
        matches!(http(admin, "GET", "/ready"), Some((200, _)))
    });
    let stream = TcpStream::connect(("127.0.0.1", setup.redis)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut app = BufReader::new(stream);
    // In flight when SIGTERM arrives: a pop that blocks for 2 s.
    app.get_mut()
        .write_all(b"*3\r\n$5\r\nBLPOP\r\n$9\r\ndrain:key\r\n$1\r\n2\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    setup.process.signal("TERM");
    eventually("/ready 503 while draining", &log, || {
        matches!(http(admin, "GET", "/ready"), Some((503, _)))
    });
    assert_eq!(http(admin, "GET", "/live").unwrap().0, 200);
    // The pop is answered (nil after its timeout), then the idle
    // connection is closed by attache.
    let mut reply = String::new();
    app.read_line(&mut reply).unwrap();
    assert!(reply == "*-1\r\n" || reply == "$-1\r\n", "{reply:?}");
    let mut rest = String::new();
    assert_eq!(
        app.read_line(&mut rest).unwrap(),
        0,
        "closed after the reply"
    );
    let status = setup
        .process
        .wait_for_exit(Duration::from_secs(15))
        .expect("exited after draining");
    assert!(status.success(), "{status}");
}

#[test]
fn quitquitquit_lets_requests_in_flight_finish_then_exits_0() {
    let upstream = RedisServer::start();
    let mut setup = start(&upstream, "[runtime]\nshutdown_grace = \"20s\"\n");
    let (admin, log) = (setup.admin, setup.log.clone());
    eventually("/ready", &log, || {
        matches!(http(admin, "GET", "/ready"), Some((200, _)))
    });
    let stream = TcpStream::connect(("127.0.0.1", setup.redis)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut app = BufReader::new(stream);
    // In flight when /quitquitquit arrives: a pop that blocks for 2 s.
    app.get_mut()
        .write_all(b"*3\r\n$5\r\nBLPOP\r\n$9\r\ndrain:key\r\n$1\r\n2\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(http(admin, "POST", "/quitquitquit").unwrap().0, 200);
    // One request drains, as SIGTERM does: the pop is answered.
    let mut reply = String::new();
    app.read_line(&mut reply).unwrap();
    assert!(reply == "*-1\r\n" || reply == "$-1\r\n", "{reply:?}");
    let status = setup
        .process
        .wait_for_exit(Duration::from_secs(15))
        .expect("exited after draining");
    assert!(status.success(), "{status}");
}

#[test]
fn a_second_sigterm_exits_at_once() {
    let upstream = RedisServer::start();
    let mut setup = start(&upstream, "[runtime]\nshutdown_grace = \"60s\"\n");
    let (admin, log) = (setup.admin, setup.log.clone());
    eventually("/ready", &log, || {
        matches!(http(admin, "GET", "/ready"), Some((200, _)))
    });
    let stream = TcpStream::connect(("127.0.0.1", setup.redis)).unwrap();
    let mut app = BufReader::new(stream);
    // Blocked for a minute: the first SIGTERM waits for it.
    app.get_mut()
        .write_all(b"*3\r\n$5\r\nBLPOP\r\n$9\r\ndrain:key\r\n$2\r\n60\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    setup.process.signal("TERM");
    eventually("draining", &log, || {
        matches!(http(admin, "GET", "/ready"), Some((503, _)))
    });
    assert!(setup
        .process
        .wait_for_exit(Duration::from_secs(1))
        .is_none());
    setup.process.signal("TERM");
    let status = setup
        .process
        .wait_for_exit(Duration::from_secs(5))
        .expect("exited at the second SIGTERM");
    assert!(status.success(), "{status}");
}

#[test]
fn attache_wait_returns_when_ready_and_fails_when_nothing_listens() {
    let upstream = RedisServer::start();
    let setup = start(&upstream, "");
    let out = attache()
        .args([
            "wait",
            "--admin",
            &format!("127.0.0.1:{}", setup.admin),
            "--timeout",
            "20s",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nobody = refusing_port();
    let out = attache()
        .args([
            "wait",
            "--admin",
            &format!("127.0.0.1:{}", nobody.port),
            "--timeout",
            "1s",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not ready"));
}

/// Kubernetes updates a mounted ConfigMap by writing a new `..data_N`
/// directory and renaming a `..data` symlink over the old one.
fn configmap_swap(dir: &Path, version: u32, contents: &str) {
    let data = dir.join(format!("..data_{version}"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("attache.toml"), contents).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..data_{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

#[test]
fn a_configmap_update_is_reloaded_under_load_and_a_bad_one_is_refused() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (admin, redis) = (free_port(), free_port());
    let config = |server: &RedisServer| {
        format!(
            "[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n[redis.cache]\nlisten = \"127.0.0.1:{redis}\"\nservers = [\"{}\"]\n",
            server.addr()
        )
    };
    configmap_swap(dir.path(), 1, &config(&a));
    std::os::unix::fs::symlink("..data/attache.toml", dir.path().join("attache.toml")).unwrap();
    let log = dir.path().join("attache.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut process = Process(
        attache()
            .args(["run", "--config"])
            .arg(dir.path().join("attache.toml"))
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap(),
    );
    eventually("/ready", &log, || {
        matches!(http(admin, "GET", "/ready"), Some((200, _)))
    });

    // One app connection writing all along.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let app = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let stream = TcpStream::connect(("127.0.0.1", redis)).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut app = BufReader::new(stream);
            let (mut ok, mut errors) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("cm:{ok}");
                app.get_mut()
                    .write_all(&support::cmd(&["SET", &key, "v"]))
                    .unwrap();
                let mut line = String::new();
                app.read_line(&mut line).unwrap();
                if line == "+OK\r\n" {
                    ok += 1;
                } else {
                    errors.push(line);
                }
            }
            (ok, errors)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    configmap_swap(dir.path(), 2, &config(&b));
    let reloads = |result: &str| {
        let metrics = http(admin, "GET", "/metrics")
            .map(|(_, m)| m)
            .unwrap_or_default();
        metric(
            &metrics,
            &format!("attache_config_reloads_total{{result=\"{result}\"}}"),
        )
        .unwrap_or(0.0)
    };
    eventually(
        "the reload, and writes reaching the new upstream",
        &log,
        || reloads("success") == 1.0 && b.cli(&["DBSIZE"]).parse::<u64>().unwrap_or(0) > 0,
    );

    // A broken edit: refused, counted, the running config stays.
    configmap_swap(dir.path(), 3, "[redis.cache\nlisten = ");
    eventually("the refused reload", &log, || reloads("failure") == 1.0);
    let (_, effective) = http(admin, "GET", "/config").unwrap();
    assert!(effective.contains(&b.addr()), "{effective}");
    let before = b.cli(&["DBSIZE"]).parse::<u64>().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        b.cli(&["DBSIZE"]).parse::<u64>().unwrap() > before,
        "still serving"
    );

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, errors) = app.join().unwrap();
    println!("{ok} writes, {} errors", errors.len());
    assert!(errors.is_empty(), "{errors:?}");
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("config reloaded"), "{logs}");
    assert!(logs.contains("config reload refused"), "{logs}");
    process.signal("TERM");
    let status = process
        .wait_for_exit(Duration::from_secs(15))
        .expect("exit");
    assert!(status.success());
}

#[test]
fn attache_wait_with_a_timeout_past_the_clock_waits_instead_of_panicking() {
    // Parses (about 5·10¹¹ years), but is past what a clock can add.
    let nobody = refusing_port();
    let mut process = Process(
        attache()
            .args([
                "wait",
                "--admin",
                &format!("127.0.0.1:{}", nobody.port),
                "--timeout",
                "500000000000years",
            ])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let exited = process.wait_for_exit(Duration::from_secs(2));
    let mut stderr = String::new();
    if exited.is_some() {
        use std::io::Read;
        process
            .0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
    }
    assert!(exited.is_none(), "exited with {exited:?}: {stderr}");
}

#[test]
fn a_reload_refused_for_a_port_in_use_is_applied_once_the_port_is_free() {
    let upstream = RedisServer::start();
    let setup = start(&upstream, "");
    eventually("/ready", &setup.log, || {
        matches!(http(setup.admin, "GET", "/ready"), Some((200, _)))
    });
    // Another process (here: the test) holds the new listener's port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let file = setup.log.with_file_name("attache.toml");
    let mut config = std::fs::read_to_string(&file).unwrap();
    config += &format!(
        "\n[redis.extra]\nlisten = \"127.0.0.1:{port}\"\nservers = [\"{}\"]\n",
        upstream.addr()
    );
    std::fs::write(&file, config).unwrap();
    let failures = || {
        let metrics = http(setup.admin, "GET", "/metrics").map(|(_, m)| m);
        metric(
            &metrics.unwrap_or_default(),
            "attache_config_reloads_total{result=\"failure\"}",
        )
    };
    eventually("the refused reload", &setup.log, || failures() == Some(1.0));

    // The port comes free: the file did not change, but the config it
    // holds is not applied yet, so attache tries again.
    drop(taken);
    eventually("the added listener", &setup.log, || {
        let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut app = BufReader::new(stream);
        app.get_mut().write_all(&support::cmd(&["PING"])).unwrap();
        let mut line = String::new();
        app.read_line(&mut line).is_ok() && line == "+PONG\r\n"
    });
    assert_eq!(failures(), Some(1.0), "the retries are not counted again");
}

/// A config written in steps over more than a check (every second): no
/// half of it is applied nor refused; the whole is applied once.
#[test]
fn a_config_written_in_steps_is_taken_whole_once() {
    let upstream = RedisServer::start();
    let setup = start(&upstream, "");
    eventually("/ready", &setup.log, || {
        matches!(http(setup.admin, "GET", "/ready"), Some((200, _)))
    });
    let port = free_port();
    let file = setup.log.with_file_name("attache.toml");
    let config = std::fs::read_to_string(&file).unwrap()
        + &format!(
            "\n[redis.extra]\nlisten = \"127.0.0.1:{port}\"\nservers = [\"{}\"]\n",
            upstream.addr()
        );
    // Eight growing prefixes, 150 ms apart: the checks see some of them.
    let steps = 8;
    for i in 1..=steps {
        let mut end = config.len() * i / steps;
        while !config.is_char_boundary(end) {
            end += 1;
        }
        std::fs::write(&file, &config[..end]).unwrap();
        std::thread::sleep(Duration::from_millis(150));
    }
    let reloads = |result: &str| {
        let metrics = http(setup.admin, "GET", "/metrics").map(|(_, m)| m);
        metric(
            &metrics.unwrap_or_default(),
            &format!("attache_config_reloads_total{{result=\"{result}\"}}"),
        )
    };
    eventually("the whole config", &setup.log, || {
        reloads("success") == Some(1.0)
    });
    assert_eq!(reloads("failure"), Some(0.0), "a half was refused");
    TcpStream::connect(("127.0.0.1", port)).expect("the added listener");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(reloads("success"), Some(1.0), "applied more than once");
}
