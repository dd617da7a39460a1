//! An upstream that is one of attache's own listeners (`listen` and
//! `servers` on one port, an upstream named `localhost` on attache's port,
//! an HTTP route into a Redis listener) is refused at connect with an
//! error naming the listener: proxied, each request would come back to
//! attache, open another connection to itself, and so on until the process
//! runs out of file descriptors, the app waiting all along. A config that
//! writes such an address out is refused when loaded (config_files.rs);
//! these listeners are on port 0, so only the bound sockets tell.

mod support;

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use support::*;
use tokio::net::TcpStream;

async fn http_get(port: u16) -> (u16, String) {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get("/")
        .header("host", "localhost")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// `GET /` once the reload is in effect (the old config's upstream,
/// `http://a`, does not resolve), or after 10 s.
async fn http_get_after_reload(port: u16) -> (u16, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = http_get(port).await;
        if !body.contains("http://a") || std::time::Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_is_attache_itself_is_refused_with_a_clear_error() {
    let redis = RedisServer::start();
    let config = |loop_to: &str, api_to: &str, cross_to: &str| {
        let text = format!(
            "[redis.loop]\nlisten = \"127.0.0.1:0\"\nservers = [\"{loop_to}\"]\n\
             connect_timeout = \"1s\"\ntimeout = \"2s\"\n\
             [redis.ok]\nlisten = \"127.0.0.1:0\"\nservers = [\"{}\"]\n\
             [http.api]\nlisten = \"127.0.0.1:0\"\nupstream = \"{api_to}\"\n\
             [http.cross]\nlisten = \"127.0.0.1:0\"\nupstream = \"{cross_to}\"\n",
            redis.addr()
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("attache.toml");
        std::fs::write(&path, text).unwrap();
        attache::config::load(&path).expect("valid config")
    };
    let elsewhere = redis.addr().to_string();
    let running = attache::start(config(&elsewhere, "http://a", "http://a"))
        .await
        .unwrap();
    let p = running.redis_addr("loop").unwrap().port();
    let q = running.http_addr("api").unwrap().port();
    // The listeners stay (their `listen` is unchanged); the upstreams
    // become attache's own.
    running
        .reload(config(
            &format!("localhost:{p}"),
            &format!("http://127.0.0.1:{q}"),
            &format!("http://127.0.0.1:{p}"),
        ))
        .unwrap();
    assert_eq!(running.redis_addr("loop").unwrap().port(), p);

    // Redis: the app gets attache's error for the upstream, which says why
    // (once the workers took the reload: until then, a new connection may
    // still be served by the old config).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let mut app = TcpStream::connect(("127.0.0.1", p)).await.unwrap();
        let reply = raw_exchange(&mut app, &cmd(&["GET", "k"]), 1).await;
        if reply != b"$-1\r\n" || std::time::Instant::now() > deadline {
            break String::from_utf8_lossy(&reply).into_owned();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(text.starts_with("-ERR attache: upstream"), "{text}");
    assert!(
        text.contains(&format!(
            "127.0.0.1:{p} is attache's own listener `loop` (127.0.0.1:{p}): requests would loop back into attache"
        )),
        "{text}"
    );

    // HTTP, to itself and into the Redis listener: a 502 that says why.
    let (status, body) = http_get_after_reload(q).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("own listener `api`"), "{body}");
    let cross = running.http_addr("cross").unwrap().port();
    let (status, body) = http_get_after_reload(cross).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("own listener `loop`"), "{body}");

    // Nothing piled up meanwhile: the other listener serves as before.
    let ok = running.redis_addr("ok").unwrap();
    let mut app = TcpStream::connect(ok).await.unwrap();
    assert_eq!(
        raw_exchange(&mut app, &cmd(&["PING"]), 1).await,
        b"+PONG\r\n"
    );
    let open: usize = running.stats().iter().map(|s| s.open()).sum();
    assert!(open <= 3, "app connections open: {open}");
    tokio::time::timeout(Duration::from_secs(10), running.shutdown())
        .await
        .expect("shuts down");
}
