//! A real Prometheus server (Debian's `prometheus`) scrapes the admin `/metrics` of two
//! running sidecars every second; after a known load through the mesh, PromQL over its HTTP
//! API returns what was sent: exact counts from the raw counters, `increase` and `rate`
//! within what Prometheus's extrapolation allows, the success ratio, and
//! `histogram_quantile` per route equal to the quantile of the sidecar's own buckets.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::Method;
use mesh_tests::backend::Backend;
use mesh_tests::body::empty;
use mesh_tests::client::{get, h1_request, load};
use mesh_tests::mesh::Mesh;

const POLICY: &str = r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service web { port 8001 endpoints ["{{web}}"] }
route fast on web { match { path prefix "/fast" } }
route slow on web { match { path prefix "/slow" } }
observe web { latency_buckets [50ms, 250ms, 500ms, 1s, 5s] }
"#;

/// Requests per route before the measured load: they create the series, so `rate` and
/// `increase` (which count from a series' first sample) see the whole load.
const WARM: usize = 20;
/// The measured load: `FAST` requests answered 200 on route `fast`, `SLOW` answered 503
/// after 300 ms by the application on route `slow`.
const FAST: usize = 60;
const SLOW: usize = 20;
const SLOW_MS: u64 = 300;
/// How long Prometheus may take to start, or to show what the sidecars serve.
const PROMETHEUS_LIMIT: Duration = Duration::from_secs(30);
/// Scrapes may come this much later than the 1 s interval on a loaded machine.
const SCRAPE_SLACK_S: f64 = 2.5;

/// A Prometheus server on a port it picked itself; killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (name, admin address) every second.
    fn start(targets: &[(&str, SocketAddr)]) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: mesh\n    static_configs:\n",
        );
        for (name, addr) in targets {
            config.push_str(&format!(
                "      - targets: [\"{addr}\"]\n        labels: {{ sidecar: {name} }}\n"
            ));
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let log = dir.path().join("prometheus.log");
        let stderr = std::fs::File::create(&log).expect("create prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            // Port 0: Prometheus binds a free port itself and logs it ("Listening on").
            .arg("--web.listen-address=127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `prometheus` ({e}): the Prometheus server comes with Debian's \
                     `prometheus` package, which .ci/run installs (apt-get install prometheus)"
                )
            });
        let mut prometheus = Prometheus {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            _dir: dir,
        };
        prometheus.addr = prometheus.wait_listening();
        prometheus
    }

    /// Waits until Prometheus says it is ready (`/-/ready`): between binding its port and
    /// finishing its start (the TSDB opened) its API answers 503.
    async fn wait_ready(&self) {
        let started = Instant::now();
        loop {
            if get(self.addr, "prometheus", "/-/ready").await.status == 200 {
                return;
            }
            assert!(
                started.elapsed() < PROMETHEUS_LIMIT,
                "prometheus not ready within {PROMETHEUS_LIMIT:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The address of the "Listening on" line Prometheus logs once its web server is bound.
    fn wait_listening(&mut self) -> SocketAddr {
        let started = Instant::now();
        loop {
            if let Some(addr) = listening_address(&self.log_text()) {
                return addr;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", self.log_text());
            }
            assert!(
                started.elapsed() < PROMETHEUS_LIMIT,
                "prometheus did not report its address within {PROMETHEUS_LIMIT:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An instant query evaluated at `time` (Unix seconds): the result vector as
    /// (labels, value) pairs.
    async fn query(&self, promql: &str, time: f64) -> Vec<(BTreeMap<String, String>, f64)> {
        let path = format!(
            "/api/v1/query?query={}&time={time:.3}",
            percent_encode(promql)
        );
        let reply = get(self.addr, "prometheus", &path).await;
        assert_eq!(reply.status, 200, "{promql}: {}", reply.text());
        let json = reply.json();
        assert_eq!(json["status"], "success", "{promql}: {json}");
        assert_eq!(json["data"]["resultType"], "vector", "{promql}: {json}");
        json["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{promql}: no result array: {json}"))
            .iter()
            .map(|sample| {
                let labels = sample["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                let value = sample["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{promql}: value of {sample}"));
                (labels, value)
            })
            .collect()
    }

    /// `query` now, keyed by the value of label `by` (one series per value).
    async fn by(&self, promql: &str, by: &str, time: f64) -> BTreeMap<String, f64> {
        self.query(promql, time)
            .await
            .into_iter()
            .map(|(labels, value)| (labels.get(by).cloned().unwrap_or_default(), value))
            .collect()
    }

    /// Waits until `promql` evaluated now, keyed by label `by`, equals `expected`; returns
    /// the time (Unix seconds) it first did.
    async fn wait_for(&self, promql: &str, by: &str, expected: &BTreeMap<String, f64>) -> f64 {
        let started = Instant::now();
        loop {
            let now = unix_now();
            let got = self.by(promql, by, now).await;
            if &got == expected {
                return now;
            }
            assert!(
                started.elapsed() < PROMETHEUS_LIMIT,
                "Prometheus did not show {expected:?} for `{promql}` within {PROMETHEUS_LIMIT:?}: \
                 it shows {got:?}\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- prometheus log ---\n{}", self.log_text());
        }
    }
}

/// The address of Prometheus's `msg="Listening on" address=HOST:PORT` log line.
fn listening_address(log: &str) -> Option<SocketAddr> {
    log.lines()
        .filter(|l| l.contains("msg=\"Listening on\""))
        .find_map(|l| {
            l.split("address=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
}

/// `text` with everything but unreserved characters percent-encoded (a query parameter).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// The cumulative bucket counts (`le` → count, `+Inf` as infinity) of the outbound
/// latency histogram of `route` in a sidecar's `/metrics` text.
fn buckets(text: &str, route: &str) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| {
        l.starts_with("mesh_request_duration_seconds_bucket{")
            && l.contains("direction=\"outbound\"")
            && l.contains("service=\"web\"")
            && l.contains(&format!("route=\"{route}\""))
    }) {
        let le = line
            .split("le=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no le in {line}"));
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or_else(|e| panic!("le of {line}: {e}"))
        };
        let count: f64 = line
            .rsplit_once(' ')
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("count of {line}"));
        out.push((le, count));
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The `q` quantile of cumulative buckets, interpolated as PromQL's `histogram_quantile`
/// does: linearly within the bucket that holds the rank, the lowest bucket starting at 0,
/// and the highest finite bound when the rank falls in `+Inf`.
fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> f64 {
    let total = buckets.last().map_or(0.0, |b| b.1);
    let rank = q * total;
    let mut previous = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return previous.0;
            }
            return previous.0 + (le - previous.0) * (rank - previous.1) / (count - previous.1);
        }
        previous = (le, count);
    }
    f64::NAN
}

/// `after - before`, bucket by bucket.
fn delta(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|&(le, count)| {
            let base = before.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1);
            (le, count - base)
        })
        .collect()
}

