//! The refresh logic on paused time, against a scripted lookup (the wire is
//! tested in `tests/dns.rs`).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::ResolveError;
use tokio::runtime::Handle;
use tokio::time::sleep;

use super::refresh::{Answer, Lookup, RefreshPolicy};
use super::{DnsError, Resolver};

/// Answers every lookup with whatever the test set last.
struct Scripted {
    answer: Mutex<Result<(Vec<IpAddr>, Duration), &'static str>>,
    calls: AtomicUsize,
}

impl Scripted {
    fn new(ips: &[&str], ttl_secs: u64) -> Arc<Self> {
        let scripted = Arc::new(Self {
            answer: Mutex::new(Err("unset")),
            calls: AtomicUsize::new(0),
        });
        scripted.answer(ips, ttl_secs);
        scripted
    }

    fn answer(&self, ips: &[&str], ttl_secs: u64) {
        let ips = ips.iter().map(|ip| ip.parse().unwrap()).collect();
        *self.answer.lock().unwrap() = Ok((ips, Duration::from_secs(ttl_secs)));
    }

    fn fail(&self, reason: &'static str) {
        *self.answer.lock().unwrap() = Err(reason);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Lookup for Scripted {
    fn lookup<'a>(
        &'a self,
        _host: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Answer, ResolveError>> + Send + 'a>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = self.answer.lock().unwrap().clone();
        Box::pin(async move {
            let (ips, ttl) = answer.map_err(ResolveError::from)?;
            Ok(Answer { ips, ttl })
        })
    }
}

fn resolver(lookup: &Arc<Scripted>, min_ttl: u64, max_ttl: u64) -> Resolver {
    let policy = RefreshPolicy {
        min_ttl: Duration::from_secs(min_ttl),
        max_ttl: Duration::from_secs(max_ttl),
    };
    Resolver::with_lookup(lookup.clone(), policy, Handle::current())
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

#[tokio::test(start_paused = true)]
async fn answers_are_sorted_deduplicated_and_follow_the_ttl() {
    let dns = Scripted::new(&["10.0.0.2", "10.0.0.1", "fd00::1", "10.0.0.2"], 10);
    let resolver = resolver(&dns, 1, 60);
    let watched = resolver.watch("redis.test", 6379).await.unwrap();
    assert_eq!(
        &*watched.addrs(),
        addrs(&["10.0.0.1:6379", "10.0.0.2:6379", "[fd00::1]:6379"])
    );
    let mut changes = watched.subscribe();
    assert!(!changes.has_changed().unwrap());

    // Same set again: a refresh happens, but nobody is woken.
    sleep(Duration::from_secs(12)).await;
    assert_eq!(dns.calls(), 2);
    assert!(!changes.has_changed().unwrap());

    dns.answer(&["10.0.0.3"], 10);
    sleep(Duration::from_secs(11)).await;
    assert_eq!(dns.calls(), 3);
    assert!(changes.has_changed().unwrap());
    assert_eq!(&**changes.borrow_and_update(), addrs(&["10.0.0.3:6379"]));
    assert_eq!(&*watched.addrs(), addrs(&["10.0.0.3:6379"]));
}

#[tokio::test(start_paused = true)]
async fn ttls_are_clamped() {
    // An hour-long TTL is cut to max_ttl = 2s: ~10 refreshes in 21s
    // (each wait is 2-2.2s with jitter).
    let long = Scripted::new(&["10.0.0.1"], 3600);
    let _long = resolver(&long, 1, 2).watch("long.test", 1).await.unwrap();
    // TTL 0 is raised to min_ttl = 1s: ~20 refreshes in 21s, not a loop.
    let zero = Scripted::new(&["10.0.0.1"], 0);
    let _zero = resolver(&zero, 1, 2).watch("zero.test", 1).await.unwrap();
    sleep(Duration::from_secs(21)).await;
    assert!((9..=11).contains(&(long.calls() - 1)), "{}", long.calls());
    assert!((18..=21).contains(&(zero.calls() - 1)), "{}", zero.calls());
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_keeps_the_last_good_answer_and_retries_sooner() {
    let dns = Scripted::new(&["10.0.0.1"], 30);
    let watched = resolver(&dns, 2, 60)
        .watch("redis.test", 6379)
        .await
        .unwrap();
    let mut changes = watched.subscribe();
    let healthy = watched.status();
    assert_eq!(healthy.consecutive_failures, 0);
    assert!(healthy.last_success.is_some());
    assert!(healthy.next_refresh.is_some());

    dns.fail("SERVFAIL");
    // The refresh is due 30-33s in (TTL plus jitter), a retry 2-2.2s later.
    sleep(Duration::from_millis(33_500)).await;
    let calls = dns.calls();
    assert!((2..=3).contains(&calls), "{calls}");
    let failing = watched.status();
    assert_eq!(failing.consecutive_failures as usize, calls - 1);
    assert_eq!(failing.last_success, healthy.last_success);
    let error = failing.last_error.unwrap();
    assert!(
        error.contains("redis.test") && error.contains("SERVFAIL"),
        "{error}"
    );

    // Retried every min_ttl = 2s (not every 30s), still serving 10.0.0.1.
    sleep(Duration::from_secs(7)).await;
    let failing = watched.status();
    assert!(failing.consecutive_failures >= 3, "{failing:?}");
    assert_eq!(
        failing.total_failures,
        u64::from(failing.consecutive_failures)
    );
    assert_eq!(&*watched.addrs(), addrs(&["10.0.0.1:6379"]));
    assert!(!changes.has_changed().unwrap());

    // An empty answer is a failure too.
    dns.answer(&[], 30);
    sleep(Duration::from_secs(3)).await;
    let status = watched.status();
    assert!(status.last_error.unwrap().contains("no A or AAAA"));
    assert_eq!(&*watched.addrs(), addrs(&["10.0.0.1:6379"]));

    dns.answer(&["10.0.0.2"], 30);
    sleep(Duration::from_secs(3)).await;
    let recovered = watched.status();
    assert_eq!(recovered.consecutive_failures, 0);
    assert!(recovered.total_failures >= 4);
    assert!(recovered.last_success > healthy.last_success);
    assert!(changes.has_changed().unwrap());
    assert_eq!(&**changes.borrow_and_update(), addrs(&["10.0.0.2:6379"]));
}

#[tokio::test(start_paused = true)]
async fn a_failed_first_resolution_is_an_error_naming_the_host() {
    let dns = Scripted::new(&[], 30);
    dns.fail("NXDOMAIN");
    let resolver = resolver(&dns, 1, 60);
    let error = resolver.watch("nope.test", 6379).await.unwrap_err();
    assert!(matches!(error, DnsError::Resolve { .. }), "{error:?}");
    assert_eq!(error.to_string(), "resolving nope.test: NXDOMAIN");

    // No task is left retrying, and the next watch tries afresh.
    sleep(Duration::from_secs(60)).await;
    assert_eq!(dns.calls(), 1);
    dns.answer(&["10.0.0.1"], 30);
    let watched = resolver.watch("nope.test", 6379).await.unwrap();
    assert_eq!(&*watched.addrs(), addrs(&["10.0.0.1:6379"]));

    dns.answer(&[], 30);
    let error = resolver.watch("empty.test", 1).await.unwrap_err();
    assert!(matches!(error, DnsError::NoAddresses { .. }), "{error:?}");
}

#[tokio::test(start_paused = true)]
async fn watchers_of_one_name_share_one_task_until_the_last_is_dropped() {
    let dns = Scripted::new(&["10.0.0.1"], 5);
    let resolver = resolver(&dns, 1, 60);
    let (a, b) = tokio::join!(
        resolver.watch("redis.test", 6379),
        resolver.watch("REDIS.test", 6379)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let c = b.clone();
    assert_eq!(dns.calls(), 1);
    // Another port is another task.
    let other = resolver.watch("redis.test", 6380).await.unwrap();
    assert_eq!(dns.calls(), 2);
    drop(other);

    // One refresh per 5-5.5s TTL: 4 or 5 in 26s (two tasks would make 8+).
    sleep(Duration::from_secs(26)).await;
    let calls = dns.calls();
    assert!((2 + 4..=2 + 5).contains(&calls), "{calls}");

    drop((a, b));
    sleep(Duration::from_secs(6)).await;
    assert!(dns.calls() > calls, "a clone still watches");
    drop(c);
    let calls = dns.calls();
    sleep(Duration::from_secs(60)).await;
    assert_eq!(dns.calls(), calls, "nobody watches: the task stopped");
}

#[tokio::test(start_paused = true)]
async fn ip_literals_need_no_lookup() {
    let dns = Scripted::new(&["10.0.0.1"], 5);
    let resolver = resolver(&dns, 1, 60);
    for (host, addr) in [
        ("10.0.0.7", "10.0.0.7:6379"),
        ("::1", "[::1]:6379"),
        ("[fd00::7]", "[fd00::7]:6379"),
    ] {
        let watched = resolver.watch(host, 6379).await.unwrap();
        assert_eq!(&*watched.addrs(), addrs(&[addr]));
        assert_eq!(watched.status().next_refresh, None);
        let mut changes = watched.subscribe();
        // Never changes, and the channel stays open while watched.
        assert!(
            tokio::time::timeout(Duration::from_secs(3600), changes.changed())
                .await
                .is_err()
        );
    }
    assert_eq!(dns.calls(), 0);
}
