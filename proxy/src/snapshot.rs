//! A loaded rule table and everything derived from it, swapped atomically as one unit: a
//! request takes the snapshot current when it starts and finishes under it.
//!
//! What must outlive a table — each service's cluster (endpoints, health, ejections,
//! latency) and each route's retry budget — lives in [`Registries`], keyed by name; a
//! snapshot holds the entries of its own table's routes, and of the services its requests
//! went to: a cluster is made at its service's first request (`cluster::registry`).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use mesh_engine::Engine;
use mesh_table::{ServiceId, Table};

use crate::cluster::{Cluster, Clusters};
use crate::retry::budget::{Budget, Budgets};

/// One table, its decision engine, and its services' clusters and routes' budgets.
#[derive(Debug)]
pub struct Snapshot {
    /// The decision engine over the table.
    pub engine: Engine,
    /// The table's SHA-256 (hex), its identity.
    pub checksum: String,
    /// Per service, in table order: its cluster once a request went to it.
    clusters: Vec<OnceLock<Arc<Cluster>>>,
    /// Where clusters are made and woken.
    registry: Arc<Clusters>,
    /// Per route, in table order; `None` for routes without retries.
    budgets: Vec<Option<Arc<Budget>>>,
    /// Names and observe settings, resolved once per table for metrics and access logs.
    pub names: Names,
}

/// What metrics and access logs need from a table, resolved once when it loads: shared
/// label values (so a request's label set is built without allocating) and each service's
/// `observe` settings.
#[derive(Debug)]
pub struct Names {
    /// Service names, in table order.
    pub services: Vec<Arc<str>>,
    /// Route names, in table order.
    pub routes: Vec<Arc<str>>,
    /// Per service: latency buckets in seconds (`observe { latency_buckets }` or the default).
    pub buckets: Vec<Arc<[f64]>>,
    /// Per service: the access-log sample in parts per million (0: no access log).
    pub access_log_ppm: Vec<u32>,
    /// Per service: the trace sample of traces started here, in parts per million (0: no
    /// `observe { trace sample }`).
    pub trace_ppm: Vec<u32>,
    /// `none`: the label of a route or target that does not apply.
    pub none: Arc<str>,
    /// `plaintext`: the peer label of plaintext callers.
    pub plaintext: Arc<str>,
    /// `other-mesh-identity`: the peer label of mesh identities of no declared service.
    pub other: Arc<str>,
}

impl Names {
    fn new(table: &Table) -> Names {
        let observe = |id: usize| table.observes.iter().find(|o| o.service as usize == id);
        let default_buckets = crate::metrics::requests::buckets_seconds(&[]);
        Names {
            services: table
                .services
                .iter()
                .map(|s| Arc::from(s.name.as_str()))
                .collect(),
            routes: table
                .routes
                .iter()
                .map(|r| Arc::from(r.name.as_str()))
                .collect(),
            // One shared list for the services with the default buckets (most of them).
            buckets: (0..table.services.len())
                .map(|i| match observe(i).map(|o| &o.latency_buckets_ms) {
                    Some(ms) if !ms.is_empty() => crate::metrics::requests::buckets_seconds(ms),
                    _ => Arc::clone(&default_buckets),
                })
                .collect(),
            access_log_ppm: (0..table.services.len())
                .map(|i| {
                    observe(i)
                        .and_then(|o| o.access_log)
                        .map_or(0, |a| a.sample.0)
                })
                .collect(),
            trace_ppm: (0..table.services.len())
                .map(|i| observe(i).and_then(|o| o.trace_sample).map_or(0, |p| p.0))
                .collect(),
            none: Arc::from("none"),
            plaintext: Arc::from("plaintext"),
            other: Arc::from("other-mesh-identity"),
        }
    }

    /// The name of `service`, or `none`.
    pub fn service(&self, service: Option<ServiceId>) -> Arc<str> {
        service
            .and_then(|s| self.services.get(s as usize))
            .map_or_else(|| Arc::clone(&self.none), Arc::clone)
    }

    /// The peer label of an inbound caller.
    pub fn peer(&self, peer: mesh_engine::Peer) -> Arc<str> {
        match peer {
            mesh_engine::Peer::Plaintext => Arc::clone(&self.plaintext),
            mesh_engine::Peer::OtherMeshIdentity => Arc::clone(&self.other),
            mesh_engine::Peer::Service(id) => self.service(Some(id)),
        }
    }

