//! What the bench reads from `/proc`: CPU time and memory of the target
//! processes, and a one-line description of the machine.

use std::io;
use std::sync::OnceLock;

/// CPU seconds (user + system, all threads) the process has used so far.
pub(crate) fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count fields after its ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::other(format!("/proc/{pid}/stat: no ')'")))?;
    let mut fields = rest.split_whitespace();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime = fields.nth(11);
    let stime = fields.next();
    let ticks = match (utime, stime) {
        (Some(u), Some(s)) => u.parse::<u64>().ok().zip(s.parse::<u64>().ok()),
        _ => None,
    };
    let (u, s) = ticks.ok_or_else(|| io::Error::other(format!("/proc/{pid}/stat: bad times")))?;
    Ok((u + s) as f64 / clock_ticks_per_second())
}

/// CPU seconds of the bench process itself (the load generator).
pub(crate) fn own_cpu_seconds() -> f64 {
    cpu_seconds(std::process::id()).unwrap_or(f64::NAN)
}

/// `USER_HZ`, the unit of the times in `/proc/PID/stat` (100 on Linux
/// unless the kernel says otherwise through `getconf CLK_TCK`).
fn clock_ticks_per_second() -> f64 {
    static HZ: OnceLock<f64> = OnceLock::new();
    *HZ.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Resident set size now (`VmRSS`), in KiB.
pub(crate) fn rss_kib(pid: u32) -> io::Result<u64> {
    status_kib(pid, "VmRSS:")
}

/// Peak resident set size since start or the last [`reset_peak_rss`]
/// (`VmHWM`), in KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> io::Result<u64> {
    status_kib(pid, "VmHWM:")
}

/// Resets `VmHWM` to the current RSS (writing 5 to `clear_refs`), so the
/// peak of each run is its own and not the process's lifetime peak.
pub(crate) fn reset_peak_rss(pid: u32) -> io::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
}

fn status_kib(pid: u32, key: &str) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("/proc/{pid}/status: no {key}")))
}

/// One line: CPU model, cores, memory, kernel.
pub(crate) fn machine_description() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0.0, |kib| kib as f64 / (1024.0 * 1024.0));
    format!(
        "{model}, {cores} cores, {mem_gib:.0} GiB RAM, Linux {}",
        kernel.trim()
    )
}

/// CPU seconds all processes on the machine have used since boot: user,
/// nice and system of the `cpu` line of `/proc/stat`. Interrupt and softirq
/// time (loopback TCP is partly softirq work) and steal are left out, so
/// the difference to the bench's own processes is other processes' work.
pub(crate) fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return f64::NAN;
    };
    let busy: u64 = line
        .split_whitespace()
        .skip(1)
        .take(3)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    busy as f64 / clock_ticks_per_second()
}

/// A note for the report when the machine is already busy (1-minute load
/// average above 0.5) as the bench starts.
pub(crate) fn busy_note() -> Option<String> {
    let load = load_average();
    (load > 0.5).then(|| {
        format!(
            "the machine was busy when the bench started (1-minute load average {load:.2}): \
             see the `other CPU %` column"
        )
    })
}

/// The 1-minute load average.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}
