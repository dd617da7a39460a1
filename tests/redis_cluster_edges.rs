//! attache in front of a real Redis Cluster, at the edges: a split command
//! redirected mid-migration, malformed multi-key commands, transactions
//! under WATCH, a dead first seed.

mod support;

use std::sync::Arc;

use attache_resp::hash::key_slot;
use support::cluster::{attache_for_cluster, start_cluster};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// `MSET a 1 b` (a key without its value) over keys of two slots is refused
/// whole, as a Redis Cluster node refuses it (`-CROSSSLOT`: MSET's arity
/// check passes, the keys span slots): no part of it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_mset_across_slots_sets_nothing() {
    let cluster = start_cluster().await;
    let (_attache, addr) = attache_for_cluster(&cluster, "").await;
    let (a, b) = ("a", "b");
    assert_ne!(key_slot(a.as_bytes()), key_slot(b.as_bytes()));
    let mut s = TcpStream::connect(addr).await.unwrap();
    let reply = raw_exchange(&mut s, &cmd(&["MSET", a, "1", b]), 1).await;
    assert_eq!(
        reply,
        b"-CROSSSLOT Keys in request don't hash to the same slot\r\n",
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert_eq!(raw_exchange(&mut s, &cmd(&["GET", a]), 1).await, b"$-1\r\n");
}

/// A command split by slot (MGET, MSET, DEL) follows an ASK on one of its
/// parts, as a lone command does: mid-migration, a part whose key already
/// moved is sent again (ASKING first) to the importing node, and the app
/// gets the merged reply, not `-ASK`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_command_follows_a_redirect_on_one_part() {
    let cluster = Arc::new(start_cluster().await);
    let (_attache, addr) = attache_for_cluster(&cluster, "").await;
    let (moving, staying) = ("{moving}:a", "staying");
    let slot = key_slot(moving.as_bytes());
    assert_ne!(slot, key_slot(staying.as_bytes()));
    let mut s = TcpStream::connect(addr).await.unwrap();
    let set = raw_exchange(&mut s, &cmd(&["MSET", moving, "1", staying, "2"]), 1).await;
    assert_eq!(set, b"+OK\r\n");
    let (from, to) = cluster.owner_and_another(slot);
    let mover = cluster.clone();
    tokio::task::spawn_blocking(move || {
        mover.begin_migration(slot, from, to);
        assert_eq!(mover.migrate_keys_batch(slot, from, to, 10), 1);
    })
    .await
    .unwrap();
    // The key is on `to` now, its slot still `from`'s: `from` answers ASK.
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    let mget = raw_exchange(&mut s, &cmd(&["MGET", moving, staying]), 1).await;
    assert_eq!(text(mget), "*2\r\n$1\r\n1\r\n$1\r\n2\r\n");
    let mset = raw_exchange(&mut s, &cmd(&["MSET", moving, "3", staying, "4"]), 1).await;
    assert_eq!(text(mset), "+OK\r\n");
    let get = raw_exchange(&mut s, &cmd(&["GET", moving]), 1).await;
    assert_eq!(text(get), "$1\r\n3\r\n");
    let del = raw_exchange(&mut s, &cmd(&["DEL", moving, staying]), 1).await;
    assert_eq!(text(del), ":2\r\n");
}

/// WATCH, MULTI, then a command for another node: the transaction is
/// aborted (CROSSSLOT, then EXECABORT at EXEC), and EXEC ends the WATCH as
/// in Redis: the app's next commands reach every node again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_watched_transaction_does_not_hold_the_app_to_one_node() {
    let cluster = start_cluster().await;
    let (_attache, addr) = attache_for_cluster(&cluster, "").await;
    let watched = "a";
    let home = cluster.primary_for_slot(key_slot(watched.as_bytes()));
    let other = (0..)
        .map(|i| format!("other:{i}"))
        .find(|k| cluster.primary_for_slot(key_slot(k.as_bytes())) != home)
        .unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        raw_exchange(&mut s, &cmd(&["SET", &other, "v"]), 1).await,
        b"+OK\r\n"
    );
    let mut request = cmd(&["WATCH", watched]);
    request.extend(cmd(&["MULTI"]));
    request.extend(cmd(&["SET", &other, "w"]));
    request.extend(cmd(&["EXEC"]));
    let replies = raw_exchange(&mut s, &request, 4).await;
    let text = String::from_utf8_lossy(&replies);
    assert!(
        text.contains("-CROSSSLOT")
            && text.ends_with("-EXECABORT Transaction discarded because of previous errors.\r\n"),
        "{text}"
    );
    let get = raw_exchange(&mut s, &cmd(&["GET", &other]), 1).await;
    assert_eq!(get, b"$1\r\nv\r\n", "{}", String::from_utf8_lossy(&get));
}

