//! DNS discovery: resolves a service's names (A and AAAA) again when their TTL runs out,
//! within the configured minimum and maximum refresh times. A failed lookup keeps the last
//! good set (a DNS outage must not empty a healthy service); the nameserver is the
//! system's unless the config names one.

use std::net::SocketAddr;
use std::sync::Weak;
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;

use super::DnsSettings;
use crate::cluster::Cluster;

/// A resolver and its refresh bounds.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
    settings: DnsSettings,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver asking `settings.server`, or the system's nameservers.
    pub fn new(settings: DnsSettings) -> Result<Resolver, String> {
        let mut builder = match settings.server {
            Some(server) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = server.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = server.port();
                let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
                    server.ip(),
                    true,
                    vec![udp, tcp],
                )]);
                let mut builder =
                    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
                // Only the named server answers: /etc/hosts would shadow it.
                builder.options_mut().use_hosts_file = ResolveHosts::Never;
                builder
            }
            None => TokioResolver::builder_tokio().map_err(|e| e.to_string())?,
        };
        let options = builder.options_mut();
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        options.timeout = Duration::from_secs(2);
        options.attempts = 1;
        let inner = builder.build().map_err(|e| e.to_string())?;
        Ok(Resolver { inner, settings })
    }

    /// Every address of the names, on their ports, and how long the answer is good for
    /// (within the refresh bounds). An error names the first name that failed.
    pub async fn resolve(
        &self,
        names: &[(String, u16)],
    ) -> Result<(Vec<SocketAddr>, Duration), String> {
        let mut addrs = Vec::new();
        let mut valid = self.settings.max_refresh;
        for (host, port) in names {
            let lookup = self
                .inner
                .lookup_ip(host.as_str())
                .await
                .map_err(|e| format!("{host}: {e}"))?;
            addrs.extend(lookup.iter().map(|ip| SocketAddr::new(ip, *port)));
            let ttl = lookup
                .valid_until()
                .saturating_duration_since(Instant::now());
            valid = valid.min(ttl);
        }
        Ok((addrs, valid.max(self.settings.min_refresh)))
    }
}

/// Keeps `cluster`'s endpoints to what `names` resolve to (plus `fixed`), until the
/// cluster is gone or the task is aborted because its source changed.
pub async fn run(
    cluster: Weak<Cluster>,
    resolver: Resolver,
    names: Vec<(String, u16)>,
    fixed: Vec<SocketAddr>,
) {
    let mut failing = false;
    loop {
        let wait = match resolver.resolve(&names).await {
            Ok((mut addrs, valid)) => {
                let Some(cluster) = cluster.upgrade() else {
                    return;
                };
                if failing {
                    tracing::info!(service = %cluster.name(), "DNS lookups succeed again");
                    failing = false;
                }
                addrs.extend(fixed.iter().copied());
                cluster.set_endpoints(addrs);
                cluster.usage().set_discovered();
                valid
            }
            Err(error) => {
                let Some(cluster) = cluster.upgrade() else {
                    return;
                };
                if !failing {
                    tracing::warn!(
                        service = %cluster.name(),
                        %error,
                        endpoints = cluster.members().endpoints.len(),
                        "DNS lookup failed; keeping the last good endpoints"
                    );
                    failing = true;
                }
                if cluster.members().endpoints.is_empty() && !fixed.is_empty() {
                    cluster.set_endpoints(fixed.clone());
                }
                // A first answer, if a failed one: waiting longer would not help.
                cluster.usage().set_discovered();
                resolver.settings.min_refresh
            }
        };
        tokio::time::sleep(wait).await;
    }
}
