//! One run of a workload against a target, with the target's CPU time and
//! memory read from /proc around it.

use crate::loadgen;
use crate::options::Workload;
use crate::procfs;
use crate::stats::RunRecord;
use crate::targets::Target;
use crate::usage::{CpuSnapshot, CpuUsage};
use crate::BoxError;

pub(crate) async fn run(
    target: &Target,
    workload: &Workload,
    round: usize,
) -> Result<RunRecord, BoxError> {
    let pids = &target.measured_pids;
    let rss_before_kib = sum_kib(pids, procfs::rss_kib)?;
    for &pid in pids {
        // Not fatal: the peak column would then be the process's lifetime peak.
        let _ = procfs::reset_peak_rss(pid);
    }
    let before = CpuSnapshot::take(pids, &target.backend_pids)?;
    let outcome = loadgen::run(target.addr, &workload.load).await?;
    let after = CpuSnapshot::take(pids, &target.backend_pids)?;
    // The sum of the processes' peaks: an upper bound of their joint peak.
    let peak_rss_kib = sum_kib(pids, procfs::peak_rss_kib)?;
    let cpu = CpuUsage::between(&before, &after);
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
        cpu_s: cpu.target_s,
        backend_cpu_s: cpu.backends_s,
        gen_cpu_s: cpu.generator_s,
        other_cpu_pct: cpu.other_pct,
        rss_before_kib,
        peak_rss_kib,
        rss_with_idle_kib: None,
        idle_conns: 0,
    })
}

/// `read` (RSS or peak RSS, KiB) summed over `pids`.
pub(crate) fn sum_kib(pids: &[u32], read: fn(u32) -> std::io::Result<u64>) -> std::io::Result<u64> {
    pids.iter().map(|&pid| read(pid)).sum()
}
