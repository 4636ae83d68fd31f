//! A loaded rule table and everything derived from it, swapped atomically as one unit: a
//! request takes the snapshot current when it starts and finishes under it.
//!
//! What must outlive a table — each service's cluster (endpoints, health, ejections,
//! latency) and each route's retry budget — lives in [`Registries`], keyed by name; a
//! snapshot holds the entries of its own table's services and routes.

use std::path::Path;
use std::sync::Arc;

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
    /// Per service, in table order.
    clusters: Vec<Arc<Cluster>>,
    /// Per route, in table order; `None` for routes without retries.
    budgets: Vec<Option<Arc<Budget>>>,
}

/// The state kept across tables.
#[derive(Debug)]
pub struct Registries {
    /// Clusters by service name.
    pub clusters: Clusters,
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
        let engine = Engine::new(Arc::new(table))?;
        // Only a table that will serve may touch the registries.
        let clusters = registries.clusters.sync(engine.table());
        let budgets = registries.budgets.sync(engine.table());
        Ok(Snapshot {
            engine,
            checksum,
            clusters,
            budgets,
        })
    }

    /// The table.
    pub fn table(&self) -> &Table {
        self.engine.table()
    }

    /// The cluster of `service`.
    pub fn cluster(&self, service: ServiceId) -> Option<&Arc<Cluster>> {
        self.clusters.get(service as usize)
    }

    /// The retry budget of the route at `index`.
    pub fn budget(&self, index: usize) -> Option<&Budget> {
        self.budgets.get(index).and_then(|b| b.as_deref())
    }
}