/// A transaction after WATCH runs on the watched key's node: PING in it is
/// queued (answered in EXEC's reply, as Redis does), and a command attache
/// refuses in it (CROSSSLOT, a command spanning slots) aborts it, as a
/// command Redis refuses at queue time does: EXEC answers EXECABORT and
/// nothing of it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_transaction_queues_ping_and_aborts_on_a_refusal() {
    let cluster = start_cluster().await;
    let (_attache, addr) = attache_for_cluster(&cluster, "").await;
    let key = "a";
    let other = (0..)
        .map(|i| format!("other:{i}"))
        .find(|k| key_slot(k.as_bytes()) != key_slot(key.as_bytes()))
        .unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    let mut request = cmd(&["WATCH", key]);
    request.extend(cmd(&["MULTI"]));
    request.extend(cmd(&["PING"]));
    request.extend(cmd(&["INCR", key]));
    request.extend(cmd(&["EXEC"]));
    assert_eq!(
        text(raw_exchange(&mut s, &request, 5).await),
        "+OK\r\n+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+PONG\r\n:1\r\n"
    );
    let mut request = cmd(&["WATCH", key]);
    request.extend(cmd(&["MULTI"]));
    request.extend(cmd(&["INCR", key]));
    request.extend(cmd(&["RENAME", key, &other]));
    request.extend(cmd(&["EXEC"]));
    let replies = text(raw_exchange(&mut s, &request, 5).await);
    assert!(
        replies.starts_with("+OK\r\n+OK\r\n+QUEUED\r\n-CROSSSLOT"),
        "{replies}"
    );
    assert!(
        replies.ends_with("-EXECABORT Transaction discarded because of previous errors.\r\n"),
        "{replies}"
    );
    assert_eq!(
        text(raw_exchange(&mut s, &cmd(&["GET", key]), 1).await),
        "$1\r\n1\r\n"
    );
}

/// The first seed is down: commands that no key routes (HELLO, UNWATCH,
/// a command attache does not know, such as a module's) go to a live
/// primary of the map, not to the dead seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_commands_do_not_go_to_a_dead_first_seed() {
    let cluster = start_cluster().await;
    let dead = refusing_port();
    let mut seeds = vec![format!("\"127.0.0.1:{}\"", dead.port)];
    seeds.extend(cluster.seeds().iter().map(|s| format!("\"{s}\"")));
    let running = start_attache(&format!(
        "[redis.c]\nlisten = \"127.0.0.1:0\"\nmode = \"cluster\"\nservers = [{}]\nconnect_timeout = \"300ms\"\n",
        seeds.join(", ")
    ))
    .await;
    let addr = running.redis_addr("c").unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    assert_eq!(
        text(raw_exchange(&mut s, &cmd(&["SET", "k", "v"]), 1).await),
        "+OK\r\n"
    );
    assert_eq!(
        text(raw_exchange(&mut s, &cmd(&["UNWATCH"]), 1).await),
        "+OK\r\n"
    );
    let unknown = text(raw_exchange(&mut s, &cmd(&["NOSUCHCMD", "x"]), 1).await);
    assert!(unknown.starts_with("-ERR unknown command"), "{unknown}");
    let hello = text(raw_exchange(&mut s, &cmd(&["HELLO", "2"]), 1).await);
    assert!(hello.contains("redis"), "{hello}");
}

/// WAIT counts what one connection wrote: refused on a cluster listener,
/// saying why (it got `-CROSSSLOT` before), and outside of a MULTI nothing
/// else changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_is_refused_with_its_reason() {
    let cluster = start_cluster().await;
    let (_attache, addr) = attache_for_cluster(&cluster, "").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let wait = raw_exchange(&mut s, &cmd(&["WAIT", "1", "100"]), 1).await;
    assert!(
        wait.starts_with(b"-ERR attache: WAIT waits for one connection's writes"),
        "{}",
        String::from_utf8_lossy(&wait)
    );
    assert_eq!(raw_exchange(&mut s, &cmd(&["PING"]), 1).await, b"+PONG\r\n");
}

