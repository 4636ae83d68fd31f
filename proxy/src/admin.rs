//! The admin listener (loopback by default): liveness, readiness, the loaded table, each
//! service's endpoints with their state, and the mesh identity with the handshake counters
//! (`/tls`). The observability issue extends it with metrics and explain.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::{full, Body};
use crate::Context;

/// Answers one admin request.
pub async fn handle(ctx: Arc<Context>, request: Request<Incoming>) -> Response<Body> {
    let (status, body) = match request.uri().path() {
        "/live" => (StatusCode::OK, "{\"live\":true}\n".to_string()),
        "/ready" => match ctx.tables.current() {
            Some(_) => (StatusCode::OK, "{\"ready\":true}\n".to_string()),
            None => (
                StatusCode::SERVICE_UNAVAILABLE,
                "{\"ready\":false,\"reason\":\"no rule table loaded\"}\n".to_string(),
            ),
        },
        "/config" => (StatusCode::OK, config_json(&ctx)),
        "/endpoints" => (StatusCode::OK, endpoints_json(&ctx)),
        "/tls" => (StatusCode::OK, tls_json(&ctx)),
        _ => (
            StatusCode::NOT_FOUND,
            "{\"error\":\"not found\"}\n".to_string(),
        ),
    };
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Every cluster: its endpoints (health, ejection, requests in flight) and counters.
fn endpoints_json(ctx: &Context) -> String {
    let now = crate::clock::now_ms();
    let clusters: serde_json::Map<String, serde_json::Value> = ctx
        .registries
        .clusters
        .all()
        .iter()
        .map(|cluster| {
            let endpoints: Vec<serde_json::Value> = cluster
                .members()
                .endpoints
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "address": e.addr().to_string(),
                        "healthy": e.is_healthy(),
                        "ejected": e.is_ejected(now),
                        "in_flight": e.in_flight(),
                    })
                })
                .collect();
            let value = serde_json::json!({
                "endpoints": endpoints,
                "panic_picks": cluster.panic_picks(),
                "ejections": cluster.ejections(),
            });
            (cluster.name().to_string(), value)
        })
        .collect();
    format!("{}\n", serde_json::Value::Object(clusters))
}

/// The identity (SPIFFE ID, certificate serial and validity, reloads) and the handshake
/// counters by direction and refusal reason.
fn tls_json(ctx: &Context) -> String {
    let transport = ctx.upstreams.transport();
    let mut value = transport.stats().json();
    let identity = match transport.credentials() {
        Some(credentials) => {
            let info = credentials.cert_info();
            serde_json::json!({
                "mode": "mtls",
                "spiffe_id": credentials.spiffe_id().to_string(),
                "serial": info.serial,
                "not_before": mesh_identity::format_utc(info.not_before),
                "not_after": mesh_identity::format_utc(info.not_after),
                "bundle_roots": credentials.bundle_roots(),
                "loads": credentials.loads.load(Ordering::Relaxed),
                "load_failures": credentials.failures.load(Ordering::Relaxed),
            })
        }
        None => serde_json::json!({ "mode": "insecure_plaintext" }),
    };
    if let (Some(out), serde_json::Value::Object(identity)) = (value.as_object_mut(), identity) {
        out.extend(identity);
    }
    format!("{value}\n")
}

fn config_json(ctx: &Context) -> String {
    let loads = ctx.tables.loads.load(Ordering::Relaxed);
    let failures = ctx.tables.failures.load(Ordering::Relaxed);
    let value = match ctx.tables.current() {
        Some(s) => {
            let t = s.table();
            serde_json::json!({
                "service": ctx.service,
                "mesh": t.mesh.name,
                "checksum": s.checksum,
                "format_version": mesh_table::FORMAT_VERSION,
                "services": t.services.len(),
                "routes": t.routes.len(),
                "authorization_rules": t.authorizations.iter().map(|a| a.rules.len()).sum::<usize>(),
                "filters": t.filters.len(),
                "loads": loads,
                "load_failures": failures,
                "mtls": ctx.upstreams.transport().is_mtls(),
            })
        }
        None => {
            serde_json::json!({ "service": ctx.service, "checksum": null, "loads": loads, "load_failures": failures })
        }
    };
    format!("{value}\n")
}
