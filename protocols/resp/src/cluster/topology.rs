//! The slot map: which shard serves each of the 16,384 slots, and where its
//! primary and replicas are.

use crate::hash::SLOT_COUNT;

use super::{shards, slots, Host, NodeAddress};

/// Table entry for a slot no shard serves.
const UNASSIGNED: u16 = u16::MAX;

/// Why a topology reply could not become a [`SlotMap`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// The bytes are not RESP.
    #[error("{command} reply is not RESP: {reason}")]
    Decode {
        command: &'static str,
        reason: String,
    },
    /// The reply stops before its end; read more and parse again.
    #[error("{command} reply is incomplete")]
    Incomplete { command: &'static str },
    /// Bytes follow the reply (the caller passed more than one frame).
    #[error("{command} reply is followed by {extra} more bytes")]
    Trailing { command: &'static str, extra: usize },
    /// Aggregates nest deeper than any topology reply does.
    #[error("{command} reply nests deeper than {max} levels")]
    TooDeep { command: &'static str, max: usize },
    /// The server answered with an error, e.g. `ERR unknown command` from a
    /// Redis before 7.0 for `CLUSTER SHARDS` (fall back to `CLUSTER SLOTS`),
    /// or `ERR This instance has cluster support disabled`.
    #[error("{command} failed: {message}")]
    Server {
        command: &'static str,
        message: String,
    },
    /// Valid RESP, but not the shape the command replies with.
    #[error("malformed {command} reply: {what}")]
    Malformed { command: &'static str, what: String },
}

/// A node's health as `CLUSTER SHARDS` reports it. `CLUSTER SLOTS` leaves
/// failed replicas out and says nothing else, so its nodes are `Online`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    Online,
    /// Syncing, or (Redis 7.0) a replica whose replication offset is still 0.
    Loading,
    /// Flagged FAIL by the cluster.
    Failed,
    /// A value this version does not know, or none.
    Unknown,
}

/// One node of a shard.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Node {
    /// The 40-character node id (`None` only from a Redis 3 `CLUSTER SLOTS`).
    pub id: Option<String>,
    /// Where to connect: the preferred endpoint (see the module docs) and the
    /// client port (the `port` field, else `tls-port`).
    pub addr: NodeAddress,
    /// The TLS port, when `CLUSTER SHARDS` reports one.
    pub tls_port: Option<u16>,
    /// The node's IP, when reported and not empty.
    pub ip: Option<String>,
    /// The node's announced hostname, when reported and not empty (for TLS
    /// server names).
    pub hostname: Option<String>,
    pub health: Health,
}

/// A primary, its online replicas, and the slots they serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// Inclusive slot ranges, sorted.
    pub slots: Vec<(u16, u16)>,
    /// Kept even when failed: its slots are still its own until a replica
    /// takes over, and requests for them fail until then.
    pub primary: Node,
    /// Replicas whose health is [`Health::Online`].
    pub replicas: Vec<Node>,
}

/// Every slot's shard, looked up in O(1).
///
/// Only shards that serve at least one slot are kept: a primary without
/// slots (an empty new node, or a failed primary after its replica took
/// over) has nothing to route to.
#[derive(Clone, PartialEq, Eq)]
pub struct SlotMap {
    /// Index into `shards` for each slot, or [`UNASSIGNED`].
    table: Box<[u16; SLOT_COUNT as usize]>,
    shards: Vec<Shard>,
}

impl SlotMap {
    /// Builds the map from the bytes of one `CLUSTER SHARDS` reply (Redis 7+).
    pub fn from_cluster_shards(reply: &[u8]) -> Result<Self, TopologyError> {
        shards::parse(reply)
    }

    /// Builds the map from the bytes of one `CLUSTER SLOTS` reply (any Redis
    /// Cluster; deprecated since 7.0 but still served).
    pub fn from_cluster_slots(reply: &[u8]) -> Result<Self, TopologyError> {
        slots::parse(reply)
    }

    /// The shard serving `slot`; `None` if no shard does or `slot` ≥ 16384.
    #[inline]
    pub fn shard_for_slot(&self, slot: u16) -> Option<&Shard> {
        self.shards.get(self.shard_index(slot)?)
    }

