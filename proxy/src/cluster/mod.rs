//! Clusters: each service's endpoints and their live state (in flight, latency, health,
//! ejection), kept in a registry by service name so that a table swap keeps what the proxy
//! learnt about them. The endpoint list is swapped atomically by its source (discovery);
//! a request reads the list once per pick, so a change never disturbs one in flight.
//!
//! The three questions of load balancing stay apart: `discovery` says who exists (writes
//! the list), `health` and `outlier` say who is fit (mark endpoints), `balance` says who
//! gets this request (reads both). [`Cluster::pick`] joins them with the fallbacks common
//! to every algorithm.

pub mod admission;
pub mod demand;
pub mod endpoint;
mod registry;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::HeaderMap;
use mesh_table::{Balance, HealthCheck, Limits, Outlier, Service};

pub use endpoint::{Endpoint, InFlight};
pub use registry::{sweeper, Clusters};

use crate::balance::{ring_hash, Balancer, Input};
use crate::clock::now_ms;

/// One endpoint list and the balancer built over it, swapped as one.
#[derive(Debug)]
pub struct Members {
    /// The endpoints, sorted by address.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// The selection algorithm over them.
    pub balancer: Balancer,
}

/// What the table says about a service's balancing and fitness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The algorithm.
    pub balance: Balance,
    /// Active health checks.
    pub health: Option<HealthCheck>,
    /// Passive ejection.
    pub outlier: Option<Outlier>,
    /// Circuit breaking (this sidecar's requests to the service).
    pub limits: Limits,
}

impl Policy {
    pub(crate) fn of(service: &Service) -> Policy {
        Policy {
            balance: service.balance.clone(),
            health: service.health.clone(),
            outlier: service.outlier.clone(),
            limits: service.limits,
        }
    }
}

/// The endpoints of one service and their state.
#[derive(Debug)]
pub struct Cluster {
    name: String,
    members: ArcSwap<Members>,
    policy: ArcSwap<Policy>,
    /// Requests in flight and waiting, under the policy's limits.
    admission: Arc<admission::Admission>,
    /// Round robin's position.
    cursor: AtomicUsize,
    /// Whether the last pick found no available endpoint.
    panicking: AtomicBool,
    /// Picks made in panic mode (for the metrics issue).
    panic_picks: AtomicU64,
    /// Ejections so far (for the metrics issue).
    ejections: AtomicU64,
    /// Serializes writers of `members`, and ejection decisions (`max_ejected`).
    write: Mutex<()>,
    eject: Mutex<()>,
    tasks: Mutex<registry::Tasks>,
    /// Last use, sleep and warm-up (clusters are made and kept on demand).
    usage: demand::Usage,
}

impl Cluster {
    /// An empty cluster for `service` balanced by `policy`.
    pub fn new(name: &str, policy: Policy) -> Cluster {
        Cluster {
            name: name.to_string(),
            members: ArcSwap::from_pointee(Members {
                endpoints: Vec::new(),
                balancer: Balancer::new(&policy.balance, &[]),
            }),
            admission: admission::Admission::new(policy.limits),
            policy: ArcSwap::from_pointee(policy),
            cursor: AtomicUsize::new(0),
            panicking: AtomicBool::new(false),
            panic_picks: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            write: Mutex::new(()),
            eject: Mutex::new(()),
            tasks: Mutex::new(registry::Tasks::default()),
            usage: demand::Usage::new(now_ms()),
        }
    }

    /// Its last use, sleep and warm-up.
    pub fn usage(&self) -> &demand::Usage {
        &self.usage
    }

    /// Waits, for at most `limit` and at most the warm-up's own bound, until the cluster
    /// is warm (a new or woken cluster: its first discovery answer and, with health checks,
    /// every endpoint probed once), so its first request does not go to an endpoint the
    /// first probe finds down. The bound: the health check's timeout, or a second for a
    /// first DNS answer; past it the request goes on with what is known.
    pub async fn warm_up(&self, limit: Duration) {
        if self.usage.is_warm() {
            return;
        }
        let own = self
            .policy
            .load()
            .health
            .as_ref()
            .map_or(Duration::from_secs(1), |h| {
                Duration::from_millis(h.timeout_ms.max(1)) + Duration::from_millis(100)
            });
        self.usage.warm_within(limit.min(own)).await;
    }

