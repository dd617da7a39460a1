//! The Markdown report (stdout and report.md). The cells, the CSV files and
//! the chart are shared with the Redis bench (`tables`, `svg`).

use std::fmt::Write as _;

use crate::options::Workload;
use crate::stats::{find, Summary};
use crate::tables::{fixed1, fixed2, median, si, spread};

/// A target as the report introduces it.
pub(crate) struct TargetLine {
    pub(crate) name: &'static str,
    pub(crate) about: String,
    pub(crate) startup_rss_kib: u64,
}

pub(crate) struct Report<'a> {
    pub(crate) machine: &'a str,
    pub(crate) settings: String,
    pub(crate) upstream: &'a str,
    pub(crate) targets: &'a [TargetLine],
    pub(crate) notes: &'a [String],
    pub(crate) workloads: &'a [Workload],
    pub(crate) summaries: &'a [Summary],
}

/// Proxy and baseline pairs compared in the ratio table.
const PAIRS: [(&str, &str); 3] = [
    ("attache", "direct"),
    ("attache", "nginx"),
    ("nginx", "direct"),
];

impl Report<'_> {
    pub(crate) fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# attache HTTP load bench\n\nMachine: {}\n",
            self.machine
        );
        let _ = writeln!(md, "Settings: {}\n", self.settings);
        md.push_str(
            "Caveat: the load generator, the proxy and the upstream share this machine's cores, \
             so every number includes their contention; compare targets within one report, not \
             across machines. Cells are median (min–max) over rounds; latency is per request, \
             from sending it to the last byte of its response. CPU µs/req is CPU seconds per \
             million requests.\n\n",
        );
        let _ = writeln!(
            md,
            "Upstream (the same for every target): {}\n",
            self.upstream
        );
        md.push_str("Targets:\n");
        for t in self.targets {
            let rss = t.startup_rss_kib as f64 / 1024.0;
            let _ = writeln!(
                md,
                "- `{}`: {} — RSS at start {rss:.1} MiB",
                t.name, t.about
            );
        }
        for note in self.notes {
            let _ = writeln!(md, "- note: {note}");
        }
        self.main_table(&mut md);
        self.ratio_table(&mut md);
        self.verdict_table(&mut md);
        md
    }

    fn main_table(&self, md: &mut String) {
        md.push_str(
            "\n## Throughput, latency, CPU, memory\n\n\
             | workload | target | req/s | p50 µs | p99 µs | p99.9 µs | CPU µs/req | upstream CPU µs/req | gen CPU µs/req | other CPU % (max) | RSS before MiB | peak RSS MiB | errors |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for s in self.summaries {
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

    fn ratio_table(&self, md: &mut String) {
        md.push_str(
            "\n## Ratios (of medians)\n\n\
             | workload | proxy / baseline | req/s ratio | p50 added µs | p99 added µs | CPU/req ratio |\n\
             |---|---|---|---|---|---|\n",
        );
        for w in self.workloads {
            for (proxy, base) in PAIRS {
                let (Some(p), Some(b)) = (self.get(proxy, &w.name), self.get(base, &w.name)) else {
                    continue;
                };
                // Against direct, the baseline's CPU is the upstream's: the
                // ratio compares the proxy's cost to the origin's.
                let cpu = median(p.cpu_s_per_m) / median(b.cpu_s_per_m);
                let _ = writeln!(
                    md,
                    "| {} | {proxy} / {base} | {:.2} | {:+.1} | {:+.1} | {:.2} |",
                    w.name,
                    p.ops_per_sec.median / b.ops_per_sec.median,
                    p.p50_us.median - b.p50_us.median,
                    p.p99_us.median - b.p99_us.median,
                    cpu,
                );
            }
        }
    }

    /// The target: attache's throughput at least nginx's, where
    /// both ran; at one connection it is informational (latency-bound).
    fn verdict_table(&self, md: &mut String) {
        let mut rows = Vec::new();
        for w in self.workloads {
            let (Some(a), Some(n)) = (self.get("attache", &w.name), self.get("nginx", &w.name))
            else {
                continue;
            };
            let ratio = a.ops_per_sec.median / n.ops_per_sec.median;
            let verdict = match (w.load.conns, ratio >= 1.0) {
                (1, true) => "pass (informational)",
                (1, false) => "below (informational)",
                (_, true) => "pass",
                (_, false) => "**FAIL**",
            };
            rows.push(format!(
                "| {}: req/s vs nginx ≥ 1.0× | {ratio:.2}× | {verdict} |",
                w.name
            ));
        }
        if rows.is_empty() {
            md.push_str(
                "\n## Issue target\n\nattache and nginx did not both run: nothing to check.\n",
            );
            return;
        }
        md.push_str(
            "\n## Issue target (attache)\n\n| target | measured | verdict |\n|---|---|---|\n",
        );
        for row in rows {
            let _ = writeln!(md, "{row}");
        }
    }

    fn get(&self, target: &str, workload: &str) -> Option<&Summary> {
        find(self.summaries, target, workload)
    }
}
