//! The proxies' listener: bootstrap, renewal, modules and the subscription stream, HTTP/2
//! over TLS (docs/control-protocol.md).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_identity::SpiffeId;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::body::{self, Body};
use crate::config::ProxiesLimits;
use crate::frames;
use crate::shared::Shared;
use crate::state::token_id;

/// How often the control plane pings each stream.
pub const PING_EVERY: Duration = Duration::from_secs(10);

/// What the handshake proved about the client.
#[derive(Debug, Clone)]
enum Peer {
    /// No client certificate (bootstrap only).
    Anonymous,
    /// A verified certificate of our trust domain, and its serial (lowercase hex).
    Identified(SpiffeId, String),
    /// A certificate that verified but names no identity of ours.
    Refused(String),
}

/// The largest bootstrap or renewal body: a service name, a join token and a CSR (about a
/// kilobyte for the largest keys) fit many times over.
pub const MAX_REQUEST_BODY: usize = 16 * 1024;

/// How often, at most, a refused connection is logged (they are all counted).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(1);

/// The listener's shared counts: open connections, per peer IP address and in total, and
/// requests in progress per client certificate.
#[derive(Debug)]
struct Listener {
    limits: ProxiesLimits,
    connections: Mutex<Connections>,
    /// Requests in progress per client certificate serial, over all its connections.
    identities: Mutex<HashMap<String, usize>>,
    /// Connections closed at accept (beyond a cap), since the start.
    refused: AtomicU64,
    /// Requests refused for their certificate's cap, since the start.
    refused_requests: AtomicU64,
    /// When a refusal was last logged.
    logged: Mutex<Option<Instant>>,
}

#[derive(Debug, Default)]
struct Connections {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// An admitted connection: released when dropped.
struct Slot {
    listener: Arc<Listener>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = lock(&self.listener.connections);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

impl Listener {
    fn new(limits: ProxiesLimits) -> Listener {
        Listener {
            limits,
            connections: Mutex::new(Connections::default()),
            identities: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
            refused_requests: AtomicU64::new(0),
            logged: Mutex::new(None),
        }
    }

    /// A slot for a connection from `ip`, or why there is none.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, &'static str> {
        let mut c = lock(&self.connections);
        if c.total >= self.limits.max_connections {
            return Err("max_connections");
        }
        let n = c.per_ip.entry(ip).or_default();
        if *n >= self.limits.max_connections_per_ip {
            return Err("max_connections_per_ip");
        }
        *n += 1;
        c.total += 1;
        Ok(Slot {
            listener: Arc::clone(self),
            ip,
        })
    }

    /// Counts a refusal, and logs it unless one was logged less than a second ago.
    fn refusal(&self, counter: &AtomicU64, what: std::fmt::Arguments<'_>) {
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        let mut logged = lock(&self.logged);
        if logged.is_none_or(|at| now.duration_since(at) >= REFUSAL_LOG_EVERY) {
            *logged = Some(now);
            tracing::warn!(total = n, "{what}");
        }
    }

    /// Counts a request of certificate `serial` in; `false` when it has as many in progress
    /// as allowed.
    fn enter(&self, serial: &str) -> bool {
        let mut ids = lock(&self.identities);
        let n = ids.entry(serial.to_owned()).or_default();
        if *n >= self.limits.max_streams_per_identity {
            if *n == 0 {
                ids.remove(serial);
            }
            return false;
        }
        *n += 1;
        true
    }

    fn leave(&self, serial: &str) {
        let mut ids = lock(&self.identities);
        if let Some(n) = ids.get_mut(serial) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                ids.remove(serial);
            }
        }
    }
}

/// One connection's requests in progress, for its deadlines.
#[derive(Debug)]
struct Conn {
    /// Requests whose response body is not yet dropped.
    active: AtomicUsize,
    /// Whether a request arrived at all.
    seen: AtomicBool,
    /// Since when `active` is 0.
    idle_since: Mutex<Instant>,
    /// Wakes the connection's watchdog when `active` moves.
    wake: tokio::sync::Notify,
}

