//! One HTTP listener's request path, per worker: admit (route, or a local
//! 403/404/400), headers (hop-by-hop out, Host, static headers, the
//! token), forward with retries under the listener's `timeout`, and the
//! response back (streamed), or the local error that replaces it.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use attache_http::headers::is_upgrade;
use attache_http::retry::{Attempt, Decision, Outcome};
use attache_http::{Admission, LocalError, Policy, RequestContext, RetryBudget, Route, Upstream};
use bytes::Bytes;
use http::header::{HeaderValue, COOKIE};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::body::{self, AppBody, Body, BoxError};
use super::metrics::HttpMetrics;
use super::pool::{PoolSettings, UpstreamPool};
use crate::credentials::TokenSource;
use crate::upstream::UpstreamServices;

mod attempt;

/// Everything one listener's app connections share on one worker.
pub(crate) struct HttpService {
    name: Arc<str>,
    policy: Arc<Policy>,
    /// The pool of each route, by route number: `routes[i]` in config
    /// order, then the catch-all. Routes to one upstream share a pool.
    pools: Vec<Option<Arc<UpstreamPool>>>,
    /// `token`'s name and source (`None` as the source only if
    /// `[tokens]` lacks it, which validation prevents: then every request
    /// gets a 503 rather than going out without its credential).
    token: Option<(String, Option<TokenSource>)>,
    timeout: Duration,
    budget: Mutex<RetryBudget>,
    metrics: Arc<HttpMetrics>,
}

/// One request as every attempt sends it.
struct Outgoing {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: AppBody,
    upgrade: bool,
    /// Attempts made so far, the current one included.
    attempts: u32,
    /// The one token refresh after a `401` has been spent.
    token_refreshed: bool,
    /// When the app gets a 504 (`timeout` after the request came).
    deadline: tokio::time::Instant,
}

impl HttpService {
    /// The listener's counters (shared by its services across reloads).
    pub(crate) fn metrics(&self) -> &HttpMetrics {
        &self.metrics
    }

    /// The service of listener `name` with its checked `policy`.
    pub(crate) fn start(
        name: &str,
        config: &crate::config::HttpListenerConfig,
        policy: Arc<Policy>,
        services: &UpstreamServices,
    ) -> Arc<Self> {
        let metrics = services.http_metrics().listener(name);
        let settings = PoolSettings {
            connect_timeout: config.connect_timeout,
            idle_timeout: config.idle_timeout,
            max_idle: config.max_idle_per_host,
        };
        let table = policy.gate.routes();
        let catch_all = config.routes.len();
        let mut pools: Vec<Option<Arc<UpstreamPool>>> = vec![None; catch_all + 1];
        let mut labels = vec![String::new(); catch_all + 1];
        let mut shared: Vec<Arc<UpstreamPool>> = Vec::new();
        for route in table.routes().iter().chain(table.fallback()) {
            let number = route_number(route, catch_all);
            let upstream = route.upstream();
            let pool = match shared.iter().find(|p| same_origin(&p.upstream, upstream)) {
                Some(pool) => pool.clone(),
                None => {
                    let pool = Arc::new(UpstreamPool::new(
                        upstream.clone(),
                        services.http_tls(name),
                        services.reach(),
                        settings,
                        metrics.clone(),
                    ));
                    shared.push(pool.clone());
                    pool
                }
            };
            pools[number] = Some(pool);
            labels[number] = route_label(route);
        }
        metrics.set_routes(labels);
        Arc::new(Self {
            name: name.into(),
            token: config
                .token
                .as_ref()
                .map(|name| (name.clone(), services.tokens().get(name))),
            timeout: config.timeout,
            budget: Mutex::new(policy.retry_budget()),
            policy,
            pools,
            metrics,
        })
    }

