//! One record per run, and the median and min–max of each measure across
//! rounds.

use std::time::Duration;

use crate::outcome::LoadOutcome;
use crate::usage::CpuUsage;

/// What one run of one workload against one target measured.
#[derive(Clone, Debug)]
pub(crate) struct RunRecord {
    pub(crate) round: usize,
    pub(crate) target: &'static str,
    pub(crate) workload: String,
    /// Replies per second in the measured window.
    pub(crate) ops_per_sec: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) errors: u64,
    /// Requests answered during warm-up and the window: the CPU denominator.
    pub(crate) requests: u64,
    /// CPU seconds of the measured process (the proxy; redis-server when direct).
    pub(crate) cpu_s: f64,
    /// CPU seconds of the redis-servers behind a proxy (0 when direct).
    pub(crate) backend_cpu_s: f64,
    /// CPU seconds of the load generator (this process).
    pub(crate) gen_cpu_s: f64,
    /// CPU used by everything else on the machine during the run, in % of
    /// one core: noise from other work.
    pub(crate) other_cpu_pct: f64,
    /// VmRSS before the run's connections opened.
    pub(crate) rss_before_kib: u64,
    /// VmHWM over the run (reset before it).
    pub(crate) peak_rss_kib: u64,
    /// VmRSS with the idle connections open, before the active load.
    pub(crate) rss_with_idle_kib: Option<u64>,
    pub(crate) idle_conns: usize,
    /// Paced runs: % of the requests due in the window that were sent late
    /// (their connection's previous reply was not back); `None` otherwise.
    pub(crate) late_pct: Option<f64>,
}

impl RunRecord {
    /// What the generator measured over a `duration` window and the CPU
    /// the run used; memory left at zero for the caller to fill in.
    pub(crate) fn measured(
        round: usize,
        target: &'static str,
        workload: &str,
        outcome: &LoadOutcome,
        duration: Duration,
        cpu: &CpuUsage,
    ) -> Self {
        Self {
            round,
            target,
            workload: workload.to_owned(),
            ops_per_sec: outcome.measured as f64 / duration.as_secs_f64(),
            p50_us: outcome.quantile_us(0.50),
            p99_us: outcome.quantile_us(0.99),
            p999_us: outcome.quantile_us(0.999),
            errors: outcome.errors,
            requests: outcome.total,
            cpu_s: cpu.target_s,
            backend_cpu_s: cpu.backends_s,
            gen_cpu_s: cpu.generator_s,
            other_cpu_pct: cpu.other_pct,
            rss_before_kib: 0,
            peak_rss_kib: 0,
            rss_with_idle_kib: None,
            idle_conns: 0,
            late_pct: None,
        }
    }

    pub(crate) fn cpu_s_per_m(&self) -> f64 {
        per_million(self.cpu_s, self.requests)
    }

    pub(crate) fn backend_cpu_s_per_m(&self) -> f64 {
        per_million(self.backend_cpu_s, self.requests)
    }

    pub(crate) fn gen_cpu_s_per_m(&self) -> f64 {
        per_million(self.gen_cpu_s, self.requests)
    }

    /// (RSS with the idle connections − RSS before) / connections, in KiB.
    pub(crate) fn kib_per_idle_conn(&self) -> Option<f64> {
        let with = self.rss_with_idle_kib?;
        (self.idle_conns > 0)
            .then(|| (with as f64 - self.rss_before_kib as f64) / self.idle_conns as f64)
    }
}

fn per_million(seconds: f64, requests: u64) -> f64 {
    if requests == 0 {
        f64::NAN
    } else {
        seconds * 1e6 / requests as f64
    }
}

/// Median and range of one measure across rounds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Spread {
    /// `None` when no value is a number.
    pub(crate) fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Some(Self {
            median,
            min: v[0],
            max: v[v.len() - 1],
        })
    }
}

/// All rounds of one workload against one target.
#[derive(Clone, Debug)]
pub(crate) struct Summary {
    pub(crate) target: &'static str,
    pub(crate) workload: String,
    pub(crate) runs: usize,
    pub(crate) errors: u64,
    pub(crate) ops_per_sec: Spread,
    pub(crate) p50_us: Spread,
    pub(crate) p99_us: Spread,
    pub(crate) p999_us: Spread,
    pub(crate) cpu_s_per_m: Option<Spread>,
    pub(crate) backend_cpu_s_per_m: Option<Spread>,
    pub(crate) gen_cpu_s_per_m: Option<Spread>,
    pub(crate) other_cpu_pct: Option<Spread>,
    pub(crate) rss_before_mib: Spread,
    pub(crate) peak_rss_mib: Spread,
    pub(crate) kib_per_idle_conn: Option<Spread>,
    /// Paced runs: % of requests sent late.
    pub(crate) late_pct: Option<Spread>,
}

/// One summary per (workload, target) that has runs, workloads outermost,
/// both in the order given.
pub(crate) fn summarize(
    records: &[RunRecord],
    workloads: &[String],
    targets: &[&'static str],
) -> Vec<Summary> {
    let mut out = Vec::new();
    for workload in workloads {
        for &target in targets {
            let runs: Vec<&RunRecord> = records
                .iter()
                .filter(|r| r.target == target && &r.workload == workload)
                .collect();
            if let Some(summary) = summarize_runs(target, workload, &runs) {
                out.push(summary);
            }
        }
    }
    out
}

fn summarize_runs(target: &'static str, workload: &str, runs: &[&RunRecord]) -> Option<Summary> {
    let spread = |f: fn(&RunRecord) -> f64| Spread::of(runs.iter().map(|r| f(r)));
    let backend = spread(RunRecord::backend_cpu_s_per_m).filter(|s| s.max > 0.0);
    Some(Summary {
        target,
        workload: workload.to_owned(),
        runs: runs.len(),
        errors: runs.iter().map(|r| r.errors).sum(),
        ops_per_sec: spread(|r| r.ops_per_sec)?,
        p50_us: spread(|r| r.p50_us)?,
        p99_us: spread(|r| r.p99_us)?,
        p999_us: spread(|r| r.p999_us)?,
        cpu_s_per_m: spread(RunRecord::cpu_s_per_m),
        backend_cpu_s_per_m: backend,
        gen_cpu_s_per_m: spread(RunRecord::gen_cpu_s_per_m),
        other_cpu_pct: spread(|r| r.other_cpu_pct),
        rss_before_mib: spread(|r| r.rss_before_kib as f64 / 1024.0)?,
        peak_rss_mib: spread(|r| r.peak_rss_kib as f64 / 1024.0)?,
        kib_per_idle_conn: Spread::of(runs.iter().filter_map(|r| r.kib_per_idle_conn())),
        late_pct: Spread::of(runs.iter().filter_map(|r| r.late_pct)),
    })
}

/// The summary of `target` on `workload`, if it ran.
pub(crate) fn find<'a>(
    summaries: &'a [Summary],
    target: &str,
    workload: &str,
) -> Option<&'a Summary> {
    summaries
        .iter()
        .find(|s| s.target == target && s.workload == workload)
}
