//! Inbound: calls from other sidecars (and plain clients of `mtls permissive` services) to
//! the local application, in the protocol the service declares.
//!
//! In order: identity headers a caller sent are dropped → path check (400) → the caller, as
//! the transport proved it (`tls::Caller`) → authorization (403 `unauthorized`, the deciding
//! rule logged, never answered) → the identity header for the application → forward.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, Request, Response};
use hyper::body::Incoming;
use mesh_engine::{AuthzDecision, Decider, Peer};
use mesh_table::{Action, MtlsMode, Protocol, ServiceId, Table};

use crate::body::{boxed, Body};
use crate::errors::ProxyError;
use crate::forward::{
    forward, forward_keeping, request_authority, Destination, Edits, NextHop, Target,
};
use crate::headers::EngineHeaders;
use crate::metrics::authz::DeniedLabels;
use crate::observe::Observation;
use crate::retry::Tries;
use crate::snapshot::Snapshot;
use crate::stream_timeout::{Limits as StreamLimits, StreamClock};
use crate::tls::{Caller, Conn};
use crate::Context;
use mesh_wasm::{Direction, StreamInfo};

/// The header that carries the caller's identity to the application, in Envoy's format:
/// `By=<this service's SPIFFE ID>;URI=<the caller's SPIFFE ID>`. Only this proxy sets it,
/// and only for callers that proved a mesh identity; plaintext callers get none.
pub const IDENTITY_HEADER: &str = "x-forwarded-client-cert";

/// Headers that would claim an identity: whatever a caller sends in them is dropped before
/// authorization and before forwarding.
pub const STRIPPED_IDENTITY_HEADERS: [&str; 4] = [
    "x-forwarded-client-cert",
    "x-mesh-identity",
    "x-client-cert",
    "x-ssl-client-cert",
];