impl Conn {
    /// When the connection is to be closed if nothing changes: `None` while a request is in
    /// progress.
    fn deadline(&self, limits: &ProxiesLimits) -> Option<Instant> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        let wait = if self.seen.load(Ordering::Acquire) {
            limits.idle_timeout
        } else {
            limits.first_request_timeout
        };
        Some(*lock(&self.idle_since) + wait)
    }
}

/// A request in progress: kept in its response body, so it ends when hyper drops the body
/// (sent, or the stream reset).
struct InProgress {
    conn: Arc<Conn>,
    /// The certificate it was counted for.
    identity: Option<(Arc<Listener>, String)>,
}

impl InProgress {
    fn new(conn: Arc<Conn>) -> InProgress {
        conn.seen.store(true, Ordering::Release);
        conn.active.fetch_add(1, Ordering::AcqRel);
        conn.wake.notify_one();
        InProgress {
            conn,
            identity: None,
        }
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        if let Some((listener, serial)) = self.identity.take() {
            listener.leave(&serial);
        }
        if self.conn.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            *lock(&self.conn.idle_since) = Instant::now();
        }
        self.conn.wake.notify_one();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Accepts connections until the task is dropped.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener, acceptor: TlsAcceptor) {
    let limits = shared.config.proxies.clone();
    let state = Arc::new(Listener::new(limits));
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, typically: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Beyond a cap the connection is closed at once: no handshake is spent on it.
        let slot = match state.admit(remote.ip()) {
            Ok(slot) => slot,
            Err(cap) => {
                drop(tcp);
                state.refusal(
                    &state.refused,
                    format_args!(
                        "proxies listener: connection from {} closed at accept: `proxies.{cap}` reached",
                        remote.ip()
                    ),
                );
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let acceptor = acceptor.clone();
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let _slot = slot;
            connection(shared, state, acceptor, tcp, remote).await;
        });
    }
}

/// One connection: the handshake within its deadline, then HTTP/2 until the peer leaves,
/// a deadline passes with no request in progress, or a keep-alive ping goes unanswered.
async fn connection(
    shared: Arc<Shared>,
    state: Arc<Listener>,
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
) {
    let limits = &state.limits;
    let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "handshake refused");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "no TLS handshake within `proxies.handshake_timeout_ms`; closed");
            return;
        }
    };
    let peer = {
        let (_, conn) = tls.get_ref();
        match conn.peer_certificates() {
            None => Peer::Anonymous,
            Some(chain) => {
                let serial = chain
                    .first()
                    .and_then(|c| mesh_identity::CertInfo::parse(c).ok())
                    .map(|info| info.serial);
                match (
                    mesh_identity::tls::peer_identity(conn, &shared.trust_domain),
                    serial,
                ) {
                    (Ok(id), Some(serial)) => Peer::Identified(id, serial),
                    (Err(e), _) => Peer::Refused(e.to_string()),
                    (Ok(_), None) => Peer::Refused("unreadable certificate".into()),
                }
            }
        }
    };
    let conn = Arc::new(Conn {
        active: AtomicUsize::new(0),
        seen: AtomicBool::new(false),
        idle_since: Mutex::new(Instant::now()),
        wake: tokio::sync::Notify::new(),
    });
    let service = {
        let conn = Arc::clone(&conn);
        let state = Arc::clone(&state);
        hyper::service::service_fn(move |req| {
            // Counted from the moment hyper has the request's headers.
            let in_progress = InProgress::new(Arc::clone(&conn));
            let shared = Arc::clone(&shared);
            let state = Arc::clone(&state);
            let peer = peer.clone();
            async move {
                let mut in_progress = in_progress;
                let response = route(shared, &state, peer, remote, req, &mut in_progress).await;
                Ok::<_, std::convert::Infallible>(
                    response.map(|b| Body::Held(Box::new(b), body::Held(Box::new(in_progress)))),
                )
            }
        })
    };
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    // Small windows and buffers: a stream carries a table now and then, and memory per
    // connected proxy is what limits how many one process serves. Frames and header lists
    // at the protocol's minimum, few streams per connection (a proxy uses one or two).
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(limits.keep_alive_interval))
        .keep_alive_timeout(limits.keep_alive_timeout)
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(128 * 1024)
        .max_send_buf_size(64 * 1024)
        .max_frame_size(16 * 1024)
        .max_header_list_size(limits.max_header_list_size)
        .max_concurrent_streams(limits.max_streams_per_connection);
    let served = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(served);
    loop {
        let deadline = conn.deadline(limits);
        let at = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            done = served.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%remote, error = %e, "proxy connection closed");
                }
                return;
            }
            () = conn.wake.notified() => {}
            () = tokio::time::sleep_until(at.into()), if deadline.is_some() => {
                if conn.deadline(limits).is_some_and(|d| d <= Instant::now()) {
                    let why = if conn.seen.load(Ordering::Acquire) {
                        "idle (no request in progress) for `proxies.idle_timeout_ms`"
                    } else {
                        "no request within `proxies.first_request_timeout_ms` of the handshake"
                    };
                    tracing::debug!(%remote, "proxy connection closed: {why}");
                    served.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), served.as_mut()).await;
                    return;
                }
            }
        }
    }
}

