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
use http::header::{HeaderValue, HOST};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::client::conn::{http1, http2};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::balance;
use super::body::{self, AppBody, Body, BoxError};
use super::h1::SendError;
use super::metrics::HttpMetrics;
use super::pool::{ConnectError, PoolSettings, Sender, UpstreamPool};
use crate::credentials::TokenSource;
use crate::upstream::UpstreamServices;

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
                        services.resolver(),
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
        let (number, outgoing) = match self.policy.gate.admit(&parts) {
            Admission::Refuse(error) => return self.local(&error),
            Admission::Forward(forward) => {
                let number = route_number(forward.route, self.pools.len() - 1);
                let outgoing = Outgoing {
                    method: parts.method.clone(),
                    uri: forward.uri,
                    headers: parts.headers,
                    body: AppBody::Stream(None),
                    upgrade: forward.upgrade,
                    attempts: 0,
                    token_refreshed: false,
                };
                (number, outgoing)
            }
        };
        let Some(pool) = self.pools.get(number).cloned().flatten() else {
            return self.local(&LocalError::no_route(&parts.method, parts.uri.path(), None));
        };
        // A guard: the app may hang up, and hyper then drops this future.
        let _in_flight = InFlight::start(&self.metrics);
        // Built in place: a named future moved into `timeout` would take
        // its size twice in this one.
        let forwarding = tokio::time::timeout(
            self.timeout,
            self.forward(&pool, outgoing, body, peer, app_upgrade),
        );
        let response = match forwarding.await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => self.local(&error),
            Err(_) => self.local(&LocalError::timeout(&pool.upstream, self.timeout)),
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
        mut outgoing: Outgoing,
        body: B,
        peer: SocketAddr,
        app_upgrade: Option<OnUpgrade>,
    ) -> Result<Response<Body>, LocalError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let upstream = &pool.upstream;
        outgoing.body =
            AppBody::new(body, &outgoing.headers)
                .await
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
            let (outcome, error, response) =
                match self.attempt(pool, &mut avoid, &mut outgoing).await {
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
                        if let Err(e) = Box::pin(source.force_refresh()).await {
                            debug!(listener = %self.name, error = %e, "token refresh after a 401 failed");
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

    /// One attempt on one endpoint. On failure, what happened and what
    /// the app sees if it is the last attempt.
    async fn attempt(
        &self,
        pool: &UpstreamPool,
        avoid: &mut Option<SocketAddr>,
        outgoing: &mut Outgoing,
    ) -> Result<Response<Body>, (Outcome, LocalError)> {
        let upstream = &pool.upstream;
        let connect_failed = |e: ConnectError| {
            (
                Outcome::ConnectFailed,
                LocalError::connect_failed(upstream, e),
            )
        };
        let endpoints = pool.endpoints().await.map_err(connect_failed)?;
        let endpoint = balance::pick(&endpoints, *avoid).ok_or_else(|| {
            connect_failed(ConnectError {
                addr: upstream.authority().to_string(),
                cause: "no addresses".into(),
            })
        })?;
        *avoid = Some(endpoint.addr);
        let _in_flight = endpoint.start();
        let sender = pool
            .checkout(&endpoint, outgoing.upgrade)
            .await
            .map_err(connect_failed)?;
        let Some(body) = outgoing.body.take() else {
            let cause = "the request body was already sent";
            return Err((
                Outcome::ResetBeforeResponse,
                LocalError::upstream_reset(upstream, cause),
            ));
        };
        let sent_at = Instant::now();
        let result = match sender {
            Sender::H1(connection) => {
                // Written from the request's own headers: nothing to copy,
                // and they stay for a later attempt.
                let target = outgoing.uri.path_and_query().map_or("/", |pq| pq.as_str());
                let home = pool.home(endpoint.clone());
                connection
                    .send(&outgoing.method, target, &outgoing.headers, body, home)
                    .await
                    .map_err(|e| match e {
                        SendError::Unsent { body, cause } => Failure {
                            unsent: Some((body, None)),
                            cause: cause.to_string(),
                            upstream_fault: true,
                        },
                        SendError::AppBody(e) => Failure {
                            unsent: None,
                            cause: format!("the app's request body failed: {e}"),
                            upstream_fault: false,
                        },
                        SendError::Failed(cause) => Failure {
                            unsent: None,
                            cause,
                            upstream_fault: true,
                        },
                    })
            }
            // Boxed: hyper's send futures would make every request's
            // future (copied whole into its box) larger by half.
            Sender::Upgrade(sender) => {
                Box::pin(self.send_hyper(outgoing, body, HyperSender::Http1(sender))).await
            }
            Sender::H2(sender) => {
                Box::pin(self.send_hyper(outgoing, body, HyperSender::Http2(sender))).await
            }
        };
        match result {
            Ok(response) => {
                endpoint.succeeded(sent_at.elapsed());
                Ok(response)
            }
            Err(failure) => {
                let cause = format!("{}: {}", endpoint.addr, failure.cause);
                if let Some((body, headers)) = failure.unsent {
                    // The connection closed before the request was written
                    // (a keep-alive race): nothing reached the upstream.
                    if let Some(headers) = headers.filter(|_| outgoing.headers.is_empty()) {
                        outgoing.headers = headers;
                    }
                    outgoing.body.put_back(body);
                    return Err((
                        Outcome::Refused,
                        LocalError::upstream_reset(upstream, cause),
                    ));
                }
                if failure.upstream_fault {
                    pool.failed(&endpoint);
                }
                Err((
                    Outcome::ResetBeforeResponse,
                    LocalError::upstream_reset(upstream, cause),
                ))
            }
        }
    }

    /// Sends through hyper's client: an HTTP/2 connection, or a new
    /// HTTP/1.1 one for an upgrade.
    async fn send_hyper(
        &self,
        outgoing: &mut Outgoing,
        body: Body,
        sender: HyperSender,
    ) -> Result<Response<Body>, Failure> {
        let mut request = Request::new(body);
        *request.method_mut() = outgoing.method.clone();
        // Moved rather than cloned when no later attempt could send them
        // again (they come back with a request returned unsent).
        *request.headers_mut() = if self.may_resend(outgoing) {
            outgoing.headers.clone()
        } else {
            std::mem::take(&mut outgoing.headers)
        };
        // HTTP/2 carries it as :authority; kept for a request that comes
        // back unsent.
        let mut host = None;
        if matches!(sender, HyperSender::Http2(_)) {
            *request.version_mut() = Version::HTTP_2;
            *request.uri_mut() = outgoing.uri.clone();
            host = request.headers_mut().remove(HOST);
        } else {
            *request.version_mut() = Version::HTTP_11;
            *request.uri_mut() = origin_form(&outgoing.uri);
        }
        let sent = match sender {
            HyperSender::Http1(mut sender) => sender.try_send_request(request).await,
            HyperSender::Http2(mut sender) => sender.try_send_request(request).await,
        };
        match sent {
            Ok(response) => Ok(response.map(|body| body.map_err(BoxError::from).boxed_unsync())),
            Err(mut failed) => {
                let unsent = failed.take_message().map(|request| {
                    let (mut parts, body) = request.into_parts();
                    if let Some(host) = host {
                        parts.headers.insert(HOST, host);
                    }
                    (body, Some(parts.headers))
                });
                let error = failed.into_error();
                Err(Failure {
                    unsent,
                    cause: error.to_string(),
                    upstream_fault: !error.is_user(),
                })
            }
        }
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

/// Why an attempt got no response.
struct Failure {
    /// Nothing was written: the body (and with hyper's client the
    /// headers) to send again.
    unsent: Option<(Body, Option<HeaderMap>)>,
    cause: String,
    /// Counts against the address (not so when the app's body failed).
    upstream_fault: bool,
}

/// hyper's two client connections, as [`HttpService::send_hyper`] uses them.
enum HyperSender {
    /// A new connection for an upgrade.
    Http1(http1::SendRequest<Body>),
    Http2(http2::SendRequest<Body>),
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

/// `/path?query` of an absolute URI (HTTP/1.1 requests to an origin).
fn origin_form(uri: &Uri) -> Uri {
    uri.path_and_query()
        .map(|pq| Uri::from(pq.clone()))
        .unwrap_or_else(|| Uri::from_static("/"))
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
