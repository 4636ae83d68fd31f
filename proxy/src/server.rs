//! Accept loops: each connection goes through its transport stage first (the inbound
//! listener's TLS handshake or plaintext check, see `tls`), then is served as HTTP/1.1 or
//! HTTP/2 (detected from the connection preface), with upgrades, until shutdown starts; then
//! connections drain. A
//! connection with no request in flight for the idle time is closed gracefully (HTTP/2
//! GOAWAY; HTTP/1.1 close between requests), so idle clients do not hold sockets forever.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::body::Body;
use crate::clock::now_ms;
use crate::framing::{self, HeadLimits};
use crate::metrics::state::ListenerStats;
use prometheus_client::metrics::gauge::Gauge;

/// The connections still open once the accept loop stopped.
#[derive(Debug)]
pub struct Drain {
    open: mpsc::Receiver<()>,
}

impl Drain {
    /// Waits until every connection has ended (each was told to finish when `stop` turned).
    pub async fn shutdown(mut self) {
        // Every connection task holds a sender; `recv` returns `None` once all are gone.
        while self.open.recv().await.is_some() {}
    }
}

/// Requests in flight on one connection and when the last one ended.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    last_ms: AtomicU64,
}

/// Counts a request in flight on its connection until its response body is dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: &Arc<Activity>) -> Busy {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(Arc::clone(activity))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.last_ms.store(now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `listener` with `handler` (plain TCP; the handler gets the peer's address) until
/// `stop` turns true; connections idle for `idle` are closed. Returns the connections still
/// open so the caller can drain them.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    stop: watch::Receiver<bool>,
    idle: Duration,
    stats: ListenerStats,
    limits: HeadLimits,
) -> Drain
where
    H: Fn(SocketAddr, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let accept = |stream: TcpStream, peer: SocketAddr| std::future::ready(Some((stream, peer)));
    serve_with(listener, accept, handler, stop, idle, stats, limits).await
}

