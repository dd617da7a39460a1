//! The Markdown report (stdout and report.md). The cells, the targets
//! list, the measures and ratio tables are shared with the HTTP bench
//! (`tables`).

use std::fmt::Write as _;

use crate::options::{Workload, LATENCY_WORKLOAD, PACED_WORKLOAD};
use crate::stats::{find, Summary};
use crate::tables::{
    fixed1, fixed2, measures_table, median, ratio_table, si, spread, targets_list, Columns,
    TargetLine,
};

pub(crate) struct Report<'a> {
    pub(crate) machine: &'a str,
    pub(crate) settings: String,
    pub(crate) targets: &'a [TargetLine],
    pub(crate) notes: &'a [String],
    pub(crate) workloads: &'a [Workload],
    pub(crate) summaries: &'a [Summary],
}

/// Proxy and baseline pairs compared in the ratio table; a sharded pair is
/// one more line here.
const PAIRS: [(&str, &str); 5] = [
    ("attache", "direct"),
    ("attache", "twemproxy"),
    ("attache", "envoy"),
    ("attache-ketama3", "twemproxy-ketama3"),
    ("attache-cluster3", "direct"),
];

impl Report<'_> {
    pub(crate) fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# attache load bench\n\nMachine: {}\n", self.machine);
        let _ = writeln!(md, "Settings: {}\n", self.settings);
        md.push_str(
            "Caveat: the load generator, the proxy and redis-server share this machine's cores, \
             so every number includes their contention; compare targets within one report, not \
             across machines. Cells are median (min–max) over rounds; latency is per request, \
             from the write of its pipeline batch to the read that completed its reply \
             (paced workload: from the request's intended send time).\n\n",
        );
        targets_list(&mut md, self.targets, self.notes);
        let columns = Columns {
            rate: "ops/s",
            cpu: "s/M req",
            backend: "redis",
        };
        measures_table(&mut md, self.summaries, &columns);
        self.cpu_table(&mut md);
        self.paced_table(&mut md);
        self.idle_table(&mut md);
        let busy: Vec<&str> = (self.workloads.iter())
            .filter(|w| w.idle_conns == 0)
            .map(|w| w.name.as_str())
            .collect();
        ratio_table(&mut md, self.summaries, &busy, &PAIRS, columns.rate);
        self.verdict_table(&mut md);
        md
    }

    /// Closed loop at pipeline 1: the CPU every process spends per request
    /// and how many cores that keeps busy. Each connection waits for its
    /// reply, so p50 ≈ connections ÷ ops/s, and ops/s is bounded by what all
    /// processes together cost on the shared cores.
    fn cpu_table(&self, md: &mut String) {
        let closed = (self.workloads.iter())
            .filter(|w| w.load.pipeline == 1 && w.load.rate.is_none() && w.idle_conns == 0)
            .filter(|w| w.name != LATENCY_WORKLOAD);
        let mut rows = String::new();
        for w in closed {
            for s in self.summaries.iter().filter(|s| s.workload == w.name) {
                let (own, backend, generator) = (
                    median(s.cpu_s_per_m),
                    s.backend_cpu_s_per_m.map_or(0.0, |b| b.median),
                    median(s.gen_cpu_s_per_m),
                );
                let all = own + backend + generator;
                let cores = all * s.ops_per_sec.median / 1e6;
                // `direct`: the target is redis-server itself.
                let (proxy, redis) = match s.backend_cpu_s_per_m {
                    Some(_) => (fixed2(own), fixed2(backend)),
                    None => ("–".into(), fixed2(own)),
                };
                let _ = writeln!(
                    rows,
                    "| {} | {} | {} | {proxy} | {redis} | {} | {} | {:.2} |",
                    w.name,
                    s.target,
                    si(s.ops_per_sec.median),
                    fixed2(generator),
                    fixed2(all),
                    cores,
                );
            }
        }
        if rows.is_empty() {
            return;
        }
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let _ = write!(
            md,
            "\n## CPU per request of every process (closed loop, pipeline 1)\n\n\
             Medians, in µs per request (= s/M req). In a closed loop each connection waits for \
             its reply, so p50 ≈ connections ÷ ops/s, and ops/s is bounded by what the \
             generator, the proxy and redis-server cost together on the {cores} shared cores: \
             a proxy's added p50 there follows from its CPU and from how busy the three \
             processes keep the cores, not from its hop alone (`{LATENCY_WORKLOAD}` shows the \
             hop).\n\n\
             | workload | target | ops/s | proxy | redis-server(s) | generator | all | cores busy |\n\
             |---|---|---|---|---|---|---|---|\n{rows}",
        );
    }

    /// The paced workload: latency at a fixed offered rate, and how many
    /// requests went out late (many: the rate is past the target's capacity).
    fn paced_table(&self, md: &mut String) {
        let Some((paced, rate)) = self.paced() else {
            return;
        };
        let _ = write!(
            md,
            "\n## Paced: GET pipeline 1 at {} req/s over {} connections (open loop)\n\n\
             Each connection sends on its own fixed schedule; latency is from each request's \
             intended send time, so a stall counts against every request it delays. A request \
             is late when its connection's previous reply was not back at its time.\n\n\
             | target | intended req/s | achieved ops/s | p50 µs | p99 µs | p99.9 µs | late % | CPU s/M req |\n\
             |---|---|---|---|---|---|---|---|\n",
            si(rate),
            paced.load.conns,
        );
        let mut overloaded = Vec::new();
        for s in self.summaries.iter().filter(|s| s.workload == paced.name) {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                s.target,
                si(rate),
                spread(Some(s.ops_per_sec), si),
                spread(Some(s.p50_us), fixed1),
                spread(Some(s.p99_us), fixed1),
                spread(Some(s.p999_us), fixed1),
                spread(s.late_pct, fixed2),
                spread(s.cpu_s_per_m, fixed2),
            );
            if median(s.late_pct) > 1.0 {
                overloaded.push(format!("`{}`", s.target));
            }
        }
        if !overloaded.is_empty() {
            let _ = writeln!(
                md,
                "\nMore than 1% of requests were late on {}: {} req/s is beyond what that \
                 path serves here, so its latency is mostly queueing (lower `--paced-rate`).",
                overloaded.join(", "),
                si(rate),
            );
        }
    }

    /// The paced workload and its total rate, if it ran.
    fn paced(&self) -> Option<(&Workload, f64)> {
        (self.workloads.iter())
            .find(|w| w.name == PACED_WORKLOAD)
            .and_then(|w| Some((w, w.load.rate?)))
    }

    fn idle_table(&self, md: &mut String) {
        let Some(idle) = self.workloads.iter().find(|w| w.idle_conns > 0) else {
            return;
        };
        let _ = write!(
            md,
            "\n## {} idle connections ({} active, GET pipeline 1)\n\n\
             | target | RSS before MiB | KiB per idle conn | active ops/s | active p99 µs |\n\
             |---|---|---|---|---|\n",
            idle.idle_conns, idle.load.conns
        );
        for s in self.summaries.iter().filter(|s| s.workload == idle.name) {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                s.target,
                spread(Some(s.rss_before_mib), fixed1),
                spread(s.kib_per_idle_conn, fixed2),
                spread(Some(s.ops_per_sec), si),
                spread(Some(s.p99_us), fixed1),
            );
        }
    }

    /// The acceptance targets, checked against the medians.
    fn verdict_table(&self, md: &mut String) {
        let mut rows = Vec::new();
        for w in self.workloads.iter().filter(|w| w.idle_conns == 0) {
            let depth = w.load.pipeline;
            let (a, d, t) = (
                self.get("attache", &w.name),
                self.get("direct", &w.name),
                self.get("twemproxy", &w.name),
            );
            // The ops/s and CPU targets are the closed-loop 50-connection
            // workloads' (a paced run's rate is the generator's).
            let t = t.filter(|_| w.name != LATENCY_WORKLOAD && w.load.rate.is_none());
            if let (Some(a), Some(t)) = (a, t) {
                let (want, what) = if depth == 1 {
                    (1.0, "≥ 1.0×")
                } else {
                    (1.2, "≥ 1.2×")
                };
                let r = a.ops_per_sec.median / t.ops_per_sec.median;
                rows.push((
                    format!("{}: ops/s vs twemproxy {what}", w.name),
                    format!("{r:.2}×"),
                    Some(r >= want),
                ));
                let c = median(a.cpu_s_per_m) / median(t.cpu_s_per_m);
                rows.push((
                    format!("{}: CPU/request vs twemproxy ≤ 0.8×", w.name),
                    format!("{c:.2}×"),
                    Some(c <= 0.8),
                ));
            }
            if let (Some(a), Some(d)) = (a, d) {
                if depth == 1 {
                    // One connection shows the hop's own latency; with many
                    // busy connections in a closed loop, p50 is about
                    // connections ÷ throughput (Little's law), so the added
                    // p50 there restates the throughput ratio.
                    let added = a.p50_us.median - d.p50_us.median;
                    let what = match (w.name == LATENCY_WORKLOAD, w.load.rate) {
                        (_, Some(rate)) => format!(
                            "{}: added p50 at pipeline 1, paced at {} req/s over {} conns ≤ 60 µs",
                            w.name,
                            si(rate),
                            w.load.conns
                        ),
                        (true, None) => {
                            format!("{}: p50 added vs direct ≤ 60 µs (1 connection)", w.name)
                        }
                        (false, None) => {
                            format!("{}: p50 added vs direct ≤ 60 µs (closed loop)", w.name)
                        }
                    };
                    rows.push((what, format!("{added:.1} µs"), Some(added <= 60.0)));
                } else {
                    let r = a.ops_per_sec.median / d.ops_per_sec.median;
                    rows.push((
                        format!("{}: ops/s vs direct ≥ 0.7×", w.name),
                        format!("{r:.2}×"),
                        Some(r >= 0.7),
                    ));
                }
            }
        }
        if let Some(t) = self.targets.iter().find(|t| t.name == "attache") {
            let mb = t.startup_rss_kib as f64 * 1024.0 / 1e6;
            rows.push((
                "idle RSS at start ≤ 10 MB".into(),
                format!("{mb:.1} MB"),
                Some(mb <= 10.0),
            ));
        }
        if let Some(idle) = self.workloads.iter().find(|w| w.idle_conns > 0) {
            // With 50 busy connections in a closed loop, p50 ≈ 50 / throughput
            // (Little's law): the few active connections here show the added
            // latency itself, queueing aside.
            if let (Some(a), Some(d)) = (
                self.get("attache", &idle.name),
                self.get("direct", &idle.name),
            ) {
                let added = a.p50_us.median - d.p50_us.median;
                let what = format!(
                    "{}: p50 added vs direct at {} active conns",
                    idle.name, idle.load.conns
                );
                rows.push((what, format!("{added:.1} µs"), None));
            }
            if let Some(per) = self
                .get("attache", &idle.name)
                .and_then(|s| s.kib_per_idle_conn)
            {
                let kb = per.median * 1024.0 / 1000.0;
                rows.push((
                    "memory per idle connection ≤ 10 KB".into(),
                    format!("{kb:.1} KB"),
                    Some(kb <= 10.0),
                ));
            }
        }
        if rows.is_empty() {
            md.push_str("\n## Issue targets\n\nattache did not run: nothing to check.\n");
            return;
        }
        md.push_str(
            "\n## Issue targets (attache)\n\n| target | measured | verdict |\n|---|---|---|\n",
        );
        for (what, measured, ok) in rows {
            let verdict = match ok {
                Some(true) => "pass",
                Some(false) => "**FAIL**",
                None => "info",
            };
            let _ = writeln!(md, "| {what} | {measured} | {verdict} |");
        }
    }

    fn get(&self, target: &str, workload: &str) -> Option<&Summary> {
        find(self.summaries, target, workload)
    }
}
