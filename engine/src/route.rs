//! Route decisions: the most specific route of the authority's service that matches.

use std::cmp::Reverse;
use std::ops::ControlFlow;

use mesh_table::{precedence, Route, ServiceId, Table};

use crate::headers::RequestHeaders;
use crate::matcher::{method_bit_of, Conditions};
use crate::path::{normalize_path, PathError};
use crate::path_index::PathIndex;
use crate::{BuildError, Engine};

/// The routes of one service, indexed by path.
#[derive(Debug)]
pub(crate) struct Router {
    /// Table indexes of the service's routes.
    routes: Box<[u32]>,
    conditions: Box<[Conditions]>,
    index: PathIndex,
}

impl Router {
    pub(crate) fn build(table: &Table, service: usize) -> Result<Router, BuildError> {
        let mut routes = Vec::new();
        let mut conditions = Vec::new();
        let mut index = PathIndex::default();
        for (table_index, route) in table.routes.iter().enumerate() {
            if route.service as usize != service {
                continue;
            }
            let id =
                u32::try_from(routes.len()).map_err(|_| BuildError("too many routes".into()))?;
            routes.push(
                u32::try_from(table_index).map_err(|_| BuildError("too many routes".into()))?,
            );
            conditions.push(Conditions::build(&route.matcher)?);
            index.insert(route.matcher.path.as_ref(), id)?;
        }
        // Within one path condition: the higher rank first, then the earlier route.
        index.sort_by_key(|id| {
            let table_index = routes[id as usize];
            (
                Reverse(precedence::rank(
                    &table.routes[table_index as usize].matcher,
                )),
                table_index,
            )
        });
        Ok(Router {
            routes: routes.into_boxed_slice(),
            conditions: conditions.into_boxed_slice(),
            index,
        })
    }
}

/// What the router decided for a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RouteDecision<'e> {
    /// A route matched.
    Matched {
        /// The service the authority named.
        service: ServiceId,
        /// The route's index in the table.
        index: usize,
        /// The route.
        route: &'e Route,
    },
    /// The service has routes and none matched: the proxy answers 404.
    NoRoute {
        /// The service the authority named.
        service: ServiceId,
    },
    /// The service has no routes at all: the request goes to the service itself.
    ToService {
        /// The service the authority named.
        service: ServiceId,
    },
    /// The authority is not a service of this mesh.
    UnknownService,
    /// The path was refused before any rule saw it: the proxy answers 400.
    BadPath(PathError),
}

impl Engine {
    /// The route for a request to `authority` (the `Host`), with `method`, request target
    /// `path` (normalized here; the query is ignored) and `headers`.
    pub fn route<'e, H: RequestHeaders + ?Sized>(
        &'e self,
        authority: &str,
        method: &str,
        path: &str,
        headers: &H,
    ) -> RouteDecision<'e> {
        let Some(service) = self.service_for_authority(authority) else {
            return RouteDecision::UnknownService;
        };
        let path = match normalize_path(path) {
            Ok(p) => p,
            Err(e) => return RouteDecision::BadPath(e),
        };
        self.route_normalized(service, method, &path, headers)
    }

    /// The route for a request to `service` whose path is already normalized.
    pub fn route_normalized<'e, H: RequestHeaders + ?Sized>(
        &'e self,
        service: ServiceId,
        method: &str,
        path: &str,
        headers: &H,
    ) -> RouteDecision<'e> {
        let Some(router) = self.routers.get(service as usize) else {
            return RouteDecision::UnknownService;
        };
        if router.index.is_empty() {
            return RouteDecision::ToService { service };
        }
        let method = method_bit_of(method);
        let found = router.index.visit(path, |id| {
            if router.conditions[id as usize].matches(method, headers) {
                ControlFlow::Break(id)
            } else {
                ControlFlow::Continue(())
            }
        });
        match found {
            ControlFlow::Break(id) => {
                let index = router.routes[id as usize] as usize;
                RouteDecision::Matched {
                    service,
                    index,
                    route: &self.table.routes[index],
                }
            }
            ControlFlow::Continue(()) => RouteDecision::NoRoute { service },
        }
    }
}
