//! Every config file shipped under `config/` is valid, and the loader's
//! contract holds: environment overrides, unknown keys, durations, errors
//! that name the file and the key.
//!
//! Environment variables are process-global and tests run on threads, so
//! every `load` here holds `ENV` (see [`load`] and [`EnvVars`]): an override
//! set by one test must never leak into another's load.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use attache::config::{Config, ConfigError};

static ENV: Mutex<()> = Mutex::new(());

fn env_lock() -> MutexGuard<'static, ()> {
    // A failed test poisons the lock; the environment is still restored by
    // `EnvVars::drop`, so the others may go on.
    ENV.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Loads `path` with no test's environment overrides in effect.
fn load(path: &Path) -> Result<Config, ConfigError> {
    let _env = env_lock();
    attache::config::load(path)
}

/// Environment variables set for the life of the value (and the lock held
/// meanwhile); removed on drop, even when the test panics.
struct EnvVars {
    names: Vec<String>,
    _lock: MutexGuard<'static, ()>,
}

impl EnvVars {
    fn set(vars: &[(&str, &str)]) -> Self {
        let lock = env_lock();
        for (name, value) in vars {
            std::env::set_var(name, value);
        }
        Self {
            names: vars.iter().map(|(name, _)| name.to_string()).collect(),
            _lock: lock,
        }
    }
}

impl Drop for EnvVars {
    fn drop(&mut self) {
        for name in &self.names {
            std::env::remove_var(name);
        }
    }
}

const MINIMAL: &str =
    "[redis.cache]\nlisten = \"127.0.0.1:6379\"\nservers = [\"127.0.0.1:7000\"]\n";

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

/// Loads `MINIMAL` plus `extra` lines in `[redis.cache]`.
fn load_cache_with(extra: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().expect("temp dir");
    load(&write(&dir, "attache.toml", &format!("{MINIMAL}{extra}\n")))
}

fn config_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read config dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            config_files(&path, found);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("toml" | "yaml" | "yml")
        ) {
            found.push(path);
        }
    }
}

fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

#[test]
fn every_shipped_config_is_valid() {
    let mut files = Vec::new();
    config_files(&shipped_dir(), &mut files);
    files.sort();
    assert!(
        files.iter().any(|f| f.ends_with("config/attache.toml")),
        "config/attache.toml is missing; found {files:?}"
    );
    assert!(
        files
            .iter()
            .any(|f| matches!(f.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))),
        "no YAML example under config/"
    );
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| load(f).err().map(|e| e.to_string()))
        .collect();
    assert!(
        failures.is_empty(),
        "invalid shipped configs:\n{}",
        failures.join("\n")
    );
}

/// `config/attache.toml` documents the defaults: it shows every field, at
/// the value the code uses when the field is left out.
#[test]
fn default_config_shows_every_field_at_its_default() {
    let path = shipped_dir().join("attache.toml");
    let documented = load(&path).expect("config/attache.toml is valid");
    let cache = &documented.redis["cache"];
    assert_eq!(cache.listen.to_string(), "127.0.0.1:6379");
    assert_eq!(cache.servers.len(), 1);

    let dir = tempfile::tempdir().expect("temp dir");
    let minimal = write(
        &dir,
        "minimal.toml",
        &format!(
            "[redis.cache]\nlisten = \"127.0.0.1:6379\"\nservers = [\"{}\"]\n",
            cache.servers[0]
        ),
    );
    let defaults = load(&minimal).expect("minimal config is valid");
    assert_eq!(
        documented, defaults,
        "a field in config/attache.toml is not at its default"
    );

    // Every key the effective config has is written out in the file (auth
    // is optional and shown commented out).
    let text = std::fs::read_to_string(&path).expect("read config/attache.toml");
    let file: toml::Table = text.parse().expect("config/attache.toml is TOML");
    let effective = toml::Table::try_from(&defaults).expect("config serializes");
    for section in ["admin", "runtime", "log", "dns", "redis.cache"] {
        let get = |t: &toml::Table| {
            section
                .split('.')
                .try_fold(t, |t, k| t.get(k)?.as_table())
                .cloned()
                .unwrap_or_default()
        };
        let shown = get(&file);
        for key in get(&effective).keys() {
            assert!(
                shown.contains_key(key),
                "config/attache.toml does not show {section}.{key}"
            );
        }
    }
    assert!(text.contains("# [redis.cache.auth]"), "auth is documented");
    assert!(text.contains("# [redis.cache.tls]"), "tls is documented");
    assert!(text.contains("# [tokens.redis]"), "tokens are documented");
}

