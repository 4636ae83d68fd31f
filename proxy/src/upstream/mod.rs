//! Connections to upstreams: one multiplexed HTTP/2 connection per endpoint (remote sidecars
//! and HTTP/2 or gRPC applications), a keep-alive HTTP/1.1 pool for HTTP/1.1 applications
//! (`h1_pool`, over connections that ACK at once: `quickack`), and one-off HTTP/1.1
//! connections for upgrades.
//!
//! Idle connections are closed after the configured idle time (kept below the servers'
//! own, so the proxy usually closes first). A request that finds its pooled connection
//! closed before it was written goes out again on a fresh one: the keep-alive race is never
//! the client's problem. Every failure says how far the request got ([`Failure`]).
//!
//! Connections to other sidecars are mTLS ([`Transport::connect`]: the server must prove it
//! is the service the request is for); connections to the local application are plain TCP.
//! The HTTP/2 pool is keyed by address *and* expected identity, so a connection verified for
//! one service never carries another's requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::body::Body;
use crate::clock::now_ms;
use crate::errors::{Failure, ProxyError};
use crate::forward::NextHop;
use crate::tls::{Stream, Transport};
use mesh_identity::tls::Alpn;

mod h1_pool;
mod quickack;
mod response_end;

/// Whom a connection goes to, which decides its transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remote<'a> {
    /// The local application: plain TCP.
    App,
    /// A sidecar of this service: mTLS, and it must prove it is this service.
    Sidecar(&'a str),
}

/// An open HTTP/2 connection and when it last carried a request.
#[derive(Debug)]
struct H2Conn {
    sender: SendRequest<Body>,
    last_used_ms: AtomicU64,
}

impl H2Conn {
    fn touch(&self) {
        self.last_used_ms.store(now_ms(), Ordering::Relaxed);
    }
}

/// The HTTP/2 connection to one endpoint, if one is open; the async lock makes concurrent
/// first requests share one connect.
type H2Slot = Arc<tokio::sync::Mutex<Option<Arc<H2Conn>>>>;

/// The HTTP/2 connections to one address, one per expected identity (`None`: the app).
type H2Slots = Vec<(Option<Box<str>>, H2Slot)>;

/// All upstream connections of one proxy.
#[derive(Debug)]
pub struct Upstreams {
    h2: Mutex<HashMap<SocketAddr, H2Slots>>,
    transport: Arc<Transport>,
    h1: h1_pool::H1Pool,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

impl Upstreams {
    /// Upstreams with `connect_timeout` for every new connection (and again for its TLS
    /// handshake); connections idle for `idle_timeout` are closed. Connections to sidecars
    /// go through `transport`.
    pub fn new(
        connect_timeout: Duration,
        idle_timeout: Duration,
        transport: Arc<Transport>,
    ) -> Upstreams {
        Upstreams {
            h2: Mutex::new(HashMap::new()),
            transport,
            h1: h1_pool::H1Pool::new(connect_timeout, idle_timeout),
            connect_timeout,
            idle_timeout,
        }
    }

    /// The transport of connections to sidecars.
    pub fn transport(&self) -> &Arc<Transport> {
        &self.transport
    }

    /// Sends `request` to `addr` (`remote`) in the protocol of `hop`. HTTP/1.1 is only
    /// spoken to the local application.
    pub async fn send(
        &self,
        hop: NextHop,
        addr: SocketAddr,
        remote: Remote<'_>,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, ProxyError> {
        match hop {
            NextHop::Http2 => self.send_h2(addr, remote, request).await,
            NextHop::Http1 => self.send_h1(addr, request).await,
        }
    }