async fn route(
    shared: Arc<Shared>,
    state: &Arc<Listener>,
    peer: Peer,
    remote: SocketAddr,
    req: Request<Incoming>,
    in_progress: &mut InProgress,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    if method == Method::POST && path == "/v1/bootstrap" {
        return bootstrap(&shared, state, req.into_body()).await;
    }
    let (id, serial) = match &peer {
        Peer::Identified(id, serial) => (id.clone(), serial.clone()),
        Peer::Anonymous => {
            return body::error(StatusCode::UNAUTHORIZED, "a client certificate is required")
        }
        Peer::Refused(why) => return body::error(StatusCode::FORBIDDEN, why),
    };
    // The control plane's own name is never a client's (only a certificate issued outside
    // the control plane could carry it).
    if id.path().trim_start_matches('/') == crate::tls::CONTROL_SERVICE {
        return body::error(
            StatusCode::FORBIDDEN,
            crate::api::reserved(crate::tls::CONTROL_SERVICE),
        );
    }
    if let Some(why) = shared.revoked(&serial) {
        tracing::warn!(spiffe_id = %id, %serial, path = %path.escape_debug(), "refused: the enrolling join token was revoked");
        return body::error(StatusCode::FORBIDDEN, why);
    }
    // Requests in progress per certificate, over all of its connections.
    if !state.enter(&serial) {
        state.refusal(
            &state.refused_requests,
            format_args!(
                "proxies listener: request of {id} (serial {serial}) refused: `proxies.max_streams_per_identity` ({}) in progress",
                state.limits.max_streams_per_identity
            ),
        );
        return body::error(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "this certificate has {} requests in progress, the most allowed",
                state.limits.max_streams_per_identity
            ),
        );
    }
    in_progress.identity = Some((Arc::clone(state), serial.clone()));
    let service = id.path().trim_start_matches('/').to_owned();
    match (method, path.as_str()) {
        (Method::POST, "/v1/renew") => renew(&shared, state, &id, &serial, req.into_body()).await,
        (Method::POST, "/v1/stream") => stream(shared, &id, serial, remote, req.into_body()),
        (Method::GET, p) if p.starts_with("/v1/modules/") => {
            module(&shared, &service, &p["/v1/modules/".len()..])
        }
        _ => body::error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {}", path.escape_debug()),
        ),
    }
}

#[derive(Deserialize)]
struct BootstrapRequest {
    service: String,
    token: String,
    csr_pem: String,
}

#[derive(Deserialize)]
struct RenewRequest {
    csr_pem: String,
}

async fn bootstrap(shared: &Shared, state: &Listener, body: Incoming) -> Response<Body> {
    let req: BootstrapRequest = match read_json(state, body).await {
        Ok(r) => r,
        Err(e) => return e,
    };
    if req.service == crate::tls::CONTROL_SERVICE {
        return body::error(StatusCode::FORBIDDEN, crate::api::reserved(&req.service));
    }
    // The name first: a request that cannot name a service spends no use of a token.
    let id = match shared.trust_domain.service(&req.service) {
        Ok(id) => id,
        Err(e) => return body::error(StatusCode::BAD_REQUEST, e),
    };
    if let Err(refused) = shared.tokens.redeem(&req.service, &req.token) {
        // The service name comes from the client: logged escaped (`?`), so it cannot forge
        // log lines.
        tracing::warn!(service = ?req.service, reason = %refused, "bootstrap refused");
        return body::error(
            StatusCode::FORBIDDEN,
            format!("{refused} for service `{}`", req.service.escape_debug()),
        );
    }
    sign(shared, &id, &req.csr_pem, Some(token_id(&req.token)))
}