    /// The trace sample of `service`, in parts per million.
    pub fn trace_ppm(&self, service: ServiceId) -> u32 {
        self.trace_ppm.get(service as usize).copied().unwrap_or(0)
    }

    /// The access-log sample of `service`, in parts per million.
    pub fn access_log_ppm(&self, service: ServiceId) -> u32 {
        self.access_log_ppm
            .get(service as usize)
            .copied()
            .unwrap_or(0)
    }

    /// The name of the route at `index`, or `none`.
    pub fn route(&self, index: Option<usize>) -> Arc<str> {
        index
            .and_then(|i| self.routes.get(i))
            .map_or_else(|| Arc::clone(&self.none), Arc::clone)
    }
}

/// The state kept across tables.
#[derive(Debug)]
pub struct Registries {
    /// Clusters by service name.
    pub clusters: Arc<Clusters>,
    /// Retry budgets by route.
    pub budgets: Budgets,
}

/// Why a table was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read the table: {0}")]
    Read(#[from] std::io::Error),
    /// The bytes are not a valid table.
    #[error("invalid table: {0}")]
    Decode(#[from] mesh_table::DecodeError),
    /// The engine could not be built from it.
    #[error("{0}")]
    Engine(#[from] mesh_engine::BuildError),
    /// The table does not declare this proxy's service.
    #[error("the table has no service `{0}`")]
    UnknownService(String),
}

impl LoadError {
    /// Whether the table file does not exist (yet): a sidecar started before its table was
    /// delivered is waiting for one, which is not a refused table.
    pub fn is_missing_file(&self) -> bool {
        matches!(self, LoadError::Read(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

impl Snapshot {
    /// Reads, decodes and indexes the table at `path`; `own_service` must be in it. Once
    /// the table is known good, `registries` are brought in line with it.
    pub fn load(
        path: &Path,
        own_service: &str,
        registries: &Registries,
    ) -> Result<Snapshot, LoadError> {
        let bytes = std::fs::read(path)?;
        Snapshot::from_bytes(&bytes, own_service, registries)
    }

    /// Decodes and indexes an encoded table.
    pub fn from_bytes(
        bytes: &[u8],
        own_service: &str,
        registries: &Registries,
    ) -> Result<Snapshot, LoadError> {
        let table = mesh_table::decode(bytes)?;
        let checksum = mesh_table::checksum_hex(bytes).unwrap_or_default();
        Snapshot::from_table(table, checksum, own_service, registries)
    }

    fn from_table(
        table: Table,
        checksum: String,
        own_service: &str,
        registries: &Registries,
    ) -> Result<Snapshot, LoadError> {
        if table.service_id(own_service).is_none() {
            return Err(LoadError::UnknownService(own_service.to_string()));
        }
        let names = Names::new(&table);
        let engine = Engine::new(Arc::new(table))?;
        // Only a table that will serve may touch the registries.
        registries.clusters.sync(engine.table());
        let clusters = engine
            .table()
            .services
            .iter()
            .map(|_| OnceLock::new())
            .collect();
        let budgets = registries.budgets.sync(engine.table());
        Ok(Snapshot {
            engine,
            checksum,
            clusters,
            registry: Arc::clone(&registries.clusters),
            budgets,
            names,
        })
    }

    /// The table.
    pub fn table(&self) -> &Table {
        self.engine.table()
    }

    /// The cluster of `service`, for a request about to go there: made at the service's
    /// first request, woken if it slept. A new or woken cluster may not be warm yet
    /// ([`Cluster::warm_up`]).
    pub fn cluster(&self, service: ServiceId) -> Option<&Arc<Cluster>> {
        let slot = self.clusters.get(service as usize)?;
        let definition = self.table().services.get(service as usize)?;
        let cluster = slot.get_or_init(|| self.registry.get(definition));
        if !cluster.usage().touch(crate::clock::now_ms()) {
            self.registry.wake_up(cluster, definition);
        }
        Some(cluster)
    }

    /// The retry budget of the route at `index`.
    pub fn budget(&self, index: usize) -> Option<&Budget> {
        self.budgets.get(index).and_then(|b| b.as_deref())
    }
}
