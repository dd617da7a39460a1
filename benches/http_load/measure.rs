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
    let (name, duration) = (&workload.name, workload.load.duration);
    Ok(RunRecord {
        rss_before_kib,
        peak_rss_kib,
        ..RunRecord::measured(round, target.name, name, &outcome, duration, &cpu)
    })
}

/// `read` (RSS or peak RSS, KiB) summed over `pids`.
pub(crate) fn sum_kib(pids: &[u32], read: fn(u32) -> std::io::Result<u64>) -> std::io::Result<u64> {
    pids.iter().map(|&pid| read(pid)).sum()
}
