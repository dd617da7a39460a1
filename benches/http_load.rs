//! The HTTP load bench: one HTTP upstream called directly, through attache
//! and through nginx as a reverse proxy, on one machine, in one run, under
//! identical load. See `benches/README.md`.
//!
//! # Layout
//!
//! - `options`: flags and env vars, and the workloads they define.
//! - `origin`: the builtin upstream, this binary re-executed as a minimal
//!   HTTP/1.1 server; `upstream`: starting it, or nginx serving files.
//! - `targets`: direct, attache and nginx, started; `configs`: their config
//!   files; `nginx`: running nginx and finding its workers.
//! - `loadgen`: the closed-loop generator on hyper's client.
//! - `measure`: one run, and what is read from /proc around it.
//! - `report`: the Markdown.
//!
//! Shared with the Redis load bench (`benches/load/`): `entry` (runtime,
//! exit code, publishing results), `run_options` (the flags both take),
//! `procs` (child processes stopped on every exit path, free ports),
//! `procfs`, `rounds` (targets alternating within each round), `usage`
//! (CPU time around a run), `outcome` (what a run counted, latency
//! histogram), `stats` (median and min–max), `tables` (tables, CSV,
//! outputs) and `svg` (the chart).

#[path = "http_load/configs.rs"]
mod configs;
#[path = "load/entry.rs"]
mod entry;
#[path = "http_load/loadgen.rs"]
mod loadgen;
#[path = "http_load/measure.rs"]
mod measure;
#[path = "http_load/nginx.rs"]
mod nginx;
#[path = "http_load/options.rs"]
mod options;
#[path = "http_load/origin.rs"]
mod origin;
#[path = "load/outcome.rs"]
mod outcome;
#[path = "load/procfs.rs"]
mod procfs;
#[path = "load/procs.rs"]
mod procs;
#[path = "http_load/report.rs"]
mod report;
#[path = "load/rounds.rs"]
mod rounds;
#[path = "load/run_options.rs"]
mod run_options;
#[path = "load/stats.rs"]
mod stats;
#[path = "load/svg.rs"]
mod svg;
#[path = "load/tables.rs"]
mod tables;
#[path = "http_load/targets.rs"]
mod targets;
#[path = "http_load/upstream.rs"]
mod upstream;
#[path = "load/usage.rs"]
mod usage;

use std::process::ExitCode;

use clap::Parser;

use options::Options;
use report::Report;
use tables::TargetLine;
use targets::{Kind, Programs};
use upstream::Upstream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The smoke test's name and the prefix of error messages.
const NAME: &str = "http_load";
const TITLE: &str = "attache HTTP load bench";

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == origin::SERVE_FLAG) {
        return origin::main(args);
    }
    // `cargo bench` passes `--bench`. `cargo test --all-targets` runs this
    // binary without it: then the bench does nothing (it is not part of the
    // test suite), unless HTTP_LOAD_SMOKE=1 asks for a smoke test of a few
    // seconds.
    let opts = if args.iter().any(|a| a == "--bench") {
        Options::parse_from(args)
    } else if args.iter().any(|a| a == "--list")
        || std::env::var_os("HTTP_LOAD_SMOKE").is_none_or(|v| v != "1")
    {
        return ExitCode::SUCCESS;
    } else {
        Options::smoke()
    };
    let (threads, smoke) = (opts.run.gen_threads, opts.smoke);
    entry::run_bench(NAME, threads, smoke, run(opts))
}

async fn run(opts: Options) -> Result<(), BoxError> {
    if opts.body_sizes.is_empty() || opts.conns.is_empty() {
        return Err("--body-sizes and --conns need at least one value each".into());
    }
    let machine = procfs::machine_description();
    if !opts.smoke {
        println!("Machine: {machine}");
    }
    let scratch = tempfile::Builder::new()
        .prefix("attache-http-load-")
        .tempdir()?;
    procs::install_signal_handler(scratch.path())?;

    let programs = Programs {
        attache: opts.run.attache(),
        nginx: nginx::find(&opts.nginx_bin),
    };
    let upstream = Upstream::start(&opts, programs.nginx.as_deref(), scratch.path()).await?;
    let wanted =
        |kind: &Kind| opts.targets.is_empty() || opts.targets.iter().any(|t| t == kind.name());
    let mut targets = Vec::new();
    let mut notes: Vec<String> = procfs::busy_note().into_iter().collect();
    for kind in Kind::ALL.iter().filter(|k| wanted(k)) {
        match kind
            .start(&opts, &programs, &upstream, scratch.path())
            .await
        {
            Ok(target) => targets.push(target),
            Err(e) => {
                eprintln!("{}: skipped: {e}", kind.name());
                notes.push(format!("`{}` skipped: {}", kind.name(), first_line(&e)));
            }
        }
    }
    if targets.is_empty() {
        return Err("no target could be started".into());
    }

    let workloads = opts.workloads();
    let records = rounds::alternate(
        opts.run.rounds,
        opts.smoke,
        &targets,
        &workloads,
        &mut notes,
        async |target, workload, round| measure::run(target, workload, round).await,
    )
    .await;
    let failed_runs = workloads.len() * targets.len() * opts.run.rounds - records.len();

    let target_lines: Vec<TargetLine> = targets
        .iter()
        .map(|t| TargetLine {
            name: t.name,
            about: t.about.clone(),
            startup_rss_kib: t.startup_rss_kib,
        })
        .collect();
    let target_names: Vec<&'static str> = targets.iter().map(|t| t.name).collect();
    let upstream_about = upstream.about.clone();
    // Stop every server before writing the report: nothing runs past here.
    drop(targets);
    drop(upstream);

    let workload_names: Vec<String> = workloads.iter().map(|w| w.name.clone()).collect();
    let summaries = stats::summarize(&records, &workload_names, &target_names);
    let settings = format!(
        "{} rounds × {} workloads × {} targets, alternating targets within each round; \
         {:?} measured after {:?} warm-up per run; GET of a fixed body over keep-alive \
         HTTP/1.1 connections; attache `[runtime] workers` = nginx `worker_processes` = {}; \
         generator: hyper client, 1 tokio runtime, {} thread(s), closed loop",
        opts.run.rounds,
        workloads.len(),
        target_names.len(),
        opts.run.duration,
        opts.run.warmup,
        opts.workers.max(1),
        opts.run.gen_threads.max(1),
    );
    let report = Report {
        machine: &machine,
        settings,
        upstream: &upstream_about,
        targets: &target_lines,
        notes: &notes,
        workloads: &workloads,
        summaries: &summaries,
    };
    let markdown = report.markdown();
    let results = entry::Results {
        title: TITLE,
        rate: "req/s",
        markdown: &markdown,
        records: &records,
        summaries: &summaries,
        workloads: &workload_names,
        targets: &target_names,
        failed_runs,
        notes: &notes,
    };
    results.publish(&opts.out, scratch.path(), opts.smoke)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}
