//! A real Redis Cluster for integration tests: three primaries and three
//! replicas on free loopback ports, created with `redis-cli --cluster create`.
//!
//! Everything here blocks (child processes, short requests over the `redis`
//! crate's sync connection). From an async test, run the cluster calls on a
//! `multi_thread` runtime or in `spawn_blocking` so load tasks keep running
//! while, say, a slot migrates. Waits poll with a deadline; no fixed sleeps.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use attache_resp::hash::key_slot;
use redis::FromRedisValue;

use super::{cmd, count_replies, free_port};

mod migration;

/// Primaries + replicas.
const NODES: usize = 6;
/// Redis listens for the cluster bus on `port + 10000`.
const BUS_OFFSET: u16 = 10000;
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// A running cluster; dropping it kills every node and removes its files.
pub struct RedisCluster {
    nodes: Vec<Node>,
    extra: Vec<String>,
    dir: tempfile::TempDir,
    /// Primaries killed by [`Self::kill_node`], as they saw themselves.
    killed: Vec<NodeView>,
}

struct Node {
    port: u16,
    child: Option<Child>,
}

/// One line of `CLUSTER NODES`: how one node sees another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub id: String,
    pub port: u16,
    pub primary: bool,
    /// The primary's id, for a replica.
    pub primary_id: Option<String>,
    /// Flagged `fail`, `fail?`, `handshake` or `noaddr`, or its link is down.
    pub unhealthy: bool,
    /// Owned slot ranges (inclusive); migration markers `[…]` are skipped.
    pub slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts and creates a 3 primary + 3 replica cluster, ready to serve.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Like [`Self::start`], with extra `redis-server` arguments for every
    /// node; `{port}` in an argument becomes the node's port (for example
    /// `--cluster-announce-hostname node-{port}.test`) and `{tls_port}` the
    /// node's port + 1 (kept free for it: see [`tls_port`]).
    pub fn start_with(extra: &[&str]) -> Self {
        let mut cluster = Self {
            nodes: Vec::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir: tempfile::tempdir().expect("temp dir"),
            killed: Vec::new(),
        };
        while cluster.nodes.len() < NODES {
            // If the port was taken before redis-server bound it, pick another.
            let tls = cluster.extra.iter().any(|a| a.contains("{tls_port}"));
            let port = pick_port(&cluster.ports(), tls);
            if let Some(child) = wait_for_listen(port, cluster.spawn(port)) {
                cluster.nodes.push(Node {
                    port,
                    child: Some(child),
                });
            }
        }
        let create = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(cluster.seeds())
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("redis-cli is installed");
        // It waits forever for nodes that cannot meet (say, a cluster bus
        // that refuses their TLS): fail the test instead of hanging it.
        let out = output_within(create, READY_TIMEOUT);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("All 16384 slots covered"),
            "redis-cli --cluster create failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_stable();
        cluster
    }

    /// Every node ever started, live or killed.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The live nodes' ports.
    pub fn live_ports(&self) -> Vec<u16> {
        let live = self.nodes.iter().filter(|n| n.child.is_some());
        live.map(|n| n.port).collect()
    }

    /// `"127.0.0.1:port"` of every live node, as seed addresses.
    pub fn seeds(&self) -> Vec<String> {
        let ports = self.live_ports();
        ports.iter().map(|p| format!("127.0.0.1:{p}")).collect()
    }

    /// `CLUSTER NODES` as seen by the node on `port`.
    pub fn view(&self, port: u16) -> Vec<NodeView> {
        let text: String = query(port, &["CLUSTER", "NODES"]).expect("CLUSTER NODES");
        parse_cluster_nodes(&text)
    }

    /// Ports of the primaries that own slots, in slot order.
    pub fn primaries(&self) -> Vec<u16> {
        let view = self.view(self.any_live());
        let mut owners: Vec<(u16, u16)> = view
            .into_iter()
            .filter(|n| n.primary && !n.slots.is_empty())
            .map(|n| (n.slots[0].0, n.port))
            .collect();
        owners.sort();
        owners.into_iter().map(|(_, port)| port).collect()
    }

    /// A primary other than the one on `port` (where to move its slots).
    pub fn another_primary(&self, port: u16) -> u16 {
        self.primaries()
            .into_iter()
            .find(|&p| p != port)
            .expect("another primary")
    }

    /// Ports of the replicas of the primary on `port`.
    pub fn replicas_of(&self, port: u16) -> Vec<u16> {
        let view = self.view(self.any_live());
        let id = node_id_in(&view, port);
        let replicas = view.iter().filter(|n| n.primary_id.as_ref() == Some(&id));
        replicas.map(|n| n.port).collect()
    }

    /// The node id of the node on `port`.
    pub fn node_id(&self, port: u16) -> String {
        node_id_in(&self.view(self.any_live()), port)
    }

    /// The port of the primary that owns `slot` (every harness wait leaves
    /// the nodes agreeing, so any live node's view will do).
    pub fn primary_for_slot(&self, slot: u16) -> u16 {
        owner_in(&self.view(self.any_live()), slot)
            .unwrap_or_else(|| panic!("slot {slot} is not assigned"))
    }

    /// Kills the node on `port` with SIGKILL, as a crash would.
    pub fn kill_node(&mut self, port: u16) {
        let own = self.view(port).into_iter().find(|n| n.port == port);
        if let Some(me) = own.filter(|n| n.primary && !n.slots.is_empty()) {
            self.killed.push(me);
        }
        let node = self.nodes.iter_mut().find(|n| n.port == port);
        let child = node.and_then(|n| n.child.take());
        let mut child = child.unwrap_or_else(|| panic!("no live node on port {port}"));
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts a killed node again on its port with its `nodes.conf` (a
    /// former primary comes back as a replica). [`Self::wait_stable`] waits
    /// until it has rejoined.
    pub fn restart_node(&mut self, port: u16) {
        let child = wait_for_listen(port, self.spawn(port)).expect("restarted node listens");
        let node = self.nodes.iter_mut().find(|n| n.port == port);
        node.expect("a node of this cluster").child = Some(child);
    }

    /// Waits until a replica of the killed primary `old_primary` owns its
    /// slots, every live node agrees, and the cluster is ok; returns the new
    /// primary's port.
    pub fn wait_for_failover(&self, old_primary: u16) -> u16 {
        let old = self.killed.iter().find(|k| k.port == old_primary);
        let old = old.unwrap_or_else(|| panic!("{old_primary} is not a killed primary"));
        let (old_id, slots) = (&old.id, &old.slots);
        self.wait_until(FAILOVER_TIMEOUT, "failover", || {
            self.agreement()?;
            let view = self.view(self.any_live());
            let owner = owner_in(&view, slots[0].0).ok_or("slot unassigned")?;
            match view.iter().find(|n| n.port == owner) {
                Some(new) if new.id != *old_id && new.slots == *slots => Ok(owner),
                _ => Err(format!("slot {} still owned by {owner}", slots[0].0)),
            }
        })
    }

    /// Waits until every live node reports `cluster_state:ok`, all agree on
    /// slot owners and roles, every live replica's link is up, and no node
    /// calls a replica `loading` in `CLUSTER SHARDS`.
    ///
    /// Redis 7.0 reports a replica as `loading` while its replication offset
    /// is 0, which it stays on an idle primary until the 10 s replication
    /// ping; so while waiting this writes and deletes one key per primary
    /// (`{attache-harness-N}`) every 100 ms to move the offsets.
    pub fn wait_stable(&self) {
        let mut touched: Option<Instant> = None;
        self.wait_until(READY_TIMEOUT, "a stable cluster", || {
            if touched.is_none_or(|t| t.elapsed() > Duration::from_millis(100)) {
                self.touch_primaries();
                touched = Some(Instant::now());
            }
            self.agreement()?;
            for port in self.live_ports() {
                let info: String = query(port, &["INFO", "replication"])?;
                if info.contains("role:slave") && !info.contains("master_link_status:up") {
                    return Err(format!("replica {port} not synced"));
                }
                let shards = raw(port, &["CLUSTER", "SHARDS"])?;
                if shards.windows(9).any(|w| w == b"\r\nloading") {
                    return Err(format!("{port} sees a replica loading"));
                }
            }
            Ok(())
        })
    }

    /// Runs `redis-cli -p port args…` against a node; returns trimmed stdout
    /// (an error reply prints as its text, with exit status 0).
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli is installed");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn spawn(&self, port: u16) -> Child {
        let port_arg = port.to_string();
        let conf = format!("nodes-{port}.conf");
        Command::new("redis-server")
            .args(["--port", &port_arg, "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-config-file", &conf])
            .args(["--cluster-node-timeout", "2000"])
            // Explicit: with `tls-cluster yes` the default would follow the
            // TLS port instead.
            .args(["--cluster-port", &(port + BUS_OFFSET).to_string()])
            .args(["--save", "", "--appendonly", "no"])
            // Replicas sync right away instead of after the default 5 s.
            .args(["--repl-diskless-sync-delay", "0"])
            .args(["--dir", &self.dir.path().display().to_string()])
            .args(self.extra.iter().map(|a| {
                a.replace("{port}", &port_arg)
                    .replace("{tls_port}", &tls_port(port).to_string())
            }))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)")
    }

    fn any_live(&self) -> u16 {
        *self.live_ports().first().expect("a live node")
    }

    /// Best effort: each live node that serves slots in its own view.
    fn touch_primaries(&self) {
        for port in self.live_ports() {
            let Ok(text) = query::<String>(port, &["CLUSTER", "NODES"]) else {
                continue;
            };
            let view = parse_cluster_nodes(&text);
            let Some(me) = view.iter().find(|n| n.port == port && n.primary) else {
                continue;
            };
            let owned =
                |k: &String| owner_in(std::slice::from_ref(me), key_slot(k.as_bytes())).is_some();
            let mut keys = (0..1000).map(|i| format!("{{attache-harness-{i}}}"));
            if let Some(key) = keys.find(owned) {
                let _ = query::<()>(port, &["SET", &key, "1"]);
                let _ = query::<()>(port, &["DEL", &key]);
            }
        }
    }

    /// `Ok` when every live node says `cluster_state:ok`, knows every live
    /// node as healthy, and all views agree on slot owners and roles.
    fn agreement(&self) -> Result<(), String> {
        let live = self.live_ports();
        let mut first: Option<Vec<NodeView>> = None;
        for &port in &live {
            let info: String = query(port, &["CLUSTER", "INFO"])?;
            if !info.contains("cluster_state:ok") {
                return Err(format!("{port}: cluster_state is not ok"));
            }
            let mut view = parse_cluster_nodes(&query::<String>(port, &["CLUSTER", "NODES"])?);
            view.retain(|n| live.contains(&n.port));
            view.sort_by_key(|n| n.port);
            if view.len() != live.len() || view.iter().any(|n| n.unhealthy) {
                return Err(format!("{port} does not see every live node healthy"));
            }
            match &first {
                Some(f) if *f != view => return Err(format!("{port} disagrees")),
                Some(_) => {}
                None => first = Some(view),
            }
        }
        Ok(())
    }

    fn wait_until<T>(
        &self,
        limit: Duration,
        what: &str,
        mut f: impl FnMut() -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            match f() {
                Ok(v) => return v,
                Err(e) if Instant::now() > deadline => panic!("timed out waiting for {what}: {e}"),
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in self.nodes.iter_mut().filter_map(|n| n.child.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A free port `p` with `p + 10000` also free, clashing with none of `taken`
/// (nor their bus ports).
fn pick_port(taken: &[u16], tls: bool) -> u16 {
    for _ in 0..1000 {
        let p = free_port();
        // Each node uses p, p + 10000 and, with TLS, p + 1.
        let used = |q: u16| [Some(q), Some(q + BUS_OFFSET), tls.then(|| tls_port(q))];
        let mine = used(p);
        let clash = |q: u16| used(q).iter().flatten().any(|u| mine.contains(&Some(*u)));
        let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
        if p < u16::MAX - BUS_OFFSET
            && !taken.iter().any(|&q| clash(q))
            && free(p + BUS_OFFSET)
            && (!tls || free(tls_port(p)))
        {
            return p;
        }
    }
    panic!("no free ports (port, port + 10000, and port + 1 for TLS)");
}

/// The TLS client port of the node on `port` (`{tls_port}` in its args).
pub fn tls_port(port: u16) -> u16 {
    port + 1
}

/// The output of `child`, killed first if it is still running after `limit`.
fn output_within(mut child: Child, limit: Duration) -> std::process::Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
    let _ = child.kill();
    child.wait_with_output().expect("redis-cli output")
}

/// Waits until `child` accepts connections on `port`; `None` if it exited.
fn wait_for_listen(port: u16, mut child: Child) -> Option<Child> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(child);
        }
        if child.try_wait().ok().flatten().is_some() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("redis-server did not start on port {port}");
}

