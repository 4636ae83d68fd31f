//! The proxies' listener: bootstrap, renewal, modules and the subscription stream, HTTP/2
//! over TLS (docs/control-protocol.md).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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

/// Accepts connections until the task is dropped.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener, acceptor: TlsAcceptor) {
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
        let _ = tcp.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, error = %e, "handshake refused");
                        return;
                    }
                    Err(_) => return,
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
            let service = hyper::service::service_fn(move |req| {
                let shared = Arc::clone(&shared);
                let peer = peer.clone();
                async move { Ok::<_, std::convert::Infallible>(route(shared, peer, remote, req).await) }
            });
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            // Small windows and buffers: a stream carries a table now and then, and
            // memory per connected proxy is what limits how many one process serves.
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .keep_alive_interval(Some(Duration::from_secs(30)))
                .keep_alive_timeout(Duration::from_secs(20))
                .initial_stream_window_size(64 * 1024)
                .initial_connection_window_size(128 * 1024)
                .max_send_buf_size(64 * 1024)
                .max_concurrent_streams(16);
            if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!(%remote, error = %e, "proxy connection closed");
            }
        });
    }
}

async fn route(
    shared: Arc<Shared>,
    peer: Peer,
    remote: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    if method == Method::POST && path == "/v1/bootstrap" {
        return bootstrap(&shared, req.into_body()).await;
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
    match (method, path.as_str()) {
        (Method::POST, "/v1/renew") => renew(&shared, &id, &serial, req.into_body()).await,
        (Method::POST, "/v1/stream") => stream(shared, &id, serial, remote, req.into_body()),
        (Method::GET, p) if p.starts_with("/v1/modules/") => {
            module(&shared, &p["/v1/modules/".len()..])
        }
        _ => body::error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
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

async fn bootstrap(shared: &Shared, body: Incoming) -> Response<Body> {
    let req: BootstrapRequest = match read_json(body).await {
        Ok(r) => r,
        Err(e) => return e,
    };
    if req.service == crate::tls::CONTROL_SERVICE {
        return body::error(StatusCode::FORBIDDEN, crate::api::reserved(&req.service));
    }
    if !shared.tokens.admits(&req.service, &req.token) {
        tracing::warn!(service = %req.service, "bootstrap refused: bad join token");
        return body::error(
            StatusCode::FORBIDDEN,
            format!(
                "invalid or revoked join token for service `{}`",
                req.service
            ),
        );
    }
    let id = match shared.trust_domain.service(&req.service) {
        Ok(id) => id,
        Err(e) => return body::error(StatusCode::BAD_REQUEST, e),
    };
    sign(shared, &id, &req.csr_pem, Some(token_id(&req.token)))
}

async fn renew(shared: &Shared, id: &SpiffeId, serial: &str, body: Incoming) -> Response<Body> {
    // The new certificate descends from the same enrollment as the one presented (none for
    // an operator-issued certificate).
    let enrolled_by = shared.enrollments.of(serial).map(|e| e.token_id);
    match read_json::<RenewRequest>(body).await {
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

async fn read_json<T: serde::de::DeserializeOwned>(body: Incoming) -> Result<T, Response<Body>> {
    let bytes = body::read(body, 64 * 1024)
        .await
        .map_err(|e| body::error(StatusCode::BAD_REQUEST, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| body::error(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
}

fn module(shared: &Shared, digest: &str) -> Response<Body> {
    let found = shared
        .policy
        .load()
        .as_ref()
        .and_then(|c| c.modules.get(&digest.to_ascii_lowercase()).cloned());
    match found {
        Some(bytes) => {
            let mut r = Response::new(Body::Full(Some(bytes)));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/wasm"),
            );
            r
        }
        None => body::error(StatusCode::NOT_FOUND, format!("no module {digest}")),
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
                        tracing::warn!(service = %self.service, serial = %self.serial, reason = %why, "ending the stream: its enrollment was revoked");
                        break;
                    }
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
                    tracing::warn!(service = %self.service, checksum = %nack.checksum, reason = %nack.reason, "proxy refused a table");
                    self.shared
                        .registry
                        .nack(self.id, nack.checksum, nack.reason);
                }
                true
            }
            frames::TRAFFIC => {
                match serde_json::from_slice(payload) {
                    Ok(report) => self.shared.traffic.record(report),
                    Err(e) => tracing::debug!(error = %e, "malformed traffic report"),
                }
                true
            }
            // Pings, and kinds a newer proxy may send.
            _ => true,
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