/// Sends `n` requests to route `path` through `mesh`'s client sidecar over `connections`
/// connections; `slow` ones are answered 503 after [`SLOW_MS`] by the application.
async fn send(mesh: &Mesh, path: &'static str, n: usize, connections: usize, slow: bool) {
    let replies = load(
        mesh.outbound("client"),
        connections,
        n,
        Arc::new(AtomicUsize::new(0)),
        move |i| {
            let mut request = h1_request(Method::GET, "web", &format!("{path}/{i}"));
            if slow {
                request = request
                    .header("x-echo-status", "503")
                    .header("x-echo-sleep-ms", SLOW_MS.to_string());
            }
            request.body(empty()).expect("request")
        },
    )
    .await;
    let expected = if slow { 503 } else { 200 };
    for reply in replies {
        assert_eq!(reply.status, expected, "{path}: {}", reply.text());
        assert_eq!(reply.mesh_error(), None, "{path}: the application answers");
    }
}

async fn metrics_text(mesh: &Mesh, service: &str) -> String {
    let reply = mesh.admin_get(service, "/metrics").await;
    assert_eq!(reply.status, 200, "/metrics of {service}");
    reply.text()
}

fn expect(pairs: &[(&str, usize)]) -> BTreeMap<String, f64> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), *v as f64))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promql_over_scraped_sidecars_returns_the_load_sent() {
    let client_app = Backend::start("client").await;
    let web = Backend::start("web").await;
    let mesh = Mesh::builder(POLICY)
        .proxy("client", client_app.addr())
        .proxy("web", web.addr())
        .start()
        .await;
    let prometheus =
        Prometheus::start(&[("client", mesh.admin("client")), ("web", mesh.admin("web"))]);
    prometheus.wait_ready().await;
    prometheus
        .wait_for(
            "up{job=\"mesh\"}",
            "sidecar",
            &expect(&[("client", 1), ("web", 1)]),
        )
        .await;

    // Warm-up: the series exist, and Prometheus has seen them, before the measured load.
    send(&mesh, "/fast", WARM, 2, false).await;
    send(&mesh, "/slow", WARM, 5, true).await;
    let outbound = "mesh_requests_total{direction=\"outbound\",service=\"web\"}";
    let by_route = format!("sum by (route) ({outbound})");
    let warm_seen = prometheus
        .wait_for(
            &by_route,
            "route",
            &expect(&[("fast", WARM), ("slow", WARM)]),
        )
        .await;
    let before = metrics_text(&mesh, "client").await;
    // Scrapes of the warm counts inside the window, before the load: a longer window
    // leaves less room for extrapolation (the upper bounds below).
    tokio::time::sleep(Duration::from_secs(5)).await;

    send(&mesh, "/fast", FAST, 2, false).await;
    send(&mesh, "/slow", SLOW, 5, true).await;
    let after = metrics_text(&mesh, "client").await;

    // Raw counters: exact, in both sidecars.
    prometheus
        .wait_for(
            &format!("sum by (route, status) ({outbound})"),
            "route",
            &expect(&[("fast", WARM + FAST), ("slow", WARM + SLOW)]),
        )
        .await;
    let inbound = "mesh_requests_total{direction=\"inbound\",service=\"web\",sidecar=\"web\"}";
    prometheus
        .wait_for(
            &format!("sum by (status) ({inbound})"),
            "status",
            &expect(&[("200", WARM + FAST), ("503", WARM + SLOW)]),
        )
        .await;
    // One more scrape of the final counts, so the window ends on them.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let now = unix_now();
    // The window starts after the warm counts were scraped and ends now.
    let window = (now - warm_seen).floor();
    assert!(window >= 6.0, "window of {window} s");
    let range = format!("[{window}s]");

    // `increase` extrapolates to the window's ends (at most about a scrape interval each):
    // never less than what happened, at most that much more.
    let increase = prometheus
        .by(
            &format!("sum by (route) (increase({outbound}{range}))"),
            "route",
            now,
        )
        .await;
    let extrapolation = window / (window - SCRAPE_SLACK_S);
    for (route, sent) in [("fast", FAST), ("slow", SLOW)] {
        let got = increase.get(route).copied().unwrap_or(f64::NAN);
        let sent = sent as f64;
        assert!(
            got >= sent - 1e-9 && got <= sent * extrapolation,
            "increase on {route}: {got}, sent {sent} (window {window} s)"
        );
    }
    let rate = prometheus
        .by(
            &format!("sum by (route) (rate({outbound}{range}))"),
            "route",
            now,
        )
        .await;
    for (route, sent) in [("fast", FAST), ("slow", SLOW)] {
        let got = rate.get(route).copied().unwrap_or(f64::NAN);
        let per_second = sent as f64 / window;
        assert!(
            got >= per_second - 1e-9 && got <= per_second * extrapolation,
            "rate on {route}: {got}/s, sent {per_second}/s over {window} s"
        );
    }

    // Success ratio: the series of one target share their scrape times, so both sides
    // extrapolate alike.
    let ratio = prometheus
        .query(
            &format!(
                "sum(rate(mesh_requests_total{{direction=\"outbound\",service=\"web\",status=~\"2..\"}}{range})) \
                 / sum(rate({outbound}{range}))"
            ),
            now,
        )
        .await;
    let expected_ratio = FAST as f64 / (FAST + SLOW) as f64;
    assert_eq!(ratio.len(), 1, "{ratio:?}");
    assert!(
        (ratio[0].1 - expected_ratio).abs() < 0.02,
        "success ratio {}, expected {expected_ratio}",
        ratio[0].1
    );

    // p99 per route: what the sidecar's own bucket counts give for the load's requests.
    let p99 = prometheus
        .by(
            &format!(
                "histogram_quantile(0.99, sum by (le, route) \
                 (rate(mesh_request_duration_seconds_bucket{{direction=\"outbound\",service=\"web\"}}{range})))"
            ),
            "route",
            now,
        )
        .await;
    for route in ["fast", "slow"] {
        let own = delta(&buckets(&before, route), &buckets(&after, route));
        let expected = histogram_quantile(0.99, &own);
        let got = p99.get(route).copied().unwrap_or(f64::NAN);
        assert!(
            (got - expected).abs() <= 0.02 + 0.05 * expected,
            "p99 of {route}: Prometheus {got}, the sidecar's buckets {expected} ({own:?})"
        );
    }
    eprintln!(
        "PromQL over {window} s: increase {increase:?}, rate {rate:?}, success ratio {}, p99 {p99:?}",
        ratio[0].1
    );
    let slow = p99.get("slow").copied().unwrap_or(f64::NAN);
    assert!(
        slow > 0.25,
        "every slow request took {SLOW_MS} ms or more, yet p99 {slow}"
    );
    assert_eq!(
        web.stats()
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        (2 * WARM + FAST + SLOW) as u64
    );
}
