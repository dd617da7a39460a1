//! The systems under test: which ones a run measures, and how each is started
//! on free loopback ports with its config in the scratch directory.
//!
//! Adding a target is a line in [`plan`] plus, for a new topology, its
//! backends in [`Backends::start`] and a config arm in the starter.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, Instant};

use crate::configs;
use crate::procfs;
use crate::procs::{free_addr, ChildGuard};

/// How a target reaches its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Topology {
    /// One redis-server.
    Single,
    /// Three redis-servers behind ketama (fnv1a_64), twemproxy's defaults.
    Ketama3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The generator talks to redis-server itself: the baseline.
    Direct,
    Attache,
    Twemproxy,
    Envoy,
}

#[derive(Clone, Debug)]
pub(crate) struct TargetSpec {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) topology: Topology,
}

/// The targets of a run, in the order each round visits them.
pub(crate) fn plan(sharded: bool, envoy: bool) -> Vec<TargetSpec> {
    let spec = |name, kind, topology| TargetSpec {
        name,
        kind,
        topology,
    };
    let mut plan = vec![
        spec("direct", Kind::Direct, Topology::Single),
        spec("attache", Kind::Attache, Topology::Single),
        spec("twemproxy", Kind::Twemproxy, Topology::Single),
    ];
    if envoy {
        plan.push(spec("envoy", Kind::Envoy, Topology::Single));
    }
    if sharded {
        plan.push(spec("attache-ketama3", Kind::Attache, Topology::Ketama3));
        plan.push(spec(
            "twemproxy-ketama3",
            Kind::Twemproxy,
            Topology::Ketama3,
        ));
    }
    plan
}

/// The programs the targets run; `None` skips the targets that need it.
#[derive(Clone, Debug)]
pub(crate) struct Programs {
    /// `server_connections` for every proxy that has the setting.
    pub(crate) server_connections: usize,
    pub(crate) redis_server: PathBuf,
    pub(crate) attache: PathBuf,
    pub(crate) nutcracker: Option<PathBuf>,
    pub(crate) envoy: Option<PathBuf>,
}

/// A redis-server started by the bench.
pub(crate) struct RedisServer {
    pub(crate) addr: SocketAddr,
    pub(crate) process: ChildGuard,
}

/// The redis-servers behind the targets. Targets share them: runs never
/// overlap, and every target sees the same data and server state.
pub(crate) struct Backends {
    single: RedisServer,
    shards: Vec<RedisServer>,
}

impl Backends {
    pub(crate) async fn start(
        programs: &Programs,
        scratch: &Path,
        sharded: bool,
    ) -> Result<Self, String> {
        let single = start_redis(programs, scratch, "redis").await?;
        let mut shards = Vec::new();
        if sharded {
            for i in 0..3 {
                shards.push(start_redis(programs, scratch, &format!("redis-shard{i}")).await?);
            }
        }
        Ok(Self { single, shards })
    }

    fn of(&self, topology: Topology) -> &[RedisServer] {
        match topology {
            Topology::Single => std::slice::from_ref(&self.single),
            Topology::Ketama3 => &self.shards,
        }
    }
}

/// A started target, stopped when dropped.
pub(crate) struct Target {
    pub(crate) spec: TargetSpec,
    pub(crate) name: &'static str,
    pub(crate) addr: SocketAddr,
    /// One line for the report: program, version, settings.
    pub(crate) about: String,
    /// The process whose CPU and memory the report charges to the target:
    /// the proxy, or redis-server itself for a direct target.
    pub(crate) measured_pid: u32,
    /// The redis-servers behind a proxy (empty for a direct target).
    pub(crate) backend_pids: Vec<u32>,
    /// VmRSS once ready, before any load.
    pub(crate) startup_rss_kib: u64,
    _process: Option<ChildGuard>,
}

