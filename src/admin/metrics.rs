//! `/metrics` in the Prometheus text format (version 0.0.4).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::AdminState;
use crate::redis::metrics::Counter;

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
        per_listener(&|l| l.max.to_string()),
    );
    family(
        &mut out,
        "attache_listener_connections_total",
        "counter",
        "App connections accepted.",
        per_listener(&|l| l.accepted().to_string()),
    );

    let redis = state.redis_metrics();
    let rows: Vec<(String, [Counter; 10])> = redis
        .iter()
        .map(|(name, m)| (name.clone(), m.counters()))
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