async fn renew(
    shared: &Shared,
    state: &Listener,
    id: &SpiffeId,
    serial: &str,
    body: Incoming,
) -> Response<Body> {
    // The new certificate descends from the same enrollment as the one presented (none for
    // an operator-issued certificate).
    let enrolled_by = shared.enrollments.of(serial).map(|e| e.token_id);
    match read_json::<RenewRequest>(state, body).await {
        Ok(req) => sign(shared, id, &req.csr_pem, enrolled_by),
        Err(e) => e,
    }
}

/// Signs `csr_pem` for `id`; with `enrolled_by`, records the new serial under that join
/// token (before answering, so a revocation never misses a certificate it produced).
fn sign(
    shared: &Shared,
    id: &SpiffeId,
    csr_pem: &str,
    enrolled_by: Option<String>,
) -> Response<Body> {
    match shared.ca.sign_csr(csr_pem, id, shared.config.cert_ttl) {
        Ok(signed) => {
            if let Some(token_id) = enrolled_by {
                let enrollment = crate::state::Enrollment {
                    token_id,
                    service: id.path().trim_start_matches('/').to_owned(),
                    expires_at: crate::policy::unix_secs(signed.info.not_after),
                };
                if let Err(e) = shared.enrollments.record(&signed.info.serial, enrollment) {
                    tracing::error!(error = %e, "cannot record the enrollment; certificate withheld");
                    return body::error(StatusCode::INTERNAL_SERVER_ERROR, e);
                }
            }
            tracing::info!(spiffe_id = %id, serial = %signed.info.serial, "certificate issued");
            body::json(
                StatusCode::OK,
                &serde_json::json!({
                    "cert_pem": signed.cert_pem,
                    "bundle_pem": signed.bundle_pem,
                    "expires_at": mesh_identity::format_utc(signed.info.not_after),
                    "spiffe_id": id.to_string(),
                }),
            )
        }
        Err(e) => body::error(
            StatusCode::BAD_REQUEST,
            format!("cannot sign the request: {e}"),
        ),
    }
}