    /// The index in [`Self::shards`] of the shard serving `slot`.
    #[inline]
    pub fn shard_index(&self, slot: u16) -> Option<usize> {
        match self.table.get(usize::from(slot)) {
            Some(&UNASSIGNED) | None => None,
            Some(&index) => Some(usize::from(index)),
        }
    }

    /// The shards, ordered by their lowest slot.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Whether every slot is served (else the cluster reports CLUSTERDOWN,
    /// unless `cluster-require-full-coverage` is off).
    pub fn is_complete(&self) -> bool {
        !self.table.contains(&UNASSIGNED)
    }

    /// Merges entries with the same primary, drops empty shards, and fills
    /// the table; two shards claiming one slot is an error.
    pub(super) fn build(entries: Vec<Shard>, command: &'static str) -> Result<Self, TopologyError> {
        let mut shards: Vec<Shard> = Vec::new();
        for entry in entries.into_iter().filter(|e| !e.slots.is_empty()) {
            match shards
                .iter_mut()
                .find(|s| s.primary.same_node(&entry.primary))
            {
                Some(shard) => {
                    shard.slots.extend(entry.slots);
                    for replica in entry.replicas {
                        if !shard.replicas.iter().any(|r| r.same_node(&replica)) {
                            shard.replicas.push(replica);
                        }
                    }
                }
                None => shards.push(entry),
            }
        }
        for shard in &mut shards {
            shard.slots.sort_unstable();
        }
        // Slot order, so that refreshing an unchanged topology keeps indexes.
        shards.sort_by_key(|s| s.slots.first().copied());
        let mut table = Box::new([UNASSIGNED; SLOT_COUNT as usize]);
        for (index, shard) in shards.iter().enumerate() {
            for &(start, end) in &shard.slots {
                if start > end || end >= SLOT_COUNT {
                    let what = format!("slot range {start}-{end} is out of 0-16383");
                    return Err(TopologyError::Malformed { command, what });
                }
                for slot in &mut table[usize::from(start)..=usize::from(end)] {
                    if *slot != UNASSIGNED {
                        let what = format!("two shards claim slots in {start}-{end}");
                        return Err(TopologyError::Malformed { command, what });
                    }
                    // At most 16,384 shards own a slot, so the index fits.
                    *slot = index as u16;
                }
            }
        }
        Ok(SlotMap { table, shards })
    }
}

/// The shards, without the 16,384-entry table.
impl std::fmt::Debug for SlotMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotMap")
            .field("shards", &self.shards)
            .finish()
    }
}

impl Node {
    /// Same id, or without ids the same address.
    fn same_node(&self, other: &Node) -> bool {
        match (&self.id, &other.id) {
            (Some(a), Some(b)) => a == b,
            _ => self.addr == other.addr,
        }
    }
}

/// The host to connect to, from what a reply says about a node (see the
/// module docs). `endpoint` is `None` when the reply has no such field; a
/// null endpoint is passed as `Some("")`.
pub(super) fn preferred_host(
    endpoint: Option<&str>,
    ip: Option<&str>,
    hostname: Option<&str>,
) -> Host {
    match endpoint {
        // `from_endpoint` maps "" and "?" to `Unknown`.
        Some("?") => Host::from_endpoint(ip.unwrap_or("")),
        Some(endpoint) => Host::from_endpoint(endpoint),
        None => match hostname.filter(|h| !h.is_empty() && *h != "?") {
            Some(hostname) => Host::from_endpoint(hostname),
            None => Host::from_endpoint(ip.unwrap_or("")),
        },
    }
}

/// A port field: 1-65535, or `None` for 0 (not configured).
pub(super) fn port(value: i64, command: &'static str) -> Result<Option<u16>, TopologyError> {
    match u16::try_from(value) {
        Ok(0) => Ok(None),
        Ok(port) => Ok(Some(port)),
        Err(_) => {
            let what = format!("port {value} is out of range");
            Err(TopologyError::Malformed { command, what })
        }
    }
}
