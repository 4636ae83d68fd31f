//! The operator API: bearer-token JSON over HTTP (or HTTPS, `[api] tls`) on `[api] listen`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

use crate::config::ApiLimits;

use crate::body::{self, Body};
use crate::shared::Shared;
use crate::state::{constant_time_eq, write_atomic};
use crate::{explain, policy};

/// How long a peer's failed authentications are counted.
const AUTH_WINDOW: Duration = Duration::from_secs(60);

/// Most peers whose failures are remembered at once (the oldest windows are dropped first).
const MAX_TRACKED_PEERS: usize = 4096;

/// The listener's bookkeeping: open connections (total and per peer address) and failed
/// authentications per peer address.
#[derive(Debug, Default)]
struct Guard {
    connections: Mutex<HashMap<IpAddr, usize>>,
    open: AtomicUsize,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// One admitted connection; leaving frees its place.
struct Slot {
    guard: Arc<Guard>,
    peer: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.guard.open.fetch_sub(1, Ordering::Relaxed);
        let mut map = lock(&self.guard.connections);
        if let Some(n) = map.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.peer);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Guard {
    /// A place for a connection from `peer`, unless the total or the peer's cap is reached.
    fn admit(self: &Arc<Self>, peer: IpAddr, limits: &ApiLimits) -> Option<Slot> {
        let mut map = lock(&self.connections);
        let mine = map.get(&peer).copied().unwrap_or(0);
        if mine >= limits.max_connections_per_peer
            || self.open.load(Ordering::Relaxed) >= limits.max_connections
        {
            return None;
        }
        map.insert(peer, mine + 1);
        self.open.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            guard: Arc::clone(self),
            peer,
        })
    }

    /// Whether `peer` has failed authentication `limit` times in the current window.
    fn limited(&self, peer: IpAddr, limit: u32) -> bool {
        lock(&self.failures)
            .get(&peer)
            .is_some_and(|(since, n)| since.elapsed() < AUTH_WINDOW && *n >= limit)
    }

    /// Counts a failed authentication of `peer`; its count in the window.
    fn failed(&self, peer: IpAddr) -> u32 {
        let mut map = lock(&self.failures);
        if map.len() >= MAX_TRACKED_PEERS && !map.contains_key(&peer) {
            map.retain(|_, (since, _)| since.elapsed() < AUTH_WINDOW);
            if map.len() >= MAX_TRACKED_PEERS {
                if let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, (since, _))| *since)
                    .map(|(p, _)| *p)
                {
                    map.remove(&oldest);
                }
            }
        }
        let entry = map.entry(peer).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= AUTH_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
        entry.1
    }
}

/// An I/O wrapper that records when bytes last moved, for the idle timeout.
struct Watched<T> {
    inner: T,
    last: Arc<Mutex<Instant>>,
}

impl<T> Watched<T> {
    fn touch(&self) {
        *lock(&self.last) = Instant::now();
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves the API until the task is dropped: plain HTTP, or TLS with `tls`. Each connection
/// must finish its TLS handshake and each request's headers within `api.header_timeout_ms`,
/// is closed after `api.idle_timeout_ms` with no request in flight and no bytes moving, and
/// counts against `api.max_connections` and `api.max_connections_per_peer` (over either, it
/// is closed at once).
pub async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let guard = Arc::new(Guard::default());
    let limits = shared.config.api_limits;
    loop {
        let Ok((tcp, remote)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let peer = remote.ip();
        let Some(slot) = guard.admit(peer, &limits) else {
            tracing::debug!(%remote, "operator API: connection cap reached; closed");
            drop(tcp);
            continue;
        };
        let (shared, guard, tls) = (Arc::clone(&shared), Arc::clone(&guard), tls.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => connection(shared, guard, peer, tcp, limits).await,
                Some(tls) => {
                    match tokio::time::timeout(limits.header_timeout, tls.accept(tcp)).await {
                        Ok(Ok(stream)) => connection(shared, guard, peer, stream, limits).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%remote, error = %e, "operator API: TLS handshake failed");
                        }
                        Err(_) => {
                            tracing::debug!(%remote, "operator API: TLS handshake too slow; closed")
                        }
                    }
                }
            }
        });
    }
}

