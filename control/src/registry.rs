//! Connected proxies: what each said (hello, ack, nack) and the endpoints they register.
//!
//! The registry's `version` moves only when the set of healthy inbound addresses changes,
//! so acks and pings never invalidate a slice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

/// What a proxy last refused.
#[derive(Debug, Clone, Serialize)]
pub struct Nack {
    /// The table it refused.
    pub checksum: String,
    /// Why.
    pub reason: String,
    /// When, seconds since the epoch.
    pub at: u64,
}

/// One proxy stream, connected or within its grace period.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyRecord {
    /// This control plane's id for the stream.
    pub id: u64,
    /// The service of its certificate.
    pub service: String,
    /// The address it connected from.
    pub address: String,
    /// Its inbound listener, from the hello.
    pub inbound: Option<String>,
    /// Its health, from the hello.
    pub healthy: bool,
    /// Whether the stream is open.
    pub connected: bool,
    /// Connected since, seconds since the epoch.
    pub connected_since: u64,
    /// The table it runs (its last ack, or the `applied` of its hello).
    pub applied: Option<String>,
    /// The table last sent to it.
    pub sent: Option<String>,
    /// Its last refusal.
    pub last_nack: Option<Nack>,
    #[serde(skip)]
    disconnected_at: Option<Instant>,
    #[serde(skip)]
    hello: bool,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    version: u64,
    proxies: HashMap<u64, ProxyRecord>,
    /// Services whose endpoints changed since the last `take_dirty`.
    dirty: BTreeSet<String>,
}

/// All proxy streams.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new stream of `service` from `address`; its id.
    pub fn connect(&self, service: &str, address: SocketAddr) -> u64 {
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        inner.proxies.insert(
            id,
            ProxyRecord {
                id,
                service: service.to_owned(),
                address: address.to_string(),
                inbound: None,
                healthy: false,
                connected: true,
                connected_since: crate::policy::unix_secs(SystemTime::now()),
                applied: None,
                sent: None,
                last_nack: None,
                disconnected_at: None,
                hello: false,
            },
        );
        id
    }

    /// A hello: the proxy's inbound address, health and running table.
    pub fn hello(&self, id: u64, inbound: Option<String>, healthy: bool, applied: Option<String>) {
        let mut inner = self.lock();
        let Some(p) = inner.proxies.get_mut(&id) else {
            return;
        };
        let before = p.endpoint().map(str::to_owned);
        p.inbound = inbound;
        p.healthy = healthy;
        if !p.hello {
            p.applied = applied;
        }
        p.hello = true;
        let after = p.endpoint().map(str::to_owned);
        if before != after {
            let service = p.service.clone();
            inner.changed(service);
        }
    }

    /// The proxy applied `checksum`.
    pub fn ack(&self, id: u64, checksum: String) {
        if let Some(p) = self.lock().proxies.get_mut(&id) {
            p.applied = Some(checksum);
        }
    }

    /// The proxy refused `checksum`.
    pub fn nack(&self, id: u64, checksum: String, reason: String) {
        if let Some(p) = self.lock().proxies.get_mut(&id) {
            p.last_nack = Some(Nack {
                checksum,
                reason,
                at: crate::policy::unix_secs(SystemTime::now()),
            });
        }
    }

    /// `checksum` was sent to the proxy.
    pub fn sent(&self, id: u64, checksum: &str) {
        if let Some(p) = self.lock().proxies.get_mut(&id) {
            p.sent = Some(checksum.to_owned());
        }
    }

    /// The stream closed; the record (and its endpoint) stays for the grace period.
    pub fn disconnect(&self, id: u64) {
        if let Some(p) = self.lock().proxies.get_mut(&id) {
            p.connected = false;
            p.disconnected_at = Some(Instant::now());
        }
    }

    /// Drops the records disconnected longer than `grace`.
    pub fn sweep(&self, grace: Duration) {
        let mut inner = self.lock();
        let expired: Vec<u64> = inner
            .proxies
            .values()
            .filter(|p| p.disconnected_at.is_some_and(|at| at.elapsed() >= grace))
            .map(|p| p.id)
            .collect();
        for id in expired {
            if let Some(p) = inner.proxies.remove(&id) {
                if p.endpoint().is_some() {
                    inner.changed(p.service);
                }
            }
        }
    }

    /// The registry version: it moves whenever some service's endpoints change.
    pub fn version(&self) -> u64 {
        self.lock().version
    }

    /// The services whose endpoints changed since the last call.
    pub fn take_dirty(&self) -> BTreeSet<String> {
        std::mem::take(&mut self.lock().dirty)
    }

    /// The healthy registered inbound addresses of `service`, sorted, each once.
    pub fn endpoints(&self, service: &str) -> Vec<String> {
        let inner = self.lock();
        let set: BTreeSet<&str> = inner
            .proxies
            .values()
            .filter(|p| p.service == service)
            .filter_map(ProxyRecord::endpoint)
            .collect();
        set.into_iter().map(str::to_owned).collect()
    }

    /// Every record, by id.
    pub fn proxies(&self) -> Vec<ProxyRecord> {
        let inner = self.lock();
        let sorted: BTreeMap<u64, &ProxyRecord> =
            inner.proxies.iter().map(|(k, v)| (*k, v)).collect();
        sorted.into_values().cloned().collect()
    }
}

impl Inner {
    fn changed(&mut self, service: String) {
        self.version += 1;
        self.dirty.insert(service);
    }
}

impl ProxyRecord {
    /// The address this record contributes to its service's endpoints.
    fn endpoint(&self) -> Option<&str> {
        if self.hello && self.healthy {
            self.inbound.as_deref()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_follow_health_and_grace() {
        let r = Registry::default();
        let from: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let a = r.connect("web", from);
        let b = r.connect("web", from);
        assert!(r.endpoints("web").is_empty());
        r.hello(a, Some("127.0.0.1:9002".into()), true, None);
        r.hello(b, Some("127.0.0.1:9001".into()), true, None);
        assert_eq!(r.endpoints("web"), ["127.0.0.1:9001", "127.0.0.1:9002"]);
        assert_eq!(r.take_dirty().into_iter().collect::<Vec<_>>(), ["web"]);
        let v = r.version();
        r.ack(a, "abc".into());
        assert_eq!(r.version(), v, "an ack changes no endpoint");
        r.hello(a, Some("127.0.0.1:9002".into()), false, None);
        assert_eq!(r.endpoints("web"), ["127.0.0.1:9001"]);
        r.disconnect(b);
        r.sweep(Duration::from_secs(60));
        assert_eq!(r.endpoints("web"), ["127.0.0.1:9001"], "within grace");
        r.sweep(Duration::ZERO);
        assert!(r.endpoints("web").is_empty());
    }
}