/// [`serve`] with a transport stage: each accepted connection first goes through `accept`
/// (in its own task, so a slow handshake holds up no other connection), which gives the
/// stream to serve and what the handler learns about the connection (`C`), or `None` to
/// close it.
pub async fn serve_with<L, A, AF, S, C, H, F>(
    mut listener: L,
    accept: A,
    handler: H,
    mut stop: watch::Receiver<bool>,
    idle: Duration,
    stats: ListenerStats,
    limits: HeadLimits,
) -> Drain
where
    L: Listener,
    A: Fn(L::Stream, SocketAddr) -> AF + Clone + Send + Sync + 'static,
    AF: Future<Output = Option<(S, C)>> + Send + 'static,
    S: AsyncRead + AsyncWrite + crate::framing::AckNow + Unpin + Send + 'static,
    C: Clone + Send + Sync + 'static,
    H: Fn(C, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let (open_tx, open_rx) = mpsc::channel::<()>(1);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Head limits: hyper answers a head beyond its read buffer or with too many lines with
    // 431, and closes a connection whose head has not arrived in time (without an answer:
    // hyper has none for it). The buffer also bounds how much of a body is read at once.
    builder
        .http1()
        .keep_alive(true)
        .half_close(false)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .max_buf_size(
            limits
                .header_bytes
                .max(crate::config::Limits::MIN_HEADER_BYTES),
        )
        .max_headers(limits.headers);
    // HTTP/2 header lists get the same limit (hyper's default is 16 KiB), with h2's 32
    // bytes of accounting per field: a head the HTTP/1 edge admitted also passes the next
    // sidecar's inbound listener instead of failing there with 431.
    let list_size = limits
        .header_bytes
        .saturating_add(limits.headers.saturating_mul(32));
    // HTTP/2 floods, each answered by h2 with a GOAWAY (counted below by its code):
    // rapid reset (CVE-2023-44487: streams the client resets before they are served, h2's
    // default 20, set here), streams the proxy had to reset for the client's errors
    // (1024), CONTINUATION floods (h2 counts CONTINUATION frames and bounds the header
    // block by the header list size), SETTINGS and PING floods (h2 keeps one pending ACK
    // or PONG and reads no further frame until it is written: a client that does not
    // read stalls only itself). Streams are capped per connection; the send buffer per
    // stream is bounded.
    builder
        .http2()
        .adaptive_window(true)
        .max_concurrent_streams(limits.streams)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
        .max_send_buf_size(H2_MAX_SEND_BUF)
        .max_header_list_size(u32::try_from(list_size).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let head_bytes = limits
        .header_bytes
        .max(crate::config::Limits::MIN_HEADER_BYTES);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        // Beyond `max_connections`: closed at once (before any handshake), counted.
        if usize::try_from(stats.open.get()).unwrap_or(0) >= limits.connections {
            stats.refused.inc();
            tracing::debug!(%peer, limit = limits.connections, "connection refused: max_connections");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(now_ms()),
        });
        let handler = handler.clone();
        let accept = accept.clone();
        let builder = Arc::clone(&builder);
        let mut stop = stop.clone();
        let open = open_tx.clone();
        let counted = Open::new(&stats.open);
        let stats = stats.clone();
        tokio::spawn(async move {
            let _counted = counted;
            // The transport stage: TLS handshake, or the plaintext check.
            let Some((stream, conn)) = accept(stream, peer).await else {
                drop(open);
                return;
            };
            // HTTP/1 heads are read from the raw bytes too, for what hyper would resolve
            // without telling (`Content-Length` beside `Transfer-Encoding`).
            let (stream, verdicts) = framing::Sniffed::new(stream, head_bytes);
            let service = {
                let activity = Arc::clone(&activity);
                let cut = stats.cut.clone();
                service_fn(move |mut request: Request<Incoming>| {
                    let busy = Busy::new(&activity);
                    let cut = cut.clone();
                    // Ambiguous framing and an over-long target are refused before any
                    // handler sees the request.
                    let sniffed = if request.version() == http::Version::HTTP_2 {
                        Ok(())
                    } else {
                        verdicts
                            .next()
                            .map_or(Ok(()), |r| Err(crate::errors::ProxyError::Framing(r)))
                    };
                    let pending = match sniffed.and_then(|()| framing::check(&request, &limits)) {
                        Ok(()) => {
                            framing::normalize_host(&mut request);
                            // Boxed: a request's future is large (all the stages below it,
                            // about 8 KiB), and unboxed it would sit, twice, in the future
                            // hyper keeps per HTTP/1 connection (allocated at accept, idle or
                            // not) and copies into a task per HTTP/2 stream.
                            Ok(Box::pin(handler(conn.clone(), request)))
                        }
                        Err(error) => {
                            tracing::debug!(%peer, %error, "request refused");
                            let close = framing::closes_connection(request.version());
                            let mut response = error.into_response();
                            if close {
                                response.headers_mut().insert(
                                    http::header::CONNECTION,
                                    http::HeaderValue::from_static("close"),
                                );
                            }
                            Err(response)
                        }
                    };
                    let switched = Arc::clone(&verdicts);
                    async move {
                        let response = match pending {
                            Ok(response) => response.await,
                            Err(refused) => refused,
                        };
                        if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                            switched.upgraded();
                        }
                        // Not boxed: hyper takes any body type, and this one is a box less
                        // per response than a guard around a watcher.
                        Ok::<_, Infallible>(response.map(|body| Served {
                            body,
                            cut,
                            peer,
                            _busy: busy,
                        }))
                    }
                })
            };
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            let mut connection = std::pin::pin!(connection);
            let mut closing = false;
            loop {
                tokio::select! {
                    ended = connection.as_mut() => {
                        if let Err(error) = ended {
                            if let Some(reason) = h2_goaway(&*error) {
                                stats.h2_error(reason);
                                tracing::info!(%peer, %error, reason, "HTTP/2 connection closed for the client's error");
                            } else {
                                tracing::debug!(%peer, %error, "connection ended with an error");
                            }
                        }
                        break;
                    }
                    _ = stop.changed(), if !closing => {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    () = idle_for(&activity, idle), if !closing => {
                        tracing::debug!(%peer, "closing an idle connection");
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
            drop(open);
        });
    }
    Drain { open: open_rx }
}

/// Where [`serve_with`] takes its connections from: a TCP listener, or (fuzzing, tests)
/// in-memory streams.
pub trait Listener: Send + 'static {
    /// A connection.
    type Stream: Connection + Send + 'static;
    /// The next connection and its peer's address.
    fn accept(
        &mut self,
    ) -> impl Future<Output = std::io::Result<(Self::Stream, SocketAddr)>> + Send;
}

/// An accepted connection.
pub trait Connection {
    /// Sets `TCP_NODELAY` where there is such a thing.
    fn set_nodelay(&self, nodelay: bool) -> std::io::Result<()>;
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    fn accept(&mut self) -> impl Future<Output = std::io::Result<(TcpStream, SocketAddr)>> + Send {
        TcpListener::accept(self)
    }
}

impl Connection for TcpStream {
    fn set_nodelay(&self, nodelay: bool) -> std::io::Result<()> {
        TcpStream::set_nodelay(self, nodelay)
    }
}

/// In-memory connections for [`serve_with`] (the HTTP/1 ingress fuzz target and its corpus
/// replay): each stream sent on the channel is served as an accepted connection from its
/// address. The accept loop waits forever once every sender is gone.
#[doc(hidden)]
pub struct MemoryListener(pub mpsc::Receiver<(tokio::io::DuplexStream, SocketAddr)>);

impl Listener for MemoryListener {
    type Stream = tokio::io::DuplexStream;
    async fn accept(&mut self) -> std::io::Result<(tokio::io::DuplexStream, SocketAddr)> {
        match self.0.recv().await {
            Some(accepted) => Ok(accepted),
            None => std::future::pending().await,
        }
    }
}

impl Connection for tokio::io::DuplexStream {
    fn set_nodelay(&self, _: bool) -> std::io::Result<()> {
        Ok(())
    }
}

/// A response body as served: it logs and counts its failure (the head has gone, so hyper
/// cuts the client's stream — HTTP/1.1: closes the connection before the body's end;
/// HTTP/2: RST_STREAM — and the client can tell the body is not whole), and counts its
/// request in flight on the connection until it is dropped.
struct Served {
    body: Body,
    cut: prometheus_client::metrics::counter::Counter,
    peer: SocketAddr,
    /// Dropped after `body` (fields drop in order): the request ends with its body.
    _busy: Busy,
}

impl hyper::body::Body for Served {
    type Data = bytes::Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Err(error))) = &polled {
            self.cut.inc();
            tracing::warn!(peer = %self.peer, %error, "response cut: its body failed after the head was sent");
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Streams a client may reset before the proxy has accepted them (rapid reset).
const H2_MAX_PENDING_RESETS: usize = 20;
/// Streams the proxy may reset for the client's protocol errors before it sends GOAWAY.
const H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// Bytes buffered for sending per stream (h2's default, 400 KiB).
const H2_MAX_SEND_BUF: usize = 400 * 1024;

/// The GOAWAY code (lower case, as in `mesh_downstream_h2_errors_total`) of a connection
/// h2 closed for the client's error; `None` for I/O errors and the client's own GOAWAY.
fn h2_goaway(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            if !h2.is_go_away() || h2.is_remote() {
                return None;
            }
            let reason = h2.reason()?;
            return Some(match reason {
                h2::Reason::ENHANCE_YOUR_CALM => "enhance_your_calm",
                h2::Reason::PROTOCOL_ERROR => "protocol_error",
                h2::Reason::COMPRESSION_ERROR => "compression_error",
                h2::Reason::FRAME_SIZE_ERROR => "frame_size_error",
                h2::Reason::NO_ERROR => return None,
                _ => "other",
            });
        }
        source = e.source();
    }
    None
}

