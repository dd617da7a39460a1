//! The `attache` binary: `run` (the default) and `check`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing::{error, info};

#[derive(Parser)]
#[command(name = "attache", version, about = "An ambassador sidecar for Redis")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (TOML or YAML, by extension).
    #[arg(
        long,
        short,
        global = true,
        env = "ATTACHE_CONFIG",
        default_value = "/etc/attache/attache.toml"
    )]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the listeners of the config file (the default).
    Run,
    /// Validate the config file and print the effective config.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match attache::config::load(&cli.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("attache: invalid config: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => match toml::to_string_pretty(&config) {
            Ok(text) => {
                println!("# {}: valid", cli.config.display());
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("attache: cannot print config: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run => run(config),
    }
}

fn run(config: attache::config::Config) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let running = match attache::start(config).await {
            Ok(running) => running,
            Err(e) => {
                error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        wait_for_signal().await;
        info!("shutting down");
        running.shutdown().await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