    /// Sends `request` (absolute URI carrying the logical authority) over the HTTP/2
    /// connection to `addr` (`remote`), connecting first if there is none.
    pub async fn send_h2(
        &self,
        addr: SocketAddr,
        remote: Remote<'_>,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let service = match remote {
            Remote::App => None,
            Remote::Sidecar(service) => Some(service),
        };
        let slot = {
            let mut map = self
                .h2
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let slots = map.entry(addr).or_default();
            match slots.iter().find(|(s, _)| s.as_deref() == service) {
                Some((_, slot)) => Arc::clone(slot),
                None => {
                    let slot = H2Slot::default();
                    slots.push((service.map(Box::from), Arc::clone(&slot)));
                    slot
                }
            }
        };
        // A pooled connection that turns out closed before the request was written is
        // replaced once: nothing of the request left, so it is safe whatever the method.
        for _ in 0..2 {
            let conn = self.h2_conn(&slot, addr, remote).await?;
            conn.touch();
            let mut sender = conn.sender.clone();
            if sender.ready().await.is_err() {
                forget(&slot, &conn).await;
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    conn.touch();
                    return Ok(response);
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) => {
                        request = unsent;
                        forget(&slot, &conn).await;
                    }
                    None => {
                        let error = error.into_error();
                        return Err(ProxyError::upstream(h2_failure(&error), describe(&error)));
                    }
                },
            }
        }
        Err(ProxyError::upstream(
            Failure::NotSent,
            "the connection closed before the request was written",
        ))
    }

    /// The open connection of `slot`, or a new one.
    async fn h2_conn(
        &self,
        slot: &H2Slot,
        addr: SocketAddr,
        remote: Remote<'_>,
    ) -> Result<Arc<H2Conn>, ProxyError> {
        let mut guard = slot.lock().await;
        if let Some(conn) = guard.as_ref() {
            if !conn.sender.is_closed() {
                return Ok(Arc::clone(conn));
            }
        }
        // Boxed: connecting is rare, and inline its future would enlarge every request's.
        let conn = Box::pin(self.connect_h2(addr, remote, Arc::downgrade(slot))).await?;
        *guard = Some(Arc::clone(&conn));
        Ok(conn)
    }

    async fn connect_h2(
        &self,
        addr: SocketAddr,
        remote: Remote<'_>,
        slot: Weak<tokio::sync::Mutex<Option<Arc<H2Conn>>>>,
    ) -> Result<Arc<H2Conn>, ProxyError> {
        let stream = self.connect(addr, remote, Alpn::H2).await?;
        // Set deliberately against a hostile peer: the response header list as large as a
        // request's may be at the default limits (60 KiB and 100 fields; hyper's default is
        // 16 KiB, which failed larger heads the application may send as 502), streams the
        // peer resets or makes us reset bounded (h2's defaults), 400 KiB buffered per stream.
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .adaptive_window(true)
            .max_header_list_size(UPSTREAM_H2_MAX_HEADER_LIST)
            .max_concurrent_reset_streams(50)
            .max_local_error_reset_streams(1024)
            .max_send_buf_size(400 * 1024)
            .keep_alive_interval(Duration::from_secs(30))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| connect_failed(addr, e))?;
        let conn = Arc::new(H2Conn {
            sender,
            last_used_ms: AtomicU64::new(now_ms()),
        });
        let reaper = reap_when_idle(slot, Arc::downgrade(&conn), self.idle_timeout);
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                ended = &mut connection => {
                    if let Err(error) = ended {
                        tracing::debug!(%addr, %error, "upstream h2 connection ended");
                    }
                    return;
                }
                () = reaper => {}
            }
            // Idle: the pool let go of it, so it closes once its last streams end.
            tracing::debug!(%addr, "closing an idle upstream h2 connection");
            if let Err(error) = connection.await {
                tracing::debug!(%addr, %error, "upstream h2 connection ended");
            }
        });
        Ok(conn)
    }

    /// Sends `request` (origin-form URI, `Host` set) over a pooled HTTP/1.1 connection to
    /// the application at `addr`.
    pub async fn send_h1(
        &self,
        addr: SocketAddr,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let response = self.h1.send(addr, request).await?;
        check_response_framing(&response)?;
        Ok(response)
    }

    /// Sends an upgrade request over a new HTTP/1.1 connection (to a sidecar: mTLS with
    /// ALPN `http/1.1`) that stays open for the upgraded protocol.
    pub async fn send_upgrade(
        &self,
        addr: SocketAddr,
        remote: Remote<'_>,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let stream = self.connect(addr, remote, Alpn::Http1).await?;
        let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| connect_failed(addr, e))?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%addr, %error, "upgraded connection ended");
            }
        });
        sender
            .send_request(request)
            .await
            .map_err(|e| ProxyError::upstream(Failure::Reset, e))
    }

    /// Opens a connection to `remote` at `addr`: TCP within the connect timeout, then to a
    /// sidecar the mTLS handshake (offering `alpn`) within the connect timeout again.
    async fn connect(
        &self,
        addr: SocketAddr,
        remote: Remote<'_>,
        alpn: Alpn,
    ) -> Result<Stream, ProxyError> {
        let tcp = connect_tcp(addr, self.connect_timeout).await?;
        match remote {
            Remote::App => Ok(Stream::Plain(tcp)),
            Remote::Sidecar(service) => {
                self.transport
                    .connect(tcp, addr, service, alpn, self.connect_timeout)
                    .await
            }
        }
    }
}

