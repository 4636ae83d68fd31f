//! Clusters: each service's endpoints and their live state (in flight, latency, health,
//! ejection), kept in a registry by service name so that a table swap keeps what the proxy
//! learnt about them. The endpoint list is swapped atomically by its source (discovery);
//! a request reads the list once per pick, so a change never disturbs one in flight.
//!
//! The three questions of load balancing stay apart: `discovery` says who exists (writes
//! the list), `health` and `outlier` say who is fit (mark endpoints), `balance` says who
//! gets this request (reads both). [`Cluster::pick`] joins them with the fallbacks common
//! to every algorithm.

pub mod endpoint;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use arc_swap::ArcSwap;
use http::HeaderMap;
use mesh_table::{Balance, HealthCheck, Outlier, Service, Table};
use tokio::task::JoinHandle;

pub use endpoint::{Endpoint, InFlight};

use crate::balance::{ring_hash, Balancer, Input};
use crate::clock::now_ms;
use crate::discovery::dns::Resolver;
use crate::discovery::Source;
use crate::upstream::Upstreams;

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
}

impl Policy {
    fn of(service: &Service) -> Policy {
        Policy {
            balance: service.balance.clone(),
            health: service.health.clone(),
            outlier: service.outlier.clone(),
        }
    }
}

/// The endpoints of one service and their state.
#[derive(Debug)]
pub struct Cluster {
    name: String,
    members: ArcSwap<Members>,
    policy: ArcSwap<Policy>,
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
    tasks: Mutex<Tasks>,
}

/// The background tasks of a cluster and the settings they run with; aborted on drop.
#[derive(Debug, Default)]
struct Tasks {
    /// The source, and the task that follows it (none for literal addresses).
    discovery: Option<(Source, Option<Task>)>,
    health: Option<(HealthCheck, Task)>,
}

#[derive(Debug)]
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
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
            policy: ArcSwap::from_pointee(policy),
            cursor: AtomicUsize::new(0),
            panicking: AtomicBool::new(false),
            panic_picks: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            write: Mutex::new(()),
            eject: Mutex::new(()),
            tasks: Mutex::new(Tasks::default()),
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current endpoint list.
    pub fn members(&self) -> Arc<Members> {
        self.members.load_full()
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

/// Every cluster of this proxy, by service name; outlives tables.
#[derive(Debug)]
pub struct Clusters {
    map: Mutex<HashMap<String, Arc<Cluster>>>,
    upstreams: Arc<Upstreams>,
    /// The DNS resolver, or why there is none.
    resolver: Result<Resolver, String>,
}

impl Clusters {
    /// A registry whose health checks use `upstreams` and whose DNS names go to `resolver`
    /// (an error: names resolve to nothing, and the services that have some say why).
    pub fn new(upstreams: Arc<Upstreams>, resolver: Result<Resolver, String>) -> Clusters {
        Clusters {
            map: Mutex::new(HashMap::new()),
            upstreams,
            resolver,
        }
    }

    /// Every cluster, by name.
    pub fn all(&self) -> Vec<Arc<Cluster>> {
        let mut all: Vec<Arc<Cluster>> = lock(&self.map).values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Brings the registry in line with `table` (clusters of new services, policies,
    /// sources, the tasks that run them; clusters of removed services go) and returns the
    /// cluster of each service, in table order.
    pub fn sync(&self, table: &Table) -> Vec<Arc<Cluster>> {
        let mut map = lock(&self.map);
        let clusters: Vec<Arc<Cluster>> = table
            .services
            .iter()
            .map(|service| {
                let policy = Policy::of(service);
                let cluster = map
                    .entry(service.name.clone())
                    .or_insert_with(|| Arc::new(Cluster::new(&service.name, policy.clone())));
                cluster.set_policy(policy);
                self.run_tasks(cluster, service);
                Arc::clone(cluster)
            })
            .collect();
        map.retain(|name, _| table.services.iter().any(|s| s.name == *name));
        clusters
    }

    /// (Re)starts the discovery and health tasks of `cluster` when their settings changed.
    fn run_tasks(&self, cluster: &Arc<Cluster>, service: &Service) {
        let mut tasks = lock(&cluster.tasks);
        let source = Source::of(&service.endpoints);
        if tasks.discovery.as_ref().map(|(s, _)| s) != Some(&source) {
            tasks.discovery = None;
            let task = match &source {
                Source::Fixed(addrs) => {
                    cluster.set_endpoints(addrs.clone());
                    None
                }
                Source::Registry => {
                    cluster.set_endpoints(Vec::new());
                    None
                }
                Source::Dns { names, fixed } => match &self.resolver {
                    Ok(resolver) => spawn(crate::discovery::dns::run(
                        Arc::downgrade(cluster),
                        resolver.clone(),
                        names.clone(),
                        fixed.clone(),
                    )),
                    Err(error) => {
                        tracing::error!(service = %service.name, %error, "no DNS resolver: only the literal addresses are used");
                        cluster.set_endpoints(fixed.clone());
                        None
                    }
                },
            };
            tasks.discovery = Some((source, task));
        }
        if tasks.health.as_ref().map(|(h, _)| h) != service.health.as_ref() {
            tasks.health = None;
            if let Some(policy) = &service.health {
                let run = crate::health::run(
                    Arc::downgrade(cluster),
                    Arc::clone(&self.upstreams),
                    policy.clone(),
                );
                if let Some(task) = spawn(run) {
                    tasks.health = Some((policy.clone(), task));
                }
            }
        }
    }
}

/// Spawns on the current runtime; `None` (and a log line) outside one.
fn spawn<F>(future: F) -> Option<Task>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => Some(Task(handle.spawn(future))),
        Err(_) => {
            tracing::error!("no async runtime: discovery and health tasks cannot start");
            None
        }
    }
}

/// A poisoned lock only means a panic elsewhere mid-update of plain data: keep going.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
