//! How a load bench binary runs once its options are parsed: the load
//! generator's runtime, the smoke test's libtest-like verdict, the exit
//! code; and at the end, the report printed and the output files written.

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;

use crate::stats::{RunRecord, Summary};
use crate::svg;
use crate::tables;
use crate::BoxError;

/// Runs `run` on the generator's tokio runtime (current-thread for
/// `threads` ≤ 1) and returns the exit code. With `smoke`, prints the
/// verdict of one test named `name` as libtest would.
pub(crate) fn run_bench(
    name: &str,
    threads: usize,
    smoke: bool,
    run: impl Future<Output = Result<(), BoxError>>,
) -> ExitCode {
    let mut runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let runtime = runtime.enable_all().build().expect("tokio runtime");
    let started = std::time::Instant::now();
    // `block_on` polls `run` on the main thread, which is where the target
    // processes must be spawned (see `ChildGuard::spawn`).
    let result = runtime.block_on(run);
    if smoke {
        let secs = started.elapsed().as_secs_f64();
        let (verdict, passed, failed) = match &result {
            Ok(()) => ("ok", 1, 0),
            Err(_) => ("FAILED", 0, 1),
        };
        println!("\nrunning 1 test\ntest {name}_smoke ... {verdict}\n");
        println!("test result: {verdict}. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out; finished in {secs:.2}s\n");
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What a bench run produced.
pub(crate) struct Results<'a> {
    /// The chart's title.
    pub(crate) title: &'a str,
    /// The throughput's unit: `ops/s`, `req/s`.
    pub(crate) rate: &'a str,
    pub(crate) markdown: &'a str,
    pub(crate) records: &'a [RunRecord],
    pub(crate) summaries: &'a [Summary],
    pub(crate) workloads: &'a [String],
    pub(crate) targets: &'a [&'static str],
    /// Runs that failed (their target was dropped from the later rounds).
    pub(crate) failed_runs: usize,
    pub(crate) notes: &'a [String],
}

impl Results<'_> {
    /// Prints the report and writes the output files to `out`. A smoke
    /// test prints nothing and writes to `scratch` (every output must
    /// render; none reaches the real results), and fails on any failed run
    /// or error reply.
    pub(crate) fn publish(&self, out: &Path, scratch: &Path, smoke: bool) -> Result<(), BoxError> {
        let out = match smoke {
            true => scratch.join("results"),
            false => out.to_owned(),
        };
        if !smoke {
            println!("\n{}", self.markdown);
            let files = "report.md, runs.csv, summary.csv and chart.svg";
            eprintln!("wrote {files} to {}", out.display());
        }
        self.write_to(&out)?;
        let errors: u64 = self.records.iter().map(|r| r.errors).sum();
        if smoke && (self.failed_runs > 0 || errors > 0) {
            let notes = self.notes.join("\n  ");
            let failed = self.failed_runs;
            return Err(format!("{failed} runs failed, {errors} error replies:\n  {notes}").into());
        }
        Ok(())
    }

    /// Writes report.md, runs.csv, summary.csv and chart.svg to `dir`,
    /// creating it.
    fn write_to(&self, dir: &Path) -> Result<(), BoxError> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let chart = svg::chart(
            self.title,
            self.rate,
            self.summaries,
            self.workloads,
            self.targets,
        );
        let files = [
            ("report.md", self.markdown.to_owned()),
            ("runs.csv", tables::runs_csv(self.records)),
            ("summary.csv", tables::summary_csv(self.summaries)),
            ("chart.svg", chart),
        ];
        for (name, contents) in files {
            let path = dir.join(name);
            std::fs::write(&path, contents).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(())
    }
}
