//! twemproxy's distributions: which server a key hash lands on.

use std::fmt;
use std::str::FromStr;

use super::md5;

/// How keys are spread over servers: twemproxy's `distribution:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Distribution {
    /// Consistent hashing on a ring of 160 points per server, scaled by
    /// weight; placing a point depends only on the server's name.
    #[default]
    Ketama,
    /// `hash % total_weight` over live servers, each taking `weight`
    /// consecutive slots, servers ordered by name as twemproxy sorts them.
    Modula,
    /// A uniformly random live server, whatever the key and weights.
    Random,
}

impl Distribution {
    /// twemproxy's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Distribution::Ketama => "ketama",
            Distribution::Modula => "modula",
            Distribution::Random => "random",
        }
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A distribution name twemproxy does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown distribution {0:?} (expected ketama, modula or random)")]
pub struct UnknownDistribution(String);

impl FromStr for Distribution {
    type Err = UnknownDistribution;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ketama" => Ok(Distribution::Ketama),
            "modula" => Ok(Distribution::Modula),
            "random" => Ok(Distribution::Random),
            _ => Err(UnknownDistribution(s.to_owned())),
        }
    }
}

/// Why a continuum could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContinuumError {
    /// The server list is empty.
    #[error("no servers to distribute keys over")]
    NoServers,
    /// Every server is ejected.
    #[error("all {servers} servers are ejected")]
    NoLiveServers {
        /// How many servers there are.
        servers: usize,
    },
    /// Two servers share a ketama name, which twemproxy refuses too.
    #[error("two servers are named {name:?}; names (or host:port) must be unique")]
    DuplicateName {
        /// The shared name.
        name: String,
    },
    /// A server has weight 0.
    #[error("server {index} has weight 0")]
    ZeroWeight {
        /// Its position in the server list.
        index: usize,
    },
    /// The live servers' weights add up past `u32::MAX`, which twemproxy
    /// would silently wrap.
    #[error("total weight of live servers exceeds {}", u32::MAX)]
    WeightOverflow,
    /// The live mask and the server list differ in length.
    #[error("live mask has {mask} entries for {servers} servers")]
    LiveMaskLength {
        /// Servers given.
        servers: usize,
        /// Mask entries given.
        mask: usize,
    },
}

/// Ketama points per server at an average weight (`KETAMA_POINTS_PER_SERVER`).
const KETAMA_POINTS_PER_SERVER: u32 = 160;
/// Each MD5 digest of `"name-N"` yields four points.
const KETAMA_POINTS_PER_HASH: u32 = 4;

/// The lookup structure for one distribution over the live servers, as
/// twemproxy's `*_update` functions build it. Server indices it returns are
/// positions in the full server list given at build time, ejected or not.
#[derive(Debug, Clone)]
pub struct Continuum {
    lookup: Lookup,
}

#[derive(Debug, Clone)]
enum Lookup {
    /// Point values, sorted, with the server owning each point alongside.
    Ketama {
        points: Box<[u32]>,
        owners: Box<[u32]>,
    },
    /// Running weight totals of live servers in twemproxy's name order
    /// (see `with_live`); `hash % total` falls in the
    /// first server whose running total exceeds it.
    Modula {
        ends: Box<[u32]>,
        owners: Box<[u32]>,
    },
    /// Live servers, in order.
    Random { owners: Box<[u32]> },
}

impl Continuum {
    /// Builds the continuum with every server live. `servers` are
    /// `(ketama name, weight)` pairs; see [`ServerSpec::ketama_name`].
    ///
    /// [`ServerSpec::ketama_name`]: super::ServerSpec::ketama_name
    pub fn new<S: AsRef<str>>(
        distribution: Distribution,
        servers: &[(S, u32)],
    ) -> Result<Self, ContinuumError> {
        Self::with_live(distribution, servers, &vec![true; servers.len()])
    }