impl TargetSpec {
    /// Starts the target; `Err` is a one-paragraph reason to skip it.
    pub(crate) async fn start(
        &self,
        programs: &Programs,
        backends: &Backends,
        scratch: &Path,
    ) -> Result<Target, String> {
        let servers = backends.of(self.topology);
        let backend_pids = servers.iter().map(|s| s.process.pid()).collect();
        let (addr, about, process) = match self.kind {
            Kind::Direct => {
                let about = crate::procs::version_line(&programs.redis_server, &["--version"]);
                let about = about.unwrap_or_else(|| "redis-server".into());
                (servers[0].addr, about, None)
            }
            Kind::Attache => start_attache(self, programs, servers, scratch).await?,
            Kind::Twemproxy => start_twemproxy(self, programs, servers, scratch).await?,
            Kind::Envoy => start_envoy(self, programs, servers, scratch).await?,
        };
        let (measured_pid, backend_pids) = match &process {
            Some(p) => (p.pid(), backend_pids),
            None => (servers[0].process.pid(), Vec::new()),
        };
        let startup_rss_kib = procfs::rss_kib(measured_pid).map_err(|e| e.to_string())?;
        Ok(Target {
            spec: self.clone(),
            name: self.name,
            addr,
            about,
            measured_pid,
            backend_pids,
            startup_rss_kib,
            _process: process,
        })
    }
}

type Started = (SocketAddr, String, Option<ChildGuard>);

async fn start_redis(
    programs: &Programs,
    scratch: &Path,
    name: &str,
) -> Result<RedisServer, String> {
    let addr = free_addr().map_err(|e| e.to_string())?;
    let dir = instance_dir(scratch, name)?;
    let port = addr.port().to_string();
    let args = [
        "--port",
        &port,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
        "--daemonize",
        "no",
        "--dir",
    ];
    let args = args.iter().map(|s| s.as_ref()).chain([dir.as_os_str()]);
    let log = dir.join("log");
    let process = ChildGuard::spawn(name, &programs.redis_server, args, &[], &log)
        .map_err(|e| e.to_string())?;
    wait_ready(addr, &process).await?;
    Ok(RedisServer { addr, process })
}

/// `attache run --config FILE` with one Redis listener named `bench`.
async fn start_attache(
    spec: &TargetSpec,
    programs: &Programs,
    servers: &[RedisServer],
    scratch: &Path,
) -> Result<Started, String> {
    let addr = free_addr().map_err(|e| e.to_string())?;
    let admin = free_addr().map_err(|e| e.to_string())?;
    let conns = programs.server_connections;
    let config = configs::attache_toml(admin, addr, spec.topology, &addrs(servers), conns);
    let dir = instance_dir(scratch, spec.name)?;
    let file = dir.join("attache.toml");
    std::fs::write(&file, config).map_err(|e| e.to_string())?;
    let args = ["run".as_ref(), "--config".as_ref(), file.as_os_str()];
    let log = dir.join("log");
    // Logging to a file on every request would be measured too: warnings only.
    let env = [("RUST_LOG", "warn")];
    let process = ChildGuard::spawn(spec.name, &programs.attache, args, &env, &log)
        .map_err(|e| e.to_string())?;
    wait_ready(addr, &process).await?;
    let about = format!(
        "{} ({:?}, server_connections {conns})",
        programs.attache.display(),
        spec.topology
    );
    Ok((addr, about, Some(process)))
}

/// nutcracker, configured like attache (see `configs::nutcracker_yaml`),
/// with its stats port on a free port instead of the fixed 22222.
async fn start_twemproxy(
    spec: &TargetSpec,
    programs: &Programs,
    servers: &[RedisServer],
    scratch: &Path,
) -> Result<Started, String> {
    let program = programs
        .nutcracker
        .as_ref()
        .ok_or("nutcracker is not on PATH (apt-get install nutcracker)")?;
    let addr = free_addr().map_err(|e| e.to_string())?;
    let stats = free_addr().map_err(|e| e.to_string())?;
    let conns = programs.server_connections;
    let config = configs::nutcracker_yaml(addr, spec.topology, &addrs(servers), conns);
    let dir = instance_dir(scratch, spec.name)?;
    let file = dir.join("nutcracker.yml");
    std::fs::write(&file, config).map_err(|e| e.to_string())?;
    let stats_port = stats.port().to_string();
    let args = [
        "-c".as_ref(),
        file.as_os_str(),
        "-s".as_ref(),
        stats_port.as_ref(),
        "-a".as_ref(),
        "127.0.0.1".as_ref(),
    ];
    let log = dir.join("log");
    let process =
        ChildGuard::spawn(spec.name, program, args, &[], &log).map_err(|e| e.to_string())?;
    wait_ready(addr, &process).await?;
    let version = crate::procs::version_line(program, &["-V"]).unwrap_or_default();
    let about = format!(
        "{} (server_connections {}, preconnect, one thread)",
        version.trim_start_matches("This is "),
        programs.server_connections
    );
    Ok((addr, about, Some(process)))
}

