//! Command-line flags (after `cargo bench --bench load --`), each with an
//! environment variable fallback, and the workloads they define.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::loadgen::LoadSpec;
use crate::run_options::RunOptions;
use crate::wire::{Keyspace, Op};

/// Load bench: direct redis-server vs attache vs twemproxy, side by side.
#[derive(Parser, Debug)]
#[command(name = "load")]
pub(crate) struct Options {
    #[command(flatten)]
    pub(crate) run: RunOptions,
    /// Connections of the GET/SET workloads.
    #[arg(long, env = "LOAD_CONNS", default_value_t = 50)]
    pub(crate) conns: usize,
    /// Pipeline depths; each gives a GET and a SET workload.
    #[arg(
        long,
        env = "LOAD_PIPELINES",
        value_delimiter = ',',
        default_value = "1,16"
    )]
    pub(crate) pipelines: Vec<usize>,
    /// Also run GET pipeline 1 on a single connection: the latency a hop
    /// adds without queueing (at 50 busy connections in a closed loop,
    /// p50 is about connections ÷ throughput). `false` skips it.
    #[arg(long, env = "LOAD_LATENCY", default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) latency: bool,
    /// Total rate, in requests per second, of the paced workload
    /// (`get-p1-paced`): GET at pipeline 1 over `--conns` connections, each
    /// sending on its own fixed schedule, latency measured from each
    /// request's intended send time. 0 skips it.
    #[arg(long, env = "LOAD_PACED_RATE", default_value_t = 30_000)]
    pub(crate) paced_rate: u64,
    /// Measured time of each paced run (after `--warmup`); shorter than
    /// `--duration` by default to keep the whole bench under 3 minutes.
    #[arg(long, env = "LOAD_PACED_DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub(crate) paced_duration: Duration,
    /// Idle connections of the mostly-idle workload (0 skips it).
    #[arg(long, env = "LOAD_IDLE_CONNS", default_value_t = 1000)]
    pub(crate) idle_conns: usize,
    /// Active connections (GET, pipeline 1) beside the idle ones.
    #[arg(long, env = "LOAD_IDLE_ACTIVE", default_value_t = 5)]
    pub(crate) idle_active: usize,
    /// Number of distinct keys; all are written before the first run.
    #[arg(long, env = "LOAD_KEYSPACE", default_value_t = 10_000)]
    pub(crate) keyspace: u64,
    /// Value size in bytes for SET and for the pre-populated keys.
    #[arg(long, env = "LOAD_VALUE_SIZE", default_value_t = 100)]
    pub(crate) value_size: usize,
    /// Only these targets (comma-separated names, e.g. `direct,attache`).
    #[arg(long, env = "LOAD_TARGETS", value_delimiter = ',')]
    pub(crate) targets: Vec<String>,
    /// Add the sharded targets (ketama over 3 redis-servers).
    #[arg(long, env = "LOAD_SHARDED")]
    pub(crate) sharded: bool,
    /// Upstream connections per redis-server for attache and twemproxy
    /// alike (`server_connections` in both configs).
    #[arg(long, env = "LOAD_SERVER_CONNECTIONS", default_value_t = 1)]
    pub(crate) server_connections: usize,
    /// Where report.md, runs.csv, summary.csv and chart.svg go.
    #[arg(long, env = "LOAD_OUT", default_value = "target/bench-results")]
    pub(crate) out: PathBuf,
    /// The twemproxy binary.
    #[arg(long, env = "NUTCRACKER_BIN", default_value = "nutcracker")]
    pub(crate) nutcracker_bin: PathBuf,
    /// The redis-server binary.
    #[arg(long, env = "REDIS_SERVER_BIN", default_value = "redis-server")]
    pub(crate) redis_server_bin: PathBuf,
    /// An Envoy binary: adds an Envoy redis_proxy target.
    #[arg(long, env = "ENVOY_BIN")]
    pub(crate) envoy_bin: Option<PathBuf>,
    /// Passed by `cargo bench` to every bench binary; without it the bench
    /// is a few-second smoke test (what `cargo test --all-targets` runs).
    #[arg(long, hide = true)]
    pub(crate) bench: bool,
    /// Set by [`Options::smoke`].
    #[arg(skip)]
    pub(crate) smoke: bool,
}

/// The single-connection GET workload (see [`Options::latency`]).
pub(crate) const LATENCY_WORKLOAD: &str = "get-p1-c1";

/// The paced GET workload (see [`Options::paced_rate`]).
pub(crate) const PACED_WORKLOAD: &str = "get-p1-paced";

/// One kind of load, run identically against every target.
#[derive(Clone, Debug)]
pub(crate) struct Workload {
    /// `get-p1`, `set-p16`, `idle-1000`…
    pub(crate) name: String,
    pub(crate) load: LoadSpec,
    /// Connections opened before the load and kept silent through it.
    pub(crate) idle_conns: usize,
}

impl Options {
    /// Tiny settings that still start every target and run every workload,
    /// for `cargo test --all-targets`. Binaries come from the environment
    /// variables as usual; the load settings do not.
    pub(crate) fn smoke() -> Self {
        let args = [
            "load",
            "--bench",
            "--duration",
            "100ms",
            "--warmup",
            "50ms",
            "--rounds",
            "1",
            "--conns",
            "4",
            "--pipelines",
            "1,16",
            "--paced-rate",
            "2000",
            "--paced-duration",
            "100ms",
            "--idle-conns",
            "20",
            "--idle-active",
            "2",
            "--keyspace",
            "200",
            "--value-size",
            "100",
            "--server-connections",
            "1",
            "--gen-threads",
            "1",
        ];
        let mut opts = Self::parse_from(args);
        opts.smoke = true;
        opts.sharded = false;
        opts.targets.clear();
        opts
    }

    pub(crate) fn workloads(&self) -> Vec<Workload> {
        let keyspace = Keyspace::new(self.keyspace);
        let load = |op, conns, pipeline| LoadSpec {
            op,
            conns,
            pipeline,
            keyspace,
            value_size: self.value_size,
            warmup: self.run.warmup,
            duration: self.run.duration,
            rate: None,
        };
        let mut workloads = Vec::new();
        for &depth in &self.pipelines {
            for op in [Op::Get, Op::Set] {
                workloads.push(Workload {
                    name: format!("{}-p{depth}", op.name().to_lowercase()),
                    load: load(op, self.conns, depth.max(1)),
                    idle_conns: 0,
                });
            }
        }
        if self.latency {
            workloads.push(Workload {
                name: LATENCY_WORKLOAD.into(),
                load: load(Op::Get, 1, 1),
                idle_conns: 0,
            });
        }
        if self.paced_rate > 0 {
            workloads.push(Workload {
                name: PACED_WORKLOAD.into(),
                load: LoadSpec {
                    rate: Some(self.paced_rate as f64),
                    duration: self.paced_duration.min(self.run.duration),
                    ..load(Op::Get, self.conns, 1)
                },
                idle_conns: 0,
            });
        }
        if self.idle_conns > 0 {
            workloads.push(Workload {
                name: format!("idle-{}", self.idle_conns),
                load: load(Op::Get, self.idle_active.max(1), 1),
                idle_conns: self.idle_conns,
            });
        }
        workloads
    }
}