#[test]
fn yaml_and_yml_load_like_toml() {
    let dir = tempfile::tempdir().expect("temp dir");
    let yaml = "redis:\n  cache:\n    listen: 127.0.0.1:6379\n    servers: [\"127.0.0.1:7000\"]\n";
    let from_toml = load(&write(&dir, "a.toml", MINIMAL)).expect("toml");
    for name in ["a.yaml", "a.yml"] {
        assert_eq!(
            load(&write(&dir, name, yaml)).expect(name),
            from_toml,
            "{name}"
        );
    }
    let err = load(&write(&dir, "a.json", "{}")).unwrap_err().to_string();
    assert!(
        err.contains("a.json") && err.contains("unknown config format"),
        "{err}"
    );
}

#[test]
fn durations_are_human_readable() {
    for (text, expected) in [
        ("250ms", Duration::from_millis(250)),
        ("1s", Duration::from_secs(1)),
        ("2m", Duration::from_secs(120)),
        ("1m 30s", Duration::from_secs(90)),
    ] {
        let config = load_cache_with(&format!(
            "timeout = \"{text}\"\nconnect_timeout = \"{text}\""
        ))
        .unwrap_or_else(|e| panic!("{text}: {e}"));
        let cache = &config.redis["cache"];
        assert_eq!(
            (cache.timeout, cache.connect_timeout),
            (expected, expected),
            "{text}"
        );
    }
}

#[test]
fn a_bad_duration_names_the_key_and_the_value() {
    let err = load_cache_with("timeout = \"soon\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("attache.toml"), "{err}");
    assert!(err.contains("redis.cache.timeout"), "{err}");
    assert!(
        err.contains("\"soon\"") && err.contains("duration"),
        "{err}"
    );

    let err = load_cache_with("timeout = \"0s\"").unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { key, .. } if key == "redis.cache.timeout"),
        "{err}"
    );
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (text, key) in [
        (
            format!("{MINIMAL}timeout_ms = 5\n"),
            "redis.cache.timeout_ms",
        ),
        (
            format!("[adminn]\nlisten = \"127.0.0.1:9901\"\n{MINIMAL}"),
            "adminn",
        ),
        (
            format!("{MINIMAL}[redis.cache.auth]\npasword_file = \"/p\"\n"),
            "redis.cache.auth.pasword_file",
        ),
    ] {
        let err = load(&write(&dir, "typo.toml", &text))
            .unwrap_err()
            .to_string();
        assert!(err.contains("typo.toml"), "{err}");
        assert!(
            err.contains(&format!("key {key}:")) && err.contains("unknown field"),
            "{err}"
        );
    }
}

#[test]
fn a_non_loopback_listen_needs_allow_remote() {
    let dir = tempfile::tempdir().expect("temp dir");
    let remote = "[redis.cache]\nlisten = \"0.0.0.0:6379\"\nservers = [\"127.0.0.1:7000\"]\n";
    let err = load(&write(&dir, "remote.toml", remote)).unwrap_err();
    match &err {
        ConfigError::Invalid { file, key, message } => {
            assert!(file.ends_with("remote.toml"));
            assert_eq!(key, "redis.cache.listen");
            assert!(message.contains("allow_remote"), "{message}");
        }
        other => panic!("expected Invalid, got {other}"),
    }
    let allowed = format!("{remote}allow_remote = true\n");
    let config = load(&write(&dir, "remote.toml", &allowed)).expect("allow_remote = true");
    assert!(config.redis["cache"].allow_remote);
}

