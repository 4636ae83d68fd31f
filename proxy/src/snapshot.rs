//! A loaded rule table and everything derived from it, swapped atomically as one unit: a
//! request takes the snapshot current when it starts and finishes under it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mesh_engine::Engine;
use mesh_table::{Endpoints, ServiceId, Table};

/// One table, its decision engine and its endpoint sets.
#[derive(Debug)]
pub struct Snapshot {
    /// The decision engine over the table.
    pub engine: Engine,
    /// The table's SHA-256 (hex), its identity.
    pub checksum: String,
    /// Per service, in table order.
    endpoints: Vec<EndpointSet>,
}

/// The endpoints of one service and the round-robin cursor over them.
#[derive(Debug, Default)]
pub struct EndpointSet {
    addresses: Vec<SocketAddr>,
    next: AtomicUsize,
}

impl EndpointSet {
    /// The next endpoint in turn, or `None` when the service has none.
    pub fn pick(&self) -> Option<SocketAddr> {
        if self.addresses.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        Some(self.addresses[i % self.addresses.len()])
    }

    /// Every endpoint.
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }
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
    /// Reads, decodes and indexes the table at `path`; `own_service` must be in it.
    pub fn load(path: &Path, own_service: &str) -> Result<Snapshot, LoadError> {
        let bytes = std::fs::read(path)?;
        Snapshot::from_bytes(&bytes, own_service)
    }

    /// Decodes and indexes an encoded table.
    pub fn from_bytes(bytes: &[u8], own_service: &str) -> Result<Snapshot, LoadError> {
        let table = mesh_table::decode(bytes)?;
        let checksum = mesh_table::checksum_hex(bytes).unwrap_or_default();
        Snapshot::from_table(table, checksum, own_service)
    }

    fn from_table(
        table: Table,
        checksum: String,
        own_service: &str,
    ) -> Result<Snapshot, LoadError> {
        if table.service_id(own_service).is_none() {
            return Err(LoadError::UnknownService(own_service.to_string()));
        }
        let endpoints = table
            .services
            .iter()
            .map(|s| endpoint_set(&s.endpoints))
            .collect();
        Ok(Snapshot {
            engine: Engine::new(Arc::new(table))?,
            checksum,
            endpoints,
        })
    }

    /// The table.
    pub fn table(&self) -> &Table {
        self.engine.table()
    }

    /// The endpoints of `service`.
    pub fn endpoints(&self, service: ServiceId) -> Option<&EndpointSet> {
        self.endpoints.get(service as usize)
    }
}

/// Static endpoints that are literal socket addresses. Names need resolution (DNS discovery
/// and the registry arrive with later milestones), so they give an empty set for now.
fn endpoint_set(endpoints: &Endpoints) -> EndpointSet {
    let addresses = match endpoints {
        Endpoints::Static(list) => list.iter().filter_map(|a| a.parse().ok()).collect(),
        Endpoints::Dns { .. } | Endpoints::Registry => Vec::new(),
    };
    EndpointSet {
        addresses,
        next: AtomicUsize::new(0),
    }
}
