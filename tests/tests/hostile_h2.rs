//! HTTP/2 floods written frame by frame over raw sockets to the outbound listener (h2c with
//! prior knowledge), and `[limits] max_connections`. Each flood connection must end with a
//! GOAWAY (rapid reset, CVE-2023-44487; CONTINUATION flood) and be counted in
//! `mesh_downstream_h2_errors_total`, or stall only itself (SETTINGS and PING floods: h2
//! reads no further frame until its ACK is written); meanwhile a polite client on its own
//! connection keeps getting its answers in time. Also `[limits] max_concurrent_streams` (a
//! stream beyond it refused, the connection kept) and `max_connections` on both listeners.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mesh_tests::backend::Backend;
use mesh_tests::client::{within, H1};
use mesh_tests::mesh::Mesh;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const POLICY: &str = r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service web { port 8001 endpoints ["{{web}}"] }
"#;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One HTTP/2 frame: 9-byte header and payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("len");
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// `GET http://web/` in HPACK: static-table `:method GET`, `:scheme http`, `:path /`, and
/// `:authority` (name index 1) with the literal `web`, not indexed.
const GET_WEB: &[u8] = &[0x82, 0x86, 0x84, 0x01, 0x03, b'w', b'e', b'b'];

/// Writes `bytes` (bounded in time: a server that stops reading stalls the writer).
async fn write(stream: &mut TcpStream, bytes: &[u8]) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.write_all(bytes)).await,
        Ok(Ok(()))
    )
}

