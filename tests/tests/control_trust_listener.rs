//! The proxies' listener of `mesh-control` holds against its clients (issue 27, "listeners
//! that hold"): anonymous connection floods are capped per peer address and cut at the
//! handshake and first-request deadlines while a real proxy bootstraps and gets its table;
//! slow headers and idle connections are closed; a proxy with a valid certificate cannot
//! make the control plane buffer an oversized frame, forge another service's traffic or
//! download a module outside its slice. Real processes; every wait is bounded.

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use mesh_identity::tls::Alpn;
use mesh_tests::backend::Backend;
use mesh_tests::client::{h2_request, H2};
use mesh_tests::control::ControlPlane;
use mesh_tests::tls::Credentials;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const TD: &str = "trust.local";

/// `client` may call `web` (no authorization) but not `secret` (only `web` may); `web`'s
/// route pins `tag.wasm`, `secret`'s inbound filter `vault.wasm`: the client's slice has
/// `tag` and not `vault`.
const POLICY: &str = r#"
mesh "trust" { trust_domain "trust.local" }
filter tag { module "tag.wasm" }
filter vault { module "vault.wasm" }
service client { port 8000 }
service web { port 8001 }
service secret {
  port 8002
  filters [vault]
}
authorize secret { allow from web to path prefix "/" }
route main on web { match { path prefix "/" } to web filters [tag] }
"#;

/// The smallest valid WebAssembly module, and one with a custom section (another digest).
const TAG_WASM: &[u8] = b"\0asm\x01\0\0\0";
const VAULT_WASM: &[u8] = b"\0asm\x01\0\0\0\0\x04\x03abc";

const HELLO: u8 = mesh_table::frames::HELLO;
const TRAFFIC: u8 = mesh_table::frames::TRAFFIC;
const TABLE: u8 = mesh_table::frames::TABLE;

