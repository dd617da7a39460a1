//! Redis Cluster, sans I/O: the slot map from `CLUSTER SHARDS` (or the older
//! `CLUSTER SLOTS`), `MOVED`/`ASK` redirects, and which cluster errors are
//! worth a retry.
//!
//! The runtime asks a seed node for its topology, builds a [`SlotMap`] from
//! the reply bytes (RESP2 or RESP3, whichever the connection speaks), routes
//! each key with [`SlotMap::shard_for_slot`]`(`[`key_slot`]`(key))`, and
//! refreshes the map when a reply [`is_redirect`] or [`retryable_cluster_error`].
//!
//! # Which address a node has
//!
//! Redis picks each node's *preferred endpoint* from its
//! `cluster-preferred-endpoint-type` (`ip`, `hostname` or `unknown-endpoint`)
//! and uses it both in topology replies and in `MOVED`/`ASK`. attache follows
//! that choice, so addresses from the slot map and from redirects agree:
//!
//! - `CLUSTER SHARDS`: the node's `endpoint`; without an `endpoint` field,
//!   its `hostname`, else its `ip`.
//! - `CLUSTER SLOTS`: the first element of the node entry.
//! - `?` (hostname preferred but none announced): the node's `ip` when the
//!   reply has one, else [`Host::Unknown`].
//! - `""` or null (`unknown-endpoint`, or a node that does not know its own
//!   IP yet): [`Host::Unknown`], which per the Redis docs means "the host you
//!   sent the command to, with this port" (the nodes sit behind something
//!   Redis cannot name, such as a load balancer).
//!
//! [`key_slot`]: crate::hash::key_slot

mod redirect;
mod shards;
mod slots;
mod topology;
mod value;

#[cfg(test)]
mod edge_tests;
#[cfg(test)]
mod tests;

use std::fmt;

pub use redirect::{
    could_redirect, is_redirect, parse_redirect, retryable_cluster_error, Redirect,
    RetryableClusterError,
};
pub use topology::{Health, Node, Shard, SlotMap, TopologyError};

/// Where a node accepts client connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeAddress {
    pub host: Host,
    pub port: u16,
}

/// The host part of a [`NodeAddress`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A hostname or an IP literal (IPv6 without brackets).
    Name(String),
    /// Redis did not name the host (`""`, `?` or null): connect to the host
    /// of the node that sent the reply or redirect, with this port.
    Unknown,
}

impl NodeAddress {
    /// Parses `host:port` as Redis writes it in redirects: the last colon
    /// separates the port (`::1:6380` is IPv6 `::1`), brackets are optional,
    /// and an empty host or `?` is [`Host::Unknown`]. Port 0 is refused.
    pub fn parse(s: &str) -> Option<Self> {
        let (host, port) = s.rsplit_once(':')?;
        let port = port.parse().ok().filter(|&p| p != 0)?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        Some(NodeAddress {
            host: Host::from_endpoint(host),
            port,
        })
    }

    /// The host to dial: this address's own, or for [`Host::Unknown`] the
    /// host the reply came from.
    pub fn host_or<'a>(&'a self, replying_host: &'a str) -> &'a str {
        match &self.host {
            Host::Name(name) => name,
            Host::Unknown => replying_host,
        }
    }
}

impl Host {
    /// An endpoint as Redis writes it: `""` and `?` name no host.
    pub fn from_endpoint(endpoint: &str) -> Host {
        match endpoint {
            "" | "?" => Host::Unknown,
            name => Host::Name(name.to_owned()),
        }
    }
}

/// `host:port`, `[v6]:port`, or `:port` for an unknown host (as Redis
/// writes it in a redirect).
impl fmt::Display for NodeAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Name(name) if name.contains(':') => write!(f, "[{name}]:{}", self.port),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
            Host::Unknown => write!(f, ":{}", self.port),
        }
    }
}