/// A blocking command runs on a dedicated connection: when its slot moved
/// and attache's map is stale, the node answers MOVED, which attache
/// follows (a client that does not know Redis Cluster cannot), as it does
/// for any other command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_command_follows_its_slot_when_it_moved() {
    let cluster = Arc::new(start_cluster().await);
    let (_attache, addr) = attache_for_cluster(&cluster, "").await;
    let key = "{queue}:jobs";
    let slot = key_slot(key.as_bytes());
    let mut s = TcpStream::connect(addr).await.unwrap();
    let push = raw_exchange(&mut s, &cmd(&["RPUSH", key, "one", "two"]), 1).await;
    assert_eq!(push, b":2\r\n");
    let pop = raw_exchange(&mut s, &cmd(&["BLPOP", key, "1"]), 1).await;
    assert_eq!(pop, b"*2\r\n$12\r\n{queue}:jobs\r\n$3\r\none\r\n");
    // Move the slot behind attache's back: its map is stale.
    let (from, to) = cluster.owner_and_another(slot);
    cluster
        .off_runtime(move |c| c.migrate_slot(slot, from, to))
        .await;
    let pop = raw_exchange(&mut s, &cmd(&["BLPOP", key, "1"]), 1).await;
    assert_eq!(
        pop,
        b"*2\r\n$12\r\n{queue}:jobs\r\n$3\r\ntwo\r\n",
        "{}",
        String::from_utf8_lossy(&pop)
    );
    // And a pop that waits, then is served by a push on the new owner.
    let mut waiter = TcpStream::connect(addr).await.unwrap();
    waiter
        .write_all(&cmd(&["BLMOVE", key, "{queue}:done", "LEFT", "RIGHT", "5"]))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(cluster.cli(to, &["RPUSH", key, "three"]), "1");
    let moved = read_replies(&mut waiter, 1).await;
    assert_eq!(
        moved,
        b"$5\r\nthree\r\n",
        "{}",
        String::from_utf8_lossy(&moved)
    );

    // Mid-migration, a key already moved: the old owner answers ASK.
    let key = "{asked}:jobs";
    let slot = key_slot(key.as_bytes());
    let push = raw_exchange(&mut s, &cmd(&["RPUSH", key, "a1"]), 1).await;
    assert_eq!(push, b":1\r\n");
    let (from, to) = cluster.owner_and_another(slot);
    cluster
        .off_runtime(move |c| c.migrate_keys_only(slot, from, to))
        .await;
    let pop = raw_exchange(&mut s, &cmd(&["BLPOP", key, "1"]), 1).await;
    assert_eq!(
        pop,
        b"*2\r\n$12\r\n{asked}:jobs\r\n$2\r\na1\r\n",
        "{}",
        String::from_utf8_lossy(&pop)
    );
    let stats = cluster.cli(to, &["INFO", "commandstats"]);
    assert!(stats.contains("cmdstat_asking:calls="), "no ASKING on {to}");
    cluster
        .off_runtime(move |c| c.finish_migration(slot, from, to))
        .await;
}

/// A subscription is pinned to one node: while subscribed (RESP3), a key
/// command for another node is refused rather than answered MOVED, and
/// after the last UNSUBSCRIBE the connection is an ordinary one again,
/// its commands going to their slots' nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsubscribed_connection_reaches_every_slot_again() {
    let cluster = start_cluster().await;
    let (_attache, addr) = attache_for_cluster(&cluster, "").await;
    let keys: Vec<String> = (0..12).map(|i| format!("key{i}")).collect();
    for (unsubscribe, resp3) in [("UNSUBSCRIBE", false), ("SUNSUBSCRIBE", true)] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if resp3 {
            raw_exchange(&mut s, &cmd(&["HELLO", "3"]), 1).await;
            raw_exchange(&mut s, &cmd(&["SSUBSCRIBE", "x"]), 1).await;
            // Subscribed: no MOVED reaches the app, whichever the node.
            for k in &keys {
                let r = raw_exchange(&mut s, &cmd(&["GET", k]), 1).await;
                let text = String::from_utf8_lossy(&r);
                assert!(
                    text.starts_with("-ERR attache: only")
                        || text == "_\r\n"
                        || text.starts_with('$'),
                    "{text}"
                );
            }
        } else {
            raw_exchange(&mut s, &cmd(&["SUBSCRIBE", "a"]), 1).await;
        }
        raw_exchange(&mut s, &cmd(&[unsubscribe]), 1).await;
        for k in &keys {
            let r = raw_exchange(&mut s, &cmd(&["SET", k, "1"]), 1).await;
            assert_eq!(r, b"+OK\r\n", "{k}: {}", String::from_utf8_lossy(&r));
        }
    }
}

