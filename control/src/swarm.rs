//! Simulated subscribers for the scale test and benchmark: many h2-over-TLS streams from one
//! process sharing one client config, each acking every table it gets.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};

use crate::client::{self, Stream};
use crate::frames;

/// One table received: by which subscriber, when, which checksum.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Subscriber index.
    pub subscriber: usize,
    /// When it arrived.
    pub at: Instant,
    /// Its checksum.
    pub checksum: String,
}

/// An operator API call over HTTP/1.1: the status and the JSON answer.
pub async fn api(
    addr: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "mesh-control")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

/// Starts `n` subscribers of `service` (at most `parallel` handshakes at a time); every
/// table any of them receives is reported on the returned channel. The hello registers no
/// inbound address, so the swarm measures policy distribution, not registry churn.
pub fn spawn(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    td: &str,
    service: &str,
    n: usize,
    parallel: usize,
) -> mpsc::UnboundedReceiver<Delivery> {
    let (tx, rx) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(parallel));
    for i in 0..n {
        let (tx, config, gate) = (tx.clone(), Arc::clone(&config), Arc::clone(&gate));
        let (td, service) = (td.to_owned(), service.to_owned());
        tokio::spawn(async move {
            let stream = {
                let _permit = gate.acquire().await;
                let mut tries = 0;
                loop {
                    tries += 1;
                    match open(addr, Arc::clone(&config), &td, &service).await {
                        Ok(s) => break s,
                        Err(e) if tries >= 20 => {
                            eprintln!("subscriber {i}: {e}");
                            return;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(100 * tries)).await,
                    }
                }
            };
            run(i, stream, tx).await;
        });
    }
    rx
}

async fn open(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    td: &str,
    service: &str,
) -> Result<Stream, String> {
    let mut conn = client::connect(addr, config, td).await?;
    let stream = Stream::open(&mut conn).await?;
    stream
        .send_json(
            frames::HELLO,
            &json!({ "service": service, "inbound": null, "healthy": true, "applied": null }),
        )
        .await?;
    Ok(stream)
}

