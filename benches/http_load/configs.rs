//! The config files of the servers under test, rendered as text: attache's
//! TOML and nginx's nginx.conf (as the reverse proxy, and as the static
//! upstream).

use std::net::SocketAddr;
use std::path::Path;

/// attache with one HTTP listener named `bench` (the config contract of
/// DESIGN.md) in front of `upstream`. `max_idle_per_host` matches nginx's
/// `keepalive 64`: both keep up to 64 idle upstream connections.
pub(crate) fn attache_toml(
    admin: SocketAddr,
    listen: SocketAddr,
    upstream: SocketAddr,
    workers: usize,
) -> String {
    format!(
        "[admin]\nlisten = \"{admin}\"\n\n[runtime]\nworkers = {workers}\n\n\
         [http.bench]\nlisten = \"{listen}\"\nupstream = \"http://{upstream}\"\n\
         max_idle_per_host = 64\n"
    )
}

/// What both nginx configs share: foreground master with `workers` worker
/// processes, everything (pid, logs, temp files) under `dir`, no access
/// log, and keep-alive connections that are never closed for having served
/// too many requests (nginx's default closes them after 1,000, which the
/// other targets don't do).
fn nginx_main(dir: &Path, workers: usize, temp_paths: &[&str], server: &str) -> String {
    let dir = dir.display();
    // As root, nginx would run its workers as `nobody`, which can read
    // neither the scratch directory (0700) nor its files.
    let user = if running_as_root() {
        "user root;\n"
    } else {
        ""
    };
    let temp: String = temp_paths
        .iter()
        .map(|kind| format!("    {kind}_temp_path {dir}/temp-{kind};\n"))
        .collect();
    format!(
        "{user}daemon off;\nmaster_process on;\nworker_processes {workers};\n\
         pid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\n\n\
         events {{\n    worker_connections 4096;\n}}\n\n\
         http {{\n    access_log off;\n    keepalive_requests 1000000;\n    keepalive_timeout 75s;\n\
         {temp}{server}}}\n"
    )
}

/// nginx as the reverse proxy under test: an `upstream {}` block with a
/// pool of 64 keep-alive connections (HTTP/1.1, `Connection` cleared, as
/// nginx's documentation prescribes for upstream keep-alive), buffering at
/// its defaults.
pub(crate) fn nginx_proxy_conf(
    dir: &Path,
    workers: usize,
    temp_paths: &[&str],
    listen: SocketAddr,
    upstream: SocketAddr,
) -> String {
    let server = format!(
        "    upstream bench {{\n        server {upstream};\n        keepalive 64;\n        \
         keepalive_requests 1000000;\n    }}\n\n    \
         server {{\n        listen {listen};\n        location / {{\n            \
         proxy_pass http://bench;\n            proxy_http_version 1.1;\n            \
         proxy_set_header Connection \"\";\n        }}\n    }}\n"
    );
    nginx_main(dir, workers, temp_paths, &server)
}

/// nginx as the upstream: the files under `root` (`/bytes/N`, N bytes).
pub(crate) fn nginx_static_conf(
    dir: &Path,
    workers: usize,
    temp_paths: &[&str],
    listen: SocketAddr,
    root: &Path,
) -> String {
    let server = format!(
        "    server {{\n        listen {listen};\n        root {};\n        \
         default_type application/octet-stream;\n        sendfile on;\n        \
         open_file_cache max=16;\n    }}\n",
        root.display()
    );
    nginx_main(dir, workers, temp_paths, &server)
}

/// Whether the bench runs with effective uid 0.
fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}
