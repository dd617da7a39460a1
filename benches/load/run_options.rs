//! The flags both load benches take (flattened into each one's `Options`),
//! with one set of environment variables for both: how long each run
//! lasts, how many rounds, the generator's threads, which attache.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

#[derive(Args, Debug)]
pub(crate) struct RunOptions {
    /// Measured time of each run (after warm-up).
    #[arg(long, env = "LOAD_DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,
    /// Load sent before each run's measured window, not recorded.
    #[arg(long, env = "LOAD_WARMUP", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub(crate) warmup: Duration,
    /// Rounds; each round runs every workload against every target in turn.
    #[arg(long, env = "LOAD_ROUNDS", default_value_t = 3)]
    pub(crate) rounds: usize,
    /// Generator threads. 1 leaves the other core(s) to the target.
    #[arg(long, env = "LOAD_GEN_THREADS", default_value_t = 1)]
    pub(crate) gen_threads: usize,
    /// The attache binary [default: the one cargo built for this bench,
    /// `target/release/attache`, with the release profile].
    #[arg(long, env = "ATTACHE_BIN")]
    pub(crate) attache_bin: Option<PathBuf>,
}

impl RunOptions {
    /// The attache binary to run.
    pub(crate) fn attache(&self) -> PathBuf {
        // Cargo builds the package's binaries with the bench's profile
        // (which inherits `release`) before running a bench.
        self.attache_bin
            .clone()
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_attache")))
    }
}
