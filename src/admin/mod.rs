//! The admin listener (`[admin] listen`): probes, metrics, the effective
//! config and a shutdown hook. It runs on the control thread, not on the
//! workers, so probes answer while the workers are saturated.
//!
//! - `GET /live`: 200 while the process runs (never depends on upstreams).
//! - `GET /startup`: 200 once every listener is bound and every credential
//!   source has its first token; 503 with the reason before.
//! - `GET /ready`: 200 while serving; 503 while draining or while a
//!   listener is at `max_connections`. Never tied to upstream reachability:
//!   an upstream blip must not take the pod out of its Service.
//! - `GET /metrics`: Prometheus text (see [`metrics`]).
//! - `GET /config`: the effective config as JSON. Secrets are mostly not
//!   in the config (it names files and variables); the exceptions, inline
//!   `[http.NAME.headers]` values, serialise as `<redacted>`.
//! - `POST /quitquitquit`: graceful shutdown, as `SIGTERM`.
//!
//! `histogram` is the latency histogram the Redis and HTTP sides observe
//! into (one shard per worker) and `/metrics` renders.

pub(crate) mod histogram;
mod metrics;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info};

use crate::credentials::TokenRegistry;
use crate::listener::ListenerStats;
use crate::reload::Generation;

/// What the admin endpoints read. Shared with the workers (they update
/// counters) and with `main` (it flips `draining`).
pub struct AdminState {
    started: AtomicBool,
    draining: AtomicBool,
    /// What the workers serve now (the config and its listeners).
    generations: watch::Receiver<Arc<Generation>>,
    tokens: TokenRegistry,
    quit: Arc<watch::Sender<bool>>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
}

impl AdminState {
    /// State for the generations the workers serve and the credential
    /// sources. `quit` is set when `/quitquitquit` is called.
    pub fn new(
        generations: watch::Receiver<Arc<Generation>>,
        tokens: TokenRegistry,
        quit: watch::Sender<bool>,
    ) -> Self {
        Self {
            started: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            generations,
            tokens,
            quit: Arc::new(quit),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
        }
    }

    /// Counts a config reload, applied or refused.
    pub fn record_reload(&self, applied: bool) {
        let counter = if applied {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn redis_metrics(&self) -> Vec<(String, Vec<Arc<crate::redis::metrics::RedisMetrics>>)> {
        self.generations.borrow().services.metrics().snapshot()
    }

    fn listeners(&self) -> Vec<ListenerStats> {
        self.generations.borrow().stats()
    }

    /// The effective config as JSON, and its FNV-1a hash.
    fn config_json(&self) -> (String, String) {
        let generation = self.generations.borrow().clone();
        let json = serde_json::to_string_pretty(generation.config())
            .unwrap_or_else(|e| format!("{{\"error\": \"cannot serialize: {e}\"}}"));
        let hash = format!("{:016x}", fnv1a(json.as_bytes()));
        (json, hash)
    }

    /// Every listener is bound and every worker serves it.
    pub fn set_started(&self) {
        self.started.store(true, Ordering::Relaxed);
    }

    /// Shutting down: `/ready` answers 503 from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    fn startup(&self) -> Result<(), String> {
        if !self.started.load(Ordering::Relaxed) {
            return Err("listeners not started yet".into());
        }
        let waiting: Vec<&str> = self
            .tokens
            .iter()
            .filter(|(_, source)| !source.is_ready())
            .map(|(name, _)| name)
            .collect();
        if !waiting.is_empty() {
            return Err(format!("no first token yet for: {}", waiting.join(", ")));
        }
        Ok(())
    }

    fn ready(&self) -> Result<(), String> {
        self.startup()?;
        if self.draining.load(Ordering::Relaxed) {
            return Err("draining: shutting down".into());
        }
        if let Some(full) = self.listeners().iter().find(|l| l.open() >= l.max()) {
            return Err(format!(
                "listener {} is at max_connections ({})",
                full.name,
                full.max()
            ));
        }
        Ok(())
    }
}

/// 64-bit FNV-1a: a stable fingerprint of the loaded config.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Serves the admin endpoints on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                debug!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(&state, &request)) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, error = %e, "admin connection failed");
            }
        });
    }
}

fn answer(state: &AdminState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    let probe = |outcome: Result<(), String>| match outcome {
        Ok(()) => text(StatusCode::OK, "ok\n".into()),
        Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    };
    match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/live") => text(StatusCode::OK, "ok\n".into()),
        (&Method::GET | &Method::HEAD, "/startup") => probe(state.startup()),
        (&Method::GET | &Method::HEAD, "/ready") => probe(state.ready()),
        (&Method::GET, "/metrics") => Response::builder()
            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
            .body(Full::new(Bytes::from(metrics::render(state))))
            .unwrap_or_default(),
        (&Method::GET, "/config") => Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(state.config_json().0)))
            .unwrap_or_default(),
        (&Method::POST, "/quitquitquit") => {
            info!("shutdown requested on /quitquitquit");
            // After this answer is on its way, not before: a process with
            // nothing to drain exits at once.
            let quit = state.quit.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let _ = quit.send(true);
            });
            text(StatusCode::OK, "shutting down\n".into())
        }
        (_, "/live" | "/startup" | "/ready" | "/metrics" | "/config" | "/quitquitquit") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} not allowed here\n", request.method()),
        ),
        (_, path) => text(
            StatusCode::NOT_FOUND,
            format!("no admin endpoint {path}; try /live /startup /ready /metrics /config /quitquitquit\n"),
        ),
    }
}
