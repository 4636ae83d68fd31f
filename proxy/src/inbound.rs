//! Inbound: calls from other sidecars (and plain clients of `mtls permissive` services) to
//! the local application, in the protocol the service declares.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use mesh_table::Protocol;

use crate::body::Body;
use crate::errors::ProxyError;
use crate::forward::{forward, request_authority, Destination, Edits, NextHop, Target};
use crate::retry::Tries;
use crate::Context;

/// Handles one request for the local application; failures become responses here.
pub async fn handle(
    ctx: Arc<Context>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Body> {
    let mut tries = Tries::default();
    match inbound(&ctx, peer, request, &mut tries).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(%error, "inbound request failed");
            error.into_response()
        }
    }
}

async fn inbound(
    ctx: &Context,
    peer: SocketAddr,
    request: Request<Incoming>,
    tries: &mut Tries,
) -> Result<Response<Body>, ProxyError> {
    let snapshot = ctx.tables.current().ok_or(ProxyError::NoTable)?;
    let table = snapshot.table();
    let service = table
        .service_id(&ctx.service)
        .and_then(|id| table.services.get(id as usize))
        .ok_or_else(|| ProxyError::UnknownService(ctx.service.clone()))?;
    // Paths are checked before anything else sees them (authorization will, next).
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    mesh_engine::normalize_path(path).map_err(ProxyError::BadPath)?;
    let authority = request_authority(&request).unwrap_or_else(|| service.name.clone());
    let app = ctx
        .app
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], service.port)));
    let hop = match service.protocol {
        Protocol::Http1 => NextHop::Http1,
        Protocol::Http2 | Protocol::Grpc => NextHop::Http2,
    };
    // The caller's sidecar applied the route's retries; here only a pooled connection that
    // closed under the request (the keep-alive race) sends it again.
    let to = Destination {
        target: Target::Fixed(app),
        hop,
        authority: &authority,
        timeout: ctx.default_timeout,
        retry: None,
        budget: None,
    };
    forward(&ctx.upstreams, peer, to, request, Edits::default(), tries).await
}