/// Handles one request for the local application; failures become responses here.
pub async fn handle(
    ctx: Arc<Context>,
    conn: Arc<Conn>,
    request: Request<Incoming>,
) -> Response<Body> {
    let mut request = request.map(boxed);
    let mut tries = Tries::default();
    let mut observation = Observation::start("inbound", &request);
    let grpc = crate::headers::is_grpc(request.headers());
    // The route's idle and stream timeouts, as the caller's sidecar announced them (and
    // removed here); the defaults for a caller without one.
    let clock = StreamClock::new(StreamLimits::take_announced(request.headers_mut()));
    observation.clock = Some(Arc::clone(&clock));
    let request = request.map(|body| clock.watch(body));
    let sent = inbound(&ctx, &conn, request, &mut tries, &mut observation)
        .await
        .map(|response| response.map(|body| clock.watch(body)))
        .map_err(|error| {
            clock
                .cut()
                .map_or(error, |cut| ProxyError::StreamTimeout(cut.reason()))
        });
    let response = match sent {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(%error, "inbound request failed");
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

async fn inbound(
    ctx: &Context,
    conn: &Conn,
    mut request: Request<Body>,
    tries: &mut Tries,
    observation: &mut Observation,
) -> Result<Response<Body>, ProxyError> {
    let snapshot = ctx.tables.current().ok_or(ProxyError::NoTable)?;
    observation.snapshot = Some(Arc::clone(&snapshot));
    let table = snapshot.table();
    let (service_id, service) = table
        .service_id(&ctx.service)
        .and_then(|id| Some((id, table.services.get(id as usize)?)))
        .ok_or_else(|| ProxyError::UnknownService(ctx.service.clone()))?;
    observation.service = Some(service_id);
    observation.target = Some(service_id);
    // The access log's fields that cost an allocation are gathered only when it may log.
    let logged = snapshot.names.access_log_ppm(service_id) > 0;
    if logged {
        observation.peer_identity = Some(caller_name(&conn.caller).into_owned());
    }
    // Tracing: continue the caller's trace (or start one at this service's rate); the
    // application gets this hop's span as its parent.
    observation.trace(snapshot.names.trace_ppm(service_id), request.headers_mut());
    if observation.span.as_ref().is_some_and(|s| s.sampled) {
        observation.span_peer = Some(caller_name(&conn.caller).into_owned());
    }
    // Nothing a caller sends changes who it is.
    strip_identity_headers(request.headers_mut());
    // Paths are checked before anything else sees them, and the application receives the
    // normalized path the rules decide on (docs/language.md, "Paths").
    crate::headers::forward_normalized(&mut request).map_err(ProxyError::BadPath)?;
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let path = mesh_engine::normalize_path(target).map_err(ProxyError::BadPath)?;
    // Who is calling: a plaintext connection admitted while the service was permissive is
    // refused once a table makes it strict.
    let peer = match &conn.caller {
        Caller::Plaintext => {
            observation.peer = Some(Arc::clone(&snapshot.names.plaintext));
            if service.mtls == MtlsMode::Strict && ctx.upstreams.transport().is_mtls() {
                ctx.upstreams
                    .transport()
                    .stats()
                    .plaintext_refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(ProxyError::PlaintextRefused);
            }
            Peer::Plaintext
        }
        Caller::Mesh {
            spiffe_id, serial, ..
        } if ctx.upstreams.transport().is_revoked(serial) => {
            tracing::warn!(caller = %spiffe_id, %serial, "request refused: the caller's certificate was revoked while its connection was open");
            return Err(ProxyError::CallerRevoked);
        }
        Caller::Mesh { spiffe_id, .. } => match snapshot.engine.peer_from_spiffe_id(spiffe_id) {
            Some(peer) => peer,
            None => {
                observation.peer = Some(Arc::clone(&snapshot.names.other));
                count_denied(ctx, &snapshot, service_id, "default".to_string());
                // The credentials' trust domain is not the table's: nobody here can vouch.
                tracing::warn!(
                    caller = %spiffe_id,
                    trust_domain = %table.mesh.trust_domain,
                    "request denied: the caller is not in the table's trust domain"
                );
                return Err(ProxyError::Unauthorized);
            }
        },
    };
    observation.peer = Some(snapshot.names.peer(peer));
    // Authorization, on the identity the transport proved.
    let decision = snapshot.engine.authorize_normalized(
        service_id,
        peer,
        request.method().as_str(),
        &path,
        &EngineHeaders(request.headers()),
    );
    // Sidecars probe their peers' health path (`service { health { path ... } }`) with their
    // own mesh identity; a policy that admits only some callers would otherwise mark every
    // endpoint unhealthy. Any authenticated mesh identity may send exactly the probe (GET of
    // that path; for gRPC services, gRPC's Health/Check); plaintext callers may not, so this
    // opens nothing outside the mesh.
    let health_probe = matches!(peer, Peer::Service(_) | Peer::OtherMeshIdentity)
        && crate::health::is_probe(service, request.method(), &path, target);
    if logged || decision.action == Action::Deny {
        observation.rule = Some(decided_by(table, &decision));
    }
    if decision.action == Action::Deny && !health_probe {
        count_denied(ctx, &snapshot, service_id, rule_label(table, &decision));
        tracing::info!(
            caller = %caller_name(&conn.caller),
            service = %ctx.service,
            method = %request.method(),
            path = %path,
            rule = %decided_by(table, &decision),
            "request denied"
        );
        return Err(ProxyError::Unauthorized);
    }
    if tracing::enabled!(tracing::Level::DEBUG) {
        tracing::debug!(
            caller = %caller_name(&conn.caller),
            method = %request.method(),
            path = %path,
            rule = %decided_by(table, &decision),
            "request allowed"
        );
    }

    let authority = request_authority(&request);
    let authority = authority
        .as_ref()
        .map_or(service.name.as_str(), |a| a.as_str());
    let app = ctx
        .app
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], service.port)));
    let hop = match service.protocol {
        Protocol::Http1 => NextHop::Http1,
        Protocol::Http2 | Protocol::Grpc => NextHop::Http2,
    };
    // The identity header is set as a request edit: edits apply after hop-by-hop headers
    // are removed, so not even `Connection: x-forwarded-client-cert` can take it away.
    let edits = Edits {
        request: match &conn.caller {
            Caller::Mesh { xfcc, .. } => std::slice::from_ref(xfcc),
            Caller::Plaintext => &[],
        },
        response: &[],
    };
    // The caller's sidecar applied the route's retries; here only a pooled connection that
    // closed under the request (the keep-alive race) sends it again.
    let count_bytes = observation.count_request_bytes(&ctx.metrics);
    let to = Destination {
        target: Target::Fixed(app),
        hop,
        authority,
        // The caller's gRPC deadline bounds the wait for the application too.
        timeout: crate::headers::grpc_timeout(request.headers())
            .map_or(ctx.default_timeout, |t| t.min(ctx.default_timeout)),
        retry: None,
        budget: None,
        count_bytes: count_bytes.as_ref(),
    };
    // The service's filters, in its own sidecar, after authorization.
    if service.filters.is_empty() {
        return forward(&ctx.upstreams, conn.addr, to, request, edits, tries).await;
    }
    let Some(store) = ctx.filters.as_deref() else {
        crate::filters::without_host(table, &service.filters)?;
        return forward(&ctx.upstreams, conn.addr, to, request, edits, tries).await;
    };
    let info = StreamInfo {
        direction: Direction::Inbound,
        service: snapshot.names.service(Some(service_id)),
        route: None,
        upstream_service: Some(snapshot.names.service(Some(service_id))),
        source: Some(conn.addr),
        destination: ctx.inbound_addr,
        peer_identity: match &conn.caller {
            Caller::Mesh { spiffe_id, .. } => Some(spiffe_id.clone()),
            Caller::Plaintext => None,
        },
        mtls: matches!(conn.caller, Caller::Mesh { .. }),
    };
    crate::filters::around(
        store,
        table,
        &service.filters,
        info,
        request,
        move |request| forward_keeping(&ctx.upstreams, conn.addr, to, request, edits, tries),
    )
    .await
}

