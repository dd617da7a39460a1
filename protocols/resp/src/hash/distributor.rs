//! Key → server, end to end: hash tag, key hash, distribution.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use super::continuum::{Continuum, ContinuumError, Distribution};
use super::server::ServerSpec;
use super::tag::HashTag;
use super::HashFunction;

/// One twemproxy pool's placement: which server (by position in the
/// configured list) serves a key. Immutable; on ejection or recovery build a
/// new one with [`Distributor::with_live`] and swap it in.
#[derive(Debug, Clone)]
pub struct Distributor {
    distribution: Distribution,
    hash: HashFunction,
    tag: Option<HashTag>,
    /// `(ketama name, weight)` per configured server, kept for rebuilds.
    servers: Box<[(String, u32)]>,
    continuum: Continuum,
}

impl Distributor {
    /// A distributor with every server live.
    pub fn new(
        distribution: Distribution,
        hash: HashFunction,
        tag: Option<HashTag>,
        servers: &[ServerSpec],
    ) -> Result<Self, ContinuumError> {
        let servers: Box<[(String, u32)]> = servers
            .iter()
            .map(|server| (server.ketama_name(), server.weight))
            .collect();
        let continuum = Continuum::new(distribution, &servers)?;
        Ok(Distributor {
            distribution,
            hash,
            tag,
            servers,
            continuum,
        })
    }

    /// The same pool rebuilt over the servers whose `live` entry is true
    /// (one entry per configured server), as twemproxy rebuilds after an
    /// ejection or a retry. Indices still refer to the configured list.
    pub fn with_live(&self, live: &[bool]) -> Result<Self, ContinuumError> {
        Ok(Distributor {
            continuum: Continuum::with_live(self.distribution, &self.servers, live)?,
            ..self.clone()
        })
    }

    /// The hash twemproxy dispatches `key` on: the hash tag's part if
    /// there is one, and 0 for an empty key (twemproxy does not hash those).
    pub fn key_hash(&self, key: &[u8]) -> u32 {
        let hashed = match &self.tag {
            Some(tag) => tag.hashed_part(key),
            None => key,
        };
        if hashed.is_empty() {
            0
        } else {
            self.hash.hash(hashed)
        }
    }

    /// The index, in the configured server list, of the server for `key`.
    pub fn server_for_key(&self, key: &[u8]) -> usize {
        // twemproxy skips hashing for a one-server pool.
        if self.servers.len() == 1 {
            return 0;
        }
        let hash = match self.distribution {
            Distribution::Random => random_u32(),
            Distribution::Ketama | Distribution::Modula => self.key_hash(key),
        };
        self.continuum.server_index(hash)
    }

    /// How many servers are configured, live or not.
    pub fn server_count(&self) -> usize {
        self.servers.len()
    }

    /// The distribution in use.
    pub fn distribution(&self) -> Distribution {
        self.distribution
    }

    /// The key hash in use.
    pub fn hash_function(&self) -> HashFunction {
        self.hash
    }

    /// The hash tag in use, if any.
    pub fn hash_tag(&self) -> Option<HashTag> {
        self.tag
    }
}

/// A cheap pseudo-random number for `random` distribution: each
/// `RandomState::new()` on a thread bumps its SipHash key, so hashing nothing
/// gives a fresh value without a `rand` dependency or shared state. Spreading
/// load is all `random` promises.
fn random_u32() -> u32 {
    RandomState::new().build_hasher().finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(lines: &[&str]) -> Vec<ServerSpec> {
        lines.iter().map(|line| line.parse().unwrap()).collect()
    }

    #[test]
    fn one_server_takes_everything() {
        let d = Distributor::new(
            Distribution::Ketama,
            HashFunction::Fnv1a_64,
            None,
            &servers(&["10.0.0.1:6379:1"]),
        )
        .unwrap();
        assert_eq!(d.server_for_key(b"anything"), 0);
        assert_eq!(d.server_count(), 1);
    }

    #[test]
    fn empty_key_hashes_to_zero() {
        let d = Distributor::new(
            Distribution::Modula,
            HashFunction::Fnv1a_64,
            Some(HashTag::BRACES),
            &servers(&["a:1:1", "b:1:1", "c:1:1"]),
        )
        .unwrap();
        assert_eq!(d.key_hash(b""), 0);
        assert_eq!(d.key_hash(b"{}"), HashFunction::Fnv1a_64.hash(b"{}"));
        assert_eq!(d.key_hash(b"x{tag}y"), HashFunction::Fnv1a_64.hash(b"tag"));
        assert_eq!(d.server_for_key(b""), 0);
    }

    #[test]
    fn random_spreads_over_live_servers_only() {
        let d = Distributor::new(
            Distribution::Random,
            HashFunction::default(),
            None,
            &servers(&["a:1:1", "b:1:9", "c:1:1"]),
        )
        .unwrap()
        .with_live(&[true, false, true])
        .unwrap();
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[d.server_for_key(b"same-key")] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!(counts[0] > 1200 && counts[2] > 1200, "{counts:?}");
    }
}