    /// Answers one app request: the upstream's response, or attache's own.
    pub(crate) async fn handle<B>(
        self: Arc<Self>,
        mut request: Request<B>,
        peer: SocketAddr,
    ) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        let app_upgrade = is_upgrade(request.version(), request.headers())
            .then(|| hyper::upgrade::on(&mut request));
        let (parts, body) = request.into_parts();
        let (number, upstream, outgoing) = match self.policy.gate.admit(&parts) {
            Admission::Refuse(error) => return self.local(&error),
            Admission::Forward(forward) => {
                let number = route_number(forward.route, self.pools.len() - 1);
                let mut headers = parts.headers;
                if matches!(parts.version, Version::HTTP_2 | Version::HTTP_3) {
                    join_cookies(&mut headers);
                }
                let outgoing = Outgoing {
                    method: parts.method.clone(),
                    uri: forward.uri,
                    headers,
                    body: AppBody::Stream(None),
                    upgrade: forward.upgrade,
                    attempts: 0,
                    token_refreshed: false,
                    deadline: tokio::time::Instant::now() + self.timeout,
                };
                (number, forward.route.upstream(), outgoing)
            }
        };
        let Some(pool) = self.pools.get(number).cloned().flatten() else {
            return self.local(&LocalError::no_route(&parts.method, parts.uri.path(), None));
        };
        // A guard: the app may hang up, and hyper then drops this future.
        let _in_flight = InFlight::start(&self.metrics);
        // Built in place: a named future moved into `timeout` would take
        // its size twice in this one.
        let forwarding = tokio::time::timeout_at(
            outgoing.deadline,
            self.forward(&pool, upstream, outgoing, body, peer, app_upgrade),
        );
        let response = match forwarding.await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => self.local(&error),
            Err(_) => self.local(&LocalError::timeout(upstream, self.timeout)),
        };
        self.metrics
            .response(number, response.status().as_u16(), started.elapsed());
        response
    }

    /// attache's own answer.
    fn local(&self, error: &LocalError) -> Response<Body> {
        self.metrics.local_error(error.kind());
        debug!(listener = %self.name, kind = error.kind(), %error, "local error response");
        error.to_response().map(body::full)
    }

    /// The credential header's value, if the listener has a token.
    fn credential(&self, upstream: &Upstream) -> Result<Option<HeaderValue>, LocalError> {
        let source = match &self.token {
            None => return Ok(None),
            Some((_, Some(source))) => source,
            Some((name, None)) => {
                return Err(LocalError::no_token(
                    upstream,
                    name,
                    "no such [tokens] source",
                ))
            }
        };
        let token = source
            .current()
            .map_err(|e| LocalError::no_token(upstream, source.name(), e))?;
        self.policy
            .headers
            .credential
            .value(token.secret.expose())
            .map(Some)
            .map_err(|e| LocalError::no_token(upstream, source.name(), e))
    }

    /// Forwards with retries (the caller bounds it with `timeout`).
    async fn forward<B>(
        &self,
        pool: &UpstreamPool,
        // The route's own (its pool is shared by every route to the same
        // origin, whatever their base paths): errors name this one.
        upstream: &Upstream,
        mut outgoing: Outgoing,
        body: B,
        peer: SocketAddr,
        app_upgrade: Option<OnUpgrade>,
    ) -> Result<Response<Body>, LocalError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        // A small body is read whole before anything goes upstream: an
        // app that does not send it all in time is told so (408), rather
        // than a 504 naming an upstream that was never asked. Bounded by
        // the request's deadline, polled before `timeout`'s own.
        let reading = AppBody::new(body, &outgoing.headers);
        outgoing.body = tokio::time::timeout_at(outgoing.deadline, reading)
            .await
            .map_err(|_| LocalError::RequestTimeout {
                after: self.timeout,
            })?
            .map_err(|_| LocalError::BadRequest {
                reason: "the request body could not be read",
            })?;
        let mut credential = self.credential(upstream)?;
        self.policy.headers.request(
            &mut outgoing.headers,
            &RequestContext {
                upstream,
                credential: credential.as_ref(),
                client: Some(peer.ip()),
                upgrade: outgoing.upgrade,
            },
        );
        self.lock_budget().deposit();
        let mut avoid = None;
        loop {
            outgoing.attempts += 1;
            let (outcome, error, response) = match self
                .attempt(pool, upstream, &mut avoid, &mut outgoing)
                .await
            {
                Ok(response) => {
                    let status = response.status();
                    let retryable = matches!(status.as_u16(), 401 | 502 | 503 | 504);
                    if !retryable {
                        return Ok(self.finish(response, app_upgrade));
                    }
                    (Outcome::Status(status), None, Some(response))
                }
                Err((outcome, error)) => (outcome, Some(error), None),
            };
            let attempt = Attempt {
                method: &outgoing.method,
                number: outgoing.attempts,
                outcome,
                body_replayable: outgoing.body.replayable(),
                body_sent: !outgoing.body.available(),
                token_refreshed: outgoing.token_refreshed,
            };
            let stop = |error: Option<LocalError>, response: Option<Response<Body>>| match (
                response, error,
            ) {
                (Some(response), _) => Ok(self.finish(response, None)),
                (None, Some(error)) => Err(error),
                (None, None) => Err(LocalError::upstream_reset(upstream, "no response")),
            };
            match self.policy.retry.decide(&attempt, fastrand::f64()) {
                Decision::Stop(_) => return stop(error, response),
                Decision::Retry {
                    refresh_token: true,
                    ..
                } => {
                    outgoing.token_refreshed = true;
                    HttpMetrics::add(&self.metrics.token_refreshes);
                    if let Some((_, Some(source))) = &self.token {
                        // Bounded by the request's own deadline (the same
                        // as `timeout`'s, and polled first): a token
                        // endpoint that hangs is named as the cause, not
                        // the upstream, which answered at once.
                        let refresh = Box::pin(source.force_refresh());
                        match tokio::time::timeout_at(outgoing.deadline, refresh).await {
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => {
                                debug!(listener = %self.name, error = %e, "token refresh after a 401 failed");
                            }
                            Err(_) => {
                                return Err(LocalError::no_token(
                                    upstream,
                                    source.name(),
                                    format_args!(
                                        "the upstream answered 401 and the token refresh did not finish within {:?}",
                                        self.timeout
                                    ),
                                ));
                            }
                        }
                    }
                    credential = self.credential(upstream)?;
                    self.policy
                        .headers
                        .credential
                        .apply(&mut outgoing.headers, credential.as_ref());
                }
                Decision::Retry { after, .. } => {
                    if !self.lock_budget().try_withdraw(Instant::now()) {
                        HttpMetrics::add(&self.metrics.retries_refused);
                        return stop(error, response);
                    }
                    drop(response);
                    tokio::time::sleep(after).await;
                }
            }
            HttpMetrics::add(&self.metrics.retries);
            debug!(listener = %self.name, %upstream, ?outcome, attempt = outgoing.attempts, "retrying");
        }
    }

    fn lock_budget(&self) -> std::sync::MutexGuard<'_, RetryBudget> {
        self.budget.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the current attempt of `outgoing`, once sent, could be followed
    /// by another attempt (a retryable status or a lost connection).
    fn may_resend(&self, outgoing: &Outgoing) -> bool {
        let replayable = outgoing.body.replayable();
        [
            Outcome::ResetBeforeResponse,
            Outcome::Status(StatusCode::UNAUTHORIZED),
            Outcome::Status(StatusCode::SERVICE_UNAVAILABLE),
        ]
        .into_iter()
        .any(|outcome| {
            let attempt = Attempt {
                method: &outgoing.method,
                number: outgoing.attempts,
                outcome,
                body_replayable: replayable,
                body_sent: !replayable,
                token_refreshed: outgoing.token_refreshed,
            };
            matches!(
                self.policy.retry.decide(&attempt, 0.0),
                Decision::Retry { .. }
            )
        })
    }

    /// The upstream's response as the app gets it; a `101` also joins the
    /// two upgraded connections.
    fn finish(
        &self,
        mut response: Response<Body>,
        app_upgrade: Option<OnUpgrade>,
    ) -> Response<Body> {
        let status = response.status();
        if status == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(app) = app_upgrade {
                let upstream = hyper::upgrade::on(&mut response);
                let name = self.name.clone();
                tokio::spawn(tunnel(name, app, upstream));
            }
        }
        let (mut parts, body) = response.into_parts();
        self.policy.headers.response(status, &mut parts.headers);
        parts.version = Version::HTTP_11;
        Response::from_parts(parts, body)
    }
}

