//! What the `http1_ingress` fuzz target runs, shared with its corpus replay
//! (`proxy/tests/fuzz_corpus.rs`): arbitrary bytes on one connection into the sidecar's
//! outbound listener, through the real server path (`server::serve_with`: hyper's HTTP/1.1
//! and HTTP/2 server with the head limits, the framing checks, then `outbound::handle`:
//! routing, authorization of the table, forwarding) over an in-memory connection ([`Wire`])
//! instead of a socket.
//!
//! The sidecar is the `client` service's of `examples/policies/hello.mesh`, compiled once,
//! whose `greeter` endpoints are replaced by a backend on loopback that answers every
//! request with `200 ok`. No input may panic the proxy or leave the connection hanging: the
//! proxy reads the input, then the end of the stream, and must close the connection within
//! [`DEADLINE`]. Whatever comes back to an HTTP/1 input is HTTP/1.1 responses.
//!
//! The end of the input is held back while a request is in flight (from the handler's call to
//! the end of its response body), for at most [`GRACE`]: hyper drops the answer of a request
//! whose client closed its side first (`half_close(false)`, as the proxy serves), and a
//! client that waits for its answer is what the proxy sees in life.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_proxy::server::{self, Connection, Listener};
use mesh_proxy::snapshot::{Registries, Snapshot};
use mesh_proxy::table_watch::Tables;
use mesh_proxy::{cluster, metrics, outbound, retry, tls, upstream, Context};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot, watch};

/// The policy the sidecar runs.
const POLICY: &str = include_str!("../../examples/policies/hello.mesh");

/// The longest the proxy may take to close the connection once it has read the input.
const DEADLINE: Duration = Duration::from_secs(5);

/// The longest the end of the input is held back while a request is in flight (a request
/// whose body the input does not complete would otherwise wait for its route's timeout).
const GRACE: Duration = Duration::from_millis(50);

/// The running sidecar: its runtime and the way to open a connection to it.
struct Ingress {
    runtime: tokio::runtime::Runtime,
    connect: mpsc::Sender<(Wire, SocketAddr)>,
}

/// What a connection and its requests share: the requests in flight, and the reader
/// waiting for them to end.
#[derive(Default)]
struct Flight {
    requests: usize,
    reader: Option<Waker>,
}

/// The handler's view of a connection.
#[derive(Clone)]
struct Conn {
    peer: SocketAddr,
    flight: Arc<Mutex<Flight>>,
}

/// Held from a request's call to the end of its response body.
struct InFlight(Arc<Mutex<Flight>>);

impl InFlight {
    fn new(flight: &Arc<Mutex<Flight>>) -> InFlight {
        flight.lock().expect("flight").requests += 1;
        InFlight(Arc::clone(flight))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut flight = self.0.lock().expect("flight");
        flight.requests -= 1;
        if let Some(reader) = flight.reader.take() {
            reader.wake();
        }
    }
}

/// One in-memory connection: the proxy reads `input`, then its end; what it writes is kept.
/// Dropped (the proxy closed it), it tells the client through `closed`.
struct Wire {
    input: Vec<u8>,
    read: usize,
    output: Arc<Mutex<Vec<u8>>>,
    flight: Arc<Mutex<Flight>>,
    grace: Option<Pin<Box<tokio::time::Sleep>>>,
    closed: Option<oneshot::Sender<()>>,
}

impl AsyncRead for Wire {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.read < this.input.len() {
            let n = buf.remaining().min(this.input.len() - this.read);
            buf.put_slice(&this.input[this.read..this.read + n]);
            this.read += n;
            return Poll::Ready(Ok(()));
        }
        {
            let mut flight = this.flight.lock().expect("flight");
            if flight.requests == 0 {
                return Poll::Ready(Ok(()));
            }
            flight.reader = Some(cx.waker().clone());
        }
        let grace = this
            .grace
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(GRACE)));
        match grace.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.output.lock().expect("output").extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        if let Some(closed) = self.closed.take() {
            let _ = closed.send(());
        }
    }
}

impl Connection for Wire {
    fn set_nodelay(&self, _: bool) -> io::Result<()> {
        Ok(())
    }
}

/// The sidecar's listener: the wires the harness sends.
struct Wires(mpsc::Receiver<(Wire, SocketAddr)>);

/// An in-memory wire has no ACKs to send.
impl mesh_proxy::framing::AckNow for Wire {}

impl Listener for Wires {
    type Stream = Wire;
    async fn accept(&mut self) -> io::Result<(Wire, SocketAddr)> {
        match self.0.recv().await {
            Some(accepted) => Ok(accepted),
            None => std::future::pending().await,
        }
    }
}

