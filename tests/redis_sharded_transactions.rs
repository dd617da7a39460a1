//! Transactions on a twemproxy-style sharded listener: bound to one
//! server, refused commands abort them as in Redis, PING and ECHO queued.

mod support;

use std::time::Duration;

use redis::AsyncCommands;
use support::shards::Shards;
use support::*;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_and_blocking_commands_follow_their_keys() {
    let shards = Shards::start();
    let (_attache, addr) = shards.attache("ketama", "hash_tag = \"{}\"").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut request = cmd(&["MULTI"]);
    request.extend(cmd(&["SET", "{acct}:a", "1"]));
    request.extend(cmd(&["INCR", "{acct}:a"]));
    request.extend(cmd(&["EXEC"]));
    let replies = raw_exchange(&mut s, &request, 4).await;
    assert_eq!(replies, b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n:2\r\n");
    // Empty transactions and DISCARD need no server.
    let mut request = cmd(&["MULTI"]);
    request.extend(cmd(&["EXEC"]));
    request.extend(cmd(&["MULTI"]));
    request.extend(cmd(&["DISCARD"]));
    let replies = raw_exchange(&mut s, &request, 4).await;
    assert_eq!(replies, b"+OK\r\n*0\r\n+OK\r\n+OK\r\n");
    // A transaction touching two shards is refused, and EXEC aborts it.
    let ring_key = |n: usize| format!("{{k{n}}}");
    let ring = shards.ketama(Some("{}"));
    let other = (1..)
        .map(ring_key)
        .find(|k| ring.server_for_key(k.as_bytes()) != ring.server_for_key(b"{k0}"))
        .unwrap();
    let mut request = cmd(&["MULTI"]);
    request.extend(cmd(&["SET", "{k0}", "x"]));
    request.extend(cmd(&["SET", &other, "y"]));
    request.extend(cmd(&["EXEC"]));
    let replies = raw_exchange(&mut s, &request, 4).await;
    let text = String::from_utf8_lossy(&replies);
    assert!(text.starts_with("+OK\r\n+QUEUED\r\n-CROSSSLOT"), "{text}");
    assert!(text.contains("-EXECABORT"), "{text}");
    assert_eq!(
        raw_exchange(&mut s, &cmd(&["EXISTS", "{k0}"]), 1).await,
        b":0\r\n",
        "nothing ran"
    );

    // BLPOP waits on its key's shard; a push through attache wakes it.
    let blocker = tokio::spawn(async move {
        let mut b = TcpStream::connect(addr).await.unwrap();
        raw_exchange(&mut b, &cmd(&["BLPOP", "jobs", "0"]), 1).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = client(addr).await;
    let _: () = c.rpush("jobs", "j1").await.unwrap();
    let popped = tokio::time::timeout(Duration::from_secs(5), blocker)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(popped, b"*2\r\n$4\r\njobs\r\n$2\r\nj1\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_echo_are_queued_inside_multi() {
    let shards = Shards::start();
    let (_attache, addr) = shards.attache("ketama", "").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut request = cmd(&["MULTI"]);
    request.extend(cmd(&["SET", "k0", "x"]));
    request.extend(cmd(&["PING"]));
    request.extend(cmd(&["ECHO", "hi"]));
    request.extend(cmd(&["EXEC"]));
    let replies = raw_exchange(&mut s, &request, 5).await;
    assert_eq!(
        String::from_utf8_lossy(&replies),
        "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n+OK\r\n+PONG\r\n$2\r\nhi\r\n"
    );
    // Outside a transaction attache still answers them itself.
    assert_eq!(raw_exchange(&mut s, &cmd(&["PING"]), 1).await, b"+PONG\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_refused_inside_multi_aborts_the_transaction() {
    let shards = Shards::start();
    let (_attache, addr) = shards.attache("ketama", "").await;
    let ring = shards.ketama(None);
    let other = (1..)
        .map(|i| format!("k{i}"))
        .find(|k| ring.server_for_key(k.as_bytes()) != ring.server_for_key(b"k0"))
        .unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    for refused in [
        vec!["MGET", "k0", other.as_str()],
        vec!["RENAME", "k0", other.as_str()],
        vec!["DBSIZE"],
    ] {
        // After a first command (MULTI sent upstream), and as the first
        // (MULTI not sent anywhere yet).
        for first in [Some(["SET", "k0", "x"]), None] {
            let mut request = cmd(&["MULTI"]);
            let mut replies = 4;
            if let Some(first) = first {
                request.extend(cmd(&first));
                replies += 1;
            }
            request.extend(cmd(&refused));
            request.extend(cmd(&["SET", "k0", "y"]));
            request.extend(cmd(&["EXEC"]));
            let text = String::from_utf8_lossy(&raw_exchange(&mut s, &request, replies).await)
                .into_owned();
            assert!(
                text.ends_with("-EXECABORT Transaction discarded because of previous errors.\r\n"),
                "{refused:?}: {text}"
            );
            assert_eq!(
                raw_exchange(&mut s, &cmd(&["EXISTS", "k0"]), 1).await,
                b":0\r\n",
                "{refused:?}: nothing ran"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_ends_a_failed_transaction_with_ok() {
    let shards = Shards::start();
    let (_attache, addr) = shards.attache("ketama", "").await;
    let ring = shards.ketama(None);
    let other = (1..)
        .map(|i| format!("k{i}"))
        .find(|k| ring.server_for_key(k.as_bytes()) != ring.server_for_key(b"k0"))
        .unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut request = cmd(&["MULTI"]);
    request.extend(cmd(&["SET", "k0", "x"]));
    request.extend(cmd(&["SET", &other, "y"]));
    request.extend(cmd(&["DISCARD"]));
    request.extend(cmd(&["PING"]));
    let text = String::from_utf8_lossy(&raw_exchange(&mut s, &request, 5).await).into_owned();
    assert!(text.starts_with("+OK\r\n+QUEUED\r\n-CROSSSLOT"), "{text}");
    // As Redis after a refused command: DISCARD answers +OK.
    assert!(text.ends_with("\r\n+OK\r\n+PONG\r\n"), "{text}");
}
