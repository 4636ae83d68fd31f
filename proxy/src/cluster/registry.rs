//! The registry of clusters, by service name: it outlives tables, so what the proxy learnt
//! about endpoints survives a swap. Each table load brings it in line (new services, new
//! policies, new sources) and (re)starts the tasks that follow a cluster's source
//! (discovery) and probe its endpoints (health checks).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

#[derive(Debug)]
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
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
        let health = service
            .health
            .clone()
            .map(|policy| (policy, Probe::of(service.protocol)));
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