    /// Drops the endpoint list (a cluster put to sleep; discovery fills it again on waking).
    fn forget_endpoints(&self) {
        let _write = lock(&self.write);
        let balancer = Balancer::new(&self.policy.load().balance, &[]);
        self.members.store(Arc::new(Members {
            endpoints: Vec::new(),
            balancer,
        }));
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current endpoint list.
    pub fn members(&self) -> Arc<Members> {
        self.members.load_full()
    }

    /// This sidecar's requests in flight to the service and waiting (circuit breaking).
    pub fn admission(&self) -> &Arc<admission::Admission> {
        &self.admission
    }

    /// The current policy.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Picks made with no endpoint available (panic mode), since start.
    pub fn panic_picks(&self) -> u64 {
        self.panic_picks.load(Ordering::Relaxed)
    }

    /// Ejections since start.
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Replaces the endpoint list with `addrs`. Endpoints that stay keep their state;
    /// nothing changes when the set is the same.
    pub fn set_endpoints(&self, mut addrs: Vec<SocketAddr>) {
        addrs.sort_unstable();
        addrs.dedup();
        let _write = lock(&self.write);
        let current = self.members.load();
        if current
            .endpoints
            .iter()
            .map(|e| e.addr())
            .eq(addrs.iter().copied())
        {
            return;
        }
        let endpoints: Vec<Arc<Endpoint>> = addrs
            .iter()
            .map(|addr| {
                current
                    .endpoints
                    .iter()
                    .find(|e| e.addr() == *addr)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Endpoint::new(*addr)))
            })
            .collect();
        tracing::info!(service = %self.name, endpoints = ?addrs, "endpoints changed");
        let balancer = Balancer::new(&self.policy.load().balance, &endpoints);
        self.members.store(Arc::new(Members {
            endpoints,
            balancer,
        }));
    }

    /// Applies a (new) table's policy; the balancer is rebuilt when the algorithm changed,
    /// and endpoints are healthy again when health checking is switched off.
    pub fn set_policy(&self, policy: Policy) {
        let _write = lock(&self.write);
        let old = self.policy.load_full();
        if *old == policy {
            return;
        }
        if policy.health.is_none() && old.health.is_some() {
            for endpoint in &self.members.load().endpoints {
                endpoint.set_healthy(true);
            }
        }
        if old.limits != policy.limits {
            self.admission.set_limits(policy.limits);
        }
        let rebuild = old.balance != policy.balance;
        self.policy.store(Arc::new(policy));
        if rebuild {
            let current = self.members.load();
            let endpoints = current.endpoints.clone();
            let balancer = Balancer::new(&self.policy.load().balance, &endpoints);
            self.members.store(Arc::new(Members {
                endpoints,
                balancer,
            }));
        }
    }

    /// The ring-hash key of a request: the hash of its balancing header, when the service
    /// hashes one and the request carries it.
    pub fn hash_key(&self, headers: &HeaderMap) -> Option<u64> {
        let members = self.members.load();
        let header = members.balancer.hash_header()?;
        headers
            .get(header)
            .map(|value| ring_hash::hash(value.as_bytes()))
    }

    /// The endpoint for a request with ring-hash `key`, avoiding the endpoints `tried`
    /// when another may take it. Unavailable (unhealthy or ejected) endpoints are skipped;
    /// when none is available the pick spreads over all of them (panic mode: better some
    /// traffic to endpoints that may be fine than none at all). `None`: no endpoints.
    pub fn pick(&self, key: Option<u64>, tried: &[SocketAddr]) -> Option<Arc<Endpoint>> {
        let members = self.members.load();
        if members.endpoints.is_empty() {
            return None;
        }
        let now = now_ms();
        let mut rng = fastrand::Rng::new();
        let mut input = Input {
            key,
            cursor: &self.cursor,
            now: Instant::now(),
            rng: &mut rng,
        };
        let untried = |e: &Endpoint| !tried.contains(&e.addr());
        let available = |e: &Endpoint| e.is_available(now);
        let fresh_and_available = |e: &Endpoint| available(e) && untried(e);
        let any = |_: &Endpoint| true;
        let levels: [&dyn Fn(&Endpoint) -> bool; 4] =
            [&fresh_and_available, &available, &untried, &any];
        for (level, eligible) in levels.into_iter().enumerate() {
            // Only a level with someone eligible reaches the algorithm, so that empty levels
            // leave no trace in its state (round robin's cursor).
            if (level == 1 && tried.is_empty()) || !members.endpoints.iter().any(|e| eligible(e)) {
                continue;
            }
            if let Some(i) = members
                .balancer
                .select(&members.endpoints, eligible, &mut input)
            {
                self.note_panic(level >= 2);
                return members.endpoints.get(i).cloned();
            }
        }
        None
    }

    fn note_panic(&self, panic: bool) {
        if panic {
            self.panic_picks.fetch_add(1, Ordering::Relaxed);
            if !self.panicking.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    service = %self.name,
                    "every endpoint is unhealthy or ejected: panic mode, spreading requests over all of them"
                );
            }
        } else if self.panicking.load(Ordering::Relaxed)
            && self.panicking.swap(false, Ordering::Relaxed)
        {
            tracing::info!(service = %self.name, "an endpoint is available again: panic mode over");
        }
    }

    /// Feeds the result of one try to the outlier detector.
    pub fn observe(&self, endpoint: &Endpoint, failed: bool) {
        let policy = self.policy.load();
        let Some(outlier) = &policy.outlier else {
            return;
        };
        let _eject = failed.then(|| lock(&self.eject));
        let members = self.members.load();
        if let Some(ms) =
            crate::outlier::observe(&members.endpoints, endpoint, failed, outlier, now_ms())
        {
            self.ejections.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                service = %self.name,
                endpoint = %endpoint.addr(),
                eject_ms = ms,
                "endpoint ejected after consecutive failures"
            );
        }
    }
}

/// A poisoned lock only means a panic elsewhere mid-update of plain data: keep going.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
