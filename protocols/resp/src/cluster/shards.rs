//! `CLUSTER SHARDS` (Redis 7+): a list of shards, each a map (a flat
//! `[key, value, …]` list in RESP2) with `slots`, a flat list of inclusive
//! `start, end` pairs, and `nodes`, a list of node maps with `id`, `port`,
//! `tls-port`, `ip`, `endpoint`, `hostname`, `role`, `replication-offset`
//! and `health`. Fields this version does not know are ignored; `port` and
//! `tls-port` are each optional but one must be there.

use super::topology::{port, preferred_host};
use super::value::{decode, Value};
use super::{Health, Node, NodeAddress, Shard, SlotMap, TopologyError};

const COMMAND: &str = "CLUSTER SHARDS";

fn malformed(what: impl Into<String>) -> TopologyError {
    TopologyError::Malformed {
        command: COMMAND,
        what: what.into(),
    }
}

pub(super) fn parse(reply: &[u8]) -> Result<SlotMap, TopologyError> {
    let value = decode(reply, COMMAND)?;
    let list = value
        .as_list()
        .ok_or_else(|| malformed("not a list of shards"))?;
    let mut shards = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let fields = entry
            .pairs()
            .ok_or_else(|| malformed(format!("shard {i} is not a map")))?;
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k.as_str() == Some(name))
                .map(|(_, v)| *v)
        };
        let slots = field("slots").ok_or_else(|| malformed(format!("shard {i} has no slots")))?;
        let slots = slot_ranges(slots).ok_or_else(|| malformed(format!("shard {i}: bad slots")))?;
        let nodes = field("nodes").and_then(Value::as_list);
        let nodes = nodes.ok_or_else(|| malformed(format!("shard {i} has no node list")))?;
        let (mut primary, mut replicas) = (None, Vec::new());
        for node in nodes {
            let (node, is_primary) =
                parse_node(node).map_err(|e| malformed(format!("shard {i}: {e}")))?;
            match is_primary {
                true if primary.is_some() => {
                    return Err(malformed(format!("shard {i} has two primaries")))
                }
                true => primary = Some(node),
                false if node.health == Health::Online => replicas.push(node),
                false => {}
            }
        }
        match primary {
            Some(primary) => shards.push(Shard {
                slots,
                primary,
                replicas,
            }),
            None if slots.is_empty() => {}
            None => {
                return Err(malformed(format!(
                    "shard {i} serves slots but has no primary"
                )))
            }
        }
    }
    SlotMap::build(shards, COMMAND)
}

/// `[start, end, start, end, …]` → inclusive ranges (checked by `build`).
fn slot_ranges(value: &Value) -> Option<Vec<(u16, u16)>> {
    let bounds = value.as_list()?;
    if bounds.len() % 2 != 0 {
        return None;
    }
    let slot = |v: &Value| v.as_int().and_then(|i| u16::try_from(i).ok());
    bounds
        .chunks_exact(2)
        .map(|p| Some((slot(&p[0])?, slot(&p[1])?)))
        .collect()
}

/// One node map → the node, and whether it is the primary.
fn parse_node(value: &Value) -> Result<(Node, bool), String> {
    let fields = value.pairs().ok_or("a node is not a map")?;
    let (mut id, mut port_field, mut tls_port) = (None, None, None);
    let (mut ip, mut endpoint, mut hostname) = (None, None, None);
    let (mut role, mut health) = (None, Health::Unknown);
    for (key, value) in fields {
        let Some(key) = key.as_str() else { continue };
        let text = || {
            value
                .as_str()
                .ok_or(format!("node field {key} is not a string"))
        };
        let int = || {
            value
                .as_int()
                .ok_or(format!("node field {key} is not an integer"))
        };
        match key {
            "id" => id = Some(text()?.to_owned()),
            "port" => port_field = port(int()?, COMMAND).map_err(|e| e.to_string())?,
            "tls-port" => tls_port = port(int()?, COMMAND).map_err(|e| e.to_string())?,
            "ip" => ip = Some(text()?),
            "endpoint" => endpoint = Some(text()?),
            "hostname" => hostname = Some(text()?),
            // "replica"; Valkey says "primary".
            "role" => role = Some(matches!(text()?, "master" | "primary")),
            "health" => {
                health = match text()? {
                    "online" => Health::Online,
                    "loading" => Health::Loading,
                    // The docs say "failed"; Redis 7.0 sends "fail".
                    "fail" | "failed" => Health::Failed,
                    _ => Health::Unknown,
                }
            }
            _ => {}
        }
    }
    let is_primary = role.ok_or("a node has no role")?;
    let port = port_field
        .or(tls_port)
        .ok_or("a node has neither port nor tls-port")?;
    let known = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_owned);
    let node = Node {
        id,
        addr: NodeAddress {
            host: preferred_host(endpoint, ip, hostname),
            port,
        },
        tls_port,
        ip: known(ip),
        hostname: known(hostname),
        health,
    };
    Ok((node, is_primary))
}
