//! The application behind a sidecar, written with hyper: HTTP/1.1 and HTTP/2 (h2c) on one
//! port, with upgrades. Its endpoints:
//!
//! | request | answer |
//! | --- | --- |
//! | any path (default) | echo: JSON `{service, method, path, version, headers, body_bytes}`; the request headers `x-echo-sleep-ms` and `x-echo-status` delay it and set its status, and each `x-echo-set: name=value` adds a response header |
//! | `/status/CODE` | the echo with status `CODE` |
//! | `/slow/MS` | the echo after `MS` milliseconds |
//! | `/bytes/N` | `N` bytes, streamed (never held whole) |
//! | `/count` | `{"bytes": N}`: the request body's length, counted as it streams |
//! | `…/drip/N/MS` | `N` bytes (`Content-Length: N`), one every `MS` milliseconds |
//! | `…/stall/K/N` | the head with `Content-Length: N`, `K` bytes, then nothing (the body stalls, the connection stays open) |
//! | `content-type: application/grpc`, `/test.Echo/Unary` | one message back (the request's, prefixed with the service name), `grpc-status: 0` and `grpc-message` in trailers; every gRPC answer names the HTTP version it came over in `x-app-version` |
//! | gRPC `/test.Echo/Stream` | as many messages as the request's message says (a number), 50 ms apart, then trailers |
//! | gRPC `/test.Echo/Fail` | no message; trailers `grpc-status: 5`, `grpc-message: no such item` |
//! | `Upgrade: websocket` | a WebSocket that echoes every text and binary message |

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use crate::body::{channel, drain, full, Body, RepeatBody};
use crate::client::{grpc_frame, grpc_messages};

/// What a backend has seen.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests received.
    pub requests: AtomicU64,
    /// Requests whose response has not been produced yet.
    pub in_flight: AtomicI64,
    /// Responses produced.
    pub completed: AtomicU64,
    /// Each request received, as `METHOD path` in arrival order: what a smuggling test
    /// checks for requests no client sent.
    pub seen: std::sync::Mutex<Vec<String>>,
}

/// A running backend; it stops accepting when dropped.
#[derive(Debug)]
pub struct Backend {
    name: String,
    addr: SocketAddr,
    stats: Arc<Stats>,
    accept: JoinHandle<()>,
}

impl Backend {
    /// Starts a backend that calls itself `name` in its echoes, on a free loopback port.
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("backend {name}: bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("backend {name}: local address: {e}"));
        let stats = Arc::new(Stats::default());
        let shared = Arc::new(Shared {
            name: name.to_string(),
            stats: Arc::clone(&stats),
        });
        let accept = tokio::spawn(async move {
            let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let shared = Arc::clone(&shared);
                let builder = Arc::clone(&builder);
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let shared = Arc::clone(&shared);
                        async move { Ok::<_, Infallible>(shared.handle(request).await) }
                    });
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend {
            name: name.to_string(),
            addr,
            stats,
            accept,
        }
    }

    /// Its address (the sidecar's `[inbound] app`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The name it answers with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it has seen.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

struct Shared {
    name: String,
    stats: Arc<Stats>,
}

/// Counts a request in flight until dropped.
struct InFlight<'a>(&'a Stats);

