//! The `attache` binary as a child process, for tests that run it as ops
//! would.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The binary with no `ATTACHE_…` variables inherited: each one is a config
/// override, and a stray one would change what these tests see.
pub fn attache() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_attache"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ATTACHE_") {
            cmd.env_remove(name);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// A child process killed on drop, so a failing test leaves nothing behind.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Process {
    /// Its exit status, if it exits within `within`.
    pub fn wait_for_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Sends signal `name` (`TERM`, `HUP`, …).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.0.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name}");
    }
}