/// Mid-migration, a multi-key command over one slot whose keys are split
/// between the two nodes gets `-TRYAGAIN` from the old owner; attache
/// retries it (backing off) until the migration ends, rather than pass the
/// error on to an app that cannot know what it means.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_key_command_mid_migration_is_retried_not_refused() {
    let cluster = Arc::new(start_cluster().await);
    let (_attache, addr) = attache_for_cluster(&cluster, "").await;
    let (a, b) = ("{mig}:a", "{mig}:b");
    let slot = key_slot(a.as_bytes());
    let mut s = TcpStream::connect(addr).await.unwrap();
    let set = raw_exchange(&mut s, &cmd(&["MSET", a, "1", b, "2"]), 1).await;
    assert_eq!(set, b"+OK\r\n");
    let (from, to) = cluster.owner_and_another(slot);
    cluster.begin_migration(slot, from, to);
    // One key moved, the other not yet: the old owner answers TRYAGAIN.
    let migrated = cluster.cli(
        from,
        &["MIGRATE", "127.0.0.1", &to.to_string(), a, "0", "5000"],
    );
    assert_eq!(migrated, "OK");
    assert!(cluster.cli(from, &["MGET", a, b]).starts_with("TRYAGAIN"));
    let mover = cluster.clone();
    let finish = tokio::task::spawn_blocking(move || {
        std::thread::sleep(std::time::Duration::from_millis(150));
        mover.finish_migration(slot, from, to);
    });
    let mget = raw_exchange(&mut s, &cmd(&["MGET", a, b]), 1).await;
    assert_eq!(
        mget,
        b"*2\r\n$1\r\n1\r\n$1\r\n2\r\n",
        "{}",
        String::from_utf8_lossy(&mget)
    );
    finish.await.unwrap();
}

/// A script's error can say anything: a made-up `MOVED` or `ASK` naming an
/// address that is no node of the cluster is not followed there (attache
/// would open a connection and send the upstream credentials to it), and
/// one it cannot read reaches the app as it is (it made the session panic).
/// Nor is one for a slot that is not its keys' (Redis redirects a command
/// for its keys' slot only): the script ran, and following the error ran
/// it again, on another node or up to five more times on the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_made_up_by_a_script_is_not_followed() {
    let cluster = start_cluster().await;
    let (_attache, addr) = attache_for_cluster(&cluster, "").await;
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_port = trap.local_addr().unwrap().port();
    let other_slot = (key_slot(b"k") + 1) % 16384;
    let (_, other_node) = cluster.owner_and_another(key_slot(b"k"));
    let mut s = TcpStream::connect(addr).await.unwrap();
    let errors = [
        format!("MOVED 1 127.0.0.1:{trap_port}"),
        format!("ASK 1 127.0.0.1:{trap_port}"),
        "MOVED abc".to_owned(),
        "ASK 1 nowhere".to_owned(),
        format!("MOVED {other_slot} 127.0.0.1:{other_node}"),
        format!("ASK {other_slot} 127.0.0.1:{other_node}"),
    ];
    for error in &errors {
        // Counts its runs in a key of the same slot as `k`.
        let script = format!("redis.call('INCR', KEYS[2]) return redis.error_reply('{error}')");
        let eval = cmd(&["EVAL", &script, "2", "k", "{k}:runs"]);
        let reply = raw_exchange(&mut s, &eval, 1).await;
        assert_eq!(String::from_utf8_lossy(&reply), format!("-{error}\r\n"));
    }
    let runs = raw_exchange(&mut s, &cmd(&["GET", "{k}:runs"]), 1).await;
    let expected = errors.len().to_string();
    assert_eq!(
        String::from_utf8_lossy(&runs),
        format!("${}\r\n{expected}\r\n", expected.len())
    );
    assert_eq!(raw_exchange(&mut s, &cmd(&["PING"]), 1).await, b"+PONG\r\n");
    let knocked = tokio::time::timeout(std::time::Duration::from_millis(200), trap.accept()).await;
    assert!(knocked.is_err(), "attache connected to the made-up address");
}