    /// Builds the continuum over the servers whose `live` entry is true, as
    /// twemproxy rebuilds it after ejecting a server: ketama shares points
    /// among live servers by their weight, modula takes the modulus over live
    /// weights only.
    pub fn with_live<S: AsRef<str>>(
        distribution: Distribution,
        servers: &[(S, u32)],
        live: &[bool],
    ) -> Result<Self, ContinuumError> {
        if servers.is_empty() {
            return Err(ContinuumError::NoServers);
        }
        if live.len() != servers.len() {
            return Err(ContinuumError::LiveMaskLength {
                servers: servers.len(),
                mask: live.len(),
            });
        }
        if let Some(index) = servers.iter().position(|(_, weight)| *weight == 0) {
            return Err(ContinuumError::ZeroWeight { index });
        }
        // twemproxy sorts its server array by name (shorter names first,
        // then bytewise: `string_compare`) while checking for duplicates,
        // and every distribution walks servers in that order. Modula slots
        // and ketama tie-breaks depend on it; indices returned stay ours.
        let mut order: Vec<usize> = (0..servers.len()).collect();
        order.sort_by(|&a, &b| {
            let (a, b) = (servers[a].0.as_ref(), servers[b].0.as_ref());
            (a.len(), a.as_bytes()).cmp(&(b.len(), b.as_bytes()))
        });
        if let Some(pair) = order
            .windows(2)
            .find(|pair| servers[pair[0]].0.as_ref() == servers[pair[1]].0.as_ref())
        {
            return Err(ContinuumError::DuplicateName {
                name: servers[pair[0]].0.as_ref().to_owned(),
            });
        }
        // u32 indices keep the lookup tables small; nobody shards over 4e9.
        let live_servers: Vec<(u32, &str, u32)> = order
            .into_iter()
            .filter(|&index| live[index])
            .map(|index| (index as u32, servers[index].0.as_ref(), servers[index].1))
            .collect();
        if live_servers.is_empty() {
            return Err(ContinuumError::NoLiveServers {
                servers: servers.len(),
            });
        }
        let total_weight = live_servers
            .iter()
            .try_fold(0u32, |total, &(_, _, weight)| total.checked_add(weight))
            .ok_or(ContinuumError::WeightOverflow)?;

        let lookup = match distribution {
            Distribution::Ketama => ketama(&live_servers, total_weight),
            Distribution::Modula => {
                let mut running = 0;
                let ends = live_servers
                    .iter()
                    .map(|&(_, _, weight)| {
                        running += weight;
                        running
                    })
                    .collect();
                Lookup::Modula {
                    ends,
                    owners: live_servers.iter().map(|&(index, _, _)| index).collect(),
                }
            }
            Distribution::Random => Lookup::Random {
                owners: live_servers.iter().map(|&(index, _, _)| index).collect(),
            },
        };
        Ok(Continuum { lookup })
    }

    /// The server for a key hash. For [`Distribution::Random`] pass a random
    /// number instead: twemproxy ignores the key there.
    pub fn server_index(&self, hash: u32) -> usize {
        let owner = match &self.lookup {
            // The first point at or after the hash, wrapping past the last
            // point to the first (`ketama_dispatch`).
            Lookup::Ketama { points, owners } => {
                let at = points.partition_point(|&point| point < hash);
                owners[if at == points.len() { 0 } else { at }]
            }
            Lookup::Modula { ends, owners } => {
                let total = ends[ends.len() - 1];
                let slot = hash % total;
                owners[ends.partition_point(|&end| end <= slot)]
            }
            Lookup::Random { owners } => owners[hash as usize % owners.len()],
        };
        owner as usize
    }

    /// The number of ketama points (0 for other distributions).
    pub fn ketama_points(&self) -> usize {
        match &self.lookup {
            Lookup::Ketama { points, .. } => points.len(),
            _ => 0,
        }
    }
}