async fn run(i: usize, mut stream: Stream, tx: mpsc::UnboundedSender<Delivery>) {
    while let Ok(Some((kind, payload))) = stream.next().await {
        if kind != frames::TABLE {
            continue;
        }
        let at = Instant::now();
        let checksum = mesh_table::checksum_hex(&payload).unwrap_or_default();
        if stream
            .send_json(frames::ACK, &json!({ "checksum": checksum }))
            .await
            .is_err()
        {
            return;
        }
        if tx
            .send(Delivery {
                subscriber: i,
                at,
                checksum,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Resident set size of process `pid`, in KiB (Linux `/proc`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The `q` quantile (0..=1) of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A policy of `services` services that `web` may all call, two routes each; `variant`
/// changes one route's path so that every slice changes.
pub fn policy(services: usize, variant: u32) -> String {
    let mut p = String::from("mesh \"scale\" { trust_domain \"scale.test\" }\n\nservice web { port 8080 protocol http1 endpoints [\"127.0.0.1:9000\"] }\n");
    for i in 0..services {
        p.push_str(&format!(
            "service svc{i} {{ port 8080 protocol http1 endpoints [\"127.0.0.1:{}\"] }}\n\
             route a{i} on svc{i} {{ match {{ path prefix \"/a{variant}\" }} to svc{i} timeout 1s }}\n\
             route b{i} on svc{i} {{ match {{ path prefix \"/b\" method [POST] }} to svc{i} retry {{ attempts 2 on [connect_failure] }} }}\n",
            10_000 + i
        ));
    }
    p
}

/// What one scale run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Subscribers asked for.
    pub wanted: usize,
    /// Subscribers that got their first table.
    pub connected: usize,
    /// Time to connect them all and deliver their first table.
    pub connect_s: f64,
    /// Control plane RSS growth per connected subscriber, KiB.
    pub kib_per_proxy: f64,
    /// Delivery latencies of the changed policy, ms, sorted.
    pub delivery_ms: Vec<f64>,
    /// From the policy change to the control plane recording the last ack, ms.
    pub last_ack_ms: Option<f64>,
    /// Size of the slice sent, bytes.
    pub slice_bytes: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = &self.delivery_ms;
        write!(
            f,
            "subscribers {}/{} (connected in {:.1} s), control plane {:.1} KiB per proxy, \
             policy change delivered to {}: min {:.0} ms, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; last ack recorded after {} (slice {} bytes)",
            self.connected,
            self.wanted,
            self.connect_s,
            self.kib_per_proxy,
            d.len(),
            d.first().copied().unwrap_or(f64::NAN),
            quantile(d, 0.5),
            quantile(d, 0.99),
            d.last().copied().unwrap_or(f64::NAN),
            self.last_ack_ms.map_or_else(|| "never".into(), |ms| format!("{ms:.0} ms")),
            self.slice_bytes,
        )
    }
}

/// Drives one scale run against a control plane whose process is `pid`, serving
/// [`policy`]`(services, 0)`: `n` subscribers of `web`, then a policy change through the API.
#[allow(clippy::too_many_arguments)]
pub async fn measure(
    proxies: SocketAddr,
    api_addr: SocketAddr,
    token: &str,
    bundle_pem: &str,
    pid: u32,
    n: usize,
    services: usize,
    deadline: Duration,
) -> Result<Report, String> {
    let td = "scale.test";
    let (_, t) = api(
        api_addr,
        token,
        "POST",
        "/v1/tokens",
        Some(&json!({"service": "web"})),
    )
    .await?;
    let join = t["token"].as_str().ok_or("no token")?.to_owned();
    let anon = client::anonymous_config(bundle_pem, td)?;
    let mut conn = client::connect(proxies, anon, td).await?;
    let (csr, key) = client::csr("spiffe://scale.test/web")?;
    let (status, cert) = client::post_json(
        &mut conn,
        "/v1/bootstrap",
        &json!({"service": "web", "token": join, "csr_pem": csr}),
    )
    .await?;
    if status != http::StatusCode::OK {
        return Err(format!("bootstrap: {status} {cert}"));
    }
    let config = client::mtls_config(
        cert["cert_pem"].as_str().unwrap_or(""),
        &key,
        cert["bundle_pem"].as_str().unwrap_or(""),
        td,
    )?;
    // Settle the allocator before the baseline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = rss_kib(pid).ok_or("cannot read the control plane's RSS")?;

    let started = Instant::now();
    let mut rx = spawn(proxies, config, td, "web", n, 64);
    let mut first = vec![false; n];
    let mut connected = 0;
    let mut slice_checksum = String::new();
    while connected < n {
        match tokio::time::timeout_at((started + deadline).into(), rx.recv()).await {
            Ok(Some(d)) => {
                if !first[d.subscriber] {
                    first[d.subscriber] = true;
                    connected += 1;
                    slice_checksum = d.checksum;
                }
            }
            _ => break,
        }
    }
    let connect_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss_kib(pid).ok_or("cannot read the control plane's RSS")?;
    let kib_per_proxy = rss_after.saturating_sub(rss_before) as f64 / connected.max(1) as f64;

    // The change: one route's path in every slice.
    let t0 = Instant::now();
    let (status, answer) = api(
        api_addr,
        token,
        "PUT",
        "/v1/policy",
        Some(&json!({"files": {"scale.mesh": policy(services, 1)}})),
    )
    .await?;
    if status != 200 {
        return Err(format!("PUT /v1/policy: {status} {answer}"));
    }
    let mut delivery_ms = Vec::with_capacity(connected);
    let mut got = vec![false; n];
    let mut slice_bytes = 0;
    while delivery_ms.len() < connected {
        match tokio::time::timeout_at((t0 + deadline).into(), rx.recv()).await {
            Ok(Some(d)) if d.checksum != slice_checksum && !got[d.subscriber] => {
                got[d.subscriber] = true;
                delivery_ms.push(d.at.duration_since(t0).as_secs_f64() * 1e3);
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    delivery_ms.sort_by(f64::total_cmp);
    // The last ack as the control plane saw it: every connected proxy in sync.
    let mut last_ack_ms = None;
    while t0.elapsed() < deadline {
        let (_, v) = api(api_addr, token, "GET", "/v1/services", None).await?;
        let web = v["services"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "web"))
            .cloned()
            .unwrap_or_default();
        if let Some(size) = web["slice_bytes"].as_u64() {
            slice_bytes = size as usize;
        }
        if web["in_sync"].as_u64() == Some(connected as u64) && delivery_ms.len() == connected {
            last_ack_ms = Some(t0.elapsed().as_secs_f64() * 1e3);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Report {
        wanted: n,
        connected,
        connect_s,
        kib_per_proxy,
        delivery_ms,
        last_ack_ms,
        slice_bytes,
    })
}