/// Removes every identity header a caller sent.
pub fn strip_identity_headers(headers: &mut HeaderMap) {
    for name in STRIPPED_IDENTITY_HEADERS {
        headers.remove(name);
    }
}

/// Counts a denial of a request for `service` by `rule`.
fn count_denied(ctx: &Context, snapshot: &Snapshot, service: ServiceId, rule: String) {
    ctx.metrics
        .authz
        .denied
        .get_or_create(&DeniedLabels {
            service: snapshot.names.service(Some(service)),
            rule,
        })
        .inc();
}

/// The deciding rule as a metric label: `file:line` of the rule, or `default` (the
/// authorize block's default, or no block at all).
pub fn rule_label(table: &Table, decision: &AuthzDecision) -> String {
    let rule = decision
        .authorization
        .and_then(|i| table.authorizations.get(i))
        .and_then(|a| match decision.decider {
            Decider::Rule(i) => a.rules.get(i),
            Decider::Default => None,
        });
    match rule {
        Some(rule) => {
            let file = table
                .files
                .get(rule.loc.file as usize)
                .map_or("<unknown>", String::as_str);
            format!("{file}:{}", rule.loc.line)
        }
        None => "default".to_string(),
    }
}

/// The caller for log lines.
fn caller_name(caller: &Caller) -> Cow<'_, str> {
    match caller {
        Caller::Plaintext => Cow::Borrowed("plaintext"),
        Caller::Mesh { spiffe_id, .. } => Cow::Borrowed(spiffe_id),
    }
}

/// What decided, as `file:line:column` of the policy (for logs, and the access log next).
pub fn decided_by(table: &Table, decision: &AuthzDecision) -> String {
    let Some(authorization) = decision
        .authorization
        .and_then(|i| table.authorizations.get(i))
    else {
        return "no authorize block: any mesh identity".to_string();
    };
    match decision.decider {
        Decider::Rule(i) => authorization
            .rules
            .get(i)
            .map_or_else(|| "?".to_string(), |rule| table.describe(rule.loc)),
        Decider::Default => format!("default at {}", table.describe(authorization.default_loc)),
    }
}