#[test]
fn auth_takes_exactly_one_password_source() {
    for (auth, ok) in [
        ("password_file = \"/p\"", true),
        ("username = \"u\"\npassword_env = \"P\"", true),
        ("password_file = \"/p\"\npassword_env = \"P\"", false),
        ("username = \"u\"", false),
    ] {
        let result = load_cache_with(&format!("[redis.cache.auth]\n{auth}"));
        match result {
            Ok(_) => assert!(ok, "{auth}: accepted"),
            Err(ConfigError::Invalid { key, .. }) if !ok => assert_eq!(key, "redis.cache.auth"),
            Err(e) => panic!("{auth}: {e}"),
        }
    }
}

#[test]
fn environment_overrides_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(&dir, "attache.toml", MINIMAL);
    let _env = EnvVars::set(&[
        ("ATTACHE_REDIS__CACHE__LISTEN", "127.0.0.1:6380"),
        ("ATTACHE_REDIS__CACHE__TIMEOUT", "250ms"),
        ("ATTACHE_ADMIN__LISTEN", "127.0.0.1:9911"),
        // Names the file for the binary; it is not a config key.
        ("ATTACHE_CONFIG", "/elsewhere/attache.toml"),
    ]);
    let config = attache::config::load(&path).expect("overridden config is valid");
    let cache = &config.redis["cache"];
    assert_eq!(cache.listen.to_string(), "127.0.0.1:6380");
    assert_eq!(cache.timeout, Duration::from_millis(250));
    assert_eq!(
        cache.servers[0].to_string(),
        "127.0.0.1:7000:1",
        "untouched"
    );
    assert_eq!(config.admin.listen.to_string(), "127.0.0.1:9911");
}

#[test]
fn environment_overrides_are_validated_and_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(&dir, "attache.toml", MINIMAL);
    for (name, value, what) in [
        ("ATTACHE_REDIS__CACHE__LISTEN", "nope", "socket address"),
        ("ATTACHE_REDIS__CACHE__TIMEOUT", "soon", "duration"),
        ("ATTACHE_REDIS__CACHE__TIMEOUTT", "1s", "unknown field"),
        (
            "ATTACHE_REDIS__CACHE__LISTEN",
            "0.0.0.0:6379",
            "allow_remote",
        ),
    ] {
        let _env = EnvVars::set(&[(name, value)]);
        let err = attache::config::load(&path).unwrap_err().to_string();
        let key = name["ATTACHE_".len()..].to_lowercase().replace("__", ".");
        assert!(
            err.contains(&key) && err.contains(what),
            "{name}={value}: {err}"
        );
    }
    // A type error from the environment names the variable, not just the file.
    let _env = EnvVars::set(&[("ATTACHE_REDIS__CACHE__LISTEN", "nope")]);
    let err = attache::config::load(&path).unwrap_err().to_string();
    assert!(err.contains("ATTACHE_REDIS__CACHE__LISTEN"), "{err}");
}

#[test]
fn environment_overrides_one_listener_of_several() {
    let path = shipped_dir().join("examples/two-listeners.yaml");
    let _env = EnvVars::set(&[("ATTACHE_REDIS__SESSIONS__LISTEN", "127.0.0.1:16380")]);
    let config = attache::config::load(&path).expect("valid");
    assert_eq!(
        config.redis["sessions"].listen.to_string(),
        "127.0.0.1:16380"
    );
    assert_eq!(config.redis["cache"].listen.to_string(), "127.0.0.1:6379");
}

/// The configs the Kubernetes manifests mount (`k8s/**/attache.toml`) are
/// valid attache configs.
#[test]
fn every_k8s_config_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s");
    let mut files = Vec::new();
    config_files(&root, &mut files);
    files.retain(|f| f.file_name().is_some_and(|n| n == "attache.toml"));
    files.sort();
    assert!(files.len() >= 4, "k8s configs: {files:?}");
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| load(f).err().map(|e| format!("{}: {e}", f.display())))
        .collect();
    assert!(
        failures.is_empty(),
        "invalid k8s configs:\n{}",
        failures.join("\n")
    );
}

