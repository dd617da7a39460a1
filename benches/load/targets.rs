//! The systems under test: which ones a run measures, and how each is started
//! on free loopback ports with its config in the scratch directory.
//!
//! Adding a target is a line in [`plan`] plus, for a new topology, its
//! backends in [`Backends::start`] and a config arm in the starter.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, Instant};

use crate::configs;
use crate::procfs;
use crate::procs::{free_addr, instance_dir, reserve_port, wait_serving, ChildGuard};

/// How a target reaches its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Topology {
    /// One redis-server.
    Single,
    /// Three redis-servers behind ketama (fnv1a_64), twemproxy's defaults.
    Ketama3,
    /// A 3-primary Redis Cluster (no replicas), created by the bench.
    Cluster3,
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
        // twemproxy has no cluster mode.
        plan.push(spec("attache-cluster3", Kind::Attache, Topology::Cluster3));
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
    cluster: Vec<RedisServer>,
}

impl Backends {
    pub(crate) async fn start(
        programs: &Programs,
        scratch: &Path,
        sharded: bool,
    ) -> Result<Self, String> {
        let single = start_redis(programs, scratch, "redis").await?;
        let (mut shards, mut cluster) = (Vec::new(), Vec::new());
        if sharded {
            for i in 0..3 {
                shards.push(start_redis(programs, scratch, &format!("redis-shard{i}")).await?);
            }
            cluster = start_cluster(programs, scratch).await?;
        }
        Ok(Self {
            single,
            shards,
            cluster,
        })
    }

    fn of(&self, topology: Topology) -> &[RedisServer] {
        match topology {
            Topology::Single => std::slice::from_ref(&self.single),
            Topology::Ketama3 => &self.shards,
            Topology::Cluster3 => &self.cluster,
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
    let process = spawn_redis(programs, addr, &dir, name, &[])?;
    wait_ready(addr, &process).await?;
    Ok(RedisServer { addr, process })
}

/// Starts three cluster-enabled redis-servers, joins them with
/// `redis-cli --cluster create` (3 primaries, no replicas) and waits until
/// every node reports `cluster_state:ok`.
async fn start_cluster(programs: &Programs, scratch: &Path) -> Result<Vec<RedisServer>, String> {
    let mut nodes = Vec::new();
    for i in 0..3 {
        let name = format!("redis-cluster{i}");
        let addr = free_cluster_addr().map_err(|e| e.to_string())?;
        let dir = instance_dir(scratch, &name)?;
        let conf = dir.join(format!("nodes-{}.conf", addr.port()));
        let conf = conf.to_string_lossy();
        let cluster = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &conf,
            "--cluster-node-timeout",
            "5000",
        ];
        let process = spawn_redis(programs, addr, &dir, &name, &cluster)?;
        wait_until(addr, &process, PING, b'+').await?;
        nodes.push(RedisServer { addr, process });
    }
    let cli = programs
        .redis_server
        .with_file_name("redis-cli")
        .is_file()
        .then(|| programs.redis_server.with_file_name("redis-cli"))
        .or_else(|| crate::procs::find_program("redis-cli"))
        .ok_or("redis-cli is not on PATH (apt-get install redis-tools)")?;
    let mut args = vec!["--cluster".to_owned(), "create".to_owned()];
    args.extend(nodes.iter().map(|n| n.addr.to_string()));
    args.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
    let log = instance_dir(scratch, "redis-cli-cluster-create")?.join("log");
    run_to_end(&cli, &args, &log, Duration::from_secs(30)).await?;
    const LIMIT: Duration = Duration::from_secs(30);
    let deadline = Instant::now() + LIMIT;
    for node in &nodes {
        loop {
            let state = timeout(Duration::from_secs(1), cluster_info(node.addr)).await;
            match state {
                Ok(Ok(info)) if info.lines().any(|l| l.trim() == "cluster_state:ok") => break,
                _ if Instant::now() >= deadline => {
                    return Err(format!(
                        "{} not cluster_state:ok after {LIMIT:?}\n  {}",
                        node.addr,
                        node.process.log_tail()
                    ));
                }
                _ => sleep(Duration::from_millis(50)).await,
            }
        }
    }
    Ok(nodes)
}

/// A free loopback address for a Redis Cluster node: its port is at most
/// 55535 and port + 10000 (the cluster bus) is free too; both are reserved.
fn free_cluster_addr() -> std::io::Result<SocketAddr> {
    for _ in 0..1000 {
        let addr = free_addr()?;
        let Some(bus) = addr.port().checked_add(10000) else {
            continue;
        };
        let bus = SocketAddr::from(([127, 0, 0, 1], bus));
        if std::net::TcpListener::bind(bus).is_err() {
            continue;
        }
        if reserve_port(bus.port()) {
            return Ok(addr);
        }
    }
    Err(std::io::Error::other(
        "no loopback port with a free cluster bus port",
    ))
}

/// Runs `program args…` to its end (output to `log`), killed after `limit`.
async fn run_to_end(
    program: &Path,
    args: &[String],
    log: &Path,
    limit: Duration,
) -> Result<(), String> {
    let what = format!("{} {}", program.display(), args.join(" "));
    let out = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => sleep(Duration::from_millis(50)).await,
            result => {
                let _ = child.kill();
                let _ = child.wait();
                let why =
                    result.map_or_else(|e| e.to_string(), |_| format!("no end after {limit:?}"));
                return Err(format!("{what}: {why}"));
            }
        }
    };
    if status.success() {
        return Ok(());
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(8)..].join("\n    ");
    Err(format!("{what}: {status}\n    {tail}"))
}

