//! Redis Cluster topology: asks a node for `CLUSTER SHARDS` (falling back
//! to `CLUSTER SLOTS`), maps each slot to the upstream of its primary (adding
//! upstreams for nodes it has not seen), and does so again every
//! `REFRESH_EVERY`, or at once (rate-limited) when a MOVED or a failing node
//! says the map is stale.

use std::sync::{Arc, Weak};
use std::time::Duration;

use attache_resp::cluster::{Host, Node, SlotMap};
use attache_resp::frame::reply;
use tracing::{info, warn};

use super::router::{ClusterSlots, Router};
use super::service::RedisService;
use crate::config::ReadFrom;

/// Periodic refresh, which also bounds how long a failover goes unnoticed
/// when no MOVED points at it.
const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// At most one refresh per this interval, however many MOVEDs arrive.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Keeps the listener's slot map current until the service is dropped.
pub(crate) async fn maintain(service: Weak<RedisService>) {
    let mut known = false;
    loop {
        let Some(svc) = service.upgrade() else { return };
        let Router::Cluster(router) = &svc.router else {
            return;
        };
        match fetch(&svc).await {
            Ok(slots) => {
                if !known {
                    info!(listener = %svc.name, primaries = slots.primaries.len(), "cluster topology known");
                    known = true;
                }
                router.install(slots);
            }
            Err(e) => warn!(listener = %svc.name, error = %e, "cluster topology refresh failed"),
        }
        // Until the first answer, retry quickly.
        let wait = if known {
            REFRESH_EVERY
        } else {
            MIN_INTERVAL * 2
        };
        let notified = router.refresh.notified();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = notified => {}
        }
        drop(svc);
        tokio::time::sleep(MIN_INTERVAL).await;
    }
}

/// Asks the known nodes in turn (seeds first) until one answers.
async fn fetch(service: &Arc<RedisService>) -> Result<ClusterSlots, String> {
    let mut last_error = String::from("no node to ask");
    let shards = reply::command(&[b"CLUSTER", b"SHARDS"]);
    let slots = reply::command(&[b"CLUSTER", b"SLOTS"]);
    for connector in service.connectors() {
        let map = match connector.query(&shards).await {
            Ok(r) => match SlotMap::from_cluster_shards(&r) {
                Ok(map) => Ok(map),
                // Before Redis 7: CLUSTER SLOTS.
                Err(_) => match connector.query(&slots).await {
                    Ok(r) => SlotMap::from_cluster_slots(&r).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                },
            },
            Err(e) => Err(e.to_string()),
        };
        match map {
            Ok(map) if !map.shards().is_empty() => {
                let replying_host = connector.server().host.clone();
                let Router::Cluster(router) = &service.router else {
                    return Err("not a cluster listener".into());
                };
                return Ok(install_map(service, &map, &replying_host, router.read_from));
            }
            Ok(_) => last_error = format!("{}: no slots assigned", connector.id),
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

fn install_map(
    service: &RedisService,
    map: &SlotMap,
    replying_host: &str,
    read_from: ReadFrom,
) -> ClusterSlots {
    super::metrics::RedisMetrics::add(&service.metrics().topology_refreshes);
    let upstream_of = |node: &Node, readonly: bool| {
        let host = match &node.addr.host {
            Host::Name(name) => name.as_str(),
            Host::Unknown => replying_host,
        };
        // Over TLS, a node that lists both ports takes TLS on `tls-port`.
        let port = match node.tls_port {
            Some(tls_port) if service.uses_tls() => tls_port,
            _ => node.addr.port,
        };
        service.upstream_at(host, port, readonly) as u32
    };
    let primaries: Vec<u32> = map
        .shards()
        .iter()
        .map(|s| upstream_of(&s.primary, false))
        .collect();
    let replicas: Vec<Vec<u32>> = match read_from {
        ReadFrom::Primary => vec![Vec::new(); primaries.len()],
        ReadFrom::Replica | ReadFrom::PreferReplica => map
            .shards()
            .iter()
            .map(|s| s.replicas.iter().map(|r| upstream_of(r, true)).collect())
            .collect(),
    };
    let shard_of: Box<[Option<u16>]> = (0..attache_resp::hash::SLOT_COUNT)
        .map(|slot| map.shard_index(slot).map(|s| s as u16))
        .collect();
    let mut unique: Vec<usize> = primaries.iter().map(|&p| p as usize).collect();
    unique.sort_unstable();
    unique.dedup();
    ClusterSlots {
        shard_of,
        shard_primary: primaries,
        shard_replicas: replicas,
        primaries: unique,
    }
}
