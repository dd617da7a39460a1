//! CPU time read from /proc before and after a run: the measured target's,
//! the servers' behind it, the load generator's and the whole machine's, so
//! that each run has its cost per request and a measure of the noise from
//! other work on the machine.

use std::io;
use std::time::Instant;

use crate::procfs;

/// CPU seconds used so far, all read at one instant.
pub(crate) struct CpuSnapshot {
    target: f64,
    backends: f64,
    generator: f64,
    machine: f64,
    at: Instant,
}

impl CpuSnapshot {
    /// `measured`: the target's processes (a proxy may be several, such as
    /// nginx's master and worker); `backends`: the servers behind it.
    pub(crate) fn take(measured: &[u32], backends: &[u32]) -> io::Result<Self> {
        Ok(Self {
            target: cpu_seconds(measured)?,
            backends: cpu_seconds(backends)?,
            generator: procfs::own_cpu_seconds(),
            machine: procfs::machine_busy_seconds(),
            at: Instant::now(),
        })
    }
}

fn cpu_seconds(pids: &[u32]) -> io::Result<f64> {
    pids.iter().map(|&pid| procfs::cpu_seconds(pid)).sum()
}

/// CPU used between two snapshots.
pub(crate) struct CpuUsage {
    pub(crate) target_s: f64,
    pub(crate) backends_s: f64,
    pub(crate) generator_s: f64,
    /// Everything else on the machine, in % of one core.
    pub(crate) other_pct: f64,
}

impl CpuUsage {
    pub(crate) fn between(before: &CpuSnapshot, after: &CpuSnapshot) -> Self {
        let target_s = after.target - before.target;
        let backends_s = after.backends - before.backends;
        let generator_s = after.generator - before.generator;
        let other_s = (after.machine - before.machine) - target_s - backends_s - generator_s;
        let wall = after.at.duration_since(before.at).as_secs_f64();
        Self {
            target_s,
            backends_s,
            generator_s,
            other_pct: (other_s / wall * 100.0).max(0.0),
        }
    }
}
