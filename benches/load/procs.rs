//! Child processes of the bench and the ports they listen on.
//!
//! Every server the bench starts is registered here so that it is stopped on
//! every way out: the normal end and panics (the [`ChildGuard`] drop), Ctrl-C,
//! SIGTERM and SIGHUP (the handler from [`install_signal_handler`]), and even a
//! SIGKILL of the bench itself: each child is started through
//! `setpriv --pdeathsig KILL` when util-linux's `setpriv` is on PATH, so the
//! kernel kills it when the bench's main thread dies. A child leads its own
//! process group, and stopping it kills the group: processes it forked
//! (nginx's workers) go with it.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rustix::process::{kill_process_group, Pid, Signal};
use tokio::time::{sleep, timeout, Instant};

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
            kill(&mut child);
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
        if reserve_port(addr.port()) {
            return Ok(addr);
        }
    }
    Err(io::Error::other("no fresh loopback port after 100 tries"))
}

/// Marks `port` as handed out; `false` if it already was.
pub(crate) fn reserve_port(port: u16) -> bool {
    lock(&PORTS).get_or_insert_with(HashSet::new).insert(port)
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
            kill(&mut child);
        }
    }
}

/// SIGKILL to `child`'s process group (it leads one: see
/// [`ChildGuard::spawn`]), then to `child` itself in case the group is
/// gone, and reap it.
fn kill(child: &mut Child) {
    if let Some(group) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) {
        let _ = kill_process_group(group, Signal::KILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A new directory for one process's config, log and data: `NAME-N` in
/// `scratch`, where N counts instances, since a target may be started more
/// than once.
pub(crate) fn instance_dir(scratch: &Path, name: &str) -> Result<PathBuf, String> {
    static INSTANCES: AtomicUsize = AtomicUsize::new(0);
    let n = INSTANCES.fetch_add(1, Ordering::Relaxed);
    let dir = scratch.join(format!("{name}-{n}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// Waits until `probe` succeeds (each try limited to 1 s, for 10 s in all):
/// `process` serves `addr`. Fails early, with the log's tail, if the
/// process exits.
pub(crate) async fn wait_serving(
    addr: SocketAddr,
    process: &ChildGuard,
    mut probe: impl AsyncFnMut() -> Result<(), String>,
) -> Result<(), String> {
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
        match timeout(Duration::from_secs(1), probe()).await {
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
