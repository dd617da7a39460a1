//! The load bench: direct redis-server vs attache vs twemproxy on one machine,
//! in one run, under identical load. See `benches/README.md`.
//!
//! # Layout
//!
//! - `options`: flags and env vars, and the workloads they define.
//! - `procs`: child processes (stopped on every exit path) and free ports.
//! - `procfs`: CPU time and memory of a process, the machine's description.
//! - `targets`: which systems are measured and how each is started;
//!   `configs`: their config files.
//! - `wire`, `loadgen`: the RESP load generator.
//! - `rounds`: the rounds, targets alternating; `runner`: one run, and
//!   `usage`: the CPU time read from /proc around it.
//! - `stats`: per-run records, median and min–max across rounds.
//! - `report`: the Markdown; `tables`: its cells, the CSV files, writing
//!   the outputs; `svg`: the chart.
//!
//! The HTTP load bench (`http_load.rs`) shares `procs`, `procfs`, `rounds`,
//! `usage`, `stats`, `tables` and `svg`.

#[path = "load/configs.rs"]
mod configs;
#[path = "load/loadgen.rs"]
mod loadgen;
#[path = "load/options.rs"]
mod options;
#[path = "load/procfs.rs"]
mod procfs;
#[path = "load/procs.rs"]
mod procs;
#[path = "load/report.rs"]
mod report;
#[path = "load/rounds.rs"]
mod rounds;
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

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use options::Options;
use report::{Report, TargetLine};
use runner::Bench;
use targets::{Backends, Programs};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    let mut runtime = if opts.gen_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(opts.gen_threads);
        b
    };
    let runtime = runtime.enable_all().build().expect("tokio runtime");
    let smoke = opts.smoke;
    let started = std::time::Instant::now();
    // `block_on` polls `run` on the main thread, which is where the target
    // processes must be spawned (see `ChildGuard::spawn`).
    let result = runtime.block_on(run(opts));
    if smoke {
        let secs = started.elapsed().as_secs_f64();
        let (verdict, passed, failed) = match &result {
            Ok(()) => ("ok", 1, 0),
            Err(_) => ("FAILED", 0, 1),
        };
        println!("\nrunning 1 test\ntest load_bench_smoke ... {verdict}\n");
        println!("test result: {verdict}. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out; finished in {secs:.2}s\n");
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load bench: {e}");
            ExitCode::FAILURE
        }
    }
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
    let load_at_start = procfs::load_average();
    let mut targets = Vec::new();
    let mut notes = Vec::new();
    if load_at_start > 0.5 {
        notes.push(format!(
            "the machine was busy when the bench started (1-minute load average {load_at_start:.2}): \
             see the `other CPU %` column"
        ));
    }
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
    let failed_runs = workloads.len() * targets.len() * opts.rounds - records.len();
    let error_replies: u64 = records.iter().map(|r| r.errors).sum();

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
         (pre-populated), {}-byte values; generator: 1 tokio runtime, {} thread(s), closed loop",
        opts.rounds,
        workloads.len(),
        target_names.len(),
        opts.duration,
        opts.warmup,
        opts.conns,
        opts.keyspace,
        opts.value_size,
        opts.gen_threads.max(1),
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
    // The smoke test checks that every output renders, and keeps them out
    // of the real results.
    let out = match opts.smoke {
        true => scratch.path().join("results"),
        false => opts.out.clone(),
    };
    if !opts.smoke {
        println!("\n{markdown}");
        let files = "report.md, runs.csv, summary.csv and chart.svg";
        eprintln!("wrote {files} to {}", out.display());
    }
    let title = "attache load bench";
    tables::write_outputs(
        &out,
        title,
        &markdown,
        &records,
        &summaries,
        &workload_names,
        &target_names,
    )?;
    if opts.smoke && (failed_runs > 0 || error_replies > 0) {
        let notes = notes.join("\n  ");
        return Err(format!(
            "{failed_runs} runs failed, {error_replies} error replies:\n  {notes}"
        )
        .into());
    }
    Ok(())
}

fn programs(opts: &Options) -> Result<Programs, BoxError> {
    let redis_server = procs::find_program(&opts.redis_server_bin)
        .ok_or("redis-server is not on PATH (apt-get install -y redis-server redis-tools)")?;
    // Cargo builds the package's binaries with the bench's profile (which
    // inherits `release`) before running a bench: `target/release/attache`.
    let attache = opts
        .attache_bin
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_attache")));
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
