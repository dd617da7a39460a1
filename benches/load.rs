//! The load bench: direct redis-server vs attache vs twemproxy on one machine,
//! in one run, under identical load. See `benches/README.md`.
//!
//! # Layout
//!
//! - `entry`: the generator's runtime, the exit code, publishing results.
//! - `options`: flags and env vars (those common to both benches in
//!   `run_options`), and the workloads they define.
//! - `procs`: child processes (stopped on every exit path) and free ports.
//! - `procfs`: CPU time and memory of a process, the machine's description.
//! - `targets`: which systems are measured and how each is started;
//!   `configs`: their config files.
//! - `wire`, `loadgen`, `paced`: the RESP load generator (closed loop;
//!   paced, open loop); `outcome`: what a run of
//!   it counted and its latency histogram.
//! - `rounds`: the rounds, targets alternating; `runner`: one run, and
//!   `usage`: the CPU time read from /proc around it.
//! - `stats`: per-run records, median and min–max across rounds.
//! - `report`: the Markdown; `tables`: its tables, the CSV files, writing
//!   the outputs; `svg`: the chart.
//!
//! The HTTP load bench (`http_load.rs`) shares all but `options`,
//! `targets`, `configs`, `wire`, `loadgen`, `runner` and `report`.

#[path = "load/configs.rs"]
mod configs;
#[path = "load/entry.rs"]
mod entry;
#[path = "load/loadgen.rs"]
mod loadgen;
#[path = "load/options.rs"]
mod options;
#[path = "load/outcome.rs"]
mod outcome;
#[path = "load/paced.rs"]
mod paced;
#[path = "load/procfs.rs"]
mod procfs;
#[path = "load/procs.rs"]
mod procs;
#[path = "load/report.rs"]
mod report;
#[path = "load/rounds.rs"]
mod rounds;
#[path = "load/run_options.rs"]
mod run_options;
#[path = "load/runner.rs"]
mod runner;
#[path = "load/stats.rs"]
mod stats;
#[path = "load/svg.rs"]
mod svg;
#[path = "load/tables.rs"]
mod tables;
#[path = "load/targets.rs"]
mod targets;
#[path = "load/usage.rs"]
mod usage;
#[path = "load/wire.rs"]
mod wire;

use std::process::ExitCode;

use clap::Parser;

use options::Options;
use report::Report;
use runner::Bench;
use tables::TargetLine;
use targets::{Backends, Programs};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The smoke test's name and the prefix of error messages.
const NAME: &str = "load_bench";
const TITLE: &str = "attache load bench";

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this
    // binary without it (and maybe with libtest's flags): then it is a smoke
    // test of a few seconds, like criterion's test mode.
    let args: Vec<_> = std::env::args_os().collect();
    let opts = if args.iter().any(|a| a == "--bench") {
        Options::parse_from(args)
    } else if args.iter().any(|a| a == "--list") {
        return ExitCode::SUCCESS;
    } else {
        Options::smoke()
    };
    let (threads, smoke) = (opts.run.gen_threads, opts.smoke);
    entry::run_bench(NAME, threads, smoke, run(opts))
}

async fn run(opts: Options) -> Result<(), BoxError> {
    let machine = procfs::machine_description();
    if !opts.smoke {
        println!("Machine: {machine}");
    }
    let scratch = tempfile::Builder::new().prefix("attache-load-").tempdir()?;
    procs::install_signal_handler(scratch.path())?;

    let programs = programs(&opts)?;
    let wanted = |name: &str| opts.targets.is_empty() || opts.targets.iter().any(|t| t == name);
    let plan: Vec<_> = targets::plan(opts.sharded, programs.envoy.is_some())
        .into_iter()
        .filter(|spec| wanted(spec.name))
        .collect();
    let backends = Backends::start(&programs, scratch.path(), opts.sharded).await?;
    let bench = Bench {
        opts: &opts,
        programs: &programs,
        backends: &backends,
        scratch: scratch.path(),
    };
    let mut targets = Vec::new();
    let mut notes: Vec<String> = procfs::busy_note().into_iter().collect();
    for spec in &plan {
        match bench.start(spec).await {
            Ok(target) => targets.push(target),
            Err(e) => {
                eprintln!("{}: skipped: {e}", spec.name);
                notes.push(format!("`{}` skipped: {}", spec.name, first_line(&e)));
            }
        }
    }
    if targets.is_empty() {
        return Err("no target could be started".into());
    }

    let workloads = opts.workloads();
    let records = bench.run_rounds(&workloads, &targets, &mut notes).await;
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
    // Stop every server before writing the report: nothing runs past here.
    drop(targets);
    drop(backends);

    let workload_names: Vec<String> = workloads.iter().map(|w| w.name.clone()).collect();
    let summaries = stats::summarize(&records, &workload_names, &target_names);
    let settings = format!(
        "{} rounds × {} workloads × {} targets, alternating targets within each round; \
         {:?} measured after {:?} warm-up per run; {} connections; keyspace {} keys \
         (pre-populated), {}-byte values; generator: 1 tokio runtime, {} thread(s), closed loop{}",
        opts.run.rounds,
        workloads.len(),
        target_names.len(),
        opts.run.duration,
        opts.run.warmup,
        opts.conns,
        opts.keyspace,
        opts.value_size,
        opts.run.gen_threads.max(1),
        match opts.paced_rate {
            0 => String::new(),
            rate => format!(
                " ({}: open loop, {rate} req/s over {} connections, paced by its own thread, \
                 {:?} measured)",
                options::PACED_WORKLOAD,
                opts.conns,
                opts.paced_duration.min(opts.run.duration)
            ),
        },
    );
    let report = Report {
        machine: &machine,
        settings,
        targets: &target_lines,
        notes: &notes,
        workloads: &workloads,
        summaries: &summaries,
    };
    let markdown = report.markdown();
    let results = entry::Results {
        title: TITLE,
        rate: "ops/s",
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

fn programs(opts: &Options) -> Result<Programs, BoxError> {
    let redis_server = procs::find_program(&opts.redis_server_bin)
        .ok_or("redis-server is not on PATH (apt-get install -y redis-server redis-tools)")?;
    let attache = opts.run.attache();
    Ok(Programs {
        server_connections: opts.server_connections.max(1),
        redis_server,
        attache,
        nutcracker: procs::find_program(&opts.nutcracker_bin),
        envoy: opts.envoy_bin.as_ref().and_then(procs::find_program),
    })
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}
