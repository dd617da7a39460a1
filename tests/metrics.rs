//! `/metrics` per upstream and command family, on the real binary in front
//! of real redis-servers: requests, error replies by source, latency
//! histograms, connection gauges; distinct upstreams on a ketama ring, and
//! the nodes of a Redis Cluster with the redirects they answered.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use attache_resp::hash::key_slot;
use support::admin::{eventually, http, metric, start, start_addrs, start_servers, Setup};
use support::cluster::RedisCluster;
use support::{cmd, count_replies, RedisServer};

/// Sends `commands` in one write and reads their replies.
fn send(app: &mut TcpStream, commands: &[&[&str]]) -> String {
    let bytes: Vec<u8> = commands.iter().flat_map(|c| cmd(c)).collect();
    app.write_all(&bytes).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while count_replies(&buf) < commands.len() {
        let n = app.read(&mut chunk).unwrap();
        assert!(n > 0, "attache closed: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn connect(setup: &Setup) -> TcpStream {
    eventually("the listener", &setup.log, || {
        TcpStream::connect(("127.0.0.1", setup.redis)).is_ok()
    });
    let app = TcpStream::connect(("127.0.0.1", setup.redis)).unwrap();
    app.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    app
}

/// Every sample, checked to be `name{labels} value` with a number.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|sample| {
            let (name, value) = sample.rsplit_once(' ').expect("name value");
            assert!(
                name.chars().next().is_some_and(|c| c.is_ascii_lowercase()),
                "{sample}"
            );
            let value = value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("bad value: {sample}"));
            (name.to_owned(), value)
        })
        .collect()
}

/// Every histogram series of `name`: its labels (without `le`) → the
/// bucket counts in order, `_sum` and `_count`.
fn histograms(text: &str, name: &str) -> BTreeMap<String, (Vec<f64>, f64, f64)> {
    let mut out: BTreeMap<String, (Vec<f64>, f64, f64)> = BTreeMap::new();
    for (sample, value) in samples(text) {
        if let Some(rest) = sample.strip_prefix(&format!("{name}_bucket{{")) {
            let labels = rest.split(",le=").next().unwrap().to_owned();
            out.entry(labels).or_default().0.push(value);
        } else if let Some(rest) = sample.strip_prefix(&format!("{name}_sum{{")) {
            out.entry(rest.trim_end_matches('}').to_owned())
                .or_default()
                .1 = value;
        } else if let Some(rest) = sample.strip_prefix(&format!("{name}_count{{")) {
            out.entry(rest.trim_end_matches('}').to_owned())
                .or_default()
                .2 = value;
        }
    }
    out
}

fn metrics(setup: &Setup) -> String {
    let (status, text) = http(setup.admin, "GET", "/metrics").expect("/metrics answers");
    assert_eq!(status, 200);
    text
}

