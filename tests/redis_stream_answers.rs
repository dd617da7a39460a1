//! attache's own answers (AUTH, CLIENT SETINFO, a refused HELLO …) on a
//! connection whose replies no longer pair with requests: a subscription
//! (RESP2 and RESP3), MONITOR, CLIENT REPLY OFF/SKIP, tracking. Each keeps
//! its place after the replies to what the app sent before it, through a
//! protocol error, a shutdown, an upstream user without PING.

mod support;

use std::time::Duration;

use support::*;
use tokio::net::TcpStream;

/// With a credential of its own (every test here), attache answers AUTH
/// and CLIENT SETINFO itself (a RESP2 subscriber
/// gets Redis's refusal for its context); while subscribed, the answer
/// still comes after the replies to what the app sent before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_answer_while_subscribing_keeps_its_place() {
    let (server, _attache, _addr, mut a) = app_on_single_with_credential().await;
    let mut request = cmd(&["SUBSCRIBE", "ch"]);
    request.extend(cmd(&["AUTH", "pw"]));
    request.extend(cmd(&["PING"]));
    request.extend(cmd(&["SUBSCRIBE", "ch2"]));
    request.extend(cmd(&["CLIENT", "SETINFO", "LIB-NAME", "x"]));
    let replies = raw_exchange(&mut a, &request, 5).await;
    assert_eq!(
        String::from_utf8_lossy(&replies),
        format!(
            "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n{}*2\r\n$4\r\npong\r\n$0\r\n\r\n\
             *3\r\n$9\r\nsubscribe\r\n$3\r\nch2\r\n:2\r\n{}",
            refused("auth"),
            refused("client|setinfo")
        )
    );
    // The stream goes on as before.
    assert_eq!(server.cli(&["PUBLISH", "ch2", "hi"]), "1");
    assert_eq!(
        String::from_utf8_lossy(&read_replies(&mut a, 1).await),
        "*3\r\n$7\r\nmessage\r\n$3\r\nch2\r\n$2\r\nhi\r\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_answer_keeps_its_place_in_a_resp3_subscription_and_in_monitor() {
    let (server, _attache, addr, mut a) = app_on_single_with_credential().await;
    raw_exchange(&mut a, &cmd(&["HELLO", "3"]), 1).await;
    let mut request = cmd(&["SUBSCRIBE", "ch"]);
    request.extend(cmd(&["AUTH", "pw"]));
    let replies = raw_exchange(&mut a, &request, 2).await;
    assert_eq!(
        String::from_utf8_lossy(&replies),
        ">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n+OK\r\n"
    );

    // MONITOR: the answer after MONITOR's +OK, and the feed does not show
    // how attache placed it, nor another connection's answer.
    let mut m = TcpStream::connect(addr).await.unwrap();
    let mut request = cmd(&["MONITOR"]);
    request.extend(cmd(&["AUTH", "pw"]));
    assert_eq!(raw_exchange(&mut m, &request, 2).await, b"+OK\r\n+OK\r\n");
    assert_eq!(
        raw_exchange(&mut a, &cmd(&["AUTH", "pw"]), 1).await,
        b"+OK\r\n"
    );
    assert_eq!(server.cli(&["SET", "seen", "1"]), "OK");
    let mut feed = Vec::new();
    while !String::from_utf8_lossy(&feed).contains("\"seen\"") {
        feed.extend(read_replies(&mut m, 1).await);
    }
    let feed = String::from_utf8_lossy(&feed);
    assert!(!feed.contains("attache:"), "{feed}");
}

