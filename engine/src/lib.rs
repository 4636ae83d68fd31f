//! The decision engine: built once from a decoded rule table, it answers "which route?" and
//! "allowed?" for a request without allocating, from per-service indexes.
//!
//! The proxy and `meshc test`/`meshc why` both decide through this crate, so what an operator
//! tests in CI is exactly what the proxies do. [`reference`] is a deliberately simple
//! evaluator kept as the oracle for differential tests.

mod authz;
mod headers;
mod matcher;
mod path;
mod path_index;
pub mod reference;
mod route;

use std::sync::Arc;

use mesh_table::{ServiceId, Table};
use rustc_hash::FxHashMap;

pub use authz::{AuthzDecision, Decider, Peer};
pub use headers::{header_value, PairValues, RequestHeaders};
pub use path::{normalize_path, PathError};
pub use route::RouteDecision;

/// A table compiled for fast decisions. Cheap to share: clone the `Arc`.
#[derive(Debug)]
pub struct Engine {
    table: Arc<Table>,
    services_by_name: FxHashMap<Box<str>, ServiceId>,
    routers: Vec<route::Router>,
    authorizers: Vec<Option<authz::Authorizer>>,
}

/// A table the engine could not compile (a regex that does not build). Tables that passed
/// `mesh_table::validate` never produce one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError(pub String);

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot build the decision engine: {}", self.0)
    }
}

impl std::error::Error for BuildError {}

impl Engine {
    /// Builds the indexes for `table`.
    pub fn new(table: Arc<Table>) -> Result<Engine, BuildError> {
        let services_by_name = table
            .services
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((s.name.clone().into_boxed_str(), u32::try_from(i).ok()?)))
            .collect();
        let mut routers = Vec::with_capacity(table.services.len());
        for service in 0..table.services.len() {
            routers.push(route::Router::build(&table, service)?);
        }
        let mut authorizers: Vec<Option<authz::Authorizer>> =
            (0..table.services.len()).map(|_| None).collect();
        for (index, authorization) in table.authorizations.iter().enumerate() {
            if let Some(slot) = authorizers.get_mut(authorization.service as usize) {
                *slot = Some(authz::Authorizer::build(authorization, index)?);
            }
        }
        Ok(Engine {
            table,
            services_by_name,
            routers,
            authorizers,
        })
    }

    /// The table this engine decides from.
    pub fn table(&self) -> &Arc<Table> {
        &self.table
    }

    /// The service a request's authority (`Host`) names: `payments` or `payments:9000`,
    /// case-insensitively.
    pub fn service_for_authority(&self, authority: &str) -> Option<ServiceId> {
        let host = authority_host(authority);
        if let Some(id) = self.services_by_name.get(host) {
            return Some(*id);
        }
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            let lower = host.to_ascii_lowercase();
            return self.services_by_name.get(lower.as_str()).copied();
        }
        None
    }

    /// The service called `name`.
    pub fn service_id(&self, name: &str) -> Option<ServiceId> {
        self.services_by_name.get(name).copied()
    }
}

/// The host part of an authority: without userinfo or port.
fn authority_host(authority: &str) -> &str {
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if authority.starts_with('[') {
        return authority
            .split_once(']')
            .map_or(authority, |(h, _)| &h[1..]);
    }
    authority
        .split_once(':')
        .map_or(authority, |(host, _)| host)
}
