//! The systems under test, in the order each round visits them: `direct`
//! (the generator calls the upstream), `attache` and `nginx` (each in front
//! of it), started on free loopback ports with their configs in the
//! scratch directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::configs;
use crate::measure::sum_kib;
use crate::nginx::{self, Nginx};
use crate::options::Options;
use crate::procfs;
use crate::procs::{free_addr, instance_dir, ChildGuard};
use crate::rounds::Named;
use crate::upstream::{wait_ready, Upstream};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The generator calls the upstream itself: the baseline.
    Direct,
    Attache,
    Nginx,
}

impl Kind {
    pub(crate) const ALL: [Kind; 3] = [Kind::Direct, Kind::Attache, Kind::Nginx];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Attache => "attache",
            Kind::Nginx => "nginx",
        }
    }
}

/// The programs the proxies run.
pub(crate) struct Programs {
    pub(crate) attache: PathBuf,
    /// `None`: the nginx target is skipped.
    pub(crate) nginx: Option<PathBuf>,
}

/// A started target, stopped when dropped.
pub(crate) struct Target {
    pub(crate) name: &'static str,
    pub(crate) addr: SocketAddr,
    /// One line for the report: program, version, settings.
    pub(crate) about: String,
    /// The processes whose CPU and memory the report charges to the
    /// target: the proxy (nginx: master and workers), or the upstream for
    /// `direct`.
    pub(crate) measured_pids: Vec<u32>,
    /// The upstream's processes, behind a proxy (empty for `direct`).
    pub(crate) backend_pids: Vec<u32>,
    /// VmRSS once ready, before any load (summed over `measured_pids`).
    pub(crate) startup_rss_kib: u64,
    _process: Option<ChildGuard>,
}

impl Named for Target {
    fn name(&self) -> &str {
        self.name
    }
}

impl Kind {
    /// Starts the target in front of `upstream`; `Err` is a one-paragraph
    /// reason to skip it.
    pub(crate) async fn start(
        self,
        opts: &Options,
        programs: &Programs,
        upstream: &Upstream,
        scratch: &Path,
    ) -> Result<Target, String> {
        let (addr, about, measured_pids, process) = match self {
            Kind::Direct => {
                let about = format!("the upstream itself: {}", upstream.about);
                (upstream.addr, about, upstream.pids.clone(), None)
            }
            Kind::Attache => start_attache(opts, programs, upstream, scratch).await?,
            Kind::Nginx => start_nginx(opts, programs, upstream, scratch).await?,
        };
        let backend_pids = match self {
            Kind::Direct => Vec::new(),
            _ => upstream.pids.clone(),
        };
        let startup_rss_kib =
            sum_kib(&measured_pids, procfs::rss_kib).map_err(|e| e.to_string())?;
        Ok(Target {
            name: self.name(),
            addr,
            about,
            measured_pids,
            backend_pids,
            startup_rss_kib,
            _process: process,
        })
    }
}

type Started = (SocketAddr, String, Vec<u32>, Option<ChildGuard>);

/// `attache run --config FILE` with one HTTP listener named `bench`, after
/// `attache check` has accepted the file: a binary without HTTP listeners
/// rejects `[http]`, and the bench says so instead of a startup failure.
async fn start_attache(
    opts: &Options,
    programs: &Programs,
    upstream: &Upstream,
    scratch: &Path,
) -> Result<Started, String> {
    let addr = free_addr().map_err(|e| e.to_string())?;
    let admin = free_addr().map_err(|e| e.to_string())?;
    let workers = opts.workers.max(1);
    let config = configs::attache_toml(admin, addr, upstream.addr, workers);
    let dir = instance_dir(scratch, "attache")?;
    let file = dir.join("attache.toml");
    std::fs::write(&file, config).map_err(|e| format!("{}: {e}", file.display()))?;
    check_attache(&programs.attache, &file)?;
    let args = ["run".as_ref(), "--config".as_ref(), file.as_os_str()];
    let log = dir.join("log");
    // Logging to a file on every request would be measured too: warnings only.
    let env = [("RUST_LOG", "warn")];
    let process = ChildGuard::spawn("attache", &programs.attache, args, &env, &log)
        .map_err(|e| e.to_string())?;
    wait_ready(addr, &process, opts).await?;
    let about = format!(
        "{} ([runtime] workers = {workers}, max_idle_per_host = 64)",
        programs.attache.display()
    );
    let pids = vec![process.pid()];
    Ok((addr, about, pids, Some(process)))
}

/// `attache check --config FILE`; a rejection of the `[http]` table is
/// reported as what it means: this attache has no HTTP listeners yet.
fn check_attache(program: &Path, config: &Path) -> Result<(), String> {
    let out = Command::new(program)
        .arg("check")
        .arg("--config")
        .arg(config)
        .output()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&[out.stderr, out.stdout].concat()).into_owned();
    let said = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let said = said.trim().trim_start_matches("attache: ");
    if said.contains("`http`") {
        return Err(format!(
            "this attache binary has no HTTP listener: `attache check` rejects `[http.bench]` \
             ({said}); rebuild once the HTTP ambassador is merged"
        ));
    }
    Err(format!(
        "`attache check` rejected the bench's config: {said}"
    ))
}

/// nginx as a reverse proxy, configured like attache: the same number of
/// workers, a pool of 64 idle keep-alive upstream connections.
async fn start_nginx(
    opts: &Options,
    programs: &Programs,
    upstream: &Upstream,
    scratch: &Path,
) -> Result<Started, String> {
    let program = programs
        .nginx
        .as_ref()
        .ok_or("nginx is not on PATH (apt-get install -y nginx-light)")?;
    let addr = free_addr().map_err(|e| e.to_string())?;
    let dir = instance_dir(scratch, "nginx")?;
    let workers = opts.workers.max(1);
    let temp = nginx::temp_paths(program);
    let conf = configs::nginx_proxy_conf(&dir, workers, &temp, addr, upstream.addr);
    let nginx = Nginx::spawn("nginx", program, &dir, &conf)?;
    wait_ready(addr, &nginx.process, opts).await?;
    let pids = nginx.pids(workers).await?;
    let about = format!(
        "{}, proxy_pass to an upstream block with keepalive 64, worker_processes {workers} \
         (CPU and RSS: master + workers)",
        nginx.version.trim_start_matches("nginx version: ")
    );
    Ok((addr, about, pids, Some(nginx.process)))
}
