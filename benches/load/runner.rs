//! The Redis bench's runs: each workload against a target, with the
//! target's CPU time and memory read from /proc around it (the rounds
//! themselves are `rounds`').

use std::path::Path;
use std::time::Duration;

use crate::loadgen;
use crate::options::{Options, Workload};
use crate::procfs;
use crate::rounds::{self, Named};
use crate::stats::RunRecord;
use crate::targets::{Backends, Kind, Programs, Target, TargetSpec};
use crate::usage::{CpuSnapshot, CpuUsage};
use crate::wire::Keyspace;
use crate::BoxError;

/// What starting and measuring a target needs.
pub(crate) struct Bench<'a> {
    pub(crate) opts: &'a Options,
    pub(crate) programs: &'a Programs,
    pub(crate) backends: &'a Backends,
    pub(crate) scratch: &'a Path,
}

impl Bench<'_> {
    /// Starts `spec` against the shared backends and writes the keyspace
    /// through it, so every GET hits.
    pub(crate) async fn start(&self, spec: &TargetSpec) -> Result<Target, String> {
        let target = spec
            .start(self.programs, self.backends, self.scratch)
            .await?;
        self.populate(&target).await?;
        Ok(target)
    }

    async fn populate(&self, target: &Target) -> Result<(), String> {
        let keyspace = Keyspace::new(self.opts.keyspace);
        loadgen::populate(target.addr, keyspace, self.opts.value_size)
            .await
            .map_err(|e| e.to_string())
    }

    /// Every round runs each workload against every target in turn; see
    /// [`rounds::alternate`].
    pub(crate) async fn run_rounds(
        &self,
        workloads: &[Workload],
        targets: &[Target],
        notes: &mut Vec<String>,
    ) -> Vec<RunRecord> {
        let (rounds, quiet) = (self.opts.run.rounds, self.opts.smoke);
        rounds::alternate(
            rounds,
            quiet,
            targets,
            workloads,
            notes,
            async |t, w, round| self.run_once(t, w, round).await,
        )
        .await
    }

    async fn run_once(
        &self,
        target: &Target,
        workload: &Workload,
        round: usize,
    ) -> Result<RunRecord, BoxError> {
        if workload.idle_conns == 0 {
            return measure(target, workload, round).await;
        }
        // Idle connections are measured on a fresh process: one that served
        // the busy workloads keeps freed buffers, which new connections
        // would reuse, hiding their cost. A direct target gets its own fresh
        // redis-server (populated); a proxy, a fresh process in front of the
        // shared backends.
        let own = match target.spec.kind {
            Kind::Direct => Some(Backends::start(self.programs, self.scratch, false).await?),
            _ => None,
        };
        let backends = own.as_ref().unwrap_or(self.backends);
        let fresh = target
            .spec
            .start(self.programs, backends, self.scratch)
            .await?;
        if own.is_some() {
            self.populate(&fresh).await?;
        }
        measure(&fresh, workload, round).await
    }
}

/// One run of `workload` against `target`.
async fn measure(
    target: &Target,
    workload: &Workload,
    round: usize,
) -> Result<RunRecord, BoxError> {
    let pid = target.measured_pid;
    let rss_before_kib = procfs::rss_kib(pid)?;
    // Not fatal: the peak column would then be the process's lifetime peak.
    let _ = procfs::reset_peak_rss(pid);
    let idle = match workload.idle_conns {
        0 => None,
        n => Some(loadgen::open_idle(target.addr, n, workload.load.keyspace).await?),
    };
    let rss_with_idle_kib = match idle {
        Some(_) => {
            // Let the target finish setting up the connections' state.
            tokio::time::sleep(Duration::from_millis(200)).await;
            Some(procfs::rss_kib(pid)?)
        }
        None => None,
    };
    // CPU is charged to requests: read after the idle connections opened.
    let before = CpuSnapshot::take(&[pid], &target.backend_pids)?;
    let outcome = loadgen::run(target.addr, workload.load).await?;
    let after = CpuSnapshot::take(&[pid], &target.backend_pids)?;
    let peak_rss_kib = procfs::peak_rss_kib(pid)?;
    drop(idle);
    let cpu = CpuUsage::between(&before, &after);
    let (name, duration) = (&workload.name, workload.load.duration);
    // Paced: the share of the requests due in the window sent late.
    let late_pct = (workload.load.rate)
        .map(|rate| outcome.late as f64 * 100.0 / (rate * duration.as_secs_f64()).max(1.0));
    Ok(RunRecord {
        late_pct,
        rss_before_kib,
        peak_rss_kib,
        rss_with_idle_kib,
        idle_conns: workload.idle_conns,
        ..RunRecord::measured(round, target.name, name, &outcome, duration, &cpu)
    })
}

impl Named for Target {
    fn name(&self) -> &str {
        self.name
    }
}

impl Named for Workload {
    fn name(&self) -> &str {
        &self.name
    }
}