/// Counts a connection in `mesh_open_connections` until its task ends.
struct Open(Gauge);

impl Open {
    fn new(gauge: &Gauge) -> Open {
        gauge.inc();
        Open(gauge.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Returns once the connection has had no request in flight for `idle`.
async fn idle_for(activity: &Activity, idle: Duration) {
    let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX).max(1);
    loop {
        let quiet = now_ms().saturating_sub(activity.last_ms.load(Ordering::Relaxed));
        if activity.in_flight.load(Ordering::Relaxed) == 0 && quiet >= idle_ms {
            return;
        }
        let wait = if quiet >= idle_ms {
            idle_ms
        } else {
            idle_ms - quiet
        };
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use http::Response;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::watch;

    use super::serve;
    use crate::body::full;

    /// Sends `GET path` and reads until the 2-byte body `ok` has arrived.
    async fn exchange(stream: &mut TcpStream, path: &str) {
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while !seen.ends_with(b"ok") {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "closed before the response: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    }

    #[tokio::test]
    async fn connections_idle_for_the_idle_time_are_closed_and_busy_ones_are_not() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (_stop_tx, stop_rx) = watch::channel(false);
        let handler = |_, request: http::Request<hyper::body::Incoming>| async move {
            if request.uri().path() == "/slow" {
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            Response::new(full("ok"))
        };
        tokio::spawn(serve(
            listener,
            handler,
            stop_rx,
            Duration::from_millis(200),
            crate::metrics::state::ListenerStats::default(),
            crate::framing::HeadLimits::default(),
        ));

        // A request slower than the idle time is answered: busy is not idle.
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        exchange(&mut stream, "/slow").await;
        // Then, with nothing in flight, the connection closes after about the idle time.
        let quiet = Instant::now();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
            .await
            .expect("closed within 2 s")
            .unwrap_or(0);
        assert_eq!(n, 0);
        let after = quiet.elapsed();
        assert!(
            after >= Duration::from_millis(150),
            "closed after {after:?}"
        );
    }
}