/// Opens a TCP connection to `addr` within `limit`, with `TCP_NODELAY`.
async fn connect_tcp(addr: SocketAddr, limit: Duration) -> Result<TcpStream, ProxyError> {
    let stream = tokio::time::timeout(limit, TcpStream::connect(addr))
        .await
        .map_err(|_| connect_failed(addr, "connect timeout"))?
        .map_err(|e| connect_failed(addr, e))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// A connection to `addr` that could not be opened (or handshaken), and why.
fn connect_failed(addr: SocketAddr, reason: impl std::fmt::Display) -> ProxyError {
    ProxyError::Connect {
        addr,
        reason: reason.to_string(),
    }
}

/// The largest response header list taken from another sidecar: 60 KiB and 32 bytes of h2's
/// accounting for each of 100 fields, as the default `[limits]` admit for a request.
const UPSTREAM_H2_MAX_HEADER_LIST: u32 = 60 * 1024 + 100 * 32;

/// Responses from the application refused for their framing (`mesh_upstream_bad_responses_total`).
pub static BAD_RESPONSES: AtomicU64 = AtomicU64::new(0);

/// An application's response with `Content-Length` beside `Transfer-Encoding`: hyper reads
/// the body as chunked and keeps both headers, so the next hop would get a length that is
/// not the body's. Refused before any byte of it is forwarded (502 `upstream-bad-response`).
fn check_response_framing<B>(response: &Response<B>) -> Result<(), ProxyError> {
    let headers = response.headers();
    if headers.contains_key(http::header::TRANSFER_ENCODING)
        && headers.contains_key(http::header::CONTENT_LENGTH)
    {
        BAD_RESPONSES.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("the application answered with Content-Length and Transfer-Encoding");
        return Err(ProxyError::UpstreamResponse(
            "Content-Length with Transfer-Encoding",
        ));
    }
    Ok(())
}

/// Drops `conn` from `slot` if it is still the slot's connection.
async fn forget(slot: &H2Slot, conn: &Arc<H2Conn>) {
    let mut guard = slot.lock().await;
    if guard.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
        *guard = None;
    }
}

/// Returns once `conn` has carried no request for `idle`, after taking it out of `slot`;
/// or when the connection is gone already.
async fn reap_when_idle(
    slot: Weak<tokio::sync::Mutex<Option<Arc<H2Conn>>>>,
    conn: Weak<H2Conn>,
    idle: Duration,
) {
    let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX).max(1);
    loop {
        let Some(current) = conn.upgrade() else {
            return;
        };
        let idle_for = now_ms().saturating_sub(current.last_used_ms.load(Ordering::Relaxed));
        if idle_for >= idle_ms {
            if let Some(slot) = slot.upgrade() {
                forget(&slot, &current).await;
            }
            return;
        }
        drop(current);
        tokio::time::sleep(Duration::from_millis(idle_ms - idle_for)).await;
    }
}

/// How far an HTTP/2 request got, from hyper's error and the `h2` error beneath it.
fn h2_failure(error: &hyper::Error) -> Failure {
    if error.is_canceled() {
        // The connection ended while the request waited to be dispatched.
        return Failure::NotSent;
    }
    match find_source::<h2::Error>(error) {
        // A GOAWAY fails only the streams above its last processed id.
        Some(e) if e.is_go_away() && e.is_remote() => Failure::GoAway,
        Some(e) if e.reason() == Some(h2::Reason::REFUSED_STREAM) => Failure::Refused,
        _ => Failure::Reset,
    }
}

/// The first error of type `T` in `error`'s source chain, `error` included.
fn find_source<'a, T: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// An error with its causes, for logs and messages.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(e) = current {
        text.push_str(": ");
        text.push_str(&e.to_string());
        current = e.source();
    }
    text
}

impl crate::forward::Target<'_> {
    /// Whom the tries of this target connect to: a cluster's endpoints are the sidecars of
    /// its service; a fixed address is the local application.
    pub fn remote(&self) -> Remote<'_> {
        match self {
            crate::forward::Target::Cluster { cluster, .. } => Remote::Sidecar(cluster.name()),
            crate::forward::Target::Fixed(_) => Remote::App,
        }
    }
}