/// `ketama_update`: each live server gets points in proportion to its
/// weight, from the MD5 of `"{name}-{n}"`, four little-endian u32s per
/// digest; then the points are sorted.
///
/// twemproxy formats `"{name}-{n}"` into an 86-byte stack buffer but hashes
/// `snprintf`'s untruncated length, so for names over ~80 bytes it hashes
/// whatever follows the buffer. No placement can match that; such names are
/// hashed in full here.
fn ketama(live: &[(u32, &str, u32)], total_weight: u32) -> Lookup {
    let live_count = live.len() as u32;
    let mut ring: Vec<(u32, u32)> = Vec::new();
    for &(index, name, weight) in live {
        let hashes = ketama_points_for(weight, total_weight, live_count) / KETAMA_POINTS_PER_HASH;
        for n in 0..hashes {
            let digest = md5::digest(format!("{name}-{n}").as_bytes());
            for word in digest.chunks_exact(4) {
                let point = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
                ring.push((point, index));
            }
        }
    }
    // twemproxy qsorts on the value alone; glibc's qsort is a merge sort
    // (stable), so equal points (rare: 32-bit MD5 words) keep the order they
    // were added in, servers by name, as this stable sort does.
    ring.sort_by_key(|&(point, _)| point);
    Lookup::Ketama {
        points: ring.iter().map(|&(point, _)| point).collect(),
        owners: ring.iter().map(|&(_, owner)| owner).collect(),
    }
}