/// CLIENT REPLY OFF / SKIP / ON: attache's own answer (AUTH's) is given,
/// withheld or skipped as the server does with its own, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reply_off_and_skip_hold_attaches_own_answers_too() {
    let (_server, _attache, addr, _) = app_on_single_with_credential().await;
    let auth = ["AUTH", "pw"];
    let sequences: [(&[&[&str]], usize, &str); 3] = [
        (
            &[
                &["CLIENT", "REPLY", "OFF"],
                &["SET", "a", "1"],
                &auth,
                &["CLIENT", "REPLY", "ON"],
                &["GET", "a"],
                &auth,
                &["PING"],
            ],
            4,
            "+OK\r\n$1\r\n1\r\n+OK\r\n+PONG\r\n",
        ),
        (
            &[
                &["CLIENT", "REPLY", "SKIP"],
                &auth,
                &["GET", "a"],
                &["CLIENT", "REPLY", "SKIP"],
                &["GET", "a"],
                &auth,
                &["PING"],
            ],
            3,
            "$1\r\n1\r\n+OK\r\n+PONG\r\n",
        ),
        (
            &[
                &["CLIENT", "REPLY", "SKIP"],
                &["CLIENT", "REPLY", "OFF"],
                &auth,
                &["CLIENT", "REPLY", "SKIP"],
                &["GET", "a"],
                &["CLIENT", "REPLY", "ON"],
                &["ECHO", "x"],
            ],
            2,
            "+OK\r\n$1\r\nx\r\n",
        ),
    ];
    for (sequence, replies, expected) in sequences {
        let request: Vec<u8> = sequence.iter().flat_map(|c| cmd(c)).collect();
        let mut app = TcpStream::connect(addr).await.unwrap();
        let got = raw_exchange(&mut app, &request, replies).await;
        assert_eq!(String::from_utf8_lossy(&got), expected, "{sequence:?}");
    }
}

/// A bad frame while an answer of attache's waits in the stream: the app
/// still gets the answer, then the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_error_while_subscribed_keeps_the_answers_before_it() {
    let (_server, _attache, _addr, mut a) = app_on_single_with_credential().await;
    raw_exchange(&mut a, &cmd(&["SUBSCRIBE", "ch"]), 1).await;
    let mut request = cmd(&["AUTH", "pw"]);
    request.extend(b"*1\r\n$abc\r\n");
    let replies = raw_exchange(&mut a, &request, 2).await;
    assert!(
        String::from_utf8_lossy(&replies)
            .starts_with(&format!("{}-ERR Protocol error", refused("auth"))),
        "{}",
        String::from_utf8_lossy(&replies)
    );
}

/// Inside a MULTI on a tracking connection, a PING would be queued: an
/// answer of attache's cannot be placed with one, and is not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_answer_inside_a_multi_while_tracking() {
    let (_server, _attache, _addr, mut a) = app_on_single_with_credential().await;
    let reply = raw_exchange(&mut a, &cmd(&["CLIENT", "TRACKING", "ON"]), 1).await;
    assert_eq!(reply, b"+OK\r\n");
    assert_eq!(raw_exchange(&mut a, &cmd(&["MULTI"]), 1).await, b"+OK\r\n");
    let reply = raw_exchange(&mut a, &cmd(&["AUTH", "pw"]), 1).await;
    assert_eq!(String::from_utf8_lossy(&reply), "+OK\r\n");
    let mut request = cmd(&["SET", "k", "v"]);
    request.extend(cmd(&["EXEC"]));
    request.extend(cmd(&["AUTH", "pw"]));
    request.extend(cmd(&["GET", "k"]));
    let replies = raw_exchange(&mut a, &request, 4).await;
    assert_eq!(
        String::from_utf8_lossy(&replies),
        "+QUEUED\r\n*1\r\n+OK\r\n+OK\r\n$1\r\nv\r\n"
    );
}

