//! `CLUSTER SLOTS`: a list of `[start, end, primary, replica…]` entries, one
//! per contiguous range, each node `[endpoint, port, id, metadata]` where the
//! endpoint may be null (`unknown-endpoint`) and `metadata` (Redis 7) is a
//! map (flat list in RESP2) that may hold `ip` and `hostname`. Redis 3 sends
//! only `[ip, port]`. Failed replicas are already left out by Redis.

use super::topology::{self, preferred_host};
use super::value::{decode, Value};
use super::{Health, Node, NodeAddress, Shard, SlotMap, TopologyError};

const COMMAND: &str = "CLUSTER SLOTS";

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
        .ok_or_else(|| malformed("not a list of slot ranges"))?;
    let mut entries = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let items = entry.as_list().unwrap_or_default();
        let [start, end, primary, replicas @ ..] = items else {
            return Err(malformed(format!(
                "entry {i} is not [start, end, primary, …]"
            )));
        };
        let slot = |v: &Value| v.as_int().and_then(|s| u16::try_from(s).ok());
        let (Some(start), Some(end)) = (slot(start), slot(end)) else {
            return Err(malformed(format!("entry {i} has a bad slot range")));
        };
        let node = |v| parse_node(v).map_err(|e| malformed(format!("entry {i}: {e}")));
        entries.push(Shard {
            slots: vec![(start, end)],
            primary: node(primary)?,
            replicas: replicas.iter().map(node).collect::<Result<_, _>>()?,
        });
    }
    SlotMap::build(entries, COMMAND)
}

fn parse_node(value: &Value) -> Result<Node, String> {
    let items = value.as_list().unwrap_or_default();
    let [endpoint, port_value, rest @ ..] = items else {
        return Err("a node is not [endpoint, port, …]".into());
    };
    let endpoint = match endpoint {
        Value::Null => "",
        other => other.as_str().ok_or("a node's endpoint is not a string")?,
    };
    let port = port_value
        .as_int()
        .ok_or("a node's port is not an integer")?;
    let port = topology::port(port, COMMAND)
        .map_err(|e| e.to_string())?
        .ok_or("a node has port 0")?;
    let id = match rest.first() {
        None | Some(Value::Null) => None,
        Some(id) => Some(id.as_str().ok_or("a node id is not a string")?.to_owned()),
    };
    let (mut ip, mut hostname) = (None, None);
    if let Some(metadata) = rest.get(1) {
        for (key, value) in metadata.pairs().ok_or("node metadata is not a map")? {
            match key.as_str() {
                Some("ip") => ip = value.as_str(),
                Some("hostname") => hostname = value.as_str(),
                _ => {}
            }
        }
    }
    let host = preferred_host(Some(endpoint), ip, hostname);
    // Redis leaves the preferred one of ip and hostname out of the metadata.
    let endpoint_is_ip = endpoint.parse::<std::net::IpAddr>().is_ok();
    let ip = ip.or(endpoint_is_ip.then_some(endpoint));
    let hostname = hostname.or((!endpoint_is_ip).then_some(endpoint));
    let known = |s: Option<&str>| s.filter(|s| !s.is_empty() && *s != "?").map(str::to_owned);
    Ok(Node {
        id,
        addr: NodeAddress { host, port },
        tls_port: None,
        ip: known(ip),
        hostname: known(hostname),
        health: Health::Online,
    })
}
