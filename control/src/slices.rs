//! Encoded slices, computed once per (policy version, service, registry version) and shared
//! by every subscriber of that service: 10,000 proxies of one service cost one encoding.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use mesh_table::Endpoints;

use crate::registry::Registry;
use crate::shared::Current;

/// One service's slice, encoded.
#[derive(Debug)]
pub struct Slice {
    /// `mesh_table::encode` of the slice, endpoints filled in.
    pub bytes: Bytes,
    /// Its checksum (what the proxy acks).
    pub checksum: String,
    /// The services it contains, so registry changes reach only the slices they touch.
    pub services: Vec<String>,
    /// Its routes, (service, route) sorted: what the proxy's traffic reports may name.
    pub routes: Vec<(String, String)>,
    /// The SHA-256 (lowercase hex) of each filter module it pins, sorted: the modules
    /// `GET /v1/modules/..` serves to this service's proxies.
    pub modules: Vec<String>,
}

impl Slice {
    /// Whether a traffic report of this service's proxies may name `(service, route)`.
    pub fn names_route(&self, service: &str, route: Option<&str>) -> bool {
        match route {
            None => self.services.iter().any(|s| s == service),
            Some(route) => self
                .routes
                .binary_search_by(|(s, r)| (s.as_str(), r.as_str()).cmp(&(service, route)))
                .is_ok(),
        }
    }

    /// Whether the slice pins the module of SHA-256 `digest` (lowercase hex).
    pub fn pins_module(&self, digest: &str) -> bool {
        self.modules
            .binary_search_by(|m| m.as_str().cmp(digest))
            .is_ok()
    }
}

#[derive(Debug)]
struct Cell {
    policy_version: u64,
    registry_version: u64,
    slice: OnceLock<Option<Arc<Slice>>>,
}

/// The latest slice of each service.
#[derive(Debug, Default)]
pub struct SliceCache {
    cells: Mutex<HashMap<String, Arc<Cell>>>,
}

impl SliceCache {
    /// The slice of `service` under `current` and the registry as it is now; `None` when
    /// the policy has no such service.
    pub fn get(&self, service: &str, current: &Current, registry: &Registry) -> Option<Arc<Slice>> {
        let registry_version = registry.version();
        let cell = {
            let mut cells = self
                .cells
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let fresh = |c: &Cell| {
                c.policy_version == current.version && c.registry_version == registry_version
            };
            match cells.get(service) {
                Some(c) if fresh(c) => Arc::clone(c),
                _ => {
                    let c = Arc::new(Cell {
                        policy_version: current.version,
                        registry_version,
                        slice: OnceLock::new(),
                    });
                    cells.insert(service.to_owned(), Arc::clone(&c));
                    c
                }
            }
        };
        // Concurrent subscribers of one service wait for the first one's computation.
        cell.slice
            .get_or_init(|| compute(service, current, registry).map(Arc::new))
            .clone()
    }

    /// The services in the slice of `service` (they do not depend on the registry).
    pub fn members(&self, service: &str, current: &Current, registry: &Registry) -> Vec<String> {
        let cached = {
            let cells = self
                .cells
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            cells
                .get(service)
                .filter(|c| c.policy_version == current.version)
                .and_then(|c| c.slice.get().cloned())
        };
        match cached {
            Some(slice) => slice.map(|s| s.services.clone()).unwrap_or_default(),
            None => self
                .get(service, current, registry)
                .map(|s| s.services.clone())
                .unwrap_or_default(),
        }
    }
}

fn compute(service: &str, current: &Current, registry: &Registry) -> Option<Slice> {
    let mut table = mesh_table::slice(&current.table, service)?;
    for s in &mut table.services {
        if s.endpoints == Endpoints::Registry {
            s.endpoints = Endpoints::Static(registry.endpoints(&s.name));
        }
    }
    let bytes = mesh_table::encode(&table);
    let checksum = mesh_table::checksum_hex(&bytes).unwrap_or_default();
    let name = |id: u32| {
        usize::try_from(id)
            .ok()
            .and_then(|i| table.services.get(i))
            .map(|s| s.name.clone())
            .unwrap_or_default()
    };
    let mut routes: Vec<(String, String)> = table
        .routes
        .iter()
        .map(|r| (name(r.service), r.name.clone()))
        .collect();
    routes.sort();
    routes.dedup();
    let mut modules: Vec<String> = table
        .filters
        .iter()
        .map(|f| crate::policy::hex(&f.sha256))
        .collect();
    modules.sort();
    modules.dedup();
    Some(Slice {
        bytes: Bytes::from(bytes),
        checksum,
        services: table.services.iter().map(|s| s.name.clone()).collect(),
        routes,
        modules,
    })
}
