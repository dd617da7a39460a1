//! The Markdown report (stdout and report.md). The cells, the targets
//! list, the measures and ratio tables are shared with the Redis bench
//! (`tables`).

use std::fmt::Write as _;

use crate::options::Workload;
use crate::stats::{find, Summary};
use crate::tables::{measures_table, ratio_table, targets_list, Columns, TargetLine};

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
        targets_list(&mut md, self.targets, self.notes);
        let columns = Columns {
            rate: "req/s",
            cpu: "µs/req",
            backend: "upstream",
        };
        measures_table(&mut md, self.summaries, &columns);
        let workloads: Vec<&str> = self.workloads.iter().map(|w| w.name.as_str()).collect();
        // Against direct, the baseline's CPU is the upstream's: that ratio
        // compares the proxy's cost to the origin's.
        ratio_table(&mut md, self.summaries, &workloads, &PAIRS, columns.rate);
        self.verdict_table(&mut md);
        md
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