/// The app switched its tracking connection to RESP3 behind attache's back
/// (HELLO is forwarded on a stream): the relay still frames it, attache's
/// answers reach the app in their place, and its tokens do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_answer_after_hello_3_on_a_resp2_stream() {
    let (_server, _attache, addr, mut a) = app_on_single_with_credential().await;
    let reply = raw_exchange(&mut a, &cmd(&["CLIENT", "TRACKING", "ON"]), 1).await;
    assert_eq!(reply, b"+OK\r\n");
    let reply = raw_exchange(&mut a, &cmd(&["HELLO", "3"]), 1).await;
    assert!(
        reply.starts_with(b"%"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let reply = raw_exchange(&mut a, &cmd(&["AUTH", "pw"]), 1).await;
    assert_eq!(String::from_utf8_lossy(&reply), "+OK\r\n");
    // The same, HELLO and AUTH in one write.
    let mut b = TcpStream::connect(addr).await.unwrap();
    raw_exchange(&mut b, &cmd(&["CLIENT", "TRACKING", "ON"]), 1).await;
    let mut request = cmd(&["HELLO", "3"]);
    request.extend(cmd(&["AUTH", "pw"]));
    request.extend(cmd(&["PING"]));
    let replies = String::from_utf8_lossy(&raw_exchange(&mut b, &request, 3).await).into_owned();
    assert!(
        replies.starts_with("%7") && replies.ends_with("*0\r\n+OK\r\n+PONG\r\n"),
        "{replies}"
    );
    assert!(!replies.contains("attache:"), "{replies}");
}

/// Shutting down closes an idle subscriber, but not before the answer
/// attache placed in its stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_a_subscriber_the_answers_in_its_stream() {
    let server = RedisServer::start();
    let attache = start_attache(&format!(
        "[redis.test]\nlisten = \"127.0.0.1:0\"\nservers = [\"{}\"]\n\
         [runtime]\nshutdown_grace = \"30s\"\n{}",
        server.addr(),
        credential_toml(&server)
    ))
    .await;
    let addr = attache.redis_addr("test").unwrap();
    let mut a = TcpStream::connect(addr).await.unwrap();
    raw_exchange(&mut a, &cmd(&["SUBSCRIBE", "ch"]), 1).await;
    // The server holds attache's PING for a while.
    assert_eq!(server.cli(&["CLIENT", "PAUSE", "1000", "ALL"]), "OK");
    tokio::io::AsyncWriteExt::write_all(&mut a, &cmd(&["AUTH", "pw"]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = tokio::spawn(attache.shutdown());
    let rest = expect_closed(&mut a, Duration::from_secs(5)).await;
    assert_eq!(String::from_utf8_lossy(&rest), refused("auth"));
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("attache stopped")
        .unwrap();
}

/// `CLIENT CACHING yes` applies to the next command: a PING attache sends
/// to place an answer must not take it from the app's read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_answer_after_client_caching_keeps_the_read_tracked() {
    let (server, _attache, _addr, mut a) = app_on_single_with_credential().await;
    raw_exchange(&mut a, &cmd(&["HELLO", "3"]), 1).await;
    let on = raw_exchange(&mut a, &cmd(&["CLIENT", "TRACKING", "ON", "OPTIN"]), 1).await;
    assert_eq!(on, b"+OK\r\n");
    let mut request = cmd(&["CLIENT", "CACHING", "yes"]);
    request.extend(cmd(&["CLIENT", "SETINFO", "LIB-NAME", "x"]));
    request.extend(cmd(&["GET", "k"]));
    let replies = raw_exchange(&mut a, &request, 3).await;
    assert_eq!(String::from_utf8_lossy(&replies), "+OK\r\n+OK\r\n_\r\n");
    assert_eq!(server.cli(&["SET", "k", "1"]), "OK");
    let invalidation = tokio::time::timeout(Duration::from_secs(2), read_replies(&mut a, 1))
        .await
        .expect("the read was tracked: its key is invalidated");
    assert_eq!(
        String::from_utf8_lossy(&invalidation),
        ">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"
    );
}

/// The upstream's ACL user may not run PING: attache's answer takes the
/// refusal's place, and later answers still come (ahead of the stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_answer_while_subscribed_as_a_user_without_ping() {
    let server = RedisServer::start();
    let (_attache, addr) = attache_for(&server, &credential_toml(&server)).await;
    assert_eq!(server.cli(&["ACL", "SETUSER", "attache", "-ping"]), "OK");
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut request = cmd(&["SUBSCRIBE", "ch"]);
    request.extend(cmd(&["AUTH", "pw"]));
    assert_eq!(
        String::from_utf8_lossy(&raw_exchange(&mut a, &request, 2).await),
        format!(
            "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n{}",
            refused("auth")
        )
    );
    assert_eq!(
        String::from_utf8_lossy(&raw_exchange(&mut a, &cmd(&["AUTH", "pw"]), 1).await),
        refused("auth")
    );
    assert_eq!(server.cli(&["PUBLISH", "ch", "hi"]), "1");
    assert_eq!(
        String::from_utf8_lossy(&read_replies(&mut a, 1).await),
        "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"
    );
}

/// Redis's refusal of `command` from a RESP2 subscriber.
fn refused(command: &str) -> String {
    format!(
        "-ERR Can't execute '{command}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n"
    )
}
