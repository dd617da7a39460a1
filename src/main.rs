//! The `attache` binary: `run` (the default), `check` and `wait`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use attache::admin::AdminState;
use attache::config::{Config, LogFormat};
use attache::reload::{run_worker, Generation};
use attache::upstream::UpstreamServices;
use attache::{ListenerStats, Listeners};
use clap::{Parser, Subcommand};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

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
    /// Wait until an attache is ready (its admin `/ready` answers 200):
    /// for apps that must wait for it on platforms without native sidecars.
    Wait {
        /// The admin listener of the attache to wait for.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// Give up (exit 1) after this long.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Wait { admin, timeout }) = cli.command {
        return wait_ready(admin, timeout);
    }
    let config = match attache::config::load(&cli.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("attache: invalid config: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => match UpstreamServices::check(&config)
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
        Command::Run => run(config, cli.config),
        Command::Wait { .. } => unreachable!("handled above"),
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn run(config: Config, path: PathBuf) -> ExitCode {
    init_logging(&config);
    // The control runtime: credential refreshes, DNS re-resolution, config
    // reloads and the admin endpoints run here, off the workers' event
    // loops, so probes answer while the workers are saturated.
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
    let services = match UpstreamServices::start(&config, control.handle()) {
        Ok(services) => Arc::new(services),
        Err(e) => {
            error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let listeners = match Listeners::bind(&config) {
        Ok(listeners) => listeners,
        Err(e) => {
            error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    for (name, addr) in attache::describe(&listeners) {
        info!(listener = %name, %addr, workers = config.runtime.workers, "listening");
    }
    let admin_listen = config.admin.listen;
    let workers = config.runtime.workers;
    let grace = config.runtime.shutdown_grace;
    let tokens = services.tokens().clone();
    let first = Generation::first(config, &listeners, services);
    let (generations, current) = watch::channel(Arc::new(first));
    let (quit_tx, mut quit) = watch::channel(false);
    let admin = Arc::new(AdminState::new(current.clone(), tokens, quit_tx));
    let admin_socket = match std::net::TcpListener::bind(admin_listen)
        .and_then(|s| s.set_nonblocking(true).map(|()| s))
    {
        Ok(socket) => socket,
        Err(e) => {
            error!(error = %e, addr = %admin_listen, "cannot bind the admin listener");
            return ExitCode::FAILURE;
        }
    };
    info!(addr = %admin_listen, "admin listening");
    {
        let admin = admin.clone();
        control.spawn(async move {
            match tokio::net::TcpListener::from_std(admin_socket) {
                Ok(socket) => attache::admin::serve(socket, admin).await,
                Err(e) => error!(error = %e, "admin listener failed"),
            }
        });
    }
    control.spawn(watch_config(path, generations, admin.clone()));

    let (shutdown, stop) = watch::channel(false);
    let serving = Arc::new(AtomicUsize::new(0));
    let mark_serving = {
        let (admin, serving) = (admin.clone(), serving.clone());
        move || {
            if serving.fetch_add(1, Ordering::AcqRel) + 1 == workers {
                admin.set_started();
                info!("serving");
            }
        }
    };
    let mut threads = Vec::new();
    for index in 1..workers {
        let (current, stop) = (current.clone(), stop.clone());
        let mark_serving = mark_serving.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("attache-worker-{index}"))
            .spawn(move || {
                worker_runtime()?.block_on(async {
                    let stats = current.borrow().stats();
                    let worker = tokio::spawn(run_worker(current, stop));
                    mark_serving();
                    worker.await.map_err(std::io::Error::other)??;
                    drain(&stats, grace).await;
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
            let worker = tokio::spawn(run_worker(current.clone(), stop));
            mark_serving();
            let why = wait_for_signal(&mut quit).await;
            info!(reason = why, grace = ?grace, "shutting down: draining app connections");
            admin.set_draining();
            let _ = shutdown.send(true);
            worker.await.map_err(std::io::Error::other)??;
            let started = Instant::now();
            let stats = current.borrow().stats();
            tokio::select! {
                _ = drain(&stats, grace) => {
                    info!(after = ?started.elapsed(), "every app connection closed");
                }
                why = wait_for_signal(&mut quit) => {
                    warn!(reason = why, "second shutdown request: exiting now");
                    std::process::exit(0);
                }
            }
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
    control.shutdown_background();
    code
}

/// Hot reload: the config file is checked every second (its contents, so
/// a Kubernetes ConfigMap update, which swaps a `..data` symlink, is seen
/// like an edit) and re-read on `SIGHUP`. An edit is taken once it holds
/// still from one check to the next, so a file written in several steps is
/// not read half-way through. A new config is validated and prepared
/// first; if anything is wrong the running config stays and the error is
/// logged and counted.
async fn watch_config(
    path: PathBuf,
    generations: watch::Sender<Arc<Generation>>,
    admin: Arc<AdminState>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut seen = std::fs::read(&path).ok();
    // A config refused for what can pass without an edit (a port another
    // process holds, TLS files not mounted yet) is tried again every second
    // until it applies or the file changes; the refusal is logged and
    // counted once.
    let mut pending = false;
    // The contents at the previous check: an edit is taken once it is
    // the same at two checks in a row.
    let mut previous = seen.clone();
    loop {
        let forced = tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => false,
            Some(()) = async { match &mut hup { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let contents = std::fs::read(&path).ok();
        let retry = !forced && contents == seen;
        let still = std::mem::replace(&mut previous, contents.clone()) == contents;
        if !forced && !retry && !still {
            continue;
        }
        if retry && !pending {
            continue;
        }
        seen = contents;
        pending = false;
        let config = match attache::config::load(&path) {
            Ok(config) => config,
            Err(e) => {
                warn!(error = %e, "config reload refused: the running config stays");
                admin.record_reload(false);
                continue;
            }
        };
        // SIGHUP applies even an unchanged config: files it names (HTTP
        // `headers`' value_file) may have changed.
        if !forced && *generations.borrow().config() == config {
            continue;
        }
        let prepared = attache::reload::prepare(&generations.borrow(), config);
        match prepared {
            Ok(next) => {
                generations.send_replace(Arc::new(next));
                admin.record_reload(true);
                info!(file = %path.display(), "config reloaded");
            }
            Err(e) => {
                pending = matches!(
                    e,
                    attache::ReloadError::Bind(_) | attache::ReloadError::Services(_)
                );
                if retry {
                    debug!(error = %e, "config reload still refused; trying again in 1s");
                } else {
                    warn!(error = %e, retry = pending, "config reload refused: the running config stays");
                    admin.record_reload(false);
                }
            }
        }
    }
}

/// Waits until every app connection closed, or `grace` passed.
async fn drain(listeners: &[ListenerStats], grace: Duration) {
    let all_idle = async {
        for listener in listeners {
            listener.wait_idle().await;
        }
    };
    if tokio::time::timeout(grace, all_idle).await.is_err() {
        let open: usize = listeners.iter().map(ListenerStats::open).sum();
        warn!(open, grace = ?grace, "shutdown grace over: closing the remaining app connections");
    }
}

/// Each worker is a single-threaded event loop (see the crate docs).
fn worker_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// SIGTERM, Ctrl-C or `/quitquitquit`; says which.
async fn wait_for_signal(quit: &mut watch::Receiver<bool>) -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    // A request not seen yet: `wait_for` would also take the value an
    // earlier call saw (it stays `true`), so the drain that follows the
    // first request would end at once, as if a second had come.
    let quit_requested = async {
        loop {
            if quit.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            if *quit.borrow_and_update() {
                break;
            }
        }
    };
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "interrupt",
            _ = quit_requested => "/quitquitquit",
        },
        Err(_) => tokio::select! {
            _ = tokio::signal::ctrl_c() => "interrupt",
            _ = quit_requested => "/quitquitquit",
        },
    }
}

/// `attache wait`: polls `GET /ready` until it answers 200.
fn wait_ready(admin: SocketAddr, timeout: Duration) -> ExitCode {
    use std::io::{Read, Write};
    // A timeout past what the clock can add means no deadline.
    let deadline = Instant::now().checked_add(timeout);
    let mut last = String::from("no answer yet");
    while deadline.is_none_or(|deadline| Instant::now() < deadline) {
        let attempt = (|| -> std::io::Result<String> {
            let mut stream = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(1))?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            stream
                .write_all(b"GET /ready HTTP/1.1\r\nHost: attache\r\nConnection: close\r\n\r\n")?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            Ok(answer)
        })();
        match attempt {
            Ok(answer) if answer.starts_with("HTTP/1.1 200") => {
                println!("attache at {admin} is ready");
                return ExitCode::SUCCESS;
            }
            Ok(answer) => {
                last = answer
                    .split("\r\n\r\n")
                    .nth(1)
                    .unwrap_or(&answer)
                    .trim()
                    .to_owned()
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("attache at {admin} not ready after {timeout:?}: {last}");
    ExitCode::FAILURE
}
