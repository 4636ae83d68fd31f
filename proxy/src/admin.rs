//! The admin listener (loopback by default): liveness, readiness, the loaded table, each
//! service's endpoints with their state, and the mesh identity with the handshake counters
//! (`/tls`), the metrics (`/metrics`), the decision for a request (`/explain`), the log
//! level (`/logging?level=`), and shutdown (`POST /drain`, `POST /quitquitquit`: drain,
//! then exit 0).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use std::net::SocketAddr;

use http_body_util::{BodyExt, Limited};

use crate::body::{full, Body};
use crate::Context;

/// Largest module `POST /filters/NAME` accepts.
const MAX_MODULE_BYTES: usize = 64 << 20;

/// Answers one admin request from `peer`.
pub async fn handle(
    ctx: Arc<Context>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Body> {
    if let Some(name) = request.uri().path().strip_prefix("/filters/") {
        let name = name.to_string();
        let (status, body) = load_filter(&ctx, peer, &name, request).await;
        return json_response(status, body);
    }
    if request.uri().path() == "/metrics" {
        let mut response = Response::new(full(ctx.metrics.encode()));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
        );
        return response;
    }
    let query = request.uri().query().unwrap_or("");
    let (status, body) = match request.uri().path() {
        "/live" => (StatusCode::OK, "{\"live\":true}\n".to_string()),
        "/ready" if ctx.draining.load(Ordering::Relaxed) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"ready\":false,\"reason\":\"draining\"}\n".to_string(),
        ),
        "/ready" => match ctx.tables.current() {
            Some(_) if ctx.filters.as_ref().is_some_and(|f| !f.settled()) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "{\"ready\":false,\"reason\":\"filters loading\"}\n".to_string(),
            ),
            Some(_) => (StatusCode::OK, "{\"ready\":true}\n".to_string()),
            None => (
                StatusCode::SERVICE_UNAVAILABLE,
                "{\"ready\":false,\"reason\":\"no rule table loaded\"}\n".to_string(),
            ),
        },
        "/config" => (StatusCode::OK, config_json(&ctx)),
        "/filters" => match &ctx.filters {
            Some(store) => (StatusCode::OK, format!("{}\n", store.describe())),
            None => (
                StatusCode::SERVICE_UNAVAILABLE,
                "{\"error\":\"the WASM host did not start\"}\n".to_string(),
            ),
        },
        "/endpoints" => (StatusCode::OK, endpoints_json(&ctx)),
        "/tls" => (StatusCode::OK, tls_json(&ctx)),
        "/explain" => explain(&ctx, query),
        "/logging" => logging(&ctx, query),
        "/drain" | "/quitquitquit" if request.method() != http::Method::POST => (
            StatusCode::METHOD_NOT_ALLOWED,
            "{\"error\":\"POST only\"}\n".to_string(),
        ),
        "/drain" | "/quitquitquit" => {
            ctx.draining.store(true, Ordering::Relaxed);
            // `notify_one` keeps the permit if `run` is not waiting yet.
            ctx.shutdown.notify_one();
            (
                StatusCode::OK,
                "{\"draining\":true,\"then\":\"exit 0\"}\n".to_string(),
            )
        }
        _ => (
            StatusCode::NOT_FOUND,
            "{\"error\":\"not found\"}\n".to_string(),
        ),
    };
    json_response(status, body)
}

fn json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// `/explain?authority=&method=&path=&header=name:value&from=`.
fn explain(ctx: &Context, query: &str) -> (StatusCode, String) {
    let error = |e: String| {
        (
            StatusCode::BAD_REQUEST,
            format!("{}\n", serde_json::json!({ "error": e })),
        )
    };
    let Some(snapshot) = ctx.tables.current() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"error\":\"no rule table loaded\"}\n".to_string(),
        );
    };
    match crate::explain::Query::parse(query)
        .and_then(|q| crate::explain::explain(&snapshot, &ctx.service, &q))
    {
        Ok(value) => (StatusCode::OK, format!("{value}\n")),
        Err(e) => error(e),
    }
}

/// `/logging?level=FILTER`: replaces the log filter (`EnvFilter` syntax).
fn logging(ctx: &Context, query: &str) -> (StatusCode, String) {
    let level = query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == "level")
        .map(|(_, v)| crate::explain::decode(v));
    let answer = |status, value: serde_json::Value| (status, format!("{value}\n"));
    match (level, &ctx.log_filter) {
        (_, None) => answer(
            StatusCode::NOT_IMPLEMENTED,
            serde_json::json!({ "error": "this process has no reloadable log filter" }),
        ),
        (None, _) => answer(
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": "`level` is required, e.g. /logging?level=debug" }),
        ),
        (Some(Err(e)), _) => answer(StatusCode::BAD_REQUEST, serde_json::json!({ "error": e })),
        (Some(Ok(level)), Some(set)) => match (set.0)(&level) {
            Ok(()) => {
                tracing::info!(%level, "log filter changed on the admin listener");
                answer(StatusCode::OK, serde_json::json!({ "level": level }))
            }
            Err(e) => answer(StatusCode::BAD_REQUEST, serde_json::json!({ "error": e })),
        },
    }
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
                "revoked_serials": credentials.revoked().len(),
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

/// `POST /filters/NAME`: loads the request body as filter NAME's module (development;
/// loopback callers only, whatever the listener is bound to).
async fn load_filter(
    ctx: &Context,
    peer: SocketAddr,
    name: &str,
    request: Request<Incoming>,
) -> (StatusCode, String) {
    let error = |status, message: String| {
        (
            status,
            format!("{}\n", serde_json::json!({ "error": message })),
        )
    };
    if request.method() != http::Method::POST {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST a module to load it".into(),
        );
    }
    if !peer.ip().is_loopback() {
        return error(
            StatusCode::FORBIDDEN,
            "filters are loaded from this host only".into(),
        );
    }
    let (Some(store), Some(snapshot)) = (&ctx.filters, ctx.tables.current()) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no WASM host or no table".into(),
        );
    };
    let bytes = match Limited::new(request.into_body(), MAX_MODULE_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes().to_vec(),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("reading the module: {e}")),
    };
    match store.load_development(snapshot.table(), name, bytes).await {
        Ok(sha256) => (
            StatusCode::OK,
            format!(
                "{}\n",
                serde_json::json!({ "filter": name, "sha256": sha256, "loaded": true })
            ),
        ),
        Err(e @ crate::filters::store::AdminLoadError::UnknownFilter(_)) => {
            error(StatusCode::NOT_FOUND, e.to_string())
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}