/// Counts a request in `attache_http_requests_in_flight` until dropped.
struct InFlight(Arc<HttpMetrics>);

impl InFlight {
    fn start(metrics: &Arc<HttpMetrics>) -> Self {
        metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(metrics.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Copies bytes both ways between the app's and the upstream's upgraded
/// connections (a WebSocket) until either side closes.
async fn tunnel(listener: Arc<str>, app: OnUpgrade, upstream: OnUpgrade) {
    match tokio::try_join!(app, upstream) {
        Ok((app, upstream)) => {
            let (mut app, mut upstream) = (TokioIo::new(app), TokioIo::new(upstream));
            if let Err(e) = tokio::io::copy_bidirectional(&mut app, &mut upstream).await {
                debug!(%listener, error = %e, "upgraded connection ended");
            }
        }
        Err(e) => debug!(%listener, error = %e, "upgrade failed"),
    }
}

/// An HTTP/2 app may split `Cookie` into several fields (HPACK "crumbs");
/// they are joined with `; ` into one, as RFC 9113 §8.2.3 requires before
/// the request goes on over HTTP/1.1 (and HTTP/2 takes one as well). An
/// HTTP/1.1 server reads one `Cookie` line and would lose the rest.
fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(COOKIE).iter();
    if values.next().is_none() || values.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for value in headers.get_all(COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, value);
    }
}

/// A route's number: its index in `routes`, or `catch_all`.
fn route_number(route: &Route, catch_all: usize) -> usize {
    route.index().unwrap_or(catch_all)
}

/// A route as `/metrics` labels it: `host/prefix`, or `/prefix`, or
/// `upstream` for the catch-all.
fn route_label(route: &Route) -> String {
    if route.index().is_none() {
        return "upstream".into();
    }
    let prefix = if route.prefix().is_empty() {
        "/"
    } else {
        route.prefix()
    };
    format!("{}{prefix}", route.host().unwrap_or(""))
}

/// Whether two upstreams are one origin (one pool of connections).
fn same_origin(a: &Upstream, b: &Upstream) -> bool {
    a.scheme() == b.scheme() && a.authority() == b.authority()
}
