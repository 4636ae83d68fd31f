//! Discovery: who exists. A service's endpoints come from the table (literal addresses),
//! from DNS (`discovery dns "host:port"`, and static entries that are names), or from the
//! control plane's registry (a later issue: no endpoints until then). A source writes the
//! cluster's endpoint list and nothing else does; health and selection only read it.

pub mod dns;

use std::net::SocketAddr;
use std::time::Duration;

use mesh_table::Endpoints;

/// Where a cluster's endpoints come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Literal addresses, set once.
    Fixed(Vec<SocketAddr>),
    /// Names resolved again and again, beside literal addresses.
    Dns {
        /// `(host, port)`: every address of `host`, on `port`.
        names: Vec<(String, u16)>,
        /// Literal addresses listed beside the names.
        fixed: Vec<SocketAddr>,
    },
    /// The control plane's registry.
    Registry,
}

impl Source {
    /// The source a table's `endpoints` describe. Static entries that do not parse as an
    /// address or a `host:port` are skipped (the compiler checks them).
    pub fn of(endpoints: &Endpoints) -> Source {
        match endpoints {
            Endpoints::Static(list) => {
                let mut fixed = Vec::new();
                let mut names = Vec::new();
                for entry in list {
                    if let Ok(addr) = entry.parse::<SocketAddr>() {
                        fixed.push(addr);
                    } else if let Some((host, port)) = entry.rsplit_once(':') {
                        if let Ok(port) = port.parse::<u16>() {
                            names.push((host.to_string(), port));
                        }
                    }
                }
                if names.is_empty() {
                    Source::Fixed(fixed)
                } else {
                    Source::Dns { names, fixed }
                }
            }
            Endpoints::Dns { host, port } => Source::Dns {
                names: vec![(host.clone(), *port)],
                fixed: Vec::new(),
            },
            Endpoints::Registry => Source::Registry,
        }
    }
}

/// DNS settings (`[discovery]` in the proxy's config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// The nameserver to ask; `None`: the system's (`/etc/resolv.conf`).
    pub server: Option<SocketAddr>,
    /// Resolve at most this often, whatever the TTLs say.
    pub min_refresh: Duration,
    /// Resolve at least this often, whatever the TTLs say.
    pub max_refresh: Duration,
}

impl Default for DnsSettings {
    fn default() -> DnsSettings {
        DnsSettings {
            server: None,
            min_refresh: Duration::from_secs(1),
            max_refresh: Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Source;
    use mesh_table::Endpoints;

    #[test]
    fn static_names_are_resolved_and_addresses_kept() {
        let list = |l: &[&str]| Endpoints::Static(l.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            Source::of(&list(&["127.0.0.1:80", "[::1]:81"])),
            Source::Fixed(vec![
                "127.0.0.1:80".parse().expect("addr"),
                "[::1]:81".parse().expect("addr")
            ])
        );
        assert_eq!(
            Source::of(&list(&["127.0.0.1:80", "web.internal:9000"])),
            Source::Dns {
                names: vec![("web.internal".into(), 9000)],
                fixed: vec!["127.0.0.1:80".parse().expect("addr")]
            }
        );
        assert_eq!(Source::of(&Endpoints::Registry), Source::Registry);
    }
}