/// `CLUSTER INFO` of one node, as text.
async fn cluster_info(addr: SocketAddr) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let cmd = b"*2\r\n$7\r\nCLUSTER\r\n$4\r\nINFO\r\n";
    stream.write_all(cmd).await.map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    // A bulk string: `$LEN\r\n` then LEN bytes and `\r\n`.
    loop {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        reply.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&reply);
        let Some((head, body)) = text.split_once("\r\n") else {
            continue;
        };
        let Some(len) = head.strip_prefix('$').and_then(|l| l.parse::<usize>().ok()) else {
            return Err(format!("CLUSTER INFO replied {head:?}"));
        };
        if body.len() >= len {
            return Ok(body[..len].to_owned());
        }
    }
}

/// `redis-server` on `addr` with its data in `dir`, plus `extra` arguments.
fn spawn_redis(
    programs: &Programs,
    addr: SocketAddr,
    dir: &Path,
    name: &str,
    extra: &[&str],
) -> Result<ChildGuard, String> {
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
    ];
    let args = args
        .iter()
        .chain(extra)
        .chain(&["--dir"])
        .map(|s| s.as_ref())
        .chain([dir.as_os_str()]);
    let log = dir.join("log");
    ChildGuard::spawn(name, &programs.redis_server, args, &[], &log).map_err(|e| e.to_string())
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
    match spec.topology {
        Topology::Cluster3 => wait_until(addr, &process, SET, b'+').await?,
        _ => wait_ready(addr, &process).await?,
    }
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

fn addrs(servers: &[RedisServer]) -> Vec<SocketAddr> {
    servers.iter().map(|s| s.addr).collect()
}

/// A GET of a key nobody writes: any bulk reply (`$`) means served.
const GET: &[u8] = b"*2\r\n$3\r\nGET\r\n$13\r\nbench:ready:0\r\n";
/// `SET probe 1`: a cluster-mode attache replies `+OK` once it knows the
/// slot map (`-CLUSTERDOWN` before).
const SET: &[u8] = b"*3\r\n$3\r\nSET\r\n$5\r\nprobe\r\n$1\r\n1\r\n";
/// `PING`, for a cluster node that serves no slot yet.
const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

/// Waits until a GET through `addr` gets a bulk reply: the target listens
/// and reaches its upstream. Fails early if the process exits.
async fn wait_ready(addr: SocketAddr, process: &ChildGuard) -> Result<(), String> {
    wait_until(addr, process, GET, b'$').await
}

/// Waits until `command` sent to `addr` gets a reply starting with `want`.
async fn wait_until(
    addr: SocketAddr,
    process: &ChildGuard,
    command: &[u8],
    want: u8,
) -> Result<(), String> {
    wait_serving(addr, process, async || probe(addr, command, want).await).await
}

async fn probe(addr: SocketAddr, command: &[u8], want: u8) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    stream.write_all(command).await.map_err(|e| e.to_string())?;
    let mut reply = [0u8; 128];
    let n = stream.read(&mut reply).await.map_err(|e| e.to_string())?;
    match reply[..n].first() {
        Some(&b) if b == want => Ok(()),
        _ => Err(format!(
            "{:?} replied {:?}",
            String::from_utf8_lossy(command),
            String::from_utf8_lossy(&reply[..n])
        )),
    }
}