#[test]
fn requests_errors_and_latency_per_family_and_upstream() {
    let upstream = RedisServer::start();
    let setup = start(&upstream, "");
    let mut app = connect(&setup);
    let up = format!("listener=\"cache\",upstream=\"{}\"", upstream.addr());
    let local = "listener=\"cache\",upstream=\"attache\"";

    // One at a time, then a pipelined batch of mixed families.
    send(&mut app, &[&["SET", "k", "v"]]);
    send(&mut app, &[&["GET", "k"]]);
    send(&mut app, &[&["HSET", "h", "f", "1"]]);
    let replies = send(
        &mut app,
        &[
            &["GET", "k"],
            &["LPUSH", "k", "x"],
            &["HGET", "h", "f"],
            &["NOSUCHCOMMAND"],
        ],
    );
    assert!(replies.contains("-WRONGTYPE"), "{replies}");
    assert!(replies.contains("-ERR unknown command"), "{replies}");
    // attache's own refusal.
    let refused = send(&mut app, &[&["CLIENT", "SETNAME", "a b"]]);
    assert!(refused.starts_with('-'), "{refused}");
    // A blocking pop pins a dedicated connection; the next command sends
    // it back to the pool.
    send(&mut app, &[&["BLPOP", "nothing", "0.05"]]);
    send(&mut app, &[&["GET", "k"]]);

    let text = metrics(&setup);
    samples(&text);
    let requests = |labels: &str, family: &str| {
        metric(
            &text,
            &format!("attache_redis_requests_total{{{labels},family=\"{family}\"}}"),
        )
    };
    assert_eq!(requests(&up, "string"), Some(4.0), "{text}");
    assert_eq!(requests(&up, "hash"), Some(2.0), "{text}");
    assert_eq!(requests(&up, "list"), Some(2.0), "{text}");
    assert_eq!(requests(&up, "other"), Some(1.0), "{text}");
    assert_eq!(requests(local, "connection"), Some(1.0), "{text}");
    let errors = |labels: &str, family: &str, source: &str| {
        metric(
            &text,
            &format!(
                "attache_redis_request_errors_total{{{labels},family=\"{family}\",source=\"{source}\"}}"
            ),
        )
    };
    assert_eq!(errors(&up, "list", "upstream"), Some(1.0), "{text}");
    assert_eq!(errors(&up, "other", "upstream"), Some(1.0), "{text}");
    assert_eq!(errors(&up, "string", "upstream"), Some(0.0), "{text}");
    assert_eq!(errors(&up, "string", "attache"), Some(0.0), "{text}");
    assert_eq!(errors(local, "connection", "attache"), Some(1.0), "{text}");

    // Histograms: cumulative buckets, +Inf and _count equal to requests.
    let series = histograms(&text, "attache_redis_request_duration_seconds");
    assert_eq!(series.len(), 5, "{text}");
    for (labels, (buckets, sum, count)) in &series {
        assert!(
            buckets.windows(2).all(|w| w[0] <= w[1]),
            "{labels}: {buckets:?}"
        );
        assert_eq!(buckets.last(), Some(count), "{labels}");
        let family = labels
            .rsplit("family=\"")
            .next()
            .unwrap()
            .trim_end_matches('"');
        let owner = if labels.contains("\"attache\"") {
            local
        } else {
            &up
        };
        assert_eq!(requests(owner, family), Some(*count), "{labels}");
        assert!(*sum > 0.0, "{labels}");
    }
    // The blocking pop took at least its 50 ms timeout.
    let list = &series[&format!("{up},family=\"list\"")];
    assert!(list.1 >= 0.05, "{list:?}");

    // Connection gauges of the server.
    let gauge = |name: &str| metric(&text, &format!("{name}{{{up}}}"));
    // `server_connections` per worker.
    let shared = gauge("attache_redis_server_shared_connections");
    assert!(shared.is_some_and(|n| n >= 1.0), "{text}");
    assert_eq!(
        gauge("attache_redis_server_dedicated_connections"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        gauge("attache_redis_server_dedicated_idle"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(gauge("attache_redis_server_in_flight"), Some(0.0), "{text}");
    assert_eq!(
        gauge("attache_redis_server_connections_lost_total"),
        Some(0.0),
        "{text}"
    );
    // No gauges for attache's own answers.
    assert!(
        !text.contains("attache_redis_server_in_flight{listener=\"cache\",upstream=\"attache\"}")
    );
}

#[test]
fn a_ketama_ring_shows_each_server_and_a_split_mget_counts_per_server() {
    let servers = [
        RedisServer::start(),
        RedisServer::start(),
        RedisServer::start(),
    ];
    let refs: Vec<&RedisServer> = servers.iter().collect();
    let setup = start_servers(&refs, "mode = \"ketama\"\nhash = \"murmur\"\n");
    let mut app = connect(&setup);
    let keys: Vec<String> = (0..30).map(|i| format!("key:{i}")).collect();
    for key in &keys {
        send(&mut app, &[&["SET", key, "v"]]);
    }
    let mut mget = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    let reply = send(&mut app, &[&mget]);
    assert!(reply.starts_with("*30\r\n"), "{reply}");

    let text = metrics(&setup);
    let mut holding = 0;
    for s in &servers {
        let keys: f64 = s.cli(&["DBSIZE"]).trim().parse().unwrap();
        // Its SETs, and its part of the MGET if it holds any key.
        let expected = if keys > 0.0 { keys + 1.0 } else { 0.0 };
        holding += usize::from(keys > 0.0);
        let requests = metric(
            &text,
            &format!(
                "attache_redis_requests_total{{listener=\"cache\",upstream=\"{}\",family=\"string\"}}",
                s.addr()
            ),
        );
        assert_eq!(requests.unwrap_or(0.0), expected, "{}\n{text}", s.addr());
    }
    assert!(holding >= 2, "the keys all went to one server:\n{text}");
    for s in &servers {
        let open = metric(
            &text,
            &format!(
                "attache_redis_server_shared_connections{{listener=\"cache\",upstream=\"{}\"}}",
                s.addr()
            ),
        );
        assert!(open.is_some_and(|n| n >= 1.0), "{text}");
    }
}

#[test]
fn a_cluster_shows_its_nodes_and_counts_a_redirect_on_the_node_that_sent_it() {
    let cluster = RedisCluster::start();
    let setup = start_addrs(&cluster.seeds(), "mode = \"cluster\"\n");
    let mut app = connect(&setup);
    let keys: Vec<String> = (0..30).map(|i| format!("key:{i}")).collect();
    for key in &keys {
        let reply = send(&mut app, &[&["SET", key, "v"]]);
        assert_eq!(reply, "+OK\r\n");
    }
    // Move key:0's slot; the next GET meets a MOVED unless attache's
    // topology refresh saw the move first.
    let slot = key_slot(b"key:0");
    let from = cluster.primary_for_slot(slot);
    let to = *cluster.primaries().iter().find(|&&p| p != from).unwrap();
    cluster.migrate_slot(slot, from, to);
    assert_eq!(send(&mut app, &[&["GET", "key:0"]]), "$1\r\nv\r\n");
    // A blocking command (on a dedicated connection) whose slot moved: it
    // counts once too, not once more for the MOVED attache followed.
    assert_eq!(send(&mut app, &[&["RPUSH", "{q}:jobs", "a"]]), ":1\r\n");
    let slot = key_slot(b"{q}:jobs");
    let owner = cluster.primary_for_slot(slot);
    let other = *cluster.primaries().iter().find(|&&p| p != owner).unwrap();
    cluster.migrate_slot(slot, owner, other);
    let popped = send(&mut app, &[&["BLPOP", "{q}:jobs", "1"]]);
    assert_eq!(popped, "*2\r\n$8\r\n{q}:jobs\r\n$1\r\na\r\n");

    let text = metrics(&setup);
    let requests = |port: u16| {
        metric(
            &text,
            &format!(
                "attache_redis_requests_total{{listener=\"cache\",upstream=\"127.0.0.1:{port}\",family=\"string\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    let per_node: Vec<f64> = cluster.primaries().into_iter().map(requests).collect();
    assert!(
        per_node.iter().filter(|&&n| n > 0.0).count() >= 2,
        "{per_node:?}\n{text}"
    );
    assert_eq!(per_node.iter().sum::<f64>(), 31.0, "{text}");
    let lists = |port: u16| {
        let labels = format!("listener=\"cache\",upstream=\"127.0.0.1:{port}\",family=\"list\"");
        let requests = metric(&text, &format!("attache_redis_requests_total{{{labels}}}"));
        let errors = metric(
            &text,
            &format!("attache_redis_request_errors_total{{{labels},source=\"upstream\"}}"),
        );
        requests.unwrap_or(0.0) + 100.0 * errors.unwrap_or(0.0)
    };
    let lists: f64 = cluster.primaries().into_iter().map(lists).sum();
    assert_eq!(lists, 2.0, "RPUSH and BLPOP, no error: {text}");
    let moved = |port: u16| {
        metric(
            &text,
            &format!(
                "attache_redis_server_cluster_moved_total{{listener=\"cache\",upstream=\"127.0.0.1:{port}\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    let total = metric(
        &text,
        "attache_redis_cluster_moved_total{listener=\"cache\"}",
    )
    .unwrap();
    // Each counted on the node that sent it: key:0's old owner, and the
    // list's.
    let counted = match owner == from {
        true => moved(from),
        false => moved(from) + moved(owner),
    };
    assert_eq!(counted, total, "{text}");
    assert!(
        metric(
            &text,
            "attache_redis_cluster_topology_refreshes_total{listener=\"cache\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
}
