//! The DNS module against a real (in-process) authoritative server for
//! `attache.test.` on `127.0.0.1:0`, UDP and TCP, whose records the tests
//! change while attache watches them. The resolver runs on its own runtime,
//! as in the binary; the test body only reads answers.
//!
//! Timings are real (a real socket can't run on paused time; the schedule
//! itself is tested on paused time in `src/dns/tests.rs`), so every
//! assertion polls up to a generous deadline.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use attache::dns::{AddrDiff, DnsConfig, DnsError, Resolver, Watched};
use support::dns::TestDns;
use tokio::time::{sleep, Instant};

const DEADLINE: Duration = Duration::from_secs(20);

/// What the tests control and observe of the server, beyond its records.
/// The runtime refresh tasks run on, as the binary's DNS thread would be.
struct DnsRuntime(Option<tokio::runtime::Runtime>);

impl DnsRuntime {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("dns")
            .enable_all()
            .build()
            .unwrap();
        Self(Some(runtime))
    }

    fn resolver(&self, config: &DnsConfig) -> Resolver {
        let handle = self.0.as_ref().unwrap().handle().clone();
        Resolver::new(config, handle).unwrap()
    }
}

impl Drop for DnsRuntime {
    fn drop(&mut self) {
        // Dropping a runtime inside the test's own runtime would block it.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Polls `check` until it holds or the deadline passes.
async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        sleep(Duration::from_millis(50)).await;
    }
}

fn addrs(ips: &[[u8; 4]], port: u16) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = ips.iter().map(|ip| (*ip, port).into()).collect();
    v.sort();
    v
}

