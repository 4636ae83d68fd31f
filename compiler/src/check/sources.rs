//! Where each table entry came from, parallel to the table's vectors, for analyses and tools.

use crate::source::Loc;

/// Source locations parallel to [`mesh_table::Table`]'s vectors.
#[derive(Debug, Default, Clone)]
pub(crate) struct Sources {
    /// Parallel to `table.services`: the service's name.
    pub(crate) services: Vec<Loc>,
    /// Parallel to `table.routes`.
    pub(crate) routes: Vec<RouteSources>,
    /// Parallel to `table.authorizations`.
    pub(crate) authorizations: Vec<AuthzSources>,
    /// Parallel to `table.filters`: the filter's name.
    pub(crate) filters: Vec<Loc>,
}

/// The pieces of a route that diagnostics point at.
#[derive(Debug, Clone)]
pub(crate) struct RouteSources {
    /// The route's name.
    pub(crate) name: Loc,
    /// The `match` block, when there is one.
    pub(crate) matcher: Option<Loc>,
    /// The `method` clause.
    pub(crate) methods: Option<Loc>,
    /// The `timeout` value.
    pub(crate) timeout: Option<Loc>,
    /// The `retry` block.
    pub(crate) retry: Option<Loc>,
    /// The retry's `on` value.
    pub(crate) retry_on: Option<Loc>,
    /// The retry's `attempts` value.
    pub(crate) attempts: Option<Loc>,
    /// The retry's `per_try_timeout` value.
    pub(crate) per_try_timeout: Option<Loc>,
}

/// The pieces of an `authorize` block that diagnostics point at.
#[derive(Debug, Clone)]
pub(crate) struct AuthzSources {
    /// The whole declaration.
    pub(crate) decl: Loc,
    /// Each rule, parallel to `Authorization::rules`.
    pub(crate) rules: Vec<Loc>,
    /// The `default` clause, when written.
    pub(crate) default: Option<Loc>,
}
