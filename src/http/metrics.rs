//! Counters and gauges of one HTTP listener, shared by every worker and
//! kept across reloads (like the Redis listeners'). Plain counters are one
//! relaxed atomic add; the per-route ones take a short `std` mutex, since
//! routes change with reloads and are few.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::admin::histogram::Histogram;

/// One listener's counters. Routes are numbered as the service numbers
/// them ([`HttpMetrics::set_routes`]): `routes[i]` in config order, then
/// the catch-all `upstream`.
#[derive(Debug, Default)]
pub(crate) struct HttpMetrics {
    per_route: Mutex<PerRoute>,
    /// Local error responses by `x-attache-error` kind.
    local_errors: Mutex<BTreeMap<&'static str, u64>>,
    /// Attempts after the first (connect failures, 5xx, resets).
    pub(crate) retries: AtomicU64,
    /// Retries the budget refused.
    pub(crate) retries_refused: AtomicU64,
    /// Token refreshes forced by an upstream 401.
    pub(crate) token_refreshes: AtomicU64,
    /// Upstream connections established.
    pub(crate) connects: AtomicU64,
    /// Upstream connect attempts that failed (DNS, TCP, TLS, timeout).
    pub(crate) connect_failures: AtomicU64,
    /// Addresses taken out of rotation after repeated failures.
    pub(crate) ejections: AtomicU64,
    /// Requests being forwarded now.
    pub(crate) in_flight: AtomicI64,
    /// Upstream connections open now (idle or busy, HTTP/1 and HTTP/2).
    pub(crate) connections: AtomicI64,
    /// App connections handed to hyper's server (see `serve`).
    pub(crate) handovers: AtomicU64,
}

#[derive(Debug, Default)]
struct PerRoute {
    labels: Vec<String>,
    /// Responses by route and status class (1xx … 5xx).
    requests: Vec<[u64; 5]>,
    /// Each route's request latency.
    latency: Vec<Histogram>,
}

impl PerRoute {
    fn grow(&mut self, route: usize) {
        if self.requests.len() <= route {
            self.requests.resize(route + 1, [0; 5]);
            self.latency.resize_with(route + 1, Histogram::default);
        }
    }
}

impl HttpMetrics {
    fn routes(&self) -> MutexGuard<'_, PerRoute> {
        self.per_route.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Names the routes (labels for `/metrics`). A reload that reorders
    /// routes restarts their per-route counts.
    pub(crate) fn set_routes(&self, labels: Vec<String>) {
        let mut routes = self.routes();
        if routes.labels != labels {
            *routes = PerRoute {
                labels,
                ..PerRoute::default()
            };
        }
    }

    /// A response with `status` went to the app on `route`, `elapsed`
    /// after the request came in (one lock for both).
    pub(crate) fn response(&self, route: usize, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        let mut routes = self.routes();
        routes.grow(route);
        routes.requests[route][class] += 1;
        routes.latency[route].observe(elapsed);
    }

    /// Each route's latency histogram samples (`route` label added).
    fn render_latency(&self, listener: &str, out: &mut String) {
        let routes = self.routes();
        for (i, histogram) in routes.latency.iter().enumerate() {
            let route = routes.labels.get(i).map_or("?", String::as_str);
            histogram.snapshot().render(
                out,
                LATENCY,
                &format!("listener=\"{listener}\",route=\"{route}\""),
            );
        }
    }

    /// attache answered itself with error `kind`.
    pub(crate) fn local_error(&self, kind: &'static str) {
        let mut errors = self.local_errors.lock().unwrap_or_else(|e| e.into_inner());
        *errors.entry(kind).or_default() += 1;
    }

