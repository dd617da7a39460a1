//! `/metrics` in the Prometheus text format (version 0.0.4).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use std::collections::BTreeMap;
use std::sync::Arc;

use super::AdminState;
use crate::redis::metrics::{Counter, ErrorSource, RedisMetrics, UpstreamSnapshot, LOCAL_UPSTREAM};

/// One metric family: its HELP and TYPE lines, then its samples, each a
/// label set (`listener="cache"`, or empty) and a value.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: Vec<(String, String)>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// Renders every metric.
pub(super) fn render(state: &AdminState) -> String {
    let mut out = String::new();
    let flag = |on: bool| vec![(String::new(), u8::from(on).to_string())];
    family(
        &mut out,
        "attache_ready",
        "gauge",
        "1 while /ready answers 200.",
        flag(state.ready().is_ok()),
    );
    family(
        &mut out,
        "attache_draining",
        "gauge",
        "1 while shutting down.",
        flag(state.draining.load(Ordering::Relaxed)),
    );
    family(
        &mut out,
        "attache_config_info",
        "gauge",
        "The loaded config, labelled with its FNV-1a hash.",
        vec![(format!("hash=\"{}\"", state.config_json().1), "1".into())],
    );
    family(
        &mut out,
        "attache_config_reloads_total",
        "counter",
        "Config reloads, by result (applied, or refused with the running config kept).",
        vec![
            (
                "result=\"success\"".into(),
                state.reloads_ok.load(Ordering::Relaxed).to_string(),
            ),
            (
                "result=\"failure\"".into(),
                state.reloads_failed.load(Ordering::Relaxed).to_string(),
            ),
        ],
    );

    let listeners = state.listeners();
    let per_listener = |value: &dyn Fn(&crate::listener::ListenerStats) -> String| {
        listeners
            .iter()
            .map(|l| (format!("listener=\"{}\"", l.name), value(l)))
            .collect::<Vec<_>>()
    };
    family(
        &mut out,
        "attache_listener_connections_open",
        "gauge",
        "App connections open now.",
        per_listener(&|l| l.open().to_string()),
    );
    family(
        &mut out,
        "attache_listener_connections_max",
        "gauge",
        "The listener's max_connections.",
        per_listener(&|l| l.max().to_string()),
    );
    family(
        &mut out,
        "attache_listener_connections_total",
        "counter",
        "App connections accepted.",
        per_listener(&|l| l.accepted().to_string()),
    );
    family(
        &mut out,
        "attache_listener_connections_refused_total",
        "counter",
        "App connections refused at max_connections (told why, then closed).",
        per_listener(&|l| l.refused().to_string()),
    );

    let redis = state.redis_metrics();
    let rows: Vec<(String, [Counter; 10])> = redis
        .iter()
        .map(|(name, shards)| (name.clone(), sum_counters(shards)))
        .collect();
    if let Some((_, first)) = rows.first() {
        for (i, (suffix, help, _)) in first.iter().enumerate() {
            family(
                &mut out,
                &format!("attache_redis_{suffix}"),
                "counter",
                help,
                rows.iter()
                    .map(|(name, c)| (format!("listener=\"{name}\""), c[i].2.to_string()))
                    .collect(),
            );
        }
    }

    render_upstreams(&mut out, &redis);
    state
        .generations
        .borrow()
        .services
        .http_metrics()
        .render(&mut out);

    let per_token = |value: &dyn Fn(&crate::credentials::TokenStats) -> Option<String>| {
        state
            .tokens
            .iter()
            .filter_map(|(name, source)| {
                value(&source.stats()).map(|v| (format!("credential=\"{name}\""), v))
            })
            .collect::<Vec<_>>()
    };
    family(
        &mut out,
        "attache_token_seconds_to_expiry",
        "gauge",
        "Seconds until the current token expires (negative once expired).",
        per_token(&|s| s.seconds_to_expiry.map(|v| format!("{v:.3}"))),
    );
    family(
        &mut out,
        "attache_token_refreshes_total",
        "counter",
        "Successful token fetches.",
        per_token(&|s| Some(s.refreshes.to_string())),
    );
    family(
        &mut out,
        "attache_token_refresh_failures_total",
        "counter",
        "Failed token fetches.",
        per_token(&|s| Some(s.refresh_failures.to_string())),
    );
    out
}

/// A listener's counters, added over its worker shards.
fn sum_counters(shards: &[Arc<RedisMetrics>]) -> [Counter; 10] {
    let mut total = RedisMetrics::default().counters();
    for shard in shards {
        for (t, c) in total.iter_mut().zip(shard.counters()) {
            t.2 += c.2;
        }
    }
    total
}

