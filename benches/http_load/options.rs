//! Command-line flags (after `cargo bench --bench http_load --`), each with
//! an environment variable fallback, and the workloads they define.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::loadgen::LoadSpec;
use crate::rounds::Named;
use crate::run_options::RunOptions;

/// HTTP load bench: one upstream called directly, through attache and
/// through nginx, side by side.
#[derive(Parser, Debug)]
#[command(name = "http_load")]
pub(crate) struct Options {
    #[command(flatten)]
    pub(crate) run: RunOptions,
    /// Keep-alive connections, one workload each: 50 for throughput, 1 for
    /// the latency a proxy adds without queueing.
    #[arg(
        long,
        env = "HTTP_LOAD_CONNS",
        value_delimiter = ',',
        default_value = "50,1"
    )]
    pub(crate) conns: Vec<usize>,
    /// Response body sizes, one workload each: bytes, or with a `KiB`
    /// suffix (`100,1KiB,16KiB`).
    #[arg(long, env = "HTTP_LOAD_BODY_SIZES", value_delimiter = ',', default_value = "100", value_parser = parse_size)]
    pub(crate) body_sizes: Vec<usize>,
    /// Only these targets (comma-separated names, e.g. `direct,attache`).
    #[arg(long, env = "HTTP_LOAD_TARGETS", value_delimiter = ',')]
    pub(crate) targets: Vec<String>,
    /// Worker threads of attache (`[runtime] workers`) and worker
    /// processes of nginx (`worker_processes`), equal for a fair comparison.
    #[arg(long, env = "HTTP_LOAD_WORKERS", default_value_t = 1)]
    pub(crate) workers: usize,
    /// The upstream behind every target: this bench's own minimal HTTP/1.1
    /// server, or nginx serving static files.
    #[arg(long, env = "HTTP_LOAD_UPSTREAM", value_enum, default_value_t = UpstreamKind::Builtin)]
    pub(crate) upstream: UpstreamKind,
    /// Threads of the builtin upstream, or worker processes of the nginx
    /// upstream.
    #[arg(long, env = "HTTP_LOAD_UPSTREAM_THREADS", default_value_t = 1)]
    pub(crate) upstream_threads: usize,
    /// Where report.md, runs.csv, summary.csv and chart.svg go.
    #[arg(long, env = "HTTP_LOAD_OUT", default_value = "benches/results/http")]
    pub(crate) out: PathBuf,
    /// The nginx binary; without one, the `nginx` target is skipped.
    #[arg(long, env = "NGINX_BIN", default_value = "nginx")]
    pub(crate) nginx_bin: PathBuf,
    /// Passed by `cargo bench` to every bench binary; without it the bench
    /// does nothing, or a smoke test with `HTTP_LOAD_SMOKE=1`.
    #[arg(long, hide = true)]
    pub(crate) bench: bool,
    /// Set by [`Options::smoke`].
    #[arg(skip)]
    pub(crate) smoke: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum UpstreamKind {
    Builtin,
    Nginx,
}

/// One kind of load, run identically against every target.
#[derive(Clone, Debug)]
pub(crate) struct Workload {
    /// `100B-c50`, `16KiB-c1`…
    pub(crate) name: String,
    pub(crate) load: LoadSpec,
}

impl Named for Workload {
    fn name(&self) -> &str {
        &self.name
    }
}

impl Options {
    /// Tiny settings that still start every target and run every workload
    /// kind, for `HTTP_LOAD_SMOKE=1 cargo test --bench http_load`. Binaries
    /// and the upstream kind come from the environment variables as usual.
    pub(crate) fn smoke() -> Self {
        let args = [
            "http_load",
            "--bench",
            "--duration",
            "100ms",
            "--warmup",
            "50ms",
            "--rounds",
            "1",
            "--conns",
            "4,1",
            "--body-sizes",
            "100,16KiB",
            "--workers",
            "1",
            "--gen-threads",
            "1",
        ];
        let mut opts = Self::parse_from(args);
        opts.smoke = true;
        opts.targets.clear();
        opts
    }

    pub(crate) fn workloads(&self) -> Vec<Workload> {
        let mut workloads = Vec::new();
        for &size in &self.body_sizes {
            for &conns in &self.conns {
                workloads.push(Workload {
                    name: format!("{}-c{conns}", size_name(size)),
                    load: LoadSpec {
                        conns: conns.max(1),
                        path: body_path(size),
                        body_size: size,
                        warmup: self.run.warmup,
                        duration: self.run.duration,
                    },
                });
            }
        }
        workloads
    }
}

/// The path at which every upstream serves a body of `size` bytes.
pub(crate) fn body_path(size: usize) -> String {
    format!("/bytes/{size}")
}

/// 100 → "100B", 16384 → "16KiB".
pub(crate) fn size_name(size: usize) -> String {
    match size {
        s if s >= 1024 && s % 1024 == 0 => format!("{}KiB", s / 1024),
        s => format!("{s}B"),
    }
}

/// `100`, `100B`, `1KiB` or `16kib`.
fn parse_size(text: &str) -> Result<usize, String> {
    let lower = text.trim().to_ascii_lowercase();
    let (digits, unit) = match lower.strip_suffix("kib") {
        Some(digits) => (digits, 1024),
        None => (lower.strip_suffix('b').unwrap_or(&lower), 1),
    };
    digits
        .trim()
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("{text:?}: expected bytes, e.g. 100 or 16KiB"))
}