impl<'a> InFlight<'a> {
    fn new(stats: &'a Stats) -> InFlight<'a> {
        stats.requests.fetch_add(1, Ordering::SeqCst);
        stats.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(stats)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.completed.fetch_add(1, Ordering::SeqCst);
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    response
}

/// `…PREFIX/A/B` as two numbers (`PREFIX` anywhere, so routes may tell paths apart).
fn two_numbers(path: &str, prefix: &str) -> Option<(u64, u64)> {
    let (a, b) = path.split_once(prefix)?.1.split_once('/')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// `sent` bytes of a body declared `declared` long, one every `every`; when `sent` is
/// short of `declared`, the body then stalls for an hour (its sender kept).
fn drip(sent: u64, every: Duration, declared: u64) -> Response<Body> {
    let (tx, body) = channel(1);
    tokio::spawn(async move {
        for _ in 0..sent {
            if !every.is_zero() {
                tokio::time::sleep(every).await;
            }
            if tx
                .send(Ok(Frame::data(bytes::Bytes::from_static(b"x"))))
                .await
                .is_err()
            {
                return;
            }
        }
        if sent < declared {
            // Stalled: ends when the proxy gives up on the body (the receiver is dropped).
            let _ = tokio::time::timeout(Duration::from_secs(3600), tx.closed()).await;
        }
    });
    let mut response = respond(StatusCode::OK, "application/octet-stream", body);
    response
        .headers_mut()
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from(declared));
    response
}

fn header_number(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.parse().ok()
}

impl Shared {
    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let _in_flight = InFlight::new(&self.stats);
        let path = request.uri().path().to_string();
        if let Ok(mut seen) = self.stats.seen.lock() {
            seen.push(format!("{} {path}", request.method()));
        }
        if is_websocket(request.headers()) {
            return websocket(request);
        }
        let grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if grpc {
            return self.grpc(&path, request).await;
        }
        if let Some(n) = path.strip_prefix("/bytes/").and_then(|n| n.parse().ok()) {
            return respond(
                StatusCode::OK,
                "application/octet-stream",
                RepeatBody::boxed(n),
            );
        }
        if let Some((n, ms)) = two_numbers(&path, "/drip/") {
            return drip(n, Duration::from_millis(ms), n);
        }
        if let Some((sent, declared)) = two_numbers(&path, "/stall/") {
            return drip(sent, Duration::ZERO, declared);
        }
        if path == "/count" {
            return match drain(request.into_body()).await {
                Ok((bytes, _)) => respond(
                    StatusCode::OK,
                    "application/json",
                    full(serde_json::json!({ "service": self.name, "bytes": bytes }).to_string()),
                ),
                Err(e) => respond(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    full(format!("body: {e}\n")),
                ),
            };
        }
        let mut status = header_number(request.headers(), "x-echo-status")
            .and_then(|s| StatusCode::from_u16(u16::try_from(s).ok()?).ok())
            .unwrap_or(StatusCode::OK);
        if let Some(code) = path
            .strip_prefix("/status/")
            .and_then(|c| c.parse::<u16>().ok())
        {
            status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
        }
        let sleep = header_number(request.headers(), "x-echo-sleep-ms")
            .or_else(|| path.strip_prefix("/slow/").and_then(|ms| ms.parse().ok()));
        // `x-echo-set: name=value` (repeatable) adds `name: value` to the response.
        let extra: Vec<(String, String)> = request
            .headers()
            .get_all("x-echo-set")
            .iter()
            .filter_map(|v| v.to_str().ok()?.split_once('='))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let mut response = self.echo(request, status, sleep).await;
        for (name, value) in extra {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                response.headers_mut().append(name, value);
            }
        }
        response
    }

    async fn echo(
        &self,
        request: Request<Incoming>,
        status: StatusCode,
        sleep_ms: Option<u64>,
    ) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in &parts.headers {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            headers
                .entry(name.as_str().to_string())
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert(value);
        }
        let body_bytes = drain(body).await.map_or(0, |(n, _)| n);
        if let Some(ms) = sleep_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let echo = serde_json::json!({
            "service": self.name,
            "method": parts.method.as_str(),
            "path": parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            "version": format!("{:?}", parts.version),
            "headers": headers,
            "body_bytes": body_bytes,
        });
        respond(status, "application/json", full(echo.to_string()))
    }

    async fn grpc(&self, path: &str, request: Request<Incoming>) -> Response<Body> {
        let version = format!("{:?}", request.version());
        let body = match request.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                return respond(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    full(format!("body: {e}\n")),
                )
            }
        };
        let messages = grpc_messages(&body).unwrap_or_default();
        let first = messages.first().cloned().unwrap_or_default();
        let (tx, body) = channel(16);
        let name = self.name.clone();
        match path {
            "/test.Echo/Unary" => {
                let mut reply = format!("{name}:").into_bytes();
                reply.extend_from_slice(&first);
                let _ = tx.send(Ok(Frame::data(grpc_frame(&reply)))).await;
                let _ = tx.send(Ok(Frame::trailers(grpc_trailers(0, "ok")))).await;
            }
            "/test.Echo/Stream" => {
                let count: usize = String::from_utf8_lossy(&first).parse().unwrap_or(1);
                tokio::spawn(async move {
                    for i in 0..count {
                        if i > 0 {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        let message = format!("{name}:{i}");
                        if tx
                            .send(Ok(Frame::data(grpc_frame(message.as_bytes()))))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    let _ = tx
                        .send(Ok(Frame::trailers(grpc_trailers(0, "stream done"))))
                        .await;
                });
            }
            _ => {
                let _ = tx
                    .send(Ok(Frame::trailers(grpc_trailers(5, "no such item"))))
                    .await;
            }
        }
        let mut response = respond(StatusCode::OK, "application/grpc", body);
        if let Ok(version) = HeaderValue::from_str(&version) {
            response.headers_mut().insert("x-app-version", version);
        }
        response
    }
}

fn grpc_trailers(status: u32, message: &'static str) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(status));
    trailers.insert("grpc-message", HeaderValue::from_static(message));
    trailers.insert("x-trailer-check", HeaderValue::from_static("intact"));
    trailers
}

fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// Answers 101 and echoes messages on the upgraded connection.
fn websocket(mut request: Request<Incoming>) -> Response<Body> {
    let Some(key) = request.headers().get("sec-websocket-key").cloned() else {
        return respond(
            StatusCode::BAD_REQUEST,
            "text/plain",
            full("no sec-websocket-key\n"),
        );
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(message)) = ws.next().await {
            if message.is_close() {
                break;
            }
            if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                break;
            }
        }
    });
    let mut response = Response::new(crate::body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert("sec-websocket-accept", accept);
    }
    response
}
