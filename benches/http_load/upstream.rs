//! The upstream behind every target, started once per run so that direct
//! calls and both proxies reach the same server in the same state: the
//! builtin origin (see `origin`), or nginx serving static files.

use std::net::SocketAddr;
use std::path::Path;

use crate::configs;
use crate::loadgen;
use crate::nginx::{self, Nginx};
use crate::options::{body_path, Options, UpstreamKind};
use crate::origin;
use crate::procs::{free_addr, instance_dir, wait_serving, ChildGuard};

/// A running upstream, stopped when dropped.
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    /// One line for the report.
    pub(crate) about: String,
    /// Its processes: what `direct` is charged for, and the servers behind
    /// each proxy.
    pub(crate) pids: Vec<u32>,
    _process: ChildGuard,
}

impl Upstream {
    pub(crate) async fn start(
        opts: &Options,
        nginx_bin: Option<&Path>,
        scratch: &Path,
    ) -> Result<Self, String> {
        let addr = free_addr().map_err(|e| e.to_string())?;
        let dir = instance_dir(scratch, "upstream")?;
        let threads = opts.upstream_threads.max(1);
        let (process, pids, about) = match opts.upstream {
            UpstreamKind::Builtin => {
                let exe = std::env::current_exe().map_err(|e| format!("this bench's path: {e}"))?;
                let args = origin::serve_args(addr, threads, &opts.body_sizes);
                let log = dir.join("log");
                let process = ChildGuard::spawn("upstream", &exe, args, &[], &log)
                    .map_err(|e| e.to_string())?;
                wait_ready(addr, &process, opts).await?;
                let pid = process.pid();
                let about = format!(
                    "builtin HTTP/1.1 origin (this bench re-executed, {threads} thread(s))"
                );
                (process, vec![pid], about)
            }
            UpstreamKind::Nginx => {
                let program = nginx_bin.ok_or(
                    "--upstream nginx: nginx is not on PATH (apt-get install -y nginx-light)",
                )?;
                let root = dir.join("www");
                write_bodies(&root, &opts.body_sizes)?;
                let temp = nginx::temp_paths(program);
                let conf = configs::nginx_static_conf(&dir, threads, &temp, addr, &root);
                let nginx = Nginx::spawn("upstream", program, &dir, &conf)?;
                wait_ready(addr, &nginx.process, opts).await?;
                let pids = nginx.pids(threads).await?;
                let about = format!(
                    "{}, static files, worker_processes {threads}",
                    nginx.version.trim_start_matches("nginx version: ")
                );
                (nginx.process, pids, about)
            }
        };
        Ok(Self {
            addr,
            about,
            pids,
            _process: process,
        })
    }
}

/// `root/bytes/N` holding N bytes, for each body size.
fn write_bodies(root: &Path, sizes: &[usize]) -> Result<(), String> {
    let dir = root.join("bytes");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for &size in sizes {
        let file = dir.join(size.to_string());
        std::fs::write(&file, vec![b'x'; size]).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    Ok(())
}

/// Waits until a GET of the first body size through `addr` is answered in
/// full: used for the upstream and for every target.
pub(crate) async fn wait_ready(
    addr: SocketAddr,
    process: &ChildGuard,
    opts: &Options,
) -> Result<(), String> {
    let size = opts.body_sizes.first().copied().unwrap_or(0);
    let path = body_path(size);
    wait_serving(addr, process, async || {
        loadgen::probe(addr, &path, size)
            .await
            .map_err(|e| e.to_string())
    })
    .await
}
