//! What both load benches' reports share: table cells (median and min–max
//! range), the CSV files and writing every output file. The Markdown around
//! the cells is each bench's own (`report.rs`, `http_load/report.rs`).

use std::fmt::Write as _;
use std::path::Path;

use crate::stats::{RunRecord, Spread, Summary};
use crate::svg;
use crate::BoxError;

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

/// Writes report.md, runs.csv, summary.csv and chart.svg (titled `title`)
/// to `dir`, creating it.
pub(crate) fn write_outputs(
    dir: &Path,
    title: &str,
    markdown: &str,
    records: &[RunRecord],
    summaries: &[Summary],
    workloads: &[String],
    targets: &[&'static str],
) -> Result<(), BoxError> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let chart = svg::chart(title, summaries, workloads, targets);
    let files = [
        ("report.md", markdown.to_owned()),
        ("runs.csv", runs_csv(records)),
        ("summary.csv", summary_csv(summaries)),
        ("chart.svg", chart),
    ];
    for (name, contents) in files {
        let path = dir.join(name);
        std::fs::write(&path, contents).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Every run, one row each.
fn runs_csv(records: &[RunRecord]) -> String {
    let mut csv = String::from(
        "round,target,workload,ops_per_sec,p50_us,p99_us,p999_us,errors,requests,cpu_s,cpu_s_per_m_req,\
         backend_cpu_s,backend_cpu_s_per_m_req,gen_cpu_s,other_cpu_pct,rss_before_kib,peak_rss_kib,rss_with_idle_kib,\
         idle_conns,kib_per_idle_conn\n",
    );
    for r in records {
        let _ =
            writeln!(
            csv,
            "{},{},{},{:.0},{:.1},{:.1},{:.1},{},{},{:.2},{:.4},{:.2},{:.4},{:.2},{:.1},{},{},{},{},{}",
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
        );
    }
    csv
}

/// One row per (target, workload, measure): median, min, max.
fn summary_csv(summaries: &[Summary]) -> String {
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