fn ingress() -> &'static Ingress {
    static INGRESS: OnceLock<Ingress> = OnceLock::new();
    INGRESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let (connect, accepted) = mpsc::channel(4);
        runtime.block_on(async {
            let backend = backend().await;
            let ctx = context(backend);
            let (stop, stopped) = watch::channel(false);
            // The sidecar runs for the life of the process.
            std::mem::forget(stop);
            tokio::spawn(server::serve_with(
                Wires(accepted),
                |wire: Wire, peer| {
                    let flight = Arc::clone(&wire.flight);
                    std::future::ready(Some((wire, Conn { peer, flight })))
                },
                move |conn: Conn, request| {
                    let in_flight = InFlight::new(&conn.flight);
                    let ctx = Arc::clone(&ctx);
                    async move {
                        let response = outbound::handle(ctx, conn.peer, request).await;
                        let (parts, body) = response.into_parts();
                        http::Response::from_parts(
                            parts,
                            mesh_proxy::body::with_guard(body, in_flight),
                        )
                    }
                },
                stopped,
                Duration::from_secs(60),
                // The listener's connection metrics.
                Default::default(),
                mesh_proxy::framing::HeadLimits::default(),
            ));
        });
        Ingress { runtime, connect }
    })
}

/// An application on loopback that reads each request's body and answers `200 ok`.
async fn backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the backend");
    let addr = listener.local_addr().expect("the backend's address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(|request: http::Request<hyper::body::Incoming>| async {
                    let _ = request.into_body().collect().await;
                    Ok::<_, Infallible>(http::Response::new(Full::new(bytes::Bytes::from_static(
                        b"ok",
                    ))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The `client` sidecar's state, with the table of [`POLICY`] whose endpoints are `backend`.
fn context(backend: SocketAddr) -> Arc<Context> {
    let policy = POLICY
        .replace("127.0.0.1:15101", &backend.to_string())
        .replace("127.0.0.1:15201", &backend.to_string());
    let file = meshc::SourceFile::new("hello.mesh", policy);
    let checked = meshc::check(&[file], &meshc::CheckOptions::default());
    let table = checked.table.expect("examples/policies/hello.mesh checks");
    let bytes = mesh_table::encode(&table);

    let service = "client";
    let tables = Arc::new(Tables::default());
    let transport = Arc::new(tls::Transport::insecure_plaintext(
        Arc::clone(&tables),
        service,
    ));
    let upstreams = Arc::new(upstream::Upstreams::new(
        Duration::from_secs(1),
        Duration::from_secs(60),
        Arc::clone(&transport),
    ));
    let registries = Arc::new(Registries {
        clusters: Arc::new(cluster::Clusters::new(
            Arc::clone(&upstreams),
            Err("no DNS".to_owned()),
        )),
        budgets: retry::budget::Budgets::default(),
    });
    let snapshot =
        Snapshot::from_bytes(&bytes, service, &registries).expect("the compiled table loads");
    tables.store(snapshot);
    let metrics = Arc::new(metrics::Metrics::new(
        Arc::clone(&tables),
        Arc::clone(&registries),
        transport,
    ));
    Arc::new(Context {
        service: service.to_owned(),
        tables,
        upstreams,
        registries,
        app: None,
        default_timeout: Duration::from_secs(2),
        metrics,
        access_log: None,
        tracer: None,
        log_filter: None,
        shutdown: Arc::new(tokio::sync::Notify::new()),
        draining: std::sync::atomic::AtomicBool::new(false),
        filters: None,
        inbound_addr: None,
    })
}

/// One input: the bytes a client sends on one connection, then it closes its side.
/// Returns what the proxy sent back.
pub(crate) fn http1_ingress(data: &[u8]) -> Vec<u8> {
    let ingress = ingress();
    let output = Arc::new(Mutex::new(Vec::new()));
    let (closed, on_close) = oneshot::channel();
    let wire = Wire {
        input: data.to_vec(),
        read: 0,
        output: Arc::clone(&output),
        flight: Arc::default(),
        grace: None,
        closed: Some(closed),
    };
    let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
    let closed = ingress.runtime.block_on(async {
        ingress
            .connect
            .send((wire, peer))
            .await
            .map_err(|_| "the sidecar stopped")
            .expect("the sidecar accepts");
        tokio::time::timeout(DEADLINE, on_close).await
    });
    assert!(
        closed.is_ok(),
        "the proxy did not close the connection within {DEADLINE:?} of reading the input: {:?}",
        String::from_utf8_lossy(&data[..data.len().min(512)])
    );
    let answer = std::mem::take(&mut *output.lock().expect("output"));
    // An HTTP/2 preface gets HTTP/2 frames; anything else is HTTP/1 or nothing at all.
    if !answer.is_empty() && !data.starts_with(b"PRI * HTTP/2.0") {
        assert!(
            answer.starts_with(b"HTTP/1.1 ") || answer.starts_with(b"HTTP/1.0 "),
            "not an HTTP/1 response: {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(512)])
        );
    }
    answer
}
