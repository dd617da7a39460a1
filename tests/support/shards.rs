//! Three real `redis-server`s behind one of attache's twemproxy-style
//! sharded listeners, and where the ring puts a key.

use attache_resp::hash::{Distribution, Distributor, HashFunction, ServerSpec};

use super::{start_attache, RedisServer};

pub struct Shards {
    pub servers: Vec<RedisServer>,
}

impl Shards {
    pub fn start() -> Self {
        Self {
            servers: (0..3).map(|_| RedisServer::start()).collect(),
        }
    }

    /// `servers = [...]` lines with weights and names, twemproxy style.
    pub fn server_lines(&self) -> Vec<String> {
        self.servers
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{}:{} shard-{i}", s.addr(), i + 1))
            .collect()
    }

    pub fn specs(&self) -> Vec<ServerSpec> {
        self.server_lines()
            .iter()
            .map(|l| l.parse().unwrap())
            .collect()
    }

    pub async fn attache(
        &self,
        mode: &str,
        extra: &str,
    ) -> (attache::Running, std::net::SocketAddr) {
        let servers: Vec<String> = self
            .server_lines()
            .iter()
            .map(|l| format!("\"{l}\""))
            .collect();
        let running = start_attache(&format!(
            "[redis.shards]\nlisten = \"127.0.0.1:0\"\nmode = \"{mode}\"\nservers = [{}]\n{extra}\n",
            servers.join(", ")
        ))
        .await;
        let addr = running.redis_addr("shards").unwrap();
        (running, addr)
    }

    /// The ketama ring attache builds for these servers (fnv1a_64, the
    /// default hash), to predict where a key lives.
    pub fn ketama(&self, tag: Option<&str>) -> Distributor {
        let tag = tag.map(|t| t.parse().expect("a two-character tag"));
        Distributor::new(
            Distribution::Ketama,
            HashFunction::Fnv1a_64,
            tag,
            &self.specs(),
        )
        .expect("a valid ring")
    }

    /// Every key stored on server `i`, read directly from it.
    pub fn keys_on(&self, i: usize) -> Vec<String> {
        let out = self.servers[i].cli(&["--scan"]);
        out.lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }
}