/// Reads frames until a GOAWAY arrives (its error code) or the connection ends (`None`),
/// within `limit`.
async fn goaway(stream: &mut TcpStream, limit: Duration) -> Option<u32> {
    let deadline = Instant::now() + limit;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        while buf.len() >= 9 {
            let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            if buf[3] == GOAWAY && len >= 8 {
                let code = &buf[9 + 4..9 + 8];
                return Some(u32::from_be_bytes([code[0], code[1], code[2], code[3]]));
            }
            buf.drain(..9 + len);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A polite client: requests on its own connection, each answered 200 within `limit`,
/// until `stop`; returns the slowest.
async fn polite(addr: SocketAddr, stop: tokio::sync::watch::Receiver<bool>) -> Duration {
    let mut slowest = Duration::ZERO;
    let mut client = H1::open(addr).await;
    for i in 0..2_000 {
        if *stop.borrow() && i >= 3 {
            break;
        }
        let started = Instant::now();
        let reply = within(
            "a polite request",
            Duration::from_secs(10),
            client.get("web", "/polite"),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    slowest
}

async fn start(extra: &str) -> (Mesh, Backend, Backend) {
    let client_app = Backend::start("client").await;
    let web = Backend::start("web").await;
    let mesh = Mesh::builder(POLICY)
        .proxy("client", client_app.addr())
        .proxy("web", web.addr())
        .extra_config(extra)
        .start()
        .await;
    (mesh, client_app, web)
}

/// Runs `attack` while a polite client runs on another connection; returns the attack's
/// result and the polite client's slowest request.
async fn under_attack<F: std::future::Future>(
    addr: SocketAddr,
    attack: F,
) -> (F::Output, Duration) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let polite = tokio::spawn(polite(addr, stop_rx));
    let out = attack.await;
    let _ = stop_tx.send(true);
    let slowest = within("the polite client", Duration::from_secs(60), polite)
        .await
        .expect("polite client");
    (out, slowest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_floods_end_in_goaway_and_other_connections_keep_their_latency() {
    let (mesh, _client_app, _web) = start("").await;
    let outbound = mesh.outbound("client");
    // A baseline for the polite client's latency.
    let mut client = H1::open(outbound).await;
    assert_eq!(client.get("web", "/warm").await.status, 200);

    // Rapid reset: a stream opened and reset at once, 2,000 times in one write.
    let ((), slowest) = under_attack(outbound, async {
        let mut stream = TcpStream::connect(outbound).await.expect("connect");
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[]));
        for i in 0..2_000u32 {
            let id = 1 + 2 * i;
            bytes.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, GET_WEB));
            bytes.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes())); // CANCEL
        }
        let _ = write(&mut stream, &bytes).await;
        let code = goaway(&mut stream, Duration::from_secs(10)).await;
        assert_eq!(
            code,
            Some(0xb),
            "rapid reset: GOAWAY ENHANCE_YOUR_CALM expected"
        );
    })
    .await;
    assert!(
        slowest < Duration::from_secs(2),
        "rapid reset: a polite request took {slowest:?}"
    );

    // CONTINUATION flood: one header block that never ends.
    let ((), slowest) = under_attack(outbound, async {
        let mut stream = TcpStream::connect(outbound).await.expect("connect");
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[]));
        bytes.extend(frame(HEADERS, END_STREAM, 1, GET_WEB));
        // Literal headers, not indexed, new names: `x: y` again and again.
        let piece: Vec<u8> = [0x00, 0x01, b'x', 0x01, b'y'].repeat(200);
        for _ in 0..5_000 {
            bytes.extend(frame(CONTINUATION, 0, 1, &piece));
        }
        let _ = write(&mut stream, &bytes).await;
        let code = goaway(&mut stream, Duration::from_secs(10)).await;
        assert!(
            matches!(code, Some(0xb | 0x9 | 0x1)),
            "CONTINUATION flood: GOAWAY (ENHANCE_YOUR_CALM, COMPRESSION_ERROR or PROTOCOL_ERROR) expected, got {code:?}"
        );
    })
    .await;
    assert!(
        slowest < Duration::from_secs(2),
        "CONTINUATION flood: a polite request took {slowest:?}"
    );

    // SETTINGS and PING floods from a client that never reads: the flooder stalls itself.
    for (name, kind) in [("SETTINGS", SETTINGS), ("PING", PING)] {
        let ((), slowest) = under_attack(outbound, async {
            let mut stream = TcpStream::connect(outbound).await.expect("connect");
            let mut bytes = PREFACE.to_vec();
            bytes.extend(frame(SETTINGS, 0, 0, &[]));
            let payload: &[u8] = if kind == PING {
                &[7u8; 8]
            } else {
                &[0, 3, 0, 0, 0, 100]
            };
            let one = frame(kind, 0, 0, payload);
            for _ in 0..20_000 {
                bytes.extend_from_slice(&one);
            }
            // Five rounds of 300 KB or until the server stops reading.
            for _ in 0..5 {
                if !write(&mut stream, &bytes).await {
                    break;
                }
            }
        })
        .await;
        assert!(
            slowest < Duration::from_secs(2),
            "{name} flood: a polite request took {slowest:?}"
        );
    }

    let metrics = mesh.admin_get("client", "/metrics").await.text();
    let calm = mesh_tests::metrics::sum(
        &metrics,
        "mesh_downstream_h2_errors_total",
        &[("listener", "outbound")],
    );
    assert!(calm >= 2.0, "h2 errors counted: {calm}\n{metrics}");
}

