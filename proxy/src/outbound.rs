//! Outbound: the local application's calls. Route by the table, pick the target by weight,
//! pick an endpoint, then forward to that endpoint's sidecar over HTTP/2.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use mesh_engine::RouteDecision;
use mesh_table::{Route, ServiceId};

use crate::body::Body;
use crate::errors::ProxyError;
use crate::forward::{forward, request_authority, Destination, Edits, NextHop};
use crate::headers::EngineHeaders;
use crate::Context;

/// Handles one request from the local application; failures become responses here.
pub async fn handle(
    ctx: Arc<Context>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Body> {
    match outbound(&ctx, peer, request).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(%error, "outbound request failed");
            error.into_response()
        }
    }
}

async fn outbound(
    ctx: &Context,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Body>, ProxyError> {
    // The snapshot taken here serves the whole request, whatever swaps happen meanwhile.
    let snapshot = ctx.tables.current().ok_or(ProxyError::NoTable)?;
    let authority = request_authority(&request).ok_or(ProxyError::NoAuthority)?;
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    // Route: the most specific route of the authority's service.
    let decision = snapshot.engine.route(
        &authority,
        request.method().as_str(),
        path,
        &EngineHeaders(request.headers()),
    );
    let (target, route) = match decision {
        RouteDecision::Matched { route, .. } => (pick_target(route), Some(route)),
        RouteDecision::ToService { service } => (service, None),
        RouteDecision::NoRoute { .. } => return Err(ProxyError::NoRoute),
        RouteDecision::UnknownService => return Err(ProxyError::UnknownService(authority)),
        RouteDecision::BadPath(e) => return Err(ProxyError::BadPath(e)),
    };
    // Pick endpoint: the target service's sidecars, in turn.
    let endpoint = snapshot
        .endpoints(target)
        .and_then(|e| e.pick())
        .ok_or_else(|| {
            let name = snapshot
                .table()
                .services
                .get(target as usize)
                .map_or("?", |s| s.name.as_str());
            ProxyError::NoEndpoint(name.to_string())
        })?;
    let timeout = route
        .and_then(|r| r.timeout_ms)
        .map_or(ctx.default_timeout, Duration::from_millis);
    let edits = route.map_or_else(Edits::default, |r| Edits {
        request: &r.request_headers,
        response: &r.response_headers,
    });
    // Send: over the endpoint's multiplexed HTTP/2 connection (h2c until mTLS).
    let to = Destination {
        addr: endpoint,
        hop: NextHop::Http2,
        authority: &authority,
        timeout,
    };
    forward(&ctx.upstreams, peer, to, request, edits).await
}

/// A target by the route's split weights.
fn pick_target(route: &Route) -> ServiceId {
    let total: u64 = route.targets.iter().map(|t| u64::from(t.weight.0)).sum();
    let mut point = fastrand::u64(..total.max(1));
    for target in &route.targets {
        let weight = u64::from(target.weight.0);
        if point < weight {
            return target.service;
        }
        point -= weight;
    }
    route.targets.last().map_or(route.service, |t| t.service)
}
