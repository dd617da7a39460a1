//! Test support: real `redis-server` processes on free loopback ports, and
//! attache started in-process on port 0.
#![allow(dead_code, unreachable_pub)]

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A free loopback port (bound, then released; redis-server cannot take 0).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A loopback port where nothing listens, held for the guard's life: it
/// is bound (without SO_REUSEADDR) but never listens, so a connect to it
/// is refused at once, and no other test's server, nor a connect's own
/// source port, can take it meanwhile (a port from [`free_port`] can be
/// reused by a test running in parallel).
pub struct RefusingPort {
    pub port: u16,
    _socket: tokio::net::TcpSocket,
}

pub fn refusing_port() -> RefusingPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind("127.0.0.1:0".parse().unwrap())
        .expect("bind a refusing port");
    let port = socket.local_addr().expect("its address").port();
    RefusingPort {
        port,
        _socket: socket,
    }
}

/// A real `redis-server`, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        // Tests run in parallel, so a port found free can be taken by
        // another test's server before this one binds it: then this
        // redis-server exits at once while the port answers for the other
        // one. Check the child is alive, and try another port if not.
        for _ in 0..10 {
            let mut server = Self::start_on(free_port(), extra);
            std::thread::sleep(Duration::from_millis(50));
            let exited = server
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            if !exited {
                return server;
            }
            server.child = None;
        }
        panic!("redis-server would not start on a free port")
    }

    /// On a given port (e.g. a second server on another loopback address,
    /// with `--bind 127.0.0.3`).
    pub fn start_on(port: u16, extra: &[&str]) -> Self {
        let mut server = Self {
            port,
            child: None,
            dir: tempfile::tempdir().expect("temp dir"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.spawn();
        server
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", &self.dir.path().display().to_string()])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)");
        self.child = Some(child);
        wait_for_port(self.port);
    }

    /// Kills the server (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs a command directly against the server (not through attache).
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli is installed");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("redis-server did not start on port {port}");
}

/// Starts attache in-process from a TOML config; `{upstream}` in `toml`
/// is replaced by the server's address and listeners use port 0.
pub async fn start_attache(toml: &str) -> attache::Running {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("attache.toml");
    std::fs::write(&path, toml).expect("write config");
    let config = attache::config::load(&path).expect("valid config");
    attache::start(config).await.expect("attache starts")
}

/// attache with one `[redis.test]` listener in front of `server`.
pub async fn attache_for(server: &RedisServer, extra: &str) -> (attache::Running, SocketAddr) {
    let running = start_attache(&format!(
        "[redis.test]\nlisten = \"127.0.0.1:0\"\nservers = [\"{}\"]\n{extra}\n",
        server.addr()
    ))
    .await;
    let addr = running.redis_addr("test").expect("listener test");
    (running, addr)
}

pub async fn client(addr: SocketAddr) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{addr}/"))
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect through attache")
}

/// Sends `pipeline` to Redis and through attache; the replies must match.
pub async fn same_as_redis(
    direct: &mut TcpStream,
    app: &mut TcpStream,
    pipeline: &[u8],
    replies: usize,
) -> Vec<u8> {
    let expected = raw_exchange(direct, pipeline, replies).await;
    let got = raw_exchange(app, pipeline, replies).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&expected)
    );
    got
}

/// Raw RESP: write `bytes`, then read until `expect` more complete replies
/// arrived (RESP2 or RESP3) or the connection closed; returns what was read.
pub async fn raw_exchange(stream: &mut TcpStream, bytes: &[u8], replies: usize) -> Vec<u8> {
    stream.write_all(bytes).await.expect("write");
    read_replies(stream, replies).await
}

pub async fn read_replies(stream: &mut TcpStream, replies: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    let deadline = Duration::from_secs(10);
    loop {
        if count_replies(&buf) >= replies {
            return buf;
        }
        let mut chunk = [0u8; 65536];
        match tokio::time::timeout(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return buf,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!(
                "timed out waiting for {replies} replies; got {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    }
}

pub fn count_replies(mut buf: &[u8]) -> usize {
    let mut n = 0;
    loop {
        let len = match attache_resp::frame::reply_len(buf, false) {
            Ok(Some(len)) => len,
            Ok(None) => break,
            Err(_) => match attache_resp::frame::reply_len(buf, true) {
                Ok(Some(len)) => len,
                _ => break,
            },
        };
        buf = &buf[len..];
        n += 1;
    }
    n
}

pub fn cmd(args: &[&str]) -> Vec<u8> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    attache_resp::frame::reply::command(&args).to_vec()
}
pub mod admin;
pub mod binary;
pub mod cluster;
pub mod dns;
pub mod http;
pub mod shards;
pub mod tls;
pub mod token_file;
pub mod wire;

/// Reads until the connection closes; panics if it stays open for `within`.
pub async fn expect_closed(s: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(within, s.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(_))),
        "not closed: {closed:?}, read {:?}",
        String::from_utf8_lossy(&rest)
    );
    rest
}

/// A redis-server, attache in front of it, and an app connection to it.
/// The `[redis.test.auth]` of an attache presenting a credential of its
/// own: the ACL user `attache` (all commands, keys and channels), created
/// on `server` here, with its password in a file in the server's
/// directory. The app's `AUTH` is then attache's to answer.
pub fn credential_toml(server: &RedisServer) -> String {
    let user = [
        "ACL",
        "SETUSER",
        "attache",
        "on",
        ">attache-pw",
        "+@all",
        "~*",
        "&*",
    ];
    assert_eq!(server.cli(&user), "OK");
    let file = server.dir.path().join("attache-password");
    std::fs::write(&file, "attache-pw\n").expect("password file");
    format!(
        "[redis.test.auth]\nusername = \"attache\"\npassword_file = \"{}\"\n",
        file.display()
    )
}

/// `app_on_single`, attache presenting a credential of its own (see
/// `credential_toml`).
pub async fn app_on_single_with_credential(
) -> (RedisServer, attache::Running, SocketAddr, TcpStream) {
    let server = RedisServer::start();
    let (attache, addr) = attache_for(&server, &credential_toml(&server)).await;
    let app = TcpStream::connect(addr).await.unwrap();
    (server, attache, addr, app)
}

pub async fn app_on_single() -> (RedisServer, attache::Running, SocketAddr, TcpStream) {
    let server = RedisServer::start();
    let (attache, addr) = attache_for(&server, "").await;
    let app = TcpStream::connect(addr).await.unwrap();
    (server, attache, addr, app)
}
