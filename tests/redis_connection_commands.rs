//! HELLO and AUTH on the app's own connection, compared with redis-server:
//! a protocol change that keeps the connection's state (SELECT n, WATCH),
//! and AUTH as another ACL user, Redis's when attache presents no
//! credential of its own.

mod support;

use support::*;
use tokio::net::TcpStream;

/// HELLO on a connection holding state (SELECT n, WATCH) changes its
/// protocol and keeps the state, as with Redis: Redis's own test suite
/// says `HELLO 3` after its `SELECT 9`, and attache refused it.
#[tokio::test]
async fn hello_changes_the_protocol_of_a_connection_holding_state() {
    let server = RedisServer::start();
    let (_attache, addr) = attache_for(&server, "").await;
    let mut direct = TcpStream::connect(server.addr()).await.unwrap();
    let mut app = TcpStream::connect(addr).await.unwrap();
    let pipeline = [cmd(&["SELECT", "9"]), cmd(&["SET", "k", "nine"])].concat();
    same_as_redis(&mut direct, &mut app, &pipeline, 2).await;
    for version in ["3", "2", "3"] {
        let expected = raw_exchange(&mut direct, &cmd(&["HELLO", version]), 1).await;
        let got = raw_exchange(&mut app, &cmd(&["HELLO", version]), 1).await;
        assert_eq!(got[..4], expected[..4], "{}", String::from_utf8_lossy(&got));
        // A HELLO's reply names the connection (its id): only its type
        // is compared. Then: still database 9, replies in the new protocol.
        let pipeline = [cmd(&["GET", "k"]), cmd(&["HGETALL", "none"])].concat();
        same_as_redis(&mut direct, &mut app, &pipeline, 2).await;
    }
    let got = same_as_redis(&mut direct, &mut app, &cmd(&["HGETALL", "none"]), 1).await;
    assert_eq!(got, b"%0\r\n");
}

/// WATCH, then HELLO: the transaction still sees the watched key, and the
/// connection that changed protocol does not go back to the pool: a RESP2
/// app that gets the only pooled connection next still reads RESP2.
#[tokio::test]
async fn hello_inside_watch_keeps_it_and_the_connection_is_not_pooled() {
    let server = RedisServer::start();
    let (_attache, addr) = attache_for(&server, "max_dedicated_connections = 1").await;
    let mut direct = TcpStream::connect(server.addr()).await.unwrap();
    let mut app = TcpStream::connect(addr).await.unwrap();
    let mut other = TcpStream::connect(addr).await.unwrap();
    same_as_redis(&mut direct, &mut app, &cmd(&["WATCH", "w"]), 1).await;
    for conn in [&mut direct, &mut app] {
        let got = raw_exchange(conn, &cmd(&["HELLO", "3"]), 1).await;
        assert!(
            got.starts_with(b"%7\r\n"),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
    raw_exchange(&mut other, &cmd(&["SET", "w", "changed"]), 1).await;
    let tx = [
        cmd(&["MULTI"]),
        cmd(&["HGETALL", "none"]),
        cmd(&["EXEC"]),
        cmd(&["HGETALL", "none"]),
    ]
    .concat();
    // The watched key changed: EXEC fails (RESP3 null), then RESP3 again.
    let got = same_as_redis(&mut direct, &mut app, &tx, 4).await;
    assert_eq!(got, b"+OK\r\n+QUEUED\r\n_\r\n%0\r\n");
    // The only dedicated connection, which spoke RESP3, was not pooled.
    let tx = [
        cmd(&["WATCH", "w"]),
        cmd(&["MULTI"]),
        cmd(&["HGETALL", "none"]),
        cmd(&["EXEC"]),
    ]
    .concat();
    let got = raw_exchange(&mut other, &tx, 4).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        "+OK\r\n+OK\r\n+QUEUED\r\n*1\r\n*0\r\n"
    );
}

/// `AUTH user password` as an ACL user other than `default` is Redis's
/// when attache presents no credential of its own: the app's connection
/// then acts as that user (`ACL WHOAMI`, its permissions), a wrong password
/// is refused, `RESET` goes back to `default`, and no other app is
/// affected. attache answered +OK and the app stayed `default` (Redis's
/// test "RESET clears authenticated state" failed).
#[tokio::test]
async fn auth_as_another_user_is_redis_s_without_credentials_of_attache() {
    let server = RedisServer::start();
    server.cli(&[
        "ACL", "SETUSER", "reader", "on", ">secret", "-@all", "+get", "+acl", "~*",
    ]);
    let (_attache, addr) = attache_for(&server, "").await;
    let mut direct = TcpStream::connect(server.addr()).await.unwrap();
    let mut app = TcpStream::connect(addr).await.unwrap();
    let mut other = TcpStream::connect(addr).await.unwrap();
    let pipeline = [
        cmd(&["AUTH", "reader", "wrong"]),
        cmd(&["ACL", "WHOAMI"]),
        cmd(&["AUTH", "reader", "secret"]),
        cmd(&["ACL", "WHOAMI"]),
        cmd(&["SET", "k", "v"]),
        cmd(&["GET", "k"]),
        cmd(&["RESET"]),
        cmd(&["ACL", "WHOAMI"]),
    ]
    .concat();
    let got = same_as_redis(&mut direct, &mut app, &pipeline, 8).await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.contains("$6\r\nreader\r\n-NOPERM"), "{got}");
    assert!(got.ends_with("+RESET\r\n$7\r\ndefault\r\n"), "{got}");
    let whoami = raw_exchange(&mut other, &cmd(&["ACL", "WHOAMI"]), 1).await;
    assert_eq!(whoami, b"$7\r\ndefault\r\n");

    // HELLO's AUTH too, in either protocol.
    for version in ["2", "3"] {
        let mut app = TcpStream::connect(addr).await.unwrap();
        let hello = cmd(&["HELLO", version, "AUTH", "reader", "secret"]);
        let got = raw_exchange(&mut app, &hello, 1).await;
        assert!(got.starts_with(b"*14\r\n") || got.starts_with(b"%7\r\n"));
        let whoami = raw_exchange(&mut app, &cmd(&["ACL", "WHOAMI"]), 1).await;
        assert_eq!(whoami, b"$6\r\nreader\r\n");
    }
}

/// With a credential of its own, attache's user is every connection's
/// identity: an app's AUTH as another user is answered, and changes
/// nothing (the credential's refresh would re-AUTH the connection as
/// attache's user anyway).
#[tokio::test]
async fn auth_as_another_user_keeps_attache_s_identity_with_its_credential() {
    let server = RedisServer::start();
    server.cli(&["ACL", "SETUSER", "reader", "on", ">secret", "+@all", "~*"]);
    let (_attache, addr) = attache_for(&server, &credential_toml(&server)).await;
    let mut app = TcpStream::connect(addr).await.unwrap();
    let pipeline = [
        cmd(&["AUTH", "reader", "secret"]),
        cmd(&["AUTH", "any"]),
        cmd(&["ACL", "WHOAMI"]),
        // Queued inside MULTI, with its answer in EXEC's array.
        cmd(&["MULTI"]),
        cmd(&["AUTH", "any"]),
        cmd(&["EXEC"]),
    ]
    .concat();
    let got = raw_exchange(&mut app, &pipeline, 6).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        "+OK\r\n+OK\r\n$7\r\nattache\r\n+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n"
    );
}