/// Envoy's redis_proxy, only when `ENVOY_BIN` names a binary. Untested here:
/// this machine has no envoy.
async fn start_envoy(
    spec: &TargetSpec,
    programs: &Programs,
    servers: &[RedisServer],
    scratch: &Path,
) -> Result<Started, String> {
    let program = programs.envoy.as_ref().ok_or("ENVOY_BIN is not set")?;
    let addr = free_addr().map_err(|e| e.to_string())?;
    let admin = free_addr().map_err(|e| e.to_string())?;
    let config = configs::envoy_yaml(admin, addr, &addrs(servers));
    let dir = instance_dir(scratch, spec.name)?;
    let file = dir.join("envoy.yaml");
    std::fs::write(&file, config).map_err(|e| e.to_string())?;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .to_string();
    let args = [
        "-c".as_ref(),
        file.as_os_str(),
        "--concurrency".as_ref(),
        threads.as_ref(),
        "--disable-hot-restart".as_ref(),
        "--log-level".as_ref(),
        "warn".as_ref(),
    ];
    let log = dir.join("log");
    let process =
        ChildGuard::spawn(spec.name, program, args, &[], &log).map_err(|e| e.to_string())?;
    wait_ready(addr, &process).await?;
    let about = format!("envoy redis_proxy, --concurrency {threads}");
    Ok((addr, about, Some(process)))
}

/// A new directory for one process's config, log and data: `NAME-N`, where
/// N counts instances, since a target may be started more than once.
fn instance_dir(scratch: &Path, name: &str) -> Result<PathBuf, String> {
    static INSTANCES: AtomicUsize = AtomicUsize::new(0);
    let n = INSTANCES.fetch_add(1, Ordering::Relaxed);
    let dir = scratch.join(format!("{name}-{n}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

fn addrs(servers: &[RedisServer]) -> Vec<SocketAddr> {
    servers.iter().map(|s| s.addr).collect()
}

/// Waits until a GET through `addr` gets a bulk reply: the target listens
/// and reaches its upstream. Fails early if the process exits.
async fn wait_ready(addr: SocketAddr, process: &ChildGuard) -> Result<(), String> {
    const LIMIT: Duration = Duration::from_secs(10);
    let deadline = Instant::now() + LIMIT;
    let mut last = String::from("never connected");
    while Instant::now() < deadline {
        if let Some(status) = process.exit_status() {
            return Err(format!(
                "exited ({status}) before serving {addr}\n  {}",
                process.log_tail()
            ));
        }
        match timeout(Duration::from_secs(1), probe(addr)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last = e,
            Err(_) => last = "no reply within 1s".into(),
        }
        sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "not serving {addr} after {LIMIT:?} ({last})\n  {}",
        process.log_tail()
    ))
}

async fn probe(addr: SocketAddr) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let get = b"*2\r\n$3\r\nGET\r\n$13\r\nbench:ready:0\r\n";
    stream.write_all(get).await.map_err(|e| e.to_string())?;
    let mut reply = [0u8; 128];
    let n = stream.read(&mut reply).await.map_err(|e| e.to_string())?;
    match reply[..n].first() {
        Some(b'$') => Ok(()),
        _ => Err(format!(
            "GET replied {:?}",
            String::from_utf8_lossy(&reply[..n])
        )),
    }
}