/// Reads frames until `done` says so or the connection ends, within `limit`: each frame's
/// type, stream and payload.
async fn frames_until(
    stream: &mut TcpStream,
    limit: Duration,
    done: impl Fn(&[(u8, u32, Vec<u8>)]) -> bool,
) -> Vec<(u8, u32, Vec<u8>)> {
    let deadline = Instant::now() + limit;
    let mut frames = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        while buf.len() >= 9 {
            let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let id = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            frames.push((buf[3], id, buf[9..9 + len].to_vec()));
            buf.drain(..9 + len);
        }
        if done(&frames) {
            return frames;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return frames,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// `[limits] max_concurrent_streams`: the proxy announces it, and a stream beyond it is
/// refused (RST_STREAM REFUSED_STREAM) while the connection and its open streams go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_max_concurrent_streams_are_refused() {
    let (mesh, _client_app, _web) = start("[limits]\nmax_concurrent_streams = 4\n").await;
    let outbound = mesh.outbound("client");
    let mut stream = TcpStream::connect(outbound).await.expect("connect");
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(SETTINGS, 0, 0, &[]));
    // Six requests whose bodies never come: each stream stays open.
    for i in 0..6u32 {
        bytes.extend(frame(HEADERS, END_HEADERS, 1 + 2 * i, GET_WEB));
    }
    assert!(write(&mut stream, &bytes).await);
    let refused = |frames: &[(u8, u32, Vec<u8>)]| -> Vec<u32> {
        frames
            .iter()
            .filter(|(kind, _, payload)| *kind == RST_STREAM && payload[..] == 7u32.to_be_bytes())
            .map(|(_, id, _)| *id)
            .collect()
    };
    let frames = frames_until(&mut stream, Duration::from_secs(10), |f| {
        refused(f).len() >= 2
    })
    .await;
    // The server's SETTINGS announce the limit (SETTINGS_MAX_CONCURRENT_STREAMS, id 3, = 4).
    let announced = frames.iter().any(|(kind, _, payload)| {
        *kind == SETTINGS && payload.chunks(6).any(|s| s[..] == [0, 3, 0, 0, 0, 4])
    });
    assert!(
        announced,
        "no SETTINGS_MAX_CONCURRENT_STREAMS = 4: {frames:?}"
    );
    let mut refused = refused(&frames);
    refused.sort_unstable();
    assert_eq!(refused, [9, 11], "{frames:?}");
    assert!(
        !frames.iter().any(|(kind, _, _)| *kind == GOAWAY),
        "the connection was closed: {frames:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_connections_are_closed_at_once_and_counted() {
    let (mesh, _client_app, _web) = start("[limits]\nmax_connections = 4\n").await;
    let outbound = mesh.outbound("client");
    // Four connections held open (one of them a client that has made a request).
    let mut client = H1::open(outbound).await;
    assert_eq!(client.get("web", "/one").await.status, 200);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(outbound).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The fifth is closed at once, without an answer.
    for _ in 0..3 {
        let mut fifth = TcpStream::connect(outbound).await.expect("connect");
        let _ = fifth
            .write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
            .await;
        let mut buf = [0u8; 64];
        let n = within(
            "the fifth connection",
            Duration::from_secs(5),
            fifth.read(&mut buf),
        )
        .await
        .unwrap_or(0);
        assert_eq!(
            n,
            0,
            "the fifth connection was served: {:?}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    // The held client is still served; once connections close, new ones are served again.
    assert_eq!(client.get("web", "/two").await.status, 200);
    drop(held);
    let mut served = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(mut again) = H1::connect(outbound).await {
            if let Ok(Ok(reply)) = tokio::time::timeout(
                Duration::from_secs(2),
                again.send(
                    mesh_tests::client::h1_request(http::Method::GET, "web", "/three")
                        .body(mesh_tests::body::empty())
                        .expect("request"),
                ),
            )
            .await
            {
                if reply.status() == 200 {
                    served = true;
                    break;
                }
            }
        }
    }
    assert!(
        served,
        "no new connection was served after the held ones closed"
    );
    let metrics = mesh.admin_get("client", "/metrics").await.text();
    let refused = mesh_tests::metrics::sum(
        &metrics,
        "mesh_connections_refused_total",
        &[("listener", "outbound")],
    );
    assert!(refused >= 3.0, "refused: {refused}");

    // The inbound listener too, before any TLS handshake: four held, the fifth closed at
    // once (well before the handshake deadline a held connection would meet).
    let inbound = mesh.inbound("web");
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(inbound).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fifth = TcpStream::connect(inbound).await.expect("connect");
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = within(
        "the inbound's fifth connection",
        Duration::from_secs(5),
        fifth.read(&mut buf),
    )
    .await
    .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "closed after {:?}",
        started.elapsed()
    );
    drop(held);
    let metrics = mesh.admin_get("web", "/metrics").await.text();
    let refused = mesh_tests::metrics::sum(
        &metrics,
        "mesh_connections_refused_total",
        &[("listener", "inbound")],
    );
    assert!(refused >= 1.0, "inbound refused: {refused}");
}
