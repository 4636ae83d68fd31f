//! The operator API: bearer-token JSON over HTTP on `[api] listen`.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::body::{self, Body};
use crate::shared::Shared;
use crate::state::{constant_time_eq, write_atomic};
use crate::{explain, policy};

/// Serves the API until the task is dropped.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, std::convert::Infallible>(handle(shared, req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn authorized(shared: &Shared, req: &Request<Incoming>) -> bool {
    let given = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(given.trim().as_bytes(), shared.config.api_token.as_bytes())
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    if !authorized(&shared, &req) {
        let mut r = body::error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/v1/proxies") => proxies(&shared),
        (Method::GET, "/v1/services") => services(&shared),
        (Method::GET, "/v1/policy") => get_policy(&shared),
        (Method::PUT, "/v1/policy") => put_policy(&shared, req.into_body()).await,
        (Method::GET, "/v1/traffic") => body::json(
            StatusCode::OK,
            &json!({ "window_s": crate::traffic::WINDOW.as_secs(), "routes": shared.traffic.aggregate() }),
        ),
        (Method::GET, "/v1/explain") => explain_request(&shared, &query),
        (Method::POST, "/v1/tokens") => create_token(&shared, req.into_body()).await,
        (Method::DELETE, p) if p.starts_with("/v1/tokens/") => {
            match shared.revoke_token(&p["/v1/tokens/".len()..]) {
                Ok(true) => body::json(StatusCode::OK, &json!({ "revoked": true })),
                Ok(false) => body::error(StatusCode::NOT_FOUND, "no such token"),
                Err(e) => body::error(StatusCode::INTERNAL_SERVER_ERROR, e),
            }
        }
        _ => body::error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {} {path}", req.method()),
        ),
    }
}

fn proxies(shared: &Shared) -> Response<Body> {
    let current = shared.policy.load_full();
    let list: Vec<Value> = shared
        .registry
        .proxies()
        .into_iter()
        .map(|p| {
            let expected = current
                .as_ref()
                .and_then(|c| shared.slices.get(&p.service, c, &shared.registry))
                .map(|s| s.checksum.clone());
            let mut v = serde_json::to_value(&p).unwrap_or_default();
            v["current"] = json!(expected);
            v["in_sync"] = json!(expected.is_some() && expected == p.applied);
            v
        })
        .collect();
    body::json(StatusCode::OK, &json!({ "proxies": list }))
}

fn services(shared: &Shared) -> Response<Body> {
    let current = shared.policy.load_full();
    let proxies = shared.registry.proxies();
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    if let Some(c) = &current {
        for s in &c.table.services {
            let endpoints = match &s.endpoints {
                mesh_table::Endpoints::Static(a) => json!({ "static": a }),
                mesh_table::Endpoints::Dns { host, port } => {
                    json!({ "dns": format!("{host}:{port}") })
                }
                mesh_table::Endpoints::Registry => {
                    json!({ "registry": shared.registry.endpoints(&s.name) })
                }
            };
            let slice = shared.slices.get(&s.name, c, &shared.registry);
            out.insert(
                s.name.clone(),
                json!({
                    "name": s.name,
                    "in_policy": true,
                    "endpoints": endpoints,
                    "slice_checksum": slice.as_ref().map(|s| s.checksum.clone()),
                    "slice_bytes": slice.as_ref().map(|s| s.bytes.len()),
                }),
            );
        }
    }
    for p in &proxies {
        let entry = out.entry(p.service.clone()).or_insert_with(
            || json!({ "name": p.service, "in_policy": false, "endpoints": Value::Null }),
        );
        let count = |key: &str, entry: &mut Value| {
            entry[key] = json!(entry[key].as_u64().unwrap_or(0) + 1);
        };
        if p.connected {
            count("connected", entry);
        }
        if p.connected && p.healthy {
            count("healthy", entry);
        }
        if p.connected
            && p.applied.is_some()
            && entry["slice_checksum"].as_str() == p.applied.as_deref()
        {
            count("in_sync", entry);
        }
    }
    for v in out.values_mut() {
        for key in ["connected", "healthy", "in_sync"] {
            if v[key].is_null() {
                v[key] = json!(0);
            }
        }
    }
    body::json(
        StatusCode::OK,
        &json!({ "services": out.into_values().collect::<Vec<_>>() }),
    )
}

fn get_policy(shared: &Shared) -> Response<Body> {
    let current = shared.policy.load_full();
    let attempt = shared
        .attempt
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    body::json(
        StatusCode::OK,
        &json!({
            "version": current.as_ref().map(|c| c.version),
            "checksum": current.as_ref().map(|c| c.checksum.clone()),
            "installed_at": current.as_ref().map(|c| c.installed_at),
            "services": current.as_ref().map(|c| c.table.services.len()),
            "routes": current.as_ref().map(|c| c.table.routes.len()),
            "last_compile": attempt.as_ref().map(|a| json!({ "ok": a.ok, "at": a.at, "source": a.source })),
            // The latest compile's diagnostics: a rejected policy's errors, or the warnings
            // of the served one.
            "diagnostics": attempt.map(|a| a.diagnostics).or_else(|| current.as_ref().map(|c| c.diagnostics.clone())),
        }),
    )
}