/// A per-server metric: name, type, help, and its value in a snapshot.
type ServerMetric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&UpstreamSnapshot) -> u64,
);

/// Per listener and upstream (summed over workers): requests, errors and
/// latency per command family, and the upstream's connections.
fn render_upstreams(out: &mut String, redis: &[(String, Vec<Arc<RedisMetrics>>)]) {
    let mut upstreams: BTreeMap<(&str, Arc<str>), UpstreamSnapshot> = BTreeMap::new();
    for (listener, shards) in redis {
        for stats in shards.iter().flat_map(|s| s.upstreams()) {
            upstreams
                .entry((listener.as_str(), stats.label.clone()))
                .or_default()
                .add(&stats.snapshot());
        }
    }
    let labels = |listener: &str, upstream: &str| {
        format!("listener=\"{listener}\",upstream=\"{}\"", escape(upstream))
    };
    let per_family =
        |value: &dyn Fn(&crate::redis::metrics::FamilySnapshot) -> Vec<(String, u64)>| {
            let mut samples = Vec::new();
            for ((listener, upstream), snapshot) in &upstreams {
                for (family, f) in snapshot.active_families() {
                    for (extra, v) in value(f) {
                        samples.push((
                            format!("{},family=\"{family}\"{extra}", labels(listener, upstream)),
                            v.to_string(),
                        ));
                    }
                }
            }
            samples
        };
    family(
        out,
        "attache_redis_requests_total",
        "counter",
        "Commands answered, by upstream server (\"attache\": answered by attache itself) and command family; a command split over servers counts once per server.",
        per_family(&|f| vec![(String::new(), f.latency.count())]),
    );
    family(
        out,
        "attache_redis_request_errors_total",
        "counter",
        "Error replies, by upstream, command family and source (the upstream's own, or attache's).",
        per_family(&|f| {
            ErrorSource::ALL
                .iter()
                .map(|s| (format!(",source=\"{}\"", s.name()), f.errors[*s as usize]))
                .collect()
        }),
    );
    let name = "attache_redis_request_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} From reading a command from the app to its reply being ready for the app, by upstream and command family.\n# TYPE {name} histogram"
    );
    for ((listener, upstream), snapshot) in &upstreams {
        for (family, f) in snapshot.active_families() {
            let labels = format!("{},family=\"{family}\"", labels(listener, upstream));
            f.latency.render(out, name, &labels);
        }
    }
    let servers: Vec<_> = upstreams
        .iter()
        .filter(|((_, upstream), _)| &**upstream != LOCAL_UPSTREAM)
        .collect();
    let gauges: [ServerMetric; 10] = [
        (
            "attache_redis_server_shared_connections",
            "gauge",
            "Shared multiplexed connections to the server, connected now.",
            |s| s.shared_open,
        ),
        (
            "attache_redis_server_dedicated_connections",
            "gauge",
            "Dedicated connections to the server (pinned to an app, or idle in the pool).",
            |s| s.dedicated_open,
        ),
        (
            "attache_redis_server_dedicated_idle",
            "gauge",
            "Dedicated connections idle in the pool.",
            |s| s.dedicated_idle,
        ),
        (
            "attache_redis_server_in_flight",
            "gauge",
            "Request batches sent on shared connections to the server and not answered yet.",
            |s| s.in_flight,
        ),
        (
            "attache_redis_server_connects_total",
            "counter",
            "Connections to the server established (shared and dedicated).",
            |s| s.connects,
        ),
        (
            "attache_redis_server_connect_failures_total",
            "counter",
            "Connection attempts to the server that failed.",
            |s| s.connect_failures,
        ),
        (
            "attache_redis_server_connections_lost_total",
            "counter",
            "Shared connections to the server lost (then re-established).",
            |s| s.connections_lost,
        ),
        (
            "attache_redis_server_ejections_total",
            "counter",
            "Times the server was ejected from a hashed ring.",
            |s| s.ejections,
        ),
        (
            "attache_redis_server_cluster_moved_total",
            "counter",
            "Cluster MOVED redirects the node answered (attache followed them).",
            |s| s.moved,
        ),
        (
            "attache_redis_server_cluster_ask_total",
            "counter",
            "Cluster ASK redirects the node answered (attache followed them).",
            |s| s.ask,
        ),
    ];
    for (name, kind, help, value) in gauges {
        family(
            out,
            name,
            kind,
            help,
            servers
                .iter()
                .map(|((listener, upstream), s)| (labels(listener, upstream), value(s).to_string()))
                .collect(),
        );
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
