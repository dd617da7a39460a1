//! The production [`Lookup`]: hickory's resolver, configured from `[dns]`.

use std::future::Future;
use std::pin::Pin;

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};
use tokio::runtime::Handle;

use super::refresh::{Answer, Lookup};
use super::{DnsConfig, DnsError};

pub(crate) struct HickoryLookup {
    resolver: TokioResolver,
}

impl HickoryLookup {
    /// Builds the resolver. Its connection tasks are spawned where lookups
    /// run, which is always `runtime` (the refresh tasks live there).
    pub(crate) fn new(config: &DnsConfig, runtime: &Handle) -> Result<Self, DnsError> {
        let provider = TokioConnectionProvider::default();
        let mut builder = if config.nameservers.is_empty() {
            TokioResolver::builder(provider).map_err(|source| DnsError::SystemConfig { source })?
        } else {
            let mut servers = ResolverConfig::new();
            for addr in &config.nameservers {
                servers.add_name_server(NameServerConfig::new(*addr, Protocol::Udp));
                servers.add_name_server(NameServerConfig::new(*addr, Protocol::Tcp));
            }
            TokioResolver::builder_with_config(servers, provider)
        };
        let options = builder.options_mut();
        options.timeout = config.timeout;
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        options.try_tcp_on_error = true;
        // hickory's cache must not outlive our refresh schedule: an answer
        // cached for its full TTL of an hour would be served back to every
        // max_ttl refresh, and a cached NXDOMAIN to every retry.
        options.positive_max_ttl = Some(config.max_ttl);
        options.negative_max_ttl = Some(config.min_ttl);
        let _runtime = runtime.enter();
        Ok(Self {
            resolver: builder.build(),
        })
    }
}

impl Lookup for HickoryLookup {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Answer, ResolveError>> + Send + 'a>> {
        Box::pin(async move {
            let lookup = self.resolver.lookup_ip(host).await?;
            // valid_until, not the records' TTL: an answer from hickory's
            // cache has less time left than its records say.
            let ttl = lookup
                .valid_until()
                .saturating_duration_since(std::time::Instant::now());
            Ok(Answer {
                ips: lookup.iter().collect(),
                ttl,
            })
        })
    }
}
