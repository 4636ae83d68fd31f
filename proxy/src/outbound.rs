//! Outbound: the local application's calls. Route by the table, pick the target by weight,
//! then forward to the target's sidecars over HTTP/2: an endpoint per try, retried as the
//! route says.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use mesh_engine::RouteDecision;
use mesh_table::{Route, ServiceId};

use crate::body::{boxed, with_guard, Body};
use crate::cluster::admission::Overloaded;
use crate::errors::ProxyError;
use crate::forward::{
    forward, forward_keeping, request_authority, Destination, Edits, NextHop, Target,
};
use crate::headers::EngineHeaders;
use crate::observe::Observation;
use crate::retry::Tries;
use crate::stream_timeout::{Limits as StreamLimits, StreamClock};
use crate::Context;
use mesh_wasm::{Direction, StreamInfo};

/// Whether a request runs its route's filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filters {
    /// The application's requests.
    Run,
    /// Filters' own `http_call`s.
    Skip,
}

/// Handles one request from the local application; failures become responses here.
pub async fn handle(
    ctx: Arc<Context>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Body> {
    run(ctx, peer, request.map(boxed), Filters::Run).await
}

/// Sends a filter's `http_call` like an application request, except that route filters
/// do not run on it.
pub async fn handle_unfiltered(
    ctx: Arc<Context>,
    peer: SocketAddr,
    request: Request<Body>,
) -> Response<Body> {
    run(ctx, peer, request, Filters::Skip).await
}

async fn run(
    ctx: Arc<Context>,
    peer: SocketAddr,
    request: Request<Body>,
    filters: Filters,
) -> Response<Body> {
    // What the tries came to stays with the request (the access log reads it).
    let mut tries = Tries::default();
    let mut observation = Observation::start("outbound", &request);
    // A gRPC caller gets the proxy's own answers as gRPC statuses.
    let grpc = crate::headers::is_grpc(request.headers());
    let response = match outbound(&ctx, peer, request, &mut tries, &mut observation, filters).await
    {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(%error, ?tries, "outbound request failed");
            error.into_response_for(grpc)
        }
    };
    // Log and metrics: the last stage.
    observation.finish(
        &ctx.metrics,
        ctx.access_log.as_ref(),
        ctx.tracer.as_ref(),
        &tries,
        response,
    )
}