async fn watch(resolver: &Resolver, name: &str, port: u16) -> Watched {
    resolver
        .watch(&format!("{name}.attache.test"), port)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_changed_record_reaches_subscribers() {
    let dns = TestDns::start().await;
    dns.set_a("redis", 1, &[[10, 0, 0, 1], [10, 0, 0, 2]]).await;
    let runtime = DnsRuntime::new();
    let resolver = runtime.resolver(&dns.config(1, 60));

    let watched = watch(&resolver, "redis", 6379).await;
    let first = watched.addrs();
    assert_eq!(&*first, addrs(&[[10, 0, 0, 1], [10, 0, 0, 2]], 6379));
    let mut changes = watched.subscribe();

    dns.set_a("redis", 1, &[[10, 0, 0, 2], [10, 0, 0, 3]]).await;
    tokio::time::timeout(DEADLINE, changes.changed())
        .await
        .expect("no change within the deadline")
        .unwrap();
    let now = changes.borrow_and_update().clone();
    assert_eq!(&*now, addrs(&[[10, 0, 0, 2], [10, 0, 0, 3]], 6379));
    assert_eq!(
        AddrDiff::between(&first, &now),
        AddrDiff {
            added: addrs(&[[10, 0, 0, 3]], 6379),
            removed: addrs(&[[10, 0, 0, 1]], 6379),
        }
    );
    let status = watched.status();
    assert_eq!(status.consecutive_failures, 0);
    assert!(status.next_refresh.is_some());
}

#[tokio::test]
async fn ttls_are_clamped_to_min_and_max() {
    let dns = TestDns::start().await;
    dns.set_a("long", 3600, &[[10, 0, 1, 1]]).await;
    dns.set_a("zero", 0, &[[10, 0, 2, 1]]).await;
    let runtime = DnsRuntime::new();
    let resolver = runtime.resolver(&dns.config(1, 2));

    let long = watch(&resolver, "long", 6379).await;
    let zero = watch(&resolver, "zero", 6379).await;
    let started = Instant::now();

    // An hour-long TTL does not hide a change for an hour: max_ttl is 2s.
    dns.set_a("long", 3600, &[[10, 0, 1, 2]]).await;
    eventually("the hour-long record to be re-resolved", || {
        let now = long.addrs();
        async move { *now == addrs(&[[10, 0, 1, 2]], 6379) }
    })
    .await;

    sleep(Duration::from_secs(6)).await;
    let elapsed = started.elapsed().as_secs_f64();
    // Refreshes come every 2-2.2s (long) and 1-1.1s (zero): bound the counts
    // from above by the clamp (plus slack), and from below loosely, for a
    // busy machine.
    let long_queries = dns.a_queries("long");
    assert!(long_queries >= 3, "{long_queries} queries in {elapsed:.1}s");
    assert!(
        long_queries as f64 <= 2.0 + elapsed / 2.0,
        "{long_queries} queries in {elapsed:.1}s"
    );
    // TTL 0 is held for min_ttl = 1s, not re-asked in a loop.
    let zero_queries = dns.a_queries("zero");
    assert!(zero_queries >= 3, "{zero_queries} queries in {elapsed:.1}s");
    assert!(
        zero_queries as f64 <= 2.0 + elapsed,
        "{zero_queries} queries in {elapsed:.1}s"
    );
    assert_eq!(zero.status().consecutive_failures, 0);
}

#[tokio::test]
async fn failures_keep_the_last_good_answer_until_dns_recovers() {
    let mut dns = TestDns::start().await;
    dns.set_a("redis", 1, &[[10, 0, 0, 1]]).await;
    let runtime = DnsRuntime::new();
    // A short timeout, so the stopped server fails refreshes quickly.
    let resolver = runtime.resolver(&DnsConfig {
        timeout: Duration::from_millis(500),
        ..dns.config(1, 60)
    });
    let watched = watch(&resolver, "redis", 6379).await;
    let good = addrs(&[[10, 0, 0, 1]], 6379);
    let mut changes = watched.subscribe();

    // SERVFAIL.
    dns.set_servfail(true);
    eventually("a failed refresh", || {
        let status = watched.status();
        async move { status.consecutive_failures >= 2 }
    })
    .await;
    let error = watched.status().last_error.unwrap();
    assert_eq!(
        error,
        "resolving redis.attache.test: the nameserver answered ServFail (Server Failure)"
    );
    assert_eq!(&*watched.addrs(), good);
    assert!(!changes.has_changed().unwrap());

    dns.set_servfail(false);
    eventually("recovery from SERVFAIL", || {
        let status = watched.status();
        async move { status.consecutive_failures == 0 }
    })
    .await;

    // NXDOMAIN: the name vanishes from the zone.
    dns.set_a("redis", 1, &[]).await;
    eventually("a failed refresh", || {
        let status = watched.status();
        async move { status.consecutive_failures >= 2 }
    })
    .await;
    let error = watched.status().last_error.unwrap();
    assert!(error.contains("answered NXDomain"), "{error}");
    assert_eq!(&*watched.addrs(), good);
    dns.set_a("redis", 1, &[[10, 0, 0, 1]]).await;
    eventually("recovery from NXDOMAIN", || {
        let status = watched.status();
        async move { status.consecutive_failures == 0 }
    })
    .await;

    // The server is gone.
    dns.stop().await;
    eventually("a failed refresh", || {
        let status = watched.status();
        async move { status.consecutive_failures >= 2 }
    })
    .await;
    let status = watched.status();
    assert!(status.total_failures >= 6, "{status:?}");
    let error = status.last_error.unwrap();
    assert!(
        error.starts_with("resolving redis.attache.test: "),
        "{error}"
    );
    assert_eq!(&*watched.addrs(), good);
    assert!(!changes.has_changed().unwrap());

    // Back, with a new address.
    dns.set_a("redis", 1, &[[10, 0, 0, 9]]).await;
    dns.serve().await;
    tokio::time::timeout(DEADLINE, changes.changed())
        .await
        .expect("no recovery within the deadline")
        .unwrap();
    assert_eq!(
        &**changes.borrow_and_update(),
        addrs(&[[10, 0, 0, 9]], 6379)
    );
    let status = watched.status();
    assert_eq!(status.consecutive_failures, 0);
    assert!(
        status.last_error.is_some(),
        "the last error stays for inspection"
    );
}

#[tokio::test]
async fn a_name_that_never_resolved_is_an_error_naming_it() {
    let dns = TestDns::start().await;
    let runtime = DnsRuntime::new();
    let resolver = runtime.resolver(&dns.config(1, 60));
    let error = resolver
        .watch("missing.attache.test", 6379)
        .await
        .unwrap_err();
    assert!(matches!(error, DnsError::Answered { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "resolving missing.attache.test: the nameserver answered NXDomain (Non-Existent Domain)"
    );
}

#[tokio::test]
async fn ip_literals_and_localhost_need_no_nameserver() {
    // A nameserver address nothing listens on: any query would fail.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = DnsConfig {
        nameservers: vec![closed],
        timeout: Duration::from_millis(200),
        ..DnsConfig::default()
    };
    let runtime = DnsRuntime::new();
    let resolver = runtime.resolver(&config);

    let v4 = resolver.watch("10.0.0.7", 6379).await.unwrap();
    assert_eq!(&*v4.addrs(), ["10.0.0.7:6379".parse().unwrap()]);
    let v6 = resolver.watch("::1", 6379).await.unwrap();
    assert_eq!(&*v6.addrs(), ["[::1]:6379".parse().unwrap()]);

    let local = resolver.watch("localhost", 6379).await.unwrap();
    let local = local.addrs();
    assert!(
        local.contains(&"127.0.0.1:6379".parse().unwrap()),
        "{local:?}"
    );
    assert!(local.iter().all(|a| a.ip().is_loopback()), "{local:?}");
}

#[tokio::test]
async fn watchers_of_one_name_share_one_refresh() {
    let dns = TestDns::start().await;
    dns.set_a("shared", 1, &[[10, 0, 0, 1]]).await;
    let runtime = DnsRuntime::new();
    let resolver = runtime.resolver(&dns.config(1, 60));

    let (a, b) = tokio::join!(
        watch(&resolver, "shared", 6379),
        watch(&resolver, "shared", 6379)
    );
    assert_eq!(dns.a_queries("shared"), 1, "one resolution for both");
    let started = Instant::now();
    sleep(Duration::from_secs(4)).await;
    let queries = dns.a_queries("shared");
    let elapsed = started.elapsed().as_secs_f64();
    // One task refreshes every 1-1.1s; two would ask twice as often.
    assert!(
        queries >= 2 && queries as f64 <= 2.0 + elapsed,
        "{queries} queries in {elapsed:.1}s"
    );

    // Once nobody watches, nobody asks.
    drop((a, b));
    sleep(Duration::from_millis(500)).await;
    let stopped = dns.a_queries("shared");
    sleep(Duration::from_secs(3)).await;
    assert_eq!(dns.a_queries("shared"), stopped);
}

#[tokio::test]
async fn ttl_bounds_past_what_the_clock_can_add_are_served_not_a_panic() {
    let dns = TestDns::start().await;
    dns.set_a("redis", 30, &[[10, 0, 0, 1]]).await;
    let runtime = DnsRuntime::new();
    // `min_ttl = max_ttl = "500000000000years"`: valid, but no clock can
    // add it (nor its 10% jitter) to now.
    let forever = 500_000_000_000 * 31_557_600;
    let resolver = runtime.resolver(&dns.config(forever, forever));
    let watched = resolver
        .watch("redis.attache.test", 6379)
        .await
        .expect("the first answer, with its refresh put off indefinitely");
    assert_eq!(&*watched.addrs(), addrs(&[[10, 0, 0, 1]], 6379));
}