#[derive(Deserialize)]
struct PutPolicy {
    files: BTreeMap<String, String>,
}

/// Checks the uploaded files together with the directory's others in a staging directory;
/// only a policy that compiles is written into the policy directory and installed.
async fn put_policy(shared: &Arc<Shared>, body: Incoming) -> Response<Body> {
    let bytes = match body::read(body, 16 << 20).await {
        Ok(b) => b,
        Err(e) => return body::error(StatusCode::BAD_REQUEST, e),
    };
    let put: PutPolicy = match serde_json::from_slice(&bytes) {
        Ok(p) => p,
        Err(e) => return body::error(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")),
    };
    if put.files.is_empty() {
        return body::error(StatusCode::BAD_REQUEST, "`files` is empty");
    }
    if let Some(bad) = put.files.keys().find(|n| !policy::is_policy_file_name(n)) {
        return body::error(
            StatusCode::BAD_REQUEST,
            format!("`{bad}` is not a plain `*.mesh` file name"),
        );
    }
    let _one_at_a_time = shared.compiling.lock().await;
    let s = Arc::clone(shared);
    let result = tokio::task::spawn_blocking(move || stage_and_write(&s, &put.files)).await;
    let result = match result {
        Ok(r) => r,
        Err(e) => return body::error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    match result {
        Ok(Ok(compiled)) => {
            let diagnostics = compiled.diagnostics.clone();
            let current = shared.install(compiled, "api");
            body::json(
                StatusCode::OK,
                &json!({ "version": current.version, "checksum": current.checksum, "diagnostics": diagnostics }),
            )
        }
        Ok(Err(diagnostics)) => {
            shared.reject("api", diagnostics.clone());
            body::json(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({ "diagnostics": diagnostics }),
            )
        }
        Err(e) => body::error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

type Staged = Result<Result<policy::Compiled, Value>, String>;

fn stage_and_write(shared: &Shared, files: &BTreeMap<String, String>) -> Staged {
    let dir = &shared.config.policies;
    let staging = shared
        .config
        .state
        .join(format!("staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| format!("cannot stage the policy: {e}"))?;
    let copy = || -> std::io::Result<()> {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.filter_map(Result::ok) {
                let name = e.file_name().to_string_lossy().into_owned();
                if policy::is_policy_file_name(&name) && !files.contains_key(&name) {
                    std::fs::copy(e.path(), staging.join(&name))?;
                }
            }
        }
        for (name, text) in files {
            std::fs::write(staging.join(name), text)?;
        }
        Ok(())
    };
    if let Err(e) = copy() {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(format!("cannot stage the policy: {e}"));
    }
    // Modules are found beside the policy files: the real directory, after the staging one.
    let mut module_paths = vec![dir.clone()];
    module_paths.extend(shared.config.module_paths.iter().cloned());
    let compiled = policy::compile(&staging, &module_paths);
    let _ = std::fs::remove_dir_all(&staging);
    if compiled.is_ok() {
        for (name, text) in files {
            write_atomic(&dir.join(name), text.as_bytes(), false)
                .map_err(|e| format!("cannot write `{name}`: {e}"))?;
        }
    }
    Ok(compiled)
}

fn explain_request(shared: &Shared, query: &str) -> Response<Body> {
    let Some(current) = shared.policy.load_full() else {
        return body::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no policy has compiled yet",
        );
    };
    let result = explain::Query::parse(query)
        .and_then(|q| explain::explain(&current.engine, &current.checksum, &q));
    match result {
        Ok(v) => body::json(StatusCode::OK, &v),
        Err(e) => body::error(StatusCode::BAD_REQUEST, e),
    }
}

/// Why `service` cannot be enrolled: it is the control plane's own identity, which proxies
/// trust to hand out certificates and tables.
pub fn reserved(service: &str) -> String {
    format!("`{service}` is the control plane's own identity and is reserved: no token, policy service or certificate may name it")
}

#[derive(Deserialize)]
struct CreateToken {
    service: String,
}

async fn create_token(shared: &Shared, body: Incoming) -> Response<Body> {
    let req: CreateToken = match body::read(body, 64 * 1024)
        .await
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| format!("bad JSON body: {e}")))
    {
        Ok(r) => r,
        Err(e) => return body::error(StatusCode::BAD_REQUEST, e),
    };
    if let Err(e) = shared.trust_domain.service(&req.service) {
        return body::error(StatusCode::BAD_REQUEST, e);
    }
    if req.service == crate::tls::CONTROL_SERVICE {
        // 400 like any name that cannot be a service's (401/403 mean a bad operator token).
        return body::error(StatusCode::BAD_REQUEST, reserved(&req.service));
    }
    match shared.tokens.create(&req.service) {
        Ok(t) => body::json(
            StatusCode::CREATED,
            &json!({ "token": t.token, "service": t.service }),
        ),
        Err(e) => body::error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}
