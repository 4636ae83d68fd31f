//! Clients the tests speak through: one keep-alive HTTP/1.1 connection, one HTTP/2
//! prior-knowledge (h2c) connection, and the reply of a request read whole. Every wait is
//! bounded so a hang fails the test instead of blocking CI.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::body::{empty, Body};

/// How long one request may take unless a test says otherwise.
pub const REQUEST_LIMIT: Duration = Duration::from_secs(20);

/// Awaits `future` for at most `limit`; past that the test fails, naming `what`.
pub async fn within<F: Future>(what: &str, limit: Duration, future: F) -> F::Output {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: nothing within {limit:?}"),
    }
}

/// A response read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// The trailers, when the response had any.
    pub trailers: Option<HeaderMap>,
}

impl Reply {
    /// Reads `response` to its end, trailers included.
    pub async fn read(response: Response<Incoming>) -> Result<Reply, hyper::Error> {
        let (parts, body) = response.into_parts();
        let collected = body.collect().await?;
        let trailers = collected.trailers().cloned();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
        })
    }

    /// The body as JSON; fails the test when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "expected a JSON body ({e}), got {} {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The proxy's `x-mesh-error` reason, if it answered itself.
    pub fn mesh_error(&self) -> Option<&str> {
        self.header("x-mesh-error")
    }

    /// A request header as the echo backend saw it.
    pub fn echoed_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_string)
    }

    /// The service of the echo backend that answered.
    pub fn echoed_service(&self) -> String {
        self.json()["service"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// A request for an HTTP/1.1 connection: origin-form target and `Host: host`.
pub fn h1_request(method: Method, host: &str, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, host)
}

/// A request for an HTTP/2 connection: the authority travels in the URI.
pub fn h2_request(method: Method, host: &str, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(format!("http://{host}{path}"))
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One keep-alive HTTP/1.1 connection.
#[derive(Debug)]
pub struct H1 {
    sender: http1::SendRequest<Body>,
}

impl H1 {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<H1> {
        H1::over(connect(addr).await?).await
    }

    /// HTTP/1.1 over an open connection (a TLS stream, say).
    pub async fn over<S>(stream: S) -> std::io::Result<H1>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        Ok(H1 { sender })
    }

    /// Connects to `addr`; fails the test when it cannot.
    pub async fn open(addr: SocketAddr) -> H1 {
        H1::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    /// Sends `request` and returns the response head; the body streams.
    pub async fn send(
        &mut self,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, hyper::Error> {
        self.sender.ready().await?;
        self.sender.send_request(request).await
    }

    /// Sends `request` and reads the reply within [`REQUEST_LIMIT`]; fails the test on error.
    pub async fn fetch(&mut self, request: Request<Body>) -> Reply {
        let what = format!("{} {}", request.method(), request.uri());
        within(&what, REQUEST_LIMIT, async {
            let response = self
                .send(request)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            Reply::read(response)
                .await
                .unwrap_or_else(|e| panic!("{what}: body: {e}"))
        })
        .await
    }

    /// `GET path` with `Host: host`.
    pub async fn get(&mut self, host: &str, path: &str) -> Reply {
        self.fetch(
            h1_request(Method::GET, host, path)
                .body(empty())
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await
    }
}

/// One HTTP/2 connection with prior knowledge (h2c).
#[derive(Debug, Clone)]
pub struct H2 {
    sender: http2::SendRequest<Body>,
}

impl H2 {
    /// Connects to `addr` and does the HTTP/2 handshake.
    pub async fn open(addr: SocketAddr) -> H2 {
        let stream = connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        H2::over(stream).await
    }

    /// The HTTP/2 handshake over an open connection (a TLS stream, say).
    pub async fn over<S>(stream: S) -> H2
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let handshake = http2::handshake(TokioExecutor::new(), TokioIo::new(stream));
        let (sender, connection) = within("h2 handshake", Duration::from_secs(5), handshake)
            .await
            .unwrap_or_else(|e| panic!("h2 handshake: {e}"));
        tokio::spawn(async move {
            let _ = connection.await;
        });
        H2 { sender }
    }

    /// Sends `request` and returns the response head; the body streams.
    pub async fn send(
        &mut self,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, hyper::Error> {
        self.sender.ready().await?;
        self.sender.send_request(request).await
    }

    /// Sends `request` and reads the reply within [`REQUEST_LIMIT`]; fails the test on error.
    pub async fn fetch(&mut self, request: Request<Body>) -> Reply {
        let what = format!("{} {}", request.method(), request.uri());
        within(&what, REQUEST_LIMIT, async {
            let response = self
                .send(request)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            Reply::read(response)
                .await
                .unwrap_or_else(|e| panic!("{what}: body: {e}"))
        })
        .await
    }
}

/// `GET path` with `Host: host` on a new HTTP/1.1 connection to `addr`.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Reply {
    H1::open(addr).await.get(host, path).await
}

/// gRPC's length-prefixed message framing: uncompressed flag, big-endian length, bytes.
pub fn grpc_frame(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(message.len() + 5);
    out.push(0);
    out.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(message);
    Bytes::from(out)
}

/// Splits a gRPC body into its messages; `None` when the framing is broken.
pub fn grpc_messages(mut body: &[u8]) -> Option<Vec<Bytes>> {
    let mut messages = Vec::new();
    while !body.is_empty() {
        let header = body.get(..5)?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let message = body.get(5..5 + len)?;
        messages.push(Bytes::copy_from_slice(message));
        body = &body[5 + len..];
    }
    Some(messages)
}

/// Sends `total` requests (`request(i)` for i in 0..total) over `connections` keep-alive
/// HTTP/1.1 connections to `addr` at once, counting each reply in `done` as it arrives;
/// returns the replies in request order. Each request is bounded by [`REQUEST_LIMIT`].
pub async fn load<F>(
    addr: SocketAddr,
    connections: usize,
    total: usize,
    done: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    request: F,
) -> Vec<Reply>
where
    F: Fn(usize) -> Request<Body> + Send + Sync + 'static,
{
    use std::sync::atomic::Ordering;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let request = std::sync::Arc::new(request);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (next, done, request) = (next.clone(), done.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let mut connection = H1::open(addr).await;
            let mut replies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return replies;
                }
                replies.push((i, connection.fetch(request(i)).await));
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut replies = Vec::with_capacity(total);
    for task in tasks {
        match task.await {
            Ok(part) => replies.extend(part),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("load task: {e}"),
        }
    }
    replies.sort_by_key(|(i, _)| *i);
    replies.into_iter().map(|(_, reply)| reply).collect()
}
