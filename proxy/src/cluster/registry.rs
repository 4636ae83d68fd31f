//! The registry of clusters, by service name: it outlives tables, so what the proxy learnt
//! about endpoints survives a swap. Clusters are made on demand, at their service's first
//! request (as Envoy's on-demand clusters and Linkerd's destination lookups): a sidecar
//! whose application calls three services of a 20,000-service mesh follows and probes
//! those three. An idle cluster sleeps ([`Clusters::sweep`]): its tasks stop and its
//! endpoints are forgotten until a request wakes it. Each table load brings the awake
//! clusters in line (policies, sources) and (re)starts the tasks that follow a cluster's
//! source (discovery) and probe its endpoints (health checks).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_table::{HealthCheck, Service, Table};
use tokio::task::JoinHandle;

use super::{lock, Cluster, Policy};
use crate::discovery::dns::Resolver;
use crate::discovery::Source;
use crate::health::Probe;
use crate::upstream::Upstreams;

/// The background tasks of a cluster and the settings they run with; aborted on drop.
#[derive(Debug, Default)]
pub(super) struct Tasks {
    /// The source, and the task that follows it (none for literal addresses).
    discovery: Option<(Source, Option<Task>)>,
    health: Option<((HealthCheck, Probe), Task)>,
}

/// A background task, aborted when dropped.
#[derive(Debug)]
pub struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every cluster of this proxy, by service name; outlives tables.
#[derive(Debug)]
pub struct Clusters {
    /// The clusters made so far (awake or asleep), of services of the latest table.
    map: Mutex<HashMap<String, Arc<Cluster>>>,
    /// The latest table: its services are what a cluster made or woken through an older
    /// snapshot runs with.
    latest: Mutex<Option<Arc<Table>>>,
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
            latest: Mutex::new(None),
            upstreams,
            resolver,
        }
    }

    /// Every awake cluster, by name.
    pub fn all(&self) -> Vec<Arc<Cluster>> {
        let mut all: Vec<Arc<Cluster>> = lock(&self.map)
            .values()
            .filter(|c| !c.usage().is_asleep())
            .cloned()
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Brings the registry in line with `table`: awake clusters take their service's new
    /// policy and source, clusters of removed services go; no cluster is made here.
    pub fn sync(&self, table: &Arc<Table>) {
        let mut latest = lock(&self.latest);
        *latest = Some(Arc::clone(table));
        let mut map = lock(&self.map);
        map.retain(|name, _| table.service_id(name).is_some());
        for cluster in map.values() {
            let service = table
                .service_id(&cluster.name)
                .map(|id| &table.services[id as usize]);
            if let (Some(service), false) = (service, cluster.usage().is_asleep()) {
                cluster.set_policy(Policy::of(service));
                self.run_tasks(cluster, service);
            }
        }
    }

    /// The cluster of `service`, made (or woken) now if needed; `service` is the caller's
    /// table's definition, used when the latest table does not have it.
    pub fn get(&self, service: &Service) -> Arc<Cluster> {
        let latest = lock(&self.latest);
        let service = newest(latest.as_deref(), service);
        let mut map = lock(&self.map);
        let cluster = map.entry(service.name.clone()).or_insert_with(|| {
            tracing::debug!(service = %service.name, "first request to the service: its cluster starts");
            let cluster = Arc::new(Cluster::new(&service.name, Policy::of(service)));
            self.run_tasks(&cluster, service);
            cluster
        });
        if cluster.usage().is_asleep() {
            self.wake(cluster, service);
        }
        Arc::clone(cluster)
    }

    /// Wakes `cluster` (a request found it asleep): its service's latest policy, its
    /// tasks again.
    pub fn wake_up(&self, cluster: &Arc<Cluster>, service: &Service) {
        let latest = lock(&self.latest);
        let service = newest(latest.as_deref(), service);
        let mut map = lock(&self.map);
        // A service the latest table dropped: its cluster went from the registry; it runs
        // for this request's (older) table and goes at the next sync.
        map.entry(service.name.clone())
            .or_insert_with(|| Arc::clone(cluster));
        if cluster.usage().is_asleep() {
            self.wake(cluster, service);
        }
    }

    fn wake(&self, cluster: &Arc<Cluster>, service: &Service) {
        tracing::debug!(service = %service.name, "request to a sleeping cluster: it wakes");
        cluster.set_policy(Policy::of(service));
        cluster.usage().wake();
        self.run_tasks(cluster, service);
    }

    /// Puts to sleep the clusters no request used for `idle_ms` (and none is in flight or
    /// waiting for): their discovery and health tasks stop, their endpoints are forgotten.
    /// Returns how many went to sleep.
    pub fn sweep(&self, idle_ms: u64, now_ms: u64) -> usize {
        let before = now_ms.saturating_sub(idle_ms);
        let map = lock(&self.map);
        let mut slept = 0;
        for cluster in map.values() {
            let usage = cluster.usage();
            if usage.is_asleep()
                || usage.last_used_ms() >= before
                || cluster.admission().in_flight() > 0
                || cluster.admission().pending() > 0
                || !usage.try_sleep(before)
            {
                continue;
            }
            *lock(&cluster.tasks) = Tasks::default();
            cluster.forget_endpoints();
            slept += 1;
            tracing::debug!(service = %cluster.name, idle_ms, "cluster idle: it sleeps until the next request");
        }
        slept
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
                    cluster.usage().set_discovered();
                    None
                }
                Source::Registry => {
                    cluster.set_endpoints(Vec::new());
                    cluster.usage().set_discovered();
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
                        cluster.usage().set_discovered();
                        None
                    }
                },
            };
            tasks.discovery = Some((source, task));
        }
        let health = service
            .health
            .clone()
            .map(|policy| (policy, Probe::of(service.protocol)));
        if health.is_none() {
            cluster.usage().set_probed();
        }
        if tasks.health.as_ref().map(|(h, _)| h) != health.as_ref() {
            tasks.health = None;
            if let Some((policy, kind)) = health {
                let run = crate::health::run(
                    Arc::downgrade(cluster),
                    Arc::clone(&self.upstreams),
                    policy.clone(),
                    kind,
                );
                if let Some(task) = spawn(run) {
                    tasks.health = Some(((policy, kind), task));
                }
            }
        }
    }
}

/// `service` as the latest table defines it, or as given when that table has no such service.
fn newest<'a>(latest: Option<&'a Table>, service: &'a Service) -> &'a Service {
    latest
        .and_then(|t| {
            t.service_id(&service.name)
                .map(|id| &t.services[id as usize])
        })
        .unwrap_or(service)
}

/// Puts clusters idle for `idle` to sleep, checking a few times per period, until the
/// returned task is dropped.
pub fn sweeper(clusters: Arc<Clusters>, idle: Duration) -> Option<Task> {
    let every = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(30));
    let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
    spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            clusters.sweep(idle_ms, crate::clock::now_ms());
        }
    })
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