/// `[http.NAME]` errors name the key: a token source that does not exist,
/// a bad upstream, a route's field, an address another listener has.
#[test]
fn http_listener_errors_name_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let http = "[http.api]\nlisten = \"127.0.0.1:8080\"\n";
    for (text, key) in [
        (
            format!("{http}upstream = \"https://a.example\"\ntoken = \"nope\"\n"),
            "http.api.token",
        ),
        (format!("{http}upstream = \"ftp://a.example\"\n"), "http.api.upstream"),
        (
            format!("{http}[[http.api.routes]]\nprefix = \"v1\"\nupstream = \"http://a\"\n"),
            "http.api.routes[0].prefix",
        ),
        (
            format!("{MINIMAL}[http.api]\nlisten = \"127.0.0.1:6379\"\nupstream = \"http://a\"\n"),
            "http.api.listen",
        ),
        (
            format!("{MINIMAL}[http.cache]\nlisten = \"127.0.0.1:8080\"\nupstream = \"http://a\"\n"),
            "http.cache",
        ),
        (
            format!("{http}upstream = \"http://a\"\n[http.api.headers]\nx-key = {{ value = \"v\", value_env = \"V\" }}\n"),
            "http.api.headers.x-key",
        ),
    ] {
        match load(&write(&dir, "http.toml", &text)) {
            Err(ConfigError::Invalid { key: got, message, .. }) => {
                assert_eq!(got, key, "{message}")
            }
            other => panic!("{text}: expected an error naming {key}, got {other:?}"),
        }
    }
    let err = load(&write(
        &dir,
        "http.toml",
        &format!("{http}upstream = \"http://a\"\ntimout = \"1s\"\n"),
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("key http.api.timout:") && err.contains("unknown field"),
        "{err}"
    );
}

#[test]
fn an_upstream_written_as_attaches_own_listen_address_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = "[redis.cache]\nlisten = \"127.0.0.1:6390\"\n";
    for (text, key, names) in [
        (
            format!(
                "{redis}mode = \"ketama\"\nservers = [\"10.0.0.1:6390\", \"localhost:6390\"]\n"
            ),
            "redis.cache.servers[1]",
            "localhost:6390 is redis.cache's own listen address (127.0.0.1:6390)",
        ),
        (
            format!(
                "{redis}servers = [\"redis:6379\"]\n[http.api]\nlisten = \"0.0.0.0:8080\"\n\
                 allow_remote = true\nupstream = \"http://127.0.0.1:8080\"\n"
            ),
            "http.api.upstream",
            "127.0.0.1:8080 is http.api's own listen address (0.0.0.0:8080)",
        ),
        (
            format!(
                "{redis}servers = [\"redis:6379\"]\n[http.api]\nlisten = \"127.0.0.1:8080\"\n\
                 upstream = \"http://a\"\n[[http.api.routes]]\nprefix = \"/r\"\n\
                 upstream = \"http://[::ffff:127.0.0.1]:6390\"\n"
            ),
            "http.api.routes[0].upstream",
            "is redis.cache's own listen address",
        ),
    ] {
        match load(&write(&dir, "loop.toml", &text)) {
            Err(ConfigError::Invalid {
                key: got, message, ..
            }) => {
                assert_eq!(got, key, "{message}");
                assert!(message.contains(names), "{message}");
                assert!(
                    message.contains("proxy every request to itself"),
                    "{message}"
                );
            }
            other => panic!("{text}: expected an error naming {key}, got {other:?}"),
        }
    }
    // Same port, another host; a name; the same port on another loopback
    // address than the listener's: all fine.
    let fine = format!(
        "{redis}mode = \"ketama\"\nservers = [\"10.0.0.1:6390\", \"redis:6390\", \"127.0.0.2:6390\"]\n"
    );
    load(&write(&dir, "fine.toml", &fine)).expect("not a loop");
}