fn node_id_in(view: &[NodeView], port: u16) -> String {
    let node = view.iter().find(|n| n.port == port);
    node.unwrap_or_else(|| panic!("no node on {port}"))
        .id
        .clone()
}

fn owner_in(view: &[NodeView], slot: u16) -> Option<u16> {
    let owns = |n: &&NodeView| n.slots.iter().any(|&(a, b)| a <= slot && slot <= b);
    view.iter().filter(|n| n.primary).find(owns).map(|n| n.port)
}

/// Parses `CLUSTER NODES`: `<id> <ip:port@cport[,hostname]> <flags> <primary>
/// <ping> <pong> <epoch> <link> <slot>…`.
pub fn parse_cluster_nodes(text: &str) -> Vec<NodeView> {
    let mut nodes = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(' ').collect();
        let addr = f[1].split([',', '@']).next().unwrap_or("");
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let flags: Vec<&str> = f[2].split(',').collect();
        let bad = ["fail", "fail?", "handshake", "noaddr"];
        let slots = f[8..].iter().filter(|s| !s.starts_with('[')).map(|s| {
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            (a.parse().expect("slot"), b.parse().expect("slot"))
        });
        nodes.push(NodeView {
            id: f[0].to_string(),
            port,
            primary: flags.contains(&"master"),
            primary_id: (f[3] != "-").then(|| f[3].to_string()),
            unhealthy: flags.iter().any(|x| bad.contains(x)) || f[7] != "connected",
            slots: slots.collect(),
        });
    }
    nodes
}

