//! attache in front of Redis servers whose user `app` takes a token read
//! from a file, which a test rotates.

use std::time::Duration;

use super::RedisServer;

/// `servers` with user `app` accepting `t1`, and attache in front of them
/// (`mode` "single" or "ketama") with the token read from a file that a
/// test rotates with [`rotate`].
pub async fn attache(
    servers: &[&RedisServer],
    mode: &str,
    dir: &std::path::Path,
) -> (attache::Running, std::net::SocketAddr) {
    for server in servers {
        server.cli(&["ACL", "SETUSER", "app", "on", ">t1", "~*", "&*", "+@all"]);
    }
    std::fs::write(dir.join("token"), "t1").unwrap();
    let list: Vec<String> = servers
        .iter()
        .map(|s| format!("\"{}\"", s.addr()))
        .collect();
    let attache = super::start_attache(&format!(
        "[redis.test]\nlisten = \"127.0.0.1:0\"\nmode = \"{mode}\"\nservers = [{}]\n\
         timeout = \"1s\"\n\n[redis.test.auth]\nusername = \"app\"\ntoken = \"file\"\n\n\
         [tokens.file]\nprovider = \"static\"\ntoken_file = \"{}\"\n",
        list.join(", "),
        dir.join("token").display()
    ))
    .await;
    let addr = attache.redis_addr("test").unwrap();
    (attache, addr)
}

/// Adds `token` to user `app` on `servers`, then puts it in the token file;
/// returns once attache has read it (the file is polled every second).
pub async fn rotate(servers: &[&RedisServer], dir: &std::path::Path, token: &str) {
    for server in servers {
        server.cli(&["ACL", "SETUSER", "app", &format!(">{token}")]);
    }
    std::fs::write(dir.join("token"), token).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
}

/// Reads `stream` until `what` shows up; panics if it closes or 5 s pass.
pub async fn read_until(stream: &mut tokio::net::TcpStream, what: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while !String::from_utf8_lossy(&seen).contains(what) {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => panic!(
                "closed before {what:?}; got {:?}",
                String::from_utf8_lossy(&seen)
            ),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => panic!("no {what:?}; got {:?}", String::from_utf8_lossy(&seen)),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}