/// WATCH pins the app to its key's node: with a stale map (the slot
/// moved), the old node answers MOVED, which attache follows, so the app's
/// WATCH … EXEC runs on the new owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_follows_its_slot_when_it_moved() {
    let cluster = Arc::new(start_cluster().await);
    let (_attache, addr) = attache_for_cluster(&cluster, "").await;
    let key = "{watched}:n";
    let slot = key_slot(key.as_bytes());
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        raw_exchange(&mut s, &cmd(&["SET", key, "1"]), 1).await,
        b"+OK\r\n"
    );
    let (from, to) = cluster.owner_and_another(slot);
    cluster
        .off_runtime(move |c| c.migrate_slot(slot, from, to))
        .await;
    let mut transaction = cmd(&["WATCH", key]);
    transaction.extend(cmd(&["MULTI"]));
    transaction.extend(cmd(&["INCR", key]));
    transaction.extend(cmd(&["EXEC"]));
    let replies = raw_exchange(&mut s, &transaction, 4).await;
    assert_eq!(
        String::from_utf8_lossy(&replies),
        "+OK\r\n+OK\r\n+QUEUED\r\n*1\r\n:2\r\n"
    );
    assert_eq!(cluster.cli(to, &["GET", key]), "2");
}

/// Mid-migration, a transaction on a key already moved gets ASK for its
/// queued command (and EXECABORT) from the old owner: attache sends the
/// whole transaction again to the importing node, after ASKING, and the
/// app gets EXEC's reply from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_mid_migration_follows_ask() {
    let cluster = Arc::new(start_cluster().await);
    let (_attache, addr) = attache_for_cluster(&cluster, "").await;
    let key = "{asked-tx}:n";
    let slot = key_slot(key.as_bytes());
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        raw_exchange(&mut s, &cmd(&["SET", key, "1"]), 1).await,
        b"+OK\r\n"
    );
    let (from, to) = cluster.owner_and_another(slot);
    cluster
        .off_runtime(move |c| c.migrate_keys_only(slot, from, to))
        .await;
    let mut transaction = cmd(&["MULTI"]);
    transaction.extend(cmd(&["INCR", key]));
    transaction.extend(cmd(&["EXEC"]));
    let replies = raw_exchange(&mut s, &transaction, 3).await;
    assert_eq!(
        String::from_utf8_lossy(&replies),
        "+OK\r\n+QUEUED\r\n*1\r\n:2\r\n"
    );
    cluster
        .off_runtime(move |c| c.finish_migration(slot, from, to))
        .await;
    assert_eq!(cluster.cli(to, &["GET", key]), "2");
}

/// A transaction whose multi-key command gets TRYAGAIN mid-migration (its
/// keys are on both nodes for now) is sent again, later, rather than end
/// in EXECABORT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_gets_tryagain_is_sent_again() {
    let cluster = Arc::new(start_cluster().await);
    let (_attache, addr) = attache_for_cluster(&cluster, "").await;
    let (a, b) = ("{mig-tx}:a", "{mig-tx}:b");
    let slot = key_slot(a.as_bytes());
    let mut s = TcpStream::connect(addr).await.unwrap();
    let set = raw_exchange(&mut s, &cmd(&["MSET", a, "1", b, "2"]), 1).await;
    assert_eq!(set, b"+OK\r\n");
    let (from, to) = cluster.owner_and_another(slot);
    cluster.begin_migration(slot, from, to);
    let port = to.to_string();
    let migrated = cluster.cli(from, &["MIGRATE", "127.0.0.1", &port, a, "0", "5000"]);
    assert_eq!(migrated, "OK");
    let mover = cluster.clone();
    let finish = tokio::task::spawn_blocking(move || {
        std::thread::sleep(std::time::Duration::from_millis(150));
        mover.finish_migration(slot, from, to);
    });
    let mut transaction = cmd(&["MULTI"]);
    transaction.extend(cmd(&["MGET", a, b]));
    transaction.extend(cmd(&["EXEC"]));
    let replies = raw_exchange(&mut s, &transaction, 3).await;
    assert_eq!(
        String::from_utf8_lossy(&replies),
        "+OK\r\n+QUEUED\r\n*1\r\n*2\r\n$1\r\n1\r\n$1\r\n2\r\n"
    );
    finish.await.unwrap();
}
