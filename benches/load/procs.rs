//! Child processes of the bench and the ports they listen on.
//!
//! Every server the bench starts is registered here so that it is stopped on
//! every way out: the normal end and panics (the [`ChildGuard`] drop), Ctrl-C,
//! SIGTERM and SIGHUP (the handler from [`install_signal_handler`]), and even a
//! SIGKILL of the bench itself: each child is started through
//! `setpriv --pdeathsig KILL` when util-linux's `setpriv` is on PATH, so the
//! kernel kills it when the bench's main thread dies.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Children still running; the signal handler kills whatever is left here.
static LIVE: Mutex<Vec<Child>> = Mutex::new(Vec::new());
/// The scratch directory (configs, logs, redis dirs), removed on interrupt.
static SCRATCH: Mutex<Option<PathBuf>> = Mutex::new(None);
/// Ports handed out so far: `bind(:0)` may return a port twice once it is free.
static PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// On Ctrl-C, SIGTERM or SIGHUP: kill every child, remove the scratch
/// directory and exit with status 130.
pub(crate) fn install_signal_handler(scratch: &Path) -> Result<(), ctrlc::Error> {
    *lock(&SCRATCH) = Some(scratch.to_owned());
    ctrlc::set_handler(|| {
        eprintln!("\ninterrupted: stopping the target servers");
        for mut child in lock(&LIVE).drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = lock(&SCRATCH).take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        std::process::exit(130);
    })
}

/// A free loopback address: bind `127.0.0.1:0`, read the port, release it.
/// There is a window in which another process could take it; the bench
/// starts its servers right away and never reuses a port it handed out.
pub(crate) fn free_addr() -> io::Result<SocketAddr> {
    for _ in 0..100 {
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut ports = lock(&PORTS);
        if ports.get_or_insert_with(HashSet::new).insert(addr.port()) {
            return Ok(addr);
        }
    }
    Err(io::Error::other("no fresh loopback port after 100 tries"))
}

/// A free loopback address for a Redis Cluster node: its port is at most
/// 55535 and port + 10000 (the cluster bus) is free too; both are reserved.
pub(crate) fn free_cluster_addr() -> io::Result<SocketAddr> {
    for _ in 0..1000 {
        let addr = free_addr()?;
        let Some(bus) = addr.port().checked_add(10000) else {
            continue;
        };
        let bus = SocketAddr::from(([127, 0, 0, 1], bus));
        if TcpListener::bind(bus).is_err() {
            continue;
        }
        if lock(&PORTS)
            .get_or_insert_with(HashSet::new)
            .insert(bus.port())
        {
            return Ok(addr);
        }
    }
    Err(io::Error::other(
        "no loopback port with a free cluster bus port",
    ))
}

/// A running child process, killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub(crate) struct ChildGuard {
    pid: u32,
    name: String,
    log: PathBuf,
}

impl ChildGuard {
    /// Starts `program args…` in its own process group (so a terminal's
    /// Ctrl-C reaches only the bench, which then stops it in order), with
    /// stdin closed, `env` added to the bench's environment, and stdout and
    /// stderr written to `log`.
    ///
    /// Call it from the main thread only: `--pdeathsig` fires when the
    /// *thread* that spawned the child exits, and tokio retires idle threads.
    pub(crate) fn spawn<I, S>(
        name: &str,
        program: &Path,
        args: I,
        env: &[(&str, &str)],
        log: &Path,
    ) -> io::Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = if on_path("setpriv") {
            let mut cmd = Command::new("setpriv");
            cmd.args(["--pdeathsig", "KILL", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        };
        let out = File::create(log)?;
        cmd.args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{name}: {}: {e}", program.display())))?;
        let pid = child.id();
        lock(&LIVE).push(child);
        Ok(Self {
            pid,
            name: name.to_owned(),
            log: log.to_owned(),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// `Some(status)` once the process has exited.
    pub(crate) fn exit_status(&self) -> Option<ExitStatus> {
        let mut live = lock(&LIVE);
        let child = live.iter_mut().find(|c| c.id() == self.pid)?;
        child.try_wait().ok().flatten()
    }

    /// The last lines of the child's log, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(8)..].join("\n    ");
        format!("{} log {}:\n    {tail}", self.name, self.log.display())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let child = {
            let mut live = lock(&LIVE);
            let at = live.iter().position(|c| c.id() == self.pid);
            at.map(|i| live.swap_remove(i))
        };
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether `program` is an executable on PATH (or a path that exists).
pub(crate) fn on_path(program: impl AsRef<Path>) -> bool {
    find_program(program).is_some()
}

/// `program` resolved against PATH, or itself if it contains a slash.
pub(crate) fn find_program(program: impl AsRef<Path>) -> Option<PathBuf> {
    let program = program.as_ref();
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// The first line `program args…` prints (stdout or stderr), for the report.
pub(crate) fn version_line(program: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = [out.stdout, out.stderr].concat();
    let text = String::from_utf8_lossy(&text);
    text.lines()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
}
