//! Helpers for the resilience tests: a [`Server`] whose behaviour the test turns at run
//! time (slow, failing a share of requests, hanging, unhealthy, closing idle connections,
//! killed and restarted on the same address), load that records every outcome, a local
//! `dnsmasq` ([`Dnsmasq`]), and a lock that keeps timing-sensitive tests from running at once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

use crate::body::{empty, full, Body};
use crate::client::{h1_request, Reply, H1};

mod dnsmasq;

pub use dnsmasq::Dnsmasq;

/// Serializes the tests whose numbers depend on timing or on the CPU being theirs.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// What a [`Server`] does, changed at run time.
#[derive(Debug, Default)]
pub struct Knobs {
    /// Every answer waits this long first.
    pub delay_ms: AtomicU64,
    /// This share (percent) of requests get 503, in a fixed pseudo-random sequence.
    pub fail_percent: AtomicU32,
    /// Requests get no answer at all.
    pub hang: AtomicBool,
    /// `/healthz` answers 503.
    pub unhealthy: AtomicBool,
    /// POSTs get 503 (after their body was read).
    pub fail_posts: AtomicBool,
    /// gRPC calls get a trailers-only UNAVAILABLE (HTTP 200, `grpc-status: 14`).
    pub grpc_unavailable: AtomicBool,
    /// GETs get a head with `content-length: 10` and 3 bytes, then 50 ms later the body
    /// fails (HTTP/2: RST_STREAM), as from a server that dies mid-response.
    pub cut_body: AtomicBool,
}

/// What a [`Server`] has seen.
#[derive(Debug, Default)]
pub struct Counts {
    /// Requests other than health checks.
    pub requests: AtomicU64,
    /// Health checks (`/healthz`).
    pub probes: AtomicU64,
    /// 503s given on purpose.
    pub failed: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Body lengths of the POSTs received.
    pub post_bodies: Mutex<Vec<usize>>,
}