/// Points for one server, in twemproxy's exact float arithmetic:
/// `floorf((float)(pct * 160 / 4 * (float)nlive + 0.0000000001)) * 4` with
/// `pct` a `float`. Rounding here decides how many points a weighted server
/// gets, so it is reproduced step by step rather than simplified.
fn ketama_points_for(weight: u32, total_weight: u32, live_count: u32) -> u32 {
    let pct = weight as f32 / total_weight as f32;
    let scaled =
        pct * KETAMA_POINTS_PER_SERVER as f32 / KETAMA_POINTS_PER_HASH as f32 * live_count as f32;
    let nudged = (f64::from(scaled) + 0.000_000_000_1) as f32;
    (nudged.floor() * KETAMA_POINTS_PER_HASH as f32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_point_counts_match_twemproxy_float_math() {
        // Expected counts come from the C expression compiled with gcc.
        let cases: &[(&[u32], &[u32])] = &[
            (&[1, 1, 1], &[160, 160, 160]),
            (&[1, 2, 3], &[80, 160, 240]),
            (&[3, 1, 2, 1], &[272, 88, 180, 88]),
            (&[7, 3, 1000, 13], &[4, 0, 624, 8]),
            (
                &[5, 5, 5, 2, 2, 2, 1, 1, 1, 3],
                &[296, 296, 296, 116, 116, 116, 56, 56, 56, 176],
            ),
        ];
        for (weights, expected) in cases {
            let total = weights.iter().sum();
            let got: Vec<u32> = weights
                .iter()
                .map(|&w| ketama_points_for(w, total, weights.len() as u32))
                .collect();
            assert_eq!(&got, expected, "weights {weights:?}");
        }
        let equal = vec![1; 64];
        assert!(equal.iter().all(|&w| ketama_points_for(w, 64, 64) == 160));
    }

    #[test]
    fn ketama_wraps_past_the_last_point() {
        let c = Continuum::new(Distribution::Ketama, &[("a", 1), ("b", 1)]).unwrap();
        let Lookup::Ketama { points, owners } = &c.lookup else {
            unreachable!()
        };
        assert_eq!(points.len(), 320);
        assert!(points.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(c.server_index(u32::MAX), owners[0] as usize);
        assert_eq!(c.server_index(0), owners[0] as usize);
        assert_eq!(c.server_index(points[5]), owners[5] as usize);
        assert_eq!(c.server_index(points[5] + 1), owners[6] as usize);
    }

    #[test]
    fn modula_slots_follow_weights_in_server_order() {
        let c = Continuum::new(Distribution::Modula, &[("a", 2), ("b", 1), ("c", 3)]).unwrap();
        let got: Vec<usize> = (0..12).map(|h| c.server_index(h)).collect();
        assert_eq!(got, [0, 0, 1, 2, 2, 2, 0, 0, 1, 2, 2, 2]);
    }

    #[test]
    fn modula_orders_servers_by_name_length_then_bytes() {
        // twemproxy order: "b9" < "a10" (shorter first) < "a11".
        let servers = [("a11", 1), ("a10", 1), ("b9", 1)];
        let c = Continuum::new(Distribution::Modula, &servers).unwrap();
        let got: Vec<usize> = (0..3).map(|h| c.server_index(h)).collect();
        assert_eq!(got, [2, 1, 0]);
    }

    #[test]
    fn ejected_servers_get_nothing_and_indices_stay_put() {
        let servers = [("a", 1), ("b", 1), ("c", 1)];
        let live = [true, false, true];
        for distribution in [
            Distribution::Ketama,
            Distribution::Modula,
            Distribution::Random,
        ] {
            let c = Continuum::with_live(distribution, &servers, &live).unwrap();
            let mut seen = [false; 3];
            for h in (0..u32::MAX).step_by(9_999_991) {
                seen[c.server_index(h)] = true;
            }
            assert_eq!(seen, [true, false, true], "{distribution}");
        }
        let c = Continuum::with_live(Distribution::Modula, &servers, &live).unwrap();
        assert_eq!((c.server_index(0), c.server_index(1)), (0, 2));
    }

    #[test]
    fn ketama_only_moves_keys_of_the_ejected_server() {
        let servers: Vec<(String, u32)> = (0..8).map(|i| (format!("s{i}"), 1)).collect();
        let all = Continuum::new(Distribution::Ketama, &servers).unwrap();
        let mut live = [true; 8];
        live[3] = false;
        let some = Continuum::with_live(Distribution::Ketama, &servers, &live).unwrap();
        for h in (0..u32::MAX).step_by(1_000_003) {
            if all.server_index(h) != 3 {
                assert_eq!(all.server_index(h), some.server_index(h));
            }
        }
    }

    #[test]
    fn build_errors() {
        let none: [(&str, u32); 0] = [];
        assert_eq!(
            Continuum::new(Distribution::Ketama, &none).unwrap_err(),
            ContinuumError::NoServers
        );
        assert_eq!(
            Continuum::new(Distribution::Modula, &[("a", 1), ("b", 0)]).unwrap_err(),
            ContinuumError::ZeroWeight { index: 1 }
        );
        assert_eq!(
            Continuum::with_live(Distribution::Ketama, &[("a", 1)], &[false]).unwrap_err(),
            ContinuumError::NoLiveServers { servers: 1 }
        );
        assert_eq!(
            Continuum::with_live(Distribution::Ketama, &[("a", 1)], &[]).unwrap_err(),
            ContinuumError::LiveMaskLength {
                servers: 1,
                mask: 0
            }
        );
        assert_eq!(
            Continuum::new(Distribution::Ketama, &[("a", 1), ("b", 1), ("a", 2)]).unwrap_err(),
            ContinuumError::DuplicateName { name: "a".into() }
        );
        assert_eq!(
            Continuum::new(Distribution::Modula, &[("a", u32::MAX), ("b", 1)]).unwrap_err(),
            ContinuumError::WeightOverflow
        );
    }

    #[test]
    fn distribution_names() {
        for d in [
            Distribution::Ketama,
            Distribution::Modula,
            Distribution::Random,
        ] {
            assert_eq!(d.as_str().parse::<Distribution>().unwrap(), d);
        }
        assert!("Ketama".parse::<Distribution>().is_err());
        assert_eq!(Distribution::default(), Distribution::Ketama);
    }
}
