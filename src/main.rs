//! The `attache` binary: `run` (the default) and `check`.

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio::sync::watch;
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
        Command::Check => match attache::upstream::UpstreamServices::check(&config)
            .map_err(|e| e.to_string())
            .and_then(|_| toml::to_string_pretty(&config).map_err(|e| e.to_string()))
        {
            Ok(text) => {
                println!("# {}: valid", cli.config.display());
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("attache: {e}");
                ExitCode::from(2)
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
    // The control runtime: credential refreshes (and later DNS and the
    // admin endpoints) run here, off the workers' event loops.
    let control = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("attache-control")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            error!(error = %e, "cannot start the control thread");
            return ExitCode::FAILURE;
        }
    };
    let services = match attache::upstream::UpstreamServices::start(&config, control.handle()) {
        Ok(services) => Arc::new(services),
        Err(e) => {
            error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let listeners = match attache::Listeners::bind(&config) {
        Ok(listeners) => listeners,
        Err(e) => {
            error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    for (name, addr) in attache::describe(&listeners) {
        info!(listener = %name, %addr, workers = config.runtime.workers, "listening");
    }
    let (shutdown, stop) = watch::channel(false);
    let config = Arc::new(config);
    let listeners = Arc::new(listeners);
    let mut threads = Vec::new();
    for index in 1..config.runtime.workers {
        let (config, listeners, services, stop) = (
            config.clone(),
            listeners.clone(),
            services.clone(),
            stop.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("attache-worker-{index}"))
            .spawn(move || {
                worker_runtime()?.block_on(async {
                    let mut tasks = attache::spawn_worker(&config, &listeners, &services, stop)?;
                    while tasks.join_next().await.is_some() {}
                    Ok::<(), std::io::Error>(())
                })
            });
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                error!(error = %e, "cannot start a worker thread");
                return ExitCode::FAILURE;
            }
        }
    }
    // Worker 0 runs on the main thread, which also waits for signals.
    let served = worker_runtime().and_then(|runtime| {
        runtime.block_on(async {
            let mut tasks = attache::spawn_worker(&config, &listeners, &services, stop)?;
            wait_for_signal().await;
            info!("shutting down");
            let _ = shutdown.send(true);
            while tasks.join_next().await.is_some() {}
            Ok(())
        })
    });
    let mut code = ExitCode::SUCCESS;
    if let Err(e) = served {
        error!(error = %e, "worker failed");
        code = ExitCode::FAILURE;
    }
    for thread in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                error!(error = %e, "worker failed");
                code = ExitCode::FAILURE;
            }
            Err(_) => code = ExitCode::FAILURE,
        }
    }
    code
}

/// Each worker is a single-threaded event loop (see the crate docs).
fn worker_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
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