/// A backend on loopback answering `x-served-by: NAME` (HTTP/1.1 and h2c on one port):
/// the endpoint behind a sidecar, or the endpoint itself when a table lists it directly.
#[derive(Debug)]
pub struct Server {
    name: String,
    addr: SocketAddr,
    knobs: Arc<Knobs>,
    counts: Arc<Counts>,
    idle_close: Option<Duration>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Server {
    /// A server on a free port of 127.0.0.1.
    pub async fn start(name: &str) -> Server {
        Server::start_on(name, SocketAddr::from(([127, 0, 0, 1], 0)), None).await
    }

    /// A server on `addr` (port 0: any) that closes connections idle for `idle_close`.
    pub async fn start_on(name: &str, addr: SocketAddr, idle_close: Option<Duration>) -> Server {
        Server::try_start_on(name, addr, idle_close)
            .await
            .unwrap_or_else(|e| panic!("server {name}: bind {addr}: {e}"))
    }

    /// [`Server::start_on`], or the error of binding `addr` (such as a port in use).
    pub async fn try_start_on(
        name: &str,
        addr: SocketAddr,
        idle_close: Option<Duration>,
    ) -> std::io::Result<Server> {
        let mut server = Server {
            name: name.to_string(),
            addr,
            knobs: Arc::new(Knobs::default()),
            counts: Arc::new(Counts::default()),
            idle_close,
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        let listener = TcpListener::bind(addr).await?;
        server.addr = listener.local_addr()?;
        server.serve(listener);
        Ok(server)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its name (the `x-served-by` of its answers).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it does.
    pub fn knobs(&self) -> &Knobs {
        &self.knobs
    }

    /// What it has seen.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Requests seen (health checks aside).
    pub fn requests(&self) -> u64 {
        self.counts.requests.load(Ordering::SeqCst)
    }

    /// Kills it: stops accepting and closes every connection, as a crashed process would.
    pub fn kill(&self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }

    /// Starts it again on the same address after [`Server::kill`].
    pub async fn restart(&self) {
        let started = Instant::now();
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if started.elapsed() < Duration::from_secs(5) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("server {}: bind {} again: {e}", self.name, self.addr),
            }
        };
        self.serve(listener);
    }

    fn serve(&self, listener: TcpListener) {
        let shared = Arc::new(Shared {
            name: self.name.clone(),
            knobs: Arc::clone(&self.knobs),
            counts: Arc::clone(&self.counts),
            sequence: AtomicU64::new(0),
        });
        let tasks = Arc::clone(&self.tasks);
        let idle_close = self.idle_close;
        let accept = tokio::spawn({
            let tasks = Arc::clone(&tasks);
            async move {
                let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    shared.counts.connections.fetch_add(1, Ordering::SeqCst);
                    let connection = tokio::spawn(connection(
                        Arc::clone(&builder),
                        stream,
                        Arc::clone(&shared),
                        idle_close,
                    ));
                    let mut tasks = lock(&tasks);
                    tasks.retain(|t| !t.is_finished());
                    tasks.push(connection.abort_handle());
                }
            }
        });
        lock(&tasks).push(accept.abort_handle());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: tokio::net::TcpStream,
    shared: Arc<Shared>,
    idle_close: Option<Duration>,
) {
    let busy = Arc::new(AtomicUsize::new(0));
    let last = Arc::new(Mutex::new(Instant::now()));
    let service = {
        let (busy, last) = (Arc::clone(&busy), Arc::clone(&last));
        service_fn(move |request| {
            let shared = Arc::clone(&shared);
            let (busy, last) = (Arc::clone(&busy), Arc::clone(&last));
            busy.fetch_add(1, Ordering::SeqCst);
            async move {
                let response = shared.handle(request).await;
                *lock(&last) = Instant::now();
                busy.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let Some(idle) = idle_close else {
        let _ = connection.await;
        return;
    };
    // Close the connection once it has carried no request for `idle`, as servers with a
    // keep-alive timeout do (HTTP/1.1: close; HTTP/2: GOAWAY, then close).
    let mut closing = false;
    loop {
        let quiet = lock(&last).elapsed();
        let wait = if busy.load(Ordering::SeqCst) > 0 {
            idle
        } else {
            idle.saturating_sub(quiet)
        };
        tokio::select! {
            _ = connection.as_mut() => return,
            () = tokio::time::sleep(wait), if !closing => {
                if busy.load(Ordering::SeqCst) == 0 && lock(&last).elapsed() >= idle {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

struct Shared {
    name: String,
    knobs: Arc<Knobs>,
    counts: Arc<Counts>,
    sequence: AtomicU64,
}

impl Shared {
    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        if request.uri().path() == "/healthz" {
            self.counts.probes.fetch_add(1, Ordering::SeqCst);
            let status = if self.knobs.unhealthy.load(Ordering::SeqCst) {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            return self.answer(status);
        }
        self.counts.requests.fetch_add(1, Ordering::SeqCst);
        let grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if request.method() == Method::POST {
            let length = request
                .into_body()
                .collect()
                .await
                .map_or(0, |b| b.to_bytes().len());
            lock(&self.counts.post_bodies).push(length);
            if self.knobs.fail_posts.load(Ordering::SeqCst) {
                self.counts.failed.fetch_add(1, Ordering::SeqCst);
                return self.answer(StatusCode::SERVICE_UNAVAILABLE);
            }
            if grpc {
                let unavailable = self.knobs.grpc_unavailable.load(Ordering::SeqCst);
                if unavailable {
                    self.counts.failed.fetch_add(1, Ordering::SeqCst);
                }
                return self.grpc_answer(if unavailable { 14 } else { 0 });
            }
            return self.answer(StatusCode::OK);
        }
        if self.knobs.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let delay = self.knobs.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.knobs.cut_body.load(Ordering::SeqCst) {
            self.counts.failed.fetch_add(1, Ordering::SeqCst);
            return self.cut_answer();
        }
        let n = self.sequence.fetch_add(1, Ordering::SeqCst);
        let percent = u64::from(self.knobs.fail_percent.load(Ordering::SeqCst));
        if percent > 0 && splitmix(n ^ seed(&self.name)) % 100 < percent {
            self.counts.failed.fetch_add(1, Ordering::SeqCst);
            return self.answer(StatusCode::SERVICE_UNAVAILABLE);
        }
        self.answer(StatusCode::OK)
    }

    /// A trailers-only gRPC answer: the status in the head, no message.
    fn grpc_answer(&self, code: u32) -> Response<Body> {
        let mut response = self.answer(StatusCode::OK);
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", http::HeaderValue::from(code));
        *response.body_mut() = empty();
        response
    }

    /// A 200 whose body fails after 3 of its 10 bytes.
    fn cut_answer(&self) -> Response<Body> {
        let (tx, body) = crate::body::channel(2);
        let _ = tx.try_send(Ok(hyper::body::Frame::data(bytes::Bytes::from_static(
            b"cut",
        ))));
        // Later, so that the head and the first bytes have gone out (a reset queued with
        // them would discard them: a failure before the head, which any retry covers).
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = tx.send(Err("the server died mid-body".into())).await;
        });
        let mut response = self.answer(StatusCode::OK);
        *response.body_mut() = body;
        response.headers_mut().insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from_static("10"),
        );
        response
    }

    fn answer(&self, status: StatusCode) -> Response<Body> {
        let mut response = Response::new(full(self.name.clone()));
        *response.status_mut() = status;
        if let Ok(name) = http::HeaderValue::from_str(&self.name) {
            response.headers_mut().insert("x-served-by", name);
        }
        response
    }
}

fn seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// SplitMix64: a fixed, well-spread sequence for "fails 30% of requests".
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One request's result as the client saw it.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// When it was sent, from the start of the load.
    pub at: Duration,
    /// How long it took.
    pub elapsed: Duration,
    /// The status.
    pub status: u16,
    /// The server that answered (`x-served-by`), if one did.
    pub served_by: Option<String>,
    /// The proxy's `x-mesh-error`, if it answered itself.
    pub mesh_error: Option<String>,
    /// The proxy's `x-mesh-retries`.
    pub retries: u32,
}

impl Outcome {
    fn of(reply: &Reply, at: Duration, elapsed: Duration) -> Outcome {
        Outcome {
            at,
            elapsed,
            status: reply.status.as_u16(),
            served_by: reply.header("x-served-by").map(str::to_string),
            mesh_error: reply.mesh_error().map(str::to_string),
            retries: reply
                .header("x-mesh-retries")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        }
    }

    /// Whether it succeeded.
    pub fn ok(&self) -> bool {
        self.status == 200
    }
}

/// `GET path` with `Host: host` and the given headers, as an HTTP/1.1 request.
pub fn get(host: &str, path: &str, headers: &[(&str, String)]) -> Request<Body> {
    let mut request = h1_request(Method::GET, host, path);
    for (name, value) in headers {
        request = request.header(*name, value.as_str());
    }
    request
        .body(empty())
        .unwrap_or_else(|e| panic!("request: {e}"))
}

/// Sends `request` on `connection` and reads the outcome (`at`: since the load started).
pub async fn send(connection: &mut H1, request: Request<Body>, at: Duration) -> Outcome {
    let started = Instant::now();
    let reply = connection.fetch(request).await;
    Outcome::of(&reply, at, started.elapsed())
}

/// Sends requests made by `make(i)` from `concurrency` keep-alive connections to `addr`
/// until `total` were sent or `limit` passed, whichever comes first; every outcome, in the
/// order they were sent.
pub async fn load<F>(
    addr: SocketAddr,
    concurrency: usize,
    total: usize,
    limit: Duration,
    make: F,
) -> Vec<Outcome>
where
    F: Fn(usize) -> Request<Body> + Send + Sync + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let make = Arc::new(make);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (next, make) = (Arc::clone(&next), Arc::clone(&make));
        tasks.push(tokio::spawn(async move {
            let mut connection = H1::open(addr).await;
            let mut outcomes = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= total || start.elapsed() >= limit {
                    return outcomes;
                }
                let outcome = send(&mut connection, make(i), start.elapsed()).await;
                outcomes.push((i, outcome));
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        match task.await {
            Ok(part) => all.extend(part),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("load task: {e}"),
        }
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, o)| o).collect()
}

/// How many outcomes each server answered, by name.
pub fn served(outcomes: &[Outcome]) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for o in outcomes {
        if let Some(name) = &o.served_by {
            *counts.entry(name.clone()).or_insert(0) += 1;
        }
    }
    counts
}

/// Waits at most `limit` for `condition`, checking every 20 ms; whether it came true.
pub async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if condition() {
            return true;
        }
        if started.elapsed() >= limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