/// Reads a small JSON body: at most [`MAX_REQUEST_BODY`] bytes, all of them within
/// `proxies.first_request_timeout_ms` (a body trickled byte by byte holds nothing for long).
async fn read_json<T: serde::de::DeserializeOwned>(
    state: &Listener,
    body: Incoming,
) -> Result<T, Response<Body>> {
    let bytes = tokio::time::timeout(
        state.limits.first_request_timeout,
        body::read(body, MAX_REQUEST_BODY),
    )
    .await
    .map_err(|_| {
        body::error(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time",
        )
    })?
    .map_err(|e| body::error(StatusCode::BAD_REQUEST, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| body::error(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
}

/// A module of the caller's slice: one that `service`'s proxies may be told to load. Any other
/// digest is "no module" (404), whether the policy has it or not.
fn module(shared: &Shared, service: &str, digest: &str) -> Response<Body> {
    let digest = digest.to_ascii_lowercase();
    let found = shared.policy.load_full().and_then(|current| {
        let slice = shared.slices.get(service, &current, &shared.registry)?;
        if !slice.pins_module(&digest) {
            if current.modules.contains_key(&digest) {
                tracing::warn!(%service, digest = %digest.escape_debug(), "module refused: not in the slice of the caller's service");
            }
            return None;
        }
        current.modules.get(&digest).cloned()
    });
    match found {
        Some(bytes) => {
            let mut r = Response::new(Body::Full(Some(bytes)));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/wasm"),
            );
            r
        }
        None => body::error(
            StatusCode::NOT_FOUND,
            format!(
                "no module {} in the slice of `{service}`",
                digest.escape_debug()
            ),
        ),
    }
}

fn stream(
    shared: Arc<Shared>,
    id: &SpiffeId,
    serial: String,
    remote: SocketAddr,
    body: Incoming,
) -> Response<Body> {
    // `path()` is `/<service>`.
    let service = id.path().trim_start_matches('/').to_owned();
    // Two slots: a table is two buffers (header and the shared payload).
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(Session::new(shared, service, serial, remote, tx).run(body));
    let mut r = Response::new(Body::Channel(rx));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-mesh-frames"),
    );
    r
}

#[derive(Deserialize)]
struct Hello {
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    inbound: Option<String>,
    #[serde(default = "yes")]
    healthy: bool,
    #[serde(default)]
    applied: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct Ack {
    checksum: String,
}

#[derive(Deserialize)]
struct Nack {
    checksum: String,
    #[serde(default)]
    reason: String,
}

/// One proxy's stream.
struct Session {
    shared: Arc<Shared>,
    service: String,
    /// The client certificate's serial: the stream ends when its enrollment is revoked.
    serial: String,
    id: u64,
    tx: mpsc::Sender<Bytes>,
    /// The checksum the proxy has or was last sent.
    sent: Option<String>,
    /// The proxy's hello reported a table it runs (`applied` not null): during the warm-up
    /// it keeps that table rather than get a slice with a half-refilled registry.
    returning: bool,
}

impl Session {
    fn new(
        shared: Arc<Shared>,
        service: String,
        serial: String,
        remote: SocketAddr,
        tx: mpsc::Sender<Bytes>,
    ) -> Session {
        let id = shared.registry.connect(&service, remote);
        tracing::debug!(%service, %remote, id, "proxy subscribed");
        Session {
            shared,
            service,
            serial,
            id,
            tx,
            sent: None,
            returning: false,
        }
    }

    async fn run(mut self, mut body: Incoming) {
        let mut changes = self.shared.hub.subscribe(&self.service);
        let mut revocations = self.shared.revocations.subscribe();
        // The proxy's listeners refuse revoked certificates from the start of the stream.
        // An empty list is not sent: a proxy's list only ever loses serials that have
        // expired, which every handshake refuses anyway.
        if !self.shared.revoked_serials().is_empty()
            && self.tx.send(revocation_list(&self.shared)).await.is_err()
        {
            self.shared.registry.disconnect(self.id);
            return;
        }
        let mut buf = BytesMut::new();
        let mut hello = false;
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
        loop {
            tokio::select! {
                frame = body.frame() => {
                    let Some(Ok(frame)) = frame else { break };
                    let Ok(data) = frame.into_data() else { continue };
                    buf.extend_from_slice(&data);
                    let mut closed = false;
                    loop {
                        // The header is checked against its kind's limit before any of the
                        // payload is waited for: a stream's buffer never holds more than
                        // `frames::MAX_FROM_PROXY` and one chunk.
                        if let Err(why) = frames::check_header(&buf) {
                            tracing::warn!(service = %self.service, serial = %self.serial, reason = %why, "ending the stream: a frame above its kind's limit");
                            closed = true;
                            break;
                        }
                        match frames::next(&mut buf) {
                            Ok(Some(frames::Frame { kind, payload })) => {
                                if !self.handle(kind, &payload, &mut hello).await {
                                    closed = true;
                                    break;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                tracing::warn!(service = %self.service, error = %e, "bad frame; closing the stream");
                                closed = true;
                                break;
                            }
                        }
                    }
                    if closed { break }
                }
                changed = changes.changed(), if hello => {
                    if changed.is_err() || !self.push().await { break }
                }
                changed = revocations.changed() => {
                    if changed.is_err() { break }
                    if let Some(why) = self.shared.revoked(&self.serial) {
                        tracing::warn!(service = %self.service, serial = %self.serial, reason = %why, "ending the stream: its certificate was revoked");
                        break;
                    }
                    if self.tx.send(revocation_list(&self.shared)).await.is_err() { break }
                }
                _ = ping.tick() => {
                    if self.tx.send(frames::frame(frames::PING, b"")).await.is_err() { break }
                }
                () = self.tx.closed() => break,
            }
        }
        self.shared.registry.disconnect(self.id);
        tracing::debug!(service = %self.service, id = self.id, "proxy unsubscribed");
    }

    /// Handles one frame from the proxy; `false` when the stream should close.
    async fn handle(&mut self, kind: u8, payload: &[u8], hello_seen: &mut bool) -> bool {
        match kind {
            frames::HELLO => {
                let Ok(hello) = serde_json::from_slice::<Hello>(payload) else {
                    tracing::warn!(service = %self.service, "malformed hello");
                    return false;
                };
                if hello.service.as_deref().is_some_and(|s| s != self.service) {
                    tracing::warn!(certificate = %self.service, hello = ?hello.service, "hello names another service than the certificate; the certificate wins");
                }
                let inbound = hello.inbound.filter(|a| {
                    let ok = a.parse::<SocketAddr>().is_ok();
                    if !ok {
                        tracing::warn!(service = %self.service, inbound = %a, "hello: inbound is not an address; not registered");
                    }
                    ok
                });
                let first = !*hello_seen;
                self.shared
                    .registry
                    .hello(self.id, inbound, hello.healthy, hello.applied.clone());
                if first {
                    *hello_seen = true;
                    self.returning = hello.applied.is_some();
                    self.sent = hello.applied;
                    return self.push().await;
                }
                true
            }
            frames::ACK => {
                if let Ok(ack) = serde_json::from_slice::<Ack>(payload) {
                    self.shared.registry.ack(self.id, ack.checksum);
                }
                true
            }
            frames::NACK => {
                if let Ok(nack) = serde_json::from_slice::<Nack>(payload) {
                    tracing::warn!(service = %self.service, checksum = ?nack.checksum, reason = ?nack.reason, "proxy refused a table");
                    self.shared
                        .registry
                        .nack(self.id, nack.checksum, nack.reason);
                }
                true
            }
            frames::TRAFFIC => {
                match serde_json::from_slice(payload) {
                    Ok(report) => self.traffic(report),
                    Err(e) => tracing::debug!(error = %e, "malformed traffic report"),
                }
                true
            }
            // Pings, and kinds a newer proxy may send.
            _ => true,
        }
    }

    /// Keeps the lines of a traffic report that name services and routes of this proxy's
    /// own slice (what its certificate's service can call): a line naming any other is a
    /// figure it cannot have measured, and is dropped, counted and logged.
    fn traffic(&self, report: crate::traffic::Report) {
        let slice = self.shared.policy.load_full().and_then(|current| {
            self.shared
                .slices
                .get(&self.service, &current, &self.shared.registry)
        });
        let allowed = |service: &str, route: Option<&str>| {
            slice
                .as_ref()
                .is_some_and(|s| s.names_route(service, route))
        };
        for dropped in self
            .shared
            .traffic
            .record_checked(&self.serial, report, allowed)
        {
            let (foreign, over) = self.shared.traffic.refused();
            tracing::warn!(service = %self.service, serial = %self.serial, ?dropped, refused_foreign = foreign, refused_over_limit = over, "traffic report lines dropped");
        }
    }

    /// Sends the current slice unless the proxy has it; `false` when the stream is gone.
    async fn push(&mut self) -> bool {
        let Some(current) = self.shared.policy.load_full() else {
            return true;
        };
        let Some(slice) = self
            .shared
            .slices
            .get(&self.service, &current, &self.shared.registry)
        else {
            tracing::debug!(service = %self.service, "no such service in the policy; nothing to send");
            return true;
        };
        if self.sent.as_deref() == Some(slice.checksum.as_str()) {
            return true;
        }
        if self.returning && self.shared.warming_up() {
            // The registry is still being refilled after a restart: the proxy's own table
            // has the endpoints of before, this slice may lack some. The end of the warm-up
            // wakes every session (`registry_loop`), and the current slice goes out then.
            tracing::debug!(service = %self.service, id = self.id, "warming up; slice held");
            return true;
        }
        let header = frames::header(frames::TABLE, slice.bytes.len());
        if self.tx.send(header).await.is_err() || self.tx.send(slice.bytes.clone()).await.is_err() {
            return false;
        }
        self.shared.registry.sent(self.id, &slice.checksum);
        self.sent = Some(slice.checksum.clone());
        true
    }
}

/// The `REVOKED` frame: every serial the proxies' listeners must refuse, whole.
fn revocation_list(shared: &Shared) -> Bytes {
    let json = serde_json::json!({ "serials": shared.revoked_serials() });
    frames::frame(frames::REVOKED, json.to_string().as_bytes())
}
