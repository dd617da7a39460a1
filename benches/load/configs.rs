//! The config files of the proxies under test, each for one listener in
//! front of `servers`, rendered as text.

use std::net::SocketAddr;

use crate::targets::Topology;

/// attache's TOML: one Redis listener named `bench` (the config contract of
/// DESIGN.md). Ketama names the hash explicitly, as twemproxy's does.
pub(crate) fn attache_toml(
    admin: SocketAddr,
    listen: SocketAddr,
    topology: Topology,
    servers: &[SocketAddr],
    server_connections: usize,
) -> String {
    let (mode, hash) = match topology {
        Topology::Single => ("single", ""),
        Topology::Ketama3 => ("ketama", "hash = \"fnv1a_64\"\n"),
        Topology::Cluster3 => ("cluster", ""),
    };
    let servers = servers
        .iter()
        .enumerate()
        .map(|(i, addr)| match topology {
            Topology::Single | Topology::Cluster3 => format!("\"{addr}\""),
            Topology::Ketama3 => format!("\"{}\"", named(i, *addr)),
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[admin]\nlisten = \"{admin}\"\n\n[redis.bench]\nlisten = \"{listen}\"\nmode = \"{mode}\"\n{hash}\
         servers = [{servers}]\nserver_connections = {server_connections}\n"
    )
}

/// nutcracker's YAML with the settings closest to attache's: Redis protocol,
/// upstream connections opened at start (`preconnect`), the same
/// `server_connections`, no host ejection, ketama with fnv1a_64 (what
/// twemproxy's README recommends; with one server it routes nothing).
pub(crate) fn nutcracker_yaml(
    listen: SocketAddr,
    topology: Topology,
    servers: &[SocketAddr],
    server_connections: usize,
) -> String {
    let servers: String = servers
        .iter()
        .enumerate()
        .map(|(i, addr)| match topology {
            // twemproxy requires the weight.
            Topology::Single | Topology::Cluster3 => format!("    - {addr}:1\n"),
            Topology::Ketama3 => format!("    - {}\n", named(i, *addr)),
        })
        .collect();
    format!(
        "bench:\n  listen: {listen}\n  redis: true\n  hash: fnv1a_64\n  distribution: ketama\n  \
         preconnect: true\n  auto_eject_hosts: false\n  server_connections: {server_connections}\n  \
         timeout: 5000\n  servers:\n{servers}"
    )
}

/// twemproxy's `host:port:weight name`: with names, the ketama continuum
/// hashes the names, so attache and twemproxy place keys identically.
fn named(i: usize, addr: SocketAddr) -> String {
    format!("{addr}:1 shard{i}")
}

/// Envoy's redis_proxy with every server in one MAGLEV cluster.
pub(crate) fn envoy_yaml(admin: SocketAddr, listen: SocketAddr, servers: &[SocketAddr]) -> String {
    let socket = |addr: SocketAddr| {
        format!(
            "{{ socket_address: {{ address: {}, port_value: {} }} }}",
            addr.ip(),
            addr.port()
        )
    };
    let endpoints: String = servers
        .iter()
        .map(|addr| format!("      - endpoint: {{ address: {} }}\n", socket(*addr)))
        .collect();
    format!(
        "admin:\n  address: {}\n\
         static_resources:\n  listeners:\n  - name: redis\n    address: {}\n    \
         filter_chains:\n    - filters:\n      - name: envoy.filters.network.redis_proxy\n        \
         typed_config:\n          \
         \"@type\": type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy\n          \
         stat_prefix: bench\n          settings: {{ op_timeout: 5s }}\n          \
         prefix_routes: {{ catch_all_route: {{ cluster: redis }} }}\n  \
         clusters:\n  - name: redis\n    connect_timeout: 1s\n    type: STATIC\n    lb_policy: MAGLEV\n    \
         load_assignment:\n      cluster_name: redis\n      endpoints:\n      - lb_endpoints:\n{endpoints}",
        socket(admin),
        socket(listen)
    )
}
