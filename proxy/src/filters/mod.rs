//! WASM filters on the request path (`mesh-wasm` runs them): which modules are loaded
//! (`store`), a request's chain of filters (`chain`) and its body through them (`body`), and
//! filters' `http_call`s sent through this sidecar's own outbound path (`caller`).
//!
//! Route filters run in the caller's outbound sidecar for that route; service filters in
//! the service's inbound sidecar; in declaration order on requests, reverse on responses.

pub mod body;
pub mod caller;
pub mod chain;
pub mod store;

pub use chain::{around, Chain, Finish, Start};
pub use store::FilterStore;

use mesh_table::{FailureMode, FilterId, Table};

use crate::errors::ProxyError;

/// Without a WASM host (it could not start), no filter is loaded: the request goes on
/// without them unless one is `failure closed`.
pub fn without_host(table: &Table, filters: &[FilterId]) -> Result<(), ProxyError> {
    match filters
        .iter()
        .filter_map(|&id| table.filters.get(id as usize))
        .find(|f| f.failure == FailureMode::Closed)
    {
        Some(closed) => Err(ProxyError::FilterFailed(closed.name.clone())),
        None => Ok(()),
    }
}