    /// Writes this listener's samples of every family into `families`
    /// (family name → (type, help, samples)).
    fn samples(&self, listener: &str, families: &mut Families) {
        let label = format!("listener=\"{listener}\"");
        let mut put = |name: &'static str, kind, help, labels: String, value: String| {
            let entry = families
                .entry(name)
                .or_insert_with(|| (kind, help, Vec::new()));
            entry.2.push((labels, value));
        };
        {
            let routes = self.routes();
            for (i, counts) in routes.requests.iter().enumerate() {
                let route = routes.labels.get(i).map_or("?", String::as_str);
                for (class, n) in counts.iter().enumerate() {
                    put(
                        "attache_http_requests_total",
                        "counter",
                        "Responses given to apps, by route and status class.",
                        format!("{label},route=\"{route}\",class=\"{}xx\"", class + 1),
                        n.to_string(),
                    );
                }
            }
        }
        let errors = self.local_errors.lock().unwrap_or_else(|e| e.into_inner());
        for (kind, n) in errors.iter() {
            put(
                "attache_http_local_errors_total",
                "counter",
                "Responses attache wrote itself, by x-attache-error kind.",
                format!("{label},kind=\"{kind}\""),
                n.to_string(),
            );
        }
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed).to_string();
        let gauge = |g: &AtomicI64| g.load(Ordering::Relaxed).max(0).to_string();
        let plain: [(&'static str, &'static str, &'static str, String); 9] = [
            (
                "attache_http_retries_total",
                "counter",
                "Upstream attempts after a request's first.",
                get(&self.retries),
            ),
            (
                "attache_http_retries_refused_total",
                "counter",
                "Retries the retry budget refused.",
                get(&self.retries_refused),
            ),
            (
                "attache_http_token_refreshes_total",
                "counter",
                "Token refreshes forced by an upstream 401.",
                get(&self.token_refreshes),
            ),
            (
                "attache_http_upstream_connects_total",
                "counter",
                "Upstream connections established.",
                get(&self.connects),
            ),
            (
                "attache_http_upstream_connect_failures_total",
                "counter",
                "Upstream connection attempts that failed.",
                get(&self.connect_failures),
            ),
            (
                "attache_http_ejections_total",
                "counter",
                "Upstream addresses taken out of rotation after repeated failures.",
                get(&self.ejections),
            ),
            (
                "attache_http_app_handovers_total",
                "counter",
                "App connections served by hyper's server from some request on: HTTP/2, \
                 HTTP/1.0, upgrades, Expect, unusual or malformed requests.",
                get(&self.handovers),
            ),
            (
                "attache_http_requests_in_flight",
                "gauge",
                "Requests being forwarded now.",
                gauge(&self.in_flight),
            ),
            (
                "attache_http_upstream_connections",
                "gauge",
                "Upstream connections open now (idle or busy).",
                gauge(&self.connections),
            ),
        ];
        for (name, kind, help, value) in plain {
            put(name, kind, help, label.clone(), value);
        }
    }
}

/// The latency histogram's family name.
const LATENCY: &str = "attache_http_request_duration_seconds";

type Families = BTreeMap<&'static str, (&'static str, &'static str, Vec<(String, String)>)>;

/// Every HTTP listener's metrics, by name.
#[derive(Debug, Default, Clone)]
pub(crate) struct HttpMetricsRegistry {
    listeners: Arc<Mutex<BTreeMap<String, Arc<HttpMetrics>>>>,
}

impl HttpMetricsRegistry {
    /// The metrics of listener `name` (created on first use).
    pub(crate) fn listener(&self, name: &str) -> Arc<HttpMetrics> {
        let mut map = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_owned()).or_default().clone()
    }

    /// Every family in the Prometheus text format (nothing without HTTP
    /// listeners).
    pub(crate) fn render(&self, out: &mut String) {
        let listeners: Vec<(String, Arc<HttpMetrics>)> = {
            let map = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let mut families = Families::new();
        for (name, metrics) in &listeners {
            metrics.samples(name, &mut families);
        }
        for (name, (kind, help, samples)) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
        if !listeners.is_empty() {
            let _ = writeln!(
                out,
                "# HELP {LATENCY} Requests by route, from receipt to the response headers.\n\
                 # TYPE {LATENCY} histogram"
            );
            for (name, metrics) in &listeners {
                metrics.render_latency(name, out);
            }
        }
    }
}