fn connect(port: u16) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))?.get_connection()
}

/// One command on a fresh connection; `Err` if the node is down or refuses.
fn query<T: FromRedisValue>(port: u16, args: &[&str]) -> Result<T, String> {
    let mut c = connect(port).map_err(|e| format!("{port}: {e}"))?;
    let mut command = redis::cmd(args[0]);
    command.arg(&args[1..]);
    command
        .query(&mut c)
        .map_err(|e| format!("{port} {args:?}: {e}"))
}

fn ok(port: u16, args: &[&str]) {
    if let Err(e) = query::<()>(port, args) {
        panic!("{e}");
    }
}

/// The exact bytes of the reply to `args` from the node on `port`, asked
/// after `HELLO 3` when `resp3` is set.
pub fn raw_reply(port: u16, resp3: bool, args: &[&str]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    if resp3 {
        round_trip(&mut stream, &cmd(&["HELLO", "3"])).expect("HELLO 3");
    }
    round_trip(&mut stream, &cmd(args)).expect("reply")
}

fn raw(port: u16, args: &[&str]) -> Result<Vec<u8>, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("{port}: {e}"))?;
    round_trip(&mut stream, &cmd(args)).map_err(|e| format!("{port}: {e}"))
}

/// Writes `request` and reads exactly one reply.
fn round_trip(stream: &mut TcpStream, request: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request)?;
    let (mut buf, mut chunk) = (Vec::new(), [0u8; 16384]);
    while count_replies(&buf) < 1 {
        match stream.read(&mut chunk)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Ok(buf)
}

/// A real 3 + 3 cluster (its start is blocking: off the runtime's threads).
pub async fn start_cluster() -> RedisCluster {
    tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .expect("the cluster starts")
}

/// attache in cluster mode with `cluster`'s nodes as seeds, not yet probed.
pub async fn start_cluster_attache(cluster: &RedisCluster, extra: &str) -> attache::Running {
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("\"{s}\"")).collect();
    super::start_attache(&format!(
        "[redis.c]\nlisten = \"127.0.0.1:0\"\nmode = \"cluster\"\nservers = [{}]\n{extra}\n",
        seeds.join(", ")
    ))
    .await
}

pub async fn attache_for_cluster(
    cluster: &RedisCluster,
    extra: &str,
) -> (attache::Running, std::net::SocketAddr) {
    let running = start_cluster_attache(cluster, extra).await;
    let addr = running.redis_addr("c").unwrap();
    // Wait for the first topology.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    loop {
        let reply = super::raw_exchange(&mut s, &cmd(&["SET", "probe", "1"]), 1).await;
        if reply == b"+OK\r\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no topology: {}",
            String::from_utf8_lossy(&reply)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (running, addr)
}