/// A control plane restarted with `extra` in its `[proxies]` block, run by this test (its
/// pid is known, for its RSS). The fixture's own process is stopped; its directory, token,
/// addresses and sidecars are used as they are.
struct Limited {
    child: Child,
    control: ControlPlane,
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Limited {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

async fn start(extra: &str) -> Limited {
    let control = ControlPlane::start(POLICY, TD, "24h").await;
    control.kill();
    let policies = control.dir().join("policies");
    std::fs::write(policies.join("tag.wasm"), TAG_WASM).expect("write tag.wasm");
    std::fs::write(policies.join("vault.wasm"), VAULT_WASM).expect("write vault.wasm");
    let path = control.dir().join("control.toml");
    let config = std::fs::read_to_string(&path).expect("read control.toml");
    assert!(config.contains("[proxies]\n"), "{config}");
    std::fs::write(
        &path,
        config.replace("[proxies]\n", &format!("[proxies]\n{extra}")),
    )
    .expect("write control.toml");
    let addresses = control.dir().join("control.addresses");
    let _ = std::fs::remove_file(&addresses);
    // The fixture prints `control-1.log` when a test fails: this run's log goes after it.
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(control.dir().join("control-1.log"))
        .expect("open the log");
    let mut child = Command::new(mesh_tests::binary("mesh-control"))
        .arg("--config")
        .arg(&path)
        .env("MESH_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start mesh-control");
    let bound = mesh_tests::addresses::wait(
        &addresses,
        &["proxies", "api"],
        &mut child,
        Duration::from_secs(20),
    )
    .await;
    let limited = Limited { child, control };
    let bound = bound.unwrap_or_else(|| {
        panic!(
            "mesh-control did not start with `{extra}`:\n{}",
            limited.control.log()
        )
    });
    assert_eq!(
        (bound[0], bound[1]),
        (limited.control.proxies, limited.control.api)
    );
    // The policy with its modules compiled (version 1 of this state directory, or later).
    let started = Instant::now();
    loop {
        let policy = limited.control.api_get("/v1/policy").await;
        if policy["last_compile"]["ok"] == true && policy["checksum"].is_string() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the policy did not compile: {policy}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    limited
}

/// Credentials for `spiffe://trust.local/<service>`, issued with `meshc ca issue` (an
/// operator-issued certificate: no enrollment, so nothing else limits it).
fn credentials(control: &ControlPlane, service: &str) -> Credentials {
    let out_dir = format!("certs/{service}");
    let out = mesh_tests::meshc(
        control.dir(),
        &["ca", "issue", service, "--ca", "ca", "--out", &out_dir],
    );
    assert!(
        out.status.success(),
        "meshc ca issue {service}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Credentials::load(&control.dir().join(out_dir))
}

/// An HTTP/2 connection to the proxies' listener with `service`'s certificate.
async fn connect_as(control: &ControlPlane, credentials: &Credentials) -> H2 {
    let config = credentials.client_config(&format!("spiffe://{TD}/mesh-control"), Alpn::H2);
    let tls = mesh_tests::tls::connect(control.proxies, config)
        .await
        .expect("mTLS to the proxies' listener");
    H2::over(tls).await
}

/// A subscription stream: the sender of the request body, and the response body.
async fn subscribe(h2: &mut H2) -> (mesh_tests::body::FrameSender, Incoming) {
    let (tx, body) = mesh_tests::body::channel(4);
    let request = h2_request(http::Method::POST, "control", "/v1/stream")
        .body(body)
        .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(10), h2.send(request))
        .await
        .expect("the stream is answered within 10 s")
        .expect("the stream is answered");
    assert_eq!(response.status(), 200);
    (tx, response.into_body())
}

async fn send_frame(tx: &mesh_tests::body::FrameSender, kind: u8, payload: &[u8]) {
    tx.send(Ok(Frame::data(mesh_table::frames::encode(kind, payload))))
        .await
        .expect("the stream takes the frame");
}

fn hello(service: &str) -> Vec<u8> {
    serde_json::json!({"service": service, "inbound": null, "healthy": true, "applied": null})
        .to_string()
        .into_bytes()
}

/// The next table on the stream (pings skipped), within 10 s.
async fn next_table(body: &mut Incoming) -> mesh_table::Table {
    let mut decoder = mesh_table::frames::Decoder::default();
    let started = Instant::now();
    loop {
        let left = Duration::from_secs(10).saturating_sub(started.elapsed());
        let frame = tokio::time::timeout(left, body.frame())
            .await
            .expect("a table within 10 s")
            .expect("the stream is open")
            .expect("the stream is readable");
        if let Ok(data) = frame.into_data() {
            decoder.push(&data);
        }
        while let Some(frame) = decoder.next_frame().expect("frames") {
            if frame.kind == TABLE {
                return mesh_table::decode(&frame.payload).expect("a table");
            }
        }
    }
}

/// VmRSS of `pid`, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A TCP connection to `to` from the loopback address `from` (all of 127/8 is local).
async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    tokio::time::timeout(Duration::from_secs(5), socket.connect(to))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}

/// How long until the peer closes `stream` (EOF or an error on read), reading and dropping
/// whatever it sends; `None` if it is still open after `limit`.
async fn closed_after<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        let left = limit.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

const FLOOD_LIMITS: &str = "handshake_timeout_ms = 2000\nfirst_request_timeout_ms = 2000\n\
                            idle_timeout_ms = 3000\nmax_connections_per_ip = 50\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_flood_is_capped_and_cut_while_a_proxy_bootstraps() {
    let limited = start(FLOOD_LIMITS).await;
    let control = &limited.control;
    let target = control.proxies;
    let flooder: IpAddr = "127.0.0.2".parse().expect("ip");
    let tls_flooder: IpAddr = "127.0.0.3".parse().expect("ip");

    // 200 anonymous TCP connections that send nothing, from one address.
    let mut tcp = Vec::new();
    for _ in 0..200 {
        tcp.push(connect_from(flooder, target).await.expect("TCP connect"));
    }
    // 40 TLS connections that finish the handshake and never send the HTTP/2 preface.
    let anonymous = mesh_tests::tls::anonymous_client_config(Alpn::H2);
    let mut tls = Vec::new();
    for _ in 0..40 {
        let tcp = connect_from(tls_flooder, target)
            .await
            .expect("TCP connect");
        let name = rustls::pki_types::ServerName::try_from("control").expect("name");
        let stream = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_rustls::TlsConnector::from(Arc::clone(&anonymous)).connect(name, tcp),
        )
        .await
        .expect("handshake within 5 s")
        .expect("handshake");
        tls.push(stream);
    }
    let tcp_closed: Vec<_> = tcp
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move { closed_after(&mut s, Duration::from_secs(20)).await })
        })
        .collect();
    let tls_closed: Vec<_> = tls
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move { closed_after(&mut s, Duration::from_secs(20)).await })
        })
        .collect();

    // Meanwhile the flood goes on from both addresses, and a real proxy bootstraps (from
    // 127.0.0.1) and gets its table.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut held = std::collections::VecDeque::new();
            let started = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(40)
            {
                for from in [flooder, tls_flooder] {
                    if let Ok(s) = connect_from(from, target).await {
                        held.push_back(s);
                    }
                }
                while held.len() > 400 {
                    held.pop_front();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let app = Backend::start("web").await;
    let token = control.create_token("web");
    let sidecar = control.sidecar("web", app.addr(), &token);
    sidecar.wait_ready().await;
    assert!(
        sidecar.checksum().await.is_some(),
        "the proxy runs its table:\n{}",
        sidecar.log()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = flood.await;

    let mut at_once = 0;
    for (i, closed) in tcp_closed.into_iter().enumerate() {
        let closed = closed.await.expect("task");
        let after = closed.unwrap_or_else(|| {
            panic!("TCP connection {i} (no TLS handshake) still open after 20 s")
        });
        // The handshake deadline (2 s), with room for a loaded machine.
        assert!(
            after < Duration::from_secs(8),
            "TCP connection {i} closed after {after:?}"
        );
        if after < Duration::from_millis(1500) {
            at_once += 1;
        }
    }
    assert!(
        at_once >= 150,
        "only {at_once} of 200 connections from one address were closed at once (cap 50)"
    );
    for (i, closed) in tls_closed.into_iter().enumerate() {
        let after = closed
            .await
            .expect("task")
            .unwrap_or_else(|| panic!("TLS connection {i} without a preface open after 20 s"));
        assert!(
            after < Duration::from_secs(8),
            "TLS connection {i} without a preface closed after {after:?}"
        );
    }
    let log = control.log();
    assert!(
        log.contains("max_connections_per_ip"),
        "refusals are logged:\n{log}"
    );
}

/// An HTTP/2 frame header.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small");
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

async fn anonymous_tls(
    control: &ControlPlane,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = TcpStream::connect(control.proxies).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("control").expect("name");
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(mesh_tests::tls::anonymous_client_config(Alpn::H2))
            .connect(name, tcp),
    )
    .await
    .expect("handshake within 5 s")
    .expect("handshake")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_idle_connections_are_closed() {
    let limited = start(FLOOD_LIMITS).await;
    let control = &limited.control;

    // Slow headers: the preface, SETTINGS, then a HEADERS block that never ends, one
    // CONTINUATION byte every 300 ms.
    let tls = anonymous_tls(control).await;
    let (mut read, mut write) = tokio::io::split(tls);
    let mut start = PREFACE.to_vec();
    start.extend(h2_frame(4, 0, 0, &[]));
    // HEADERS, END_STREAM but not END_HEADERS: `:method GET`.
    start.extend(h2_frame(1, 0x1, 1, &[0x82]));
    write.write_all(&start).await.expect("preface");
    let trickle = tokio::spawn(async move {
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            // CONTINUATION without END_HEADERS: `:scheme https`.
            if write.write_all(&h2_frame(9, 0, 1, &[0x87])).await.is_err() {
                return;
            }
        }
    });
    let after = closed_after(&mut read, Duration::from_secs(15))
        .await
        .expect("a connection sending headers forever is closed");
    trickle.abort();
    assert!(
        after < Duration::from_secs(8),
        "the slow-headers connection was closed after {after:?} (deadline 2 s)"
    );

    // Idle: one complete request (answered 401: no certificate), then nothing.
    let mut tls = anonymous_tls(control).await;
    let mut request = PREFACE.to_vec();
    request.extend(h2_frame(4, 0, 0, &[]));
    let mut block = vec![0x82, 0x87, 0x04, 5];
    block.extend_from_slice(b"/v1/x");
    block.extend_from_slice(&[0x01, 7]);
    block.extend_from_slice(b"control");
    // END_STREAM | END_HEADERS.
    request.extend(h2_frame(1, 0x5, 1, &block));
    tls.write_all(&request).await.expect("request");
    let after = closed_after(&mut tls, Duration::from_secs(20))
        .await
        .expect("an idle connection is closed");
    assert!(
        after > Duration::from_millis(2500) && after < Duration::from_secs(10),
        "the idle connection was closed after {after:?} (idle deadline 3 s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_ends_the_stream_without_growing_memory() {
    let limited = start("").await;
    let control = &limited.control;
    let web = credentials(control, "web");
    let mut h2 = connect_as(control, &web).await;
    let (tx, mut body) = subscribe(&mut h2).await;
    send_frame(&tx, HELLO, &hello("web")).await;
    let _ = next_table(&mut body).await;
    let before = rss_kib(limited.pid());

    // A traffic frame announcing 60 MiB, then 16 MiB of it as fast as the stream takes it.
    let sender = tokio::spawn(async move {
        let header = mesh_table::frames::header(TRAFFIC, 60 << 20);
        if tx.send(Ok(Frame::data(header))).await.is_err() {
            return 0usize;
        }
        let chunk = Bytes::from(vec![b' '; 64 * 1024]);
        let mut sent = 0;
        let started = Instant::now();
        while sent < 16 << 20 && started.elapsed() < Duration::from_secs(20) {
            let send = tx.send(Ok(Frame::data(chunk.clone())));
            match tokio::time::timeout(Duration::from_secs(2), send).await {
                Ok(Ok(())) => sent += chunk.len(),
                _ => break,
            }
        }
        sent
    });
    // The control plane ends the stream: the response body finishes (or is reset).
    let started = Instant::now();
    let ended = loop {
        let Some(left) = Duration::from_secs(15).checked_sub(started.elapsed()) else {
            break false;
        };
        match tokio::time::timeout(left, body.frame()).await {
            Err(_) => break false,
            Ok(None) | Ok(Some(Err(_))) => break true,
            Ok(Some(Ok(_))) => {}
        }
    };
    let sent = sender.await.expect("sender");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(limited.pid());
    assert!(
        ended,
        "the stream is still open after a 60 MiB frame header ({sent} bytes of it sent)"
    );
    assert!(
        after < before + 8 * 1024,
        "the control plane's RSS grew from {before} to {after} KiB ({sent} bytes sent)"
    );
    assert!(
        control.log().contains("above its limit"),
        "the reason is logged:\n{}",
        control.log()
    );

    // The same certificate is served again with frames of the usual sizes.
    let mut h2 = connect_as(control, &web).await;
    let (tx, mut body) = subscribe(&mut h2).await;
    send_frame(&tx, HELLO, &hello("web")).await;
    let table = next_table(&mut body).await;
    assert!(table.services.iter().any(|s| s.name == "web"));
}

fn line(service: &str, route: Option<&str>, requests: u64) -> serde_json::Value {
    serde_json::json!({"service": service, "route": route, "requests": requests, "errors": 0,
        "p50_ms": 1.0, "p99_ms": 2.0})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_reports_count_only_for_the_reporters_slice_and_are_bounded() {
    let limited = start("").await;
    let control = &limited.control;
    let client = credentials(control, "client");
    let mut h2 = connect_as(control, &client).await;
    let (tx, mut body) = subscribe(&mut h2).await;
    send_frame(&tx, HELLO, &hello("client")).await;
    let table = next_table(&mut body).await;
    assert!(
        !table.services.iter().any(|s| s.name == "secret"),
        "`secret` is outside the client's slice"
    );
    // Twenty reports from one proxy, each with a line for its callee `web` and a forged one
    // for `secret`, which it cannot call.
    for _ in 0..20 {
        let report = serde_json::json!({"window_s": 5, "routes": [
            line("web", Some("main"), 5),
            line("secret", None, 777),
            line("secret", Some("made-up"), 777),
        ]});
        send_frame(&tx, TRAFFIC, report.to_string().as_bytes()).await;
    }
    let started = Instant::now();
    let traffic = loop {
        let traffic = control.api_get("/v1/traffic").await;
        let routes = traffic["routes"].as_array().cloned().unwrap_or_default();
        if routes.iter().any(|r| r["service"] == "web") {
            break traffic;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the client's report never showed: {traffic}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The reports are all in once the last one's line is: wait for the count to settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let traffic = {
        let later = control.api_get("/v1/traffic").await;
        if later["routes"].is_array() {
            later
        } else {
            traffic
        }
    };
    let routes = traffic["routes"].as_array().cloned().unwrap_or_default();
    assert!(
        !routes.iter().any(|r| r["service"] == "secret"),
        "a report for a service outside the reporter's slice was counted: {traffic}"
    );
    let web = routes
        .iter()
        .find(|r| r["service"] == "web")
        .unwrap_or_else(|| panic!("{traffic}"));
    let reports = web["reports"].as_u64().unwrap_or(0);
    assert!(
        (1..=8).contains(&reports),
        "one reporter's reports are capped (8 in the window): {reports} kept: {traffic}"
    );
    assert!(
        control.log().contains("traffic report lines dropped"),
        "the forged lines are logged:\n{}",
        control.log()
    );
}

/// `GET /v1/modules/<digest>` with `h2`: the status and the body.
async fn get_module(h2: &mut H2, digest: &str) -> (u16, Bytes) {
    let request = h2_request(
        http::Method::GET,
        "control",
        &format!("/v1/modules/{digest}"),
    )
    .body(mesh_tests::body::empty())
    .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(10), h2.send(request))
        .await
        .expect("answered within 10 s")
        .expect("answered");
    let status = response.status().as_u16();
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .expect("body within 10 s")
        .expect("body")
        .to_bytes();
    (status, body)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_are_served_only_to_the_slices_that_pin_them() {
    let limited = start("").await;
    let control = &limited.control;
    // The digests, from the slices themselves.
    let secret = credentials(control, "secret");
    let mut secret_h2 = connect_as(control, &secret).await;
    let (tx, mut body) = subscribe(&mut secret_h2).await;
    send_frame(&tx, HELLO, &hello("secret")).await;
    let table = next_table(&mut body).await;
    let vault = table
        .filters
        .iter()
        .find(|f| f.name == "vault")
        .map(|f| hex(&f.sha256))
        .expect("secret's slice pins vault");
    let client = credentials(control, "client");
    let mut client_h2 = connect_as(control, &client).await;
    let (tx2, mut body2) = subscribe(&mut client_h2).await;
    send_frame(&tx2, HELLO, &hello("client")).await;
    let table = next_table(&mut body2).await;
    assert!(table.filters.iter().all(|f| f.name != "vault"));
    let tag = table
        .filters
        .iter()
        .find(|f| f.name == "tag")
        .map(|f| hex(&f.sha256))
        .expect("the client's slice pins tag (web's route filter)");

    let (status, bytes) = get_module(&mut client_h2, &tag).await;
    assert_eq!(status, 200, "the client's own module");
    assert_eq!(&bytes[..], TAG_WASM);
    let (status, bytes) = get_module(&mut client_h2, &vault).await;
    assert!(
        status == 404 || status == 403,
        "a module outside the client's slice was served ({status}, {} bytes)",
        bytes.len()
    );
    assert_ne!(&bytes[..], VAULT_WASM);
    let (status, bytes) = get_module(&mut secret_h2, &vault).await;
    assert_eq!(status, 200, "secret's own module");
    assert_eq!(&bytes[..], VAULT_WASM);
    drop((tx, tx2));
}