async fn outbound(
    ctx: &Context,
    peer: SocketAddr,
    mut request: Request<Body>,
    tries: &mut Tries,
    observation: &mut Observation,
    filters: Filters,
) -> Result<Response<Body>, ProxyError> {
    // The snapshot taken here serves the whole request, whatever swaps happen meanwhile.
    let snapshot = ctx.tables.current().ok_or(ProxyError::NoTable)?;
    observation.snapshot = Some(Arc::clone(&snapshot));
    // The caller is this sidecar's application.
    observation.peer = Some(
        snapshot
            .names
            .service(snapshot.table().service_id(&ctx.service)),
    );
    let authority = request_authority(&request).ok_or(ProxyError::NoAuthority)?;
    let authority = authority.as_str();
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    // Route: the most specific route of the authority's service.
    let decision = snapshot.engine.route(
        authority,
        request.method().as_str(),
        path,
        &EngineHeaders(request.headers()),
    );
    let (target, route, index) = match decision {
        RouteDecision::Matched {
            route,
            index,
            service,
        } => {
            observation.service = Some(service);
            (pick_target(route), Some(route), Some(index))
        }
        RouteDecision::ToService { service } => {
            observation.service = Some(service);
            (service, None, None)
        }
        RouteDecision::NoRoute { service } => {
            observation.service = Some(service);
            return Err(ProxyError::NoRoute);
        }
        RouteDecision::UnknownService => {
            return Err(ProxyError::UnknownService(authority.to_string()))
        }
        RouteDecision::BadPath(e) => return Err(ProxyError::BadPath(e)),
    };
    // The route decided on the normalized path: that is the one sent on (and what the
    // route's filters see).
    crate::headers::forward_normalized(&mut request).map_err(ProxyError::BadPath)?;
    observation.route = index;
    observation.target = Some(target);
    // Tracing: continue the application's trace (or start one at the target's rate); the
    // target's sidecar gets this hop's span as its parent.
    observation.trace(snapshot.names.trace_ppm(target), request.headers_mut());
    if observation.span.as_ref().is_some_and(|s| s.sampled) {
        let name = snapshot.names.service(Some(target));
        observation.span_peer = Some(if ctx.upstreams.transport().is_mtls() {
            format!("spiffe://{}/{name}", snapshot.table().mesh.trust_domain)
        } else {
            "plaintext".to_string()
        });
    }
    let count_bytes = observation.count_request_bytes(&ctx.metrics);
    // Balance: the target service's cluster; the endpoint is picked per try (`retry`),
    // among those discovery lists and health and outlier checks leave available.
    let cluster = snapshot.cluster(target).ok_or_else(|| {
        let name = snapshot
            .table()
            .services
            .get(target as usize)
            .map_or("?", |s| s.name.as_str());
        ProxyError::NoEndpoint(name.to_string())
    })?;
    let key = cluster.hash_key(request.headers());
    let timeout = route
        .and_then(|r| r.timeout_ms)
        .map_or(ctx.default_timeout, Duration::from_millis);
    // A gRPC caller's deadline bounds the call too (Envoy: `grpc_timeout_header_max`).
    let timeout =
        crate::headers::grpc_timeout(request.headers()).map_or(timeout, |t| t.min(timeout));
    // The bodies: the route's idle and stream timeouts, on both bodies here, and told to
    // the target's sidecar (which enforces them a little later).
    let limits = StreamLimits::of_route(route);
    let clock = StreamClock::new(limits);
    observation.clock = Some(Arc::clone(&clock));
    let timeout = clock
        .stream_left()
        .map_or(timeout, |left| left.min(timeout));
    limits.announce(request.headers_mut());
    let request = request.map(|body| clock.watch(body));
    // Circuit breaking: a slot among the requests in flight to the target, held until the
    // response body ends; a full wait list is answered at once.
    let waited = Instant::now();
    // A new or woken cluster (its service's first request in a while): its endpoints known
    // and, with health checks, probed once before this request picks one.
    cluster.warm_up(timeout).await;
    let admit = cluster.admission().admit();
    let slot = match tokio::time::timeout(timeout.saturating_sub(waited.elapsed()), admit).await {
        Ok(Ok(slot)) => slot,
        Ok(Err(Overloaded)) => return Err(ProxyError::Overloaded(cluster.name().to_string())),
        Err(_) => {
            return Err(ProxyError::Timeout(
                u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            ))
        }
    };
    let timeout = timeout.saturating_sub(waited.elapsed());
    let edits = route.map_or_else(Edits::default, |r| Edits {
        request: &r.request_headers,
        response: &r.response_headers,
    });
    // Send: over each endpoint's multiplexed HTTP/2 connection (h2c until mTLS), tried
    // again as the route's retry policy allows, all within the route's timeout.
    let to = Destination {
        target: Target::Cluster { cluster, key },
        hop: NextHop::Http2,
        authority,
        timeout,
        retry: route.and_then(|r| r.retry.as_ref()),
        budget: index.and_then(|i| snapshot.budget(i)),
        count_bytes: count_bytes.as_ref(),
    };
    // The route's filters, in the caller's sidecar: they see the request as forwarded.
    let route_filters = route.map_or(&[][..], |r| r.filters.as_slice());
    let sent = if filters == Filters::Skip || route_filters.is_empty() {
        forward(&ctx.upstreams, peer, to, request, edits, tries).await
    } else if let Some(store) = ctx.filters.as_deref() {
        with_filters(
            ctx,
            store,
            &snapshot,
            route_filters,
            index,
            target,
            peer,
            request,
            move |request| forward_keeping(&ctx.upstreams, peer, to, request, edits, tries),
        )
        .await
    } else {
        crate::filters::without_host(snapshot.table(), route_filters)?;
        forward(&ctx.upstreams, peer, to, request, edits, tries).await
    };
    match sent {
        Ok(response) => Ok(response.map(|body| with_guard(clock.watching(body), slot))),
        // A request body that stalled before the response head: say so.
        Err(error) => Err(clock
            .cut()
            .map_or(error, |cut| ProxyError::StreamTimeout(cut.reason()))),
    }
}

/// The route's filters around the forwarding.
#[allow(clippy::too_many_arguments)] // the request's context, each needed once
async fn with_filters<F, Fut>(
    ctx: &Context,
    store: &crate::filters::FilterStore,
    snapshot: &crate::snapshot::Snapshot,
    route_filters: &[u32],
    index: Option<usize>,
    target: ServiceId,
    peer: SocketAddr,
    request: Request<Body>,
    send: F,
) -> Result<Response<Body>, ProxyError>
where
    F: FnOnce(Request<Body>) -> Fut,
    Fut: std::future::Future<Output = Result<(Response<Body>, http::request::Parts), ProxyError>>,
{
    let info = StreamInfo {
        direction: Direction::Outbound,
        service: snapshot
            .names
            .service(snapshot.table().service_id(&ctx.service)),
        route: index.map(|i| snapshot.names.route(Some(i))),
        upstream_service: Some(snapshot.names.service(Some(target))),
        source: Some(peer),
        destination: None,
        peer_identity: None,
        mtls: false,
    };
    crate::filters::around(store, snapshot.table(), route_filters, info, request, send).await
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