async fn connection<T>(
    shared: Arc<Shared>,
    guard: Arc<Guard>,
    peer: IpAddr,
    io: T,
    limits: ApiLimits,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let last = Arc::new(Mutex::new(Instant::now()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let io = Watched {
        inner: io,
        last: Arc::clone(&last),
    };
    let busy = Arc::clone(&in_flight);
    let service = hyper::service::service_fn(move |req| {
        let (shared, guard, busy) = (Arc::clone(&shared), Arc::clone(&guard), Arc::clone(&busy));
        async move {
            busy.fetch_add(1, Ordering::Relaxed);
            let response = handle(shared, &guard, peer, req).await;
            busy.fetch_sub(1, Ordering::Relaxed);
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(32);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let idle = async {
        loop {
            let since = lock(&last).elapsed();
            if in_flight.load(Ordering::Relaxed) == 0 && since >= limits.idle_timeout {
                return;
            }
            tokio::time::sleep(
                limits
                    .idle_timeout
                    .saturating_sub(since)
                    .max(Duration::from_millis(100)),
            )
            .await;
        }
    };
    tokio::select! {
        _ = conn.as_mut() => {}
        () = idle => tracing::debug!(%peer, "operator API: idle connection closed"),
    }
}

/// The credentials of an `Authorization: Bearer <token>` header, the scheme in any case.
fn bearer(req: &Request<Incoming>) -> Option<&str> {
    let value = req
        .headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let (scheme, credentials) = value.split_once([' ', '\t'])?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
}

fn authorized(shared: &Shared, req: &Request<Incoming>) -> bool {
    let given = bearer(req).unwrap_or("");
    constant_time_eq(
        given.as_bytes(),
        shared.config.api_token.expose().as_bytes(),
    )
}

async fn handle(
    shared: Arc<Shared>,
    guard: &Guard,
    peer: IpAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let limit = shared.config.api_limits.auth_failures_per_minute;
    if guard.limited(peer, limit) {
        // Not even checked: a peer guessing tokens gets no answer about them.
        let mut r = body::error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed authentications from this address; try again later",
        );
        r.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("60"),
        );
        return r;
    }
    if !authorized(&shared, &req) {
        let failures = guard.failed(peer);
        tracing::warn!(
            %peer,
            method = %req.method(),
            path = ?req.uri().path(),
            failures,
            "operator API: missing or wrong bearer token"
        );
        if failures == limit {
            tracing::warn!(%peer, "operator API: {limit} failed authentications in a minute; answering 429 for the rest of it");
        }
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
        (Method::GET, "/v1/tokens") => list_tokens(&shared),
        (Method::POST, "/v1/identities/revoke") => {
            crate::identities::revoke(&shared, req.into_body()).await
        }
        (Method::GET, "/v1/revocations") => crate::identities::list(&shared),
        (Method::DELETE, p) if p.starts_with("/v1/tokens/") => {
            revoke_token(&shared, &p["/v1/tokens/".len()..])
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
#[serde(deny_unknown_fields)]
struct CreateToken {
    service: String,
    /// `90s`, `30m`, `24h`, `7d`; none: the token does not expire.
    #[serde(default)]
    ttl: Option<String>,
    /// At most this many bootstraps; none: no limit.
    #[serde(default)]
    max_uses: Option<u64>,
}

/// A stored token as the API shows it: never the secret, nor its hash.
fn token_json(t: &crate::tokens::StoredToken) -> Value {
    json!({
        "id": t.id,
        "service": t.service,
        "created_at": t.created_at,
        "expires_at": t.expires_at,
        "max_uses": t.max_uses,
        "uses": t.uses,
        "last_used_at": t.last_used_at,
    })
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
        tracing::warn!(service = ?req.service, "token refused: not a service name");
        return body::error(StatusCode::BAD_REQUEST, e);
    }
    if req.service == crate::tls::CONTROL_SERVICE {
        // 400 like any name that cannot be a service's (401/403 mean a bad operator token).
        tracing::warn!(service = ?req.service, "token refused: reserved name");
        return body::error(StatusCode::BAD_REQUEST, reserved(&req.service));
    }
    let ttl = match req.ttl.as_deref().map(mesh_identity::parse_ttl).transpose() {
        Ok(ttl) => ttl,
        Err(e) => return body::error(StatusCode::BAD_REQUEST, format!("`ttl`: {e}")),
    };
    if req.max_uses == Some(0) {
        return body::error(StatusCode::BAD_REQUEST, "`max_uses`: must be at least 1");
    }
    let limits = crate::tokens::Limits {
        ttl,
        max_uses: req.max_uses,
    };
    match shared.tokens.create_with(&req.service, limits) {
        Ok(t) => {
            tracing::info!(id = %t.stored.id, service = ?t.stored.service, expires_at = ?t.stored.expires_at, max_uses = ?t.stored.max_uses, "join token created");
            let mut v = token_json(&t.stored);
            v["token"] = json!(t.token);
            body::json(StatusCode::CREATED, &v)
        }
        Err(e) => body::error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

fn list_tokens(shared: &Shared) -> Response<Body> {
    let list: Vec<Value> = shared.tokens.list().iter().map(token_json).collect();
    body::json(StatusCode::OK, &json!({ "tokens": list }))
}

/// `DELETE /v1/tokens/{id}`: by the public id only; a secret in the URL is refused (and not
/// looked up), so that it is not passed around in URLs and command lines.
fn revoke_token(shared: &Shared, id: &str) -> Response<Body> {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return body::error(
            StatusCode::BAD_REQUEST,
            "this is a token's secret, not its id: revoke by the id `meshc token list` shows",
        );
    }
    match shared.revoke_token(id) {
        Ok(true) => {
            tracing::info!(id = ?id, "join token revoked");
            body::json(StatusCode::OK, &json!({ "revoked": true, "id": id }))
        }
        Ok(false) => body::error(StatusCode::NOT_FOUND, "no such token"),
        Err(e) => body::error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}
