//! What both load benches' reports share: table cells (median and min–max
//! range), the targets list, the measures and ratio tables, and the CSV
//! files. The rest of the Markdown is each bench's own (`report.rs`,
//! `http_load/report.rs`).

use std::fmt::Write as _;

use crate::stats::{find, RunRecord, Spread, Summary};

/// The median, NaN when the measure is missing.
pub(crate) fn median(s: Option<Spread>) -> f64 {
    s.map_or(f64::NAN, |s| s.median)
}

/// "median (min–max)", or the median alone when every round agreed.
pub(crate) fn spread(s: Option<Spread>, fmt: fn(f64) -> String) -> String {
    match s {
        None => "–".into(),
        Some(s) if s.min == s.max => fmt(s.median),
        Some(s) => format!("{} ({}–{})", fmt(s.median), fmt(s.min), fmt(s.max)),
    }
}

pub(crate) fn fixed1(x: f64) -> String {
    format!("{x:.1}")
}

pub(crate) fn fixed2(x: f64) -> String {
    format!("{x:.2}")
}

/// 1234567 → "1.23M", 85210 → "85.2k".
pub(crate) fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// A target as a report introduces it.
pub(crate) struct TargetLine {
    pub(crate) name: &'static str,
    pub(crate) about: String,
    pub(crate) startup_rss_kib: u64,
}

/// The targets, one line each with their RSS at start, then the notes.
pub(crate) fn targets_list(md: &mut String, targets: &[TargetLine], notes: &[String]) {
    md.push_str("Targets:\n");
    for t in targets {
        let rss = t.startup_rss_kib as f64 / 1024.0;
        let _ = writeln!(
            md,
            "- `{}`: {} — RSS at start {rss:.1} MiB",
            t.name, t.about
        );
    }
    for note in notes {
        let _ = writeln!(md, "- note: {note}");
    }
}

/// The column names that differ between the benches.
pub(crate) struct Columns {
    /// `ops/s`, `req/s`.
    pub(crate) rate: &'static str,
    /// The CPU unit: `s/M req`, `µs/req` (the same number).
    pub(crate) cpu: &'static str,
    /// What is behind the proxy: `redis`, `upstream`.
    pub(crate) backend: &'static str,
}

/// The main table: every measure of every (workload, target).
pub(crate) fn measures_table(md: &mut String, summaries: &[Summary], columns: &Columns) {
    let Columns { rate, cpu, backend } = columns;
    let _ = write!(
        md,
        "\n## Throughput, latency, CPU, memory\n\n\
         | workload | target | {rate} | p50 µs | p99 µs | p99.9 µs | CPU {cpu} | {backend} CPU {cpu} | gen CPU {cpu} | other CPU % (max) | RSS before MiB | peak RSS MiB | errors |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for s in summaries {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.workload,
            s.target,
            spread(Some(s.ops_per_sec), si),
            spread(Some(s.p50_us), fixed1),
            spread(Some(s.p99_us), fixed1),
            spread(Some(s.p999_us), fixed1),
            spread(s.cpu_s_per_m, fixed2),
            spread(s.backend_cpu_s_per_m, fixed2),
            spread(s.gen_cpu_s_per_m, fixed2),
            s.other_cpu_pct
                .map_or("–".into(), |o| format!("{:.0}", o.max)),
            fixed1(s.rss_before_mib.median),
            spread(Some(s.peak_rss_mib), fixed1),
            s.errors,
        );
    }
}

/// Proxy against baseline, for each of `workloads` and each pair that ran
/// it: throughput ratio, added p50 and p99, CPU per request ratio.
pub(crate) fn ratio_table(
    md: &mut String,
    summaries: &[Summary],
    workloads: &[&str],
    pairs: &[(&str, &str)],
    rate: &str,
) {
    let _ = write!(
        md,
        "\n## Ratios (of medians)\n\n\
         | workload | proxy / baseline | {rate} ratio | p50 added µs | p99 added µs | CPU/req ratio |\n\
         |---|---|---|---|---|---|\n",
    );
    for &w in workloads {
        for &(proxy, base) in pairs {
            let (Some(p), Some(b)) = (find(summaries, proxy, w), find(summaries, base, w)) else {
                continue;
            };
            let cpu = median(p.cpu_s_per_m) / median(b.cpu_s_per_m);
            let _ = writeln!(
                md,
                "| {w} | {proxy} / {base} | {:.2} | {:+.1} | {:+.1} | {cpu:.2} |",
                p.ops_per_sec.median / b.ops_per_sec.median,
                p.p50_us.median - b.p50_us.median,
                p.p99_us.median - b.p99_us.median,
            );
        }
    }
}

/// Every run, one row each.
pub(crate) fn runs_csv(records: &[RunRecord]) -> String {
    let mut csv = String::from(
        "round,target,workload,ops_per_sec,p50_us,p99_us,p999_us,errors,requests,cpu_s,cpu_s_per_m_req,\
         backend_cpu_s,backend_cpu_s_per_m_req,gen_cpu_s,other_cpu_pct,rss_before_kib,peak_rss_kib,rss_with_idle_kib,\
         idle_conns,kib_per_idle_conn,late_pct\n",
    );
    for r in records {
        let _ =
            writeln!(
            csv,
            "{},{},{},{:.0},{:.1},{:.1},{:.1},{},{},{:.2},{:.4},{:.2},{:.4},{:.2},{:.1},{},{},{},{},{},{}",
            r.round,
            r.target,
            r.workload,
            r.ops_per_sec,
            r.p50_us,
            r.p99_us,
            r.p999_us,
            r.errors,
            r.requests,
            r.cpu_s,
            r.cpu_s_per_m(),
            r.backend_cpu_s,
            r.backend_cpu_s_per_m(),
            r.gen_cpu_s,
            r.other_cpu_pct,
            r.rss_before_kib,
            r.peak_rss_kib,
            r.rss_with_idle_kib.map(|v| v.to_string()).unwrap_or_default(),
            r.idle_conns,
            r.kib_per_idle_conn().map(|v| format!("{v:.3}")).unwrap_or_default(),
            r.late_pct.map(|v| format!("{v:.3}")).unwrap_or_default(),
        );
    }
    csv
}

/// One row per (target, workload, measure): median, min, max.
pub(crate) fn summary_csv(summaries: &[Summary]) -> String {
    let mut csv = String::from("target,workload,runs,measure,median,min,max\n");
    for s in summaries {
        let measures = [
            ("ops_per_sec", Some(s.ops_per_sec)),
            ("p50_us", Some(s.p50_us)),
            ("p99_us", Some(s.p99_us)),
            ("p999_us", Some(s.p999_us)),
            ("cpu_s_per_m_req", s.cpu_s_per_m),
            ("backend_cpu_s_per_m_req", s.backend_cpu_s_per_m),
            ("gen_cpu_s_per_m_req", s.gen_cpu_s_per_m),
            ("other_cpu_pct", s.other_cpu_pct),
            ("rss_before_mib", Some(s.rss_before_mib)),
            ("peak_rss_mib", Some(s.peak_rss_mib)),
            ("kib_per_idle_conn", s.kib_per_idle_conn),
            ("late_pct", s.late_pct),
        ];
        for (name, m) in measures {
            if let Some(m) = m {
                let _ = writeln!(
                    csv,
                    "{},{},{},{name},{:.4},{:.4},{:.4}",
                    s.target, s.workload, s.runs, m.median, m.min, m.max
                );
            }
        }
    }
    csv
}
