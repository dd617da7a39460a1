//! The rounds: every workload against every target in turn, each run with
//! the target's CPU time and memory read from /proc around it.

use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::loadgen;
use crate::options::{Options, Workload};
use crate::procfs;
use crate::stats::RunRecord;
use crate::targets::{Backends, Kind, Programs, Target, TargetSpec};
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

    /// Every round runs each workload against every target in turn
    /// (A B C, A B C, …) so that drift of the machine hits all targets
    /// alike. A target that fails a run is dropped from the later ones.
    pub(crate) async fn run_rounds(
        &self,
        workloads: &[Workload],
        targets: &[Target],
        notes: &mut Vec<String>,
    ) -> Vec<RunRecord> {
        let rounds = self.opts.rounds;
        let total = (rounds * workloads.len() * targets.len()) as u64;
        let template = "{elapsed_precise} [{bar:30}] {pos}/{len} runs, eta {eta}: {msg}";
        let style = ProgressStyle::with_template(template).expect("static template");
        let progress = match self.opts.smoke {
            true => ProgressBar::hidden(),
            false => ProgressBar::new(total).with_style(style.progress_chars("=> ")),
        };
        let mut failed: Vec<&str> = Vec::new();
        let mut records = Vec::new();
        for round in 1..=rounds {
            for workload in workloads {
                for target in targets {
                    progress.set_message(format!(
                        "round {round}/{rounds}: {} → {}",
                        workload.name, target.name
                    ));
                    if !failed.contains(&target.name) {
                        match self.run_once(target, workload, round).await {
                            Ok(record) => records.push(record),
                            Err(e) => {
                                let (t, w) = (target.name, &workload.name);
                                progress.println(format!(
                                    "{t}: {w}: failed, dropped from the bench: {e}"
                                ));
                                notes.push(format!("`{t}` failed on {w} in round {round}: {e}"));
                                failed.push(t);
                            }
                        }
                        // Let closed sockets and freed buffers settle.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    progress.inc(1);
                }
            }
        }
        progress.finish_and_clear();
        records
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

/// CPU seconds of the target, of its backends, of the generator, and of
/// the whole machine, read together.
struct CpuSnapshot {
    target: f64,
    backends: f64,
    generator: f64,
    machine: f64,
    at: Instant,
}

impl CpuSnapshot {
    fn take(target: &Target) -> std::io::Result<Self> {
        let backends = target
            .backend_pids
            .iter()
            .map(|&pid| procfs::cpu_seconds(pid))
            .sum::<std::io::Result<f64>>()?;
        Ok(Self {
            target: procfs::cpu_seconds(target.measured_pid)?,
            backends,
            generator: procfs::own_cpu_seconds(),
            machine: procfs::machine_busy_seconds(),
            at: Instant::now(),
        })
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
    let before = CpuSnapshot::take(target)?;
    let outcome = loadgen::run(target.addr, workload.load).await?;
    let after = CpuSnapshot::take(target)?;
    let peak_rss_kib = procfs::peak_rss_kib(pid)?;
    drop(idle);
    let (cpu_s, backend_cpu_s, gen_cpu_s) = (
        after.target - before.target,
        after.backends - before.backends,
        after.generator - before.generator,
    );
    let other_cpu_s = (after.machine - before.machine) - cpu_s - backend_cpu_s - gen_cpu_s;
    let wall = after.at.duration_since(before.at).as_secs_f64();
    Ok(RunRecord {
        round,
        target: target.name,
        workload: workload.name.clone(),
        ops_per_sec: outcome.measured as f64 / workload.load.duration.as_secs_f64(),
        p50_us: outcome.quantile_us(0.50),
        p99_us: outcome.quantile_us(0.99),
        p999_us: outcome.quantile_us(0.999),
        errors: outcome.errors,
        requests: outcome.total,
        cpu_s,
        backend_cpu_s,
        gen_cpu_s,
        other_cpu_pct: (other_cpu_s / wall * 100.0).max(0.0),
        rss_before_kib,
        peak_rss_kib,
        rss_with_idle_kib,
        idle_conns: workload.idle_conns,
    })
}
