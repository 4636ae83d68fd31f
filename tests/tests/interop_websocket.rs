//! The Python `websockets` library's client and server (tests/interop/websocket/ws_peer.py)
//! talk through the mesh: client → outbound sidecar → mTLS → inbound sidecar → server. Text
//! and binary messages, pings both ways, a subprotocol and permessage-deflate negotiated
//! end to end, close codes and reasons from either side, and 16 MiB each way (by hash).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mesh_tests::backend::Backend;
use mesh_tests::mesh::Mesh;
use mesh_tests::metrics::sum as metric;
use mesh_tests::workspace_root;
use serde_json::Value;

const POLICY: &str = r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service web { port 8001 endpoints ["{{web}}"] }
route ws on web { match { path prefix "/" } }
"#;

/// How long the client may take for every case (16 MiB each way through debug builds).
const CLIENT_LIMIT: Duration = Duration::from_secs(180);
const INSTALL: &str =
    "the Python `websockets` library (pip install websockets==17.4, as .ci/run does) and python3";

fn script() -> PathBuf {
    workspace_root().join("tests/interop/websocket/ws_peer.py")
}

/// Fails the test, naming what to install, unless python3 can import `websockets`.
fn require_websockets() -> String {
    let out = Command::new("python3")
        .args(["-c", "import websockets; print(websockets.__version__)"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): this test needs {INSTALL}"));
    assert!(
        out.status.success(),
        "python3 cannot import websockets: this test needs {INSTALL}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The `websockets` server; its stdout lines (JSON events) arrive on `events`.
struct Server {
    child: Child,
    addr: SocketAddr,
    events: mpsc::Receiver<Value>,
}

impl Server {
    fn start() -> Server {
        let mut child = Command::new("python3")
            .arg(script())
            .arg("server")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start ws_peer.py server: {e}"));
        let stdout = child.stdout.take().expect("the server's stdout");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let event = serde_json::from_str(&line)
                    .unwrap_or_else(|e| Value::String(format!("not JSON ({e}): {line}")));
                if tx.send(event).is_err() {
                    return;
                }
            }
        });
        let first = events
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("the websockets server did not start: {e}"));
        let addr = first["listening"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("the server's first line: {first}"));
        Server {
            child,
            addr,
            events,
        }
    }

    /// The next `n` events, each within `limit`.
    fn next(&self, n: usize, limit: Duration) -> Vec<Value> {
        (0..n)
            .map(|i| {
                self.events
                    .recv_timeout(limit)
                    .unwrap_or_else(|e| panic!("server event {i} of {n}: {e}"))
            })
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the client against `connect` (the outbound listener) with `Host: web`; its report.
fn run_client(connect: SocketAddr) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new("python3")
        .arg(script())
        .args([
            "client",
            "--connect",
            &connect.to_string(),
            "--authority",
            "web",
        ])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("start ws_peer.py client: {e}"));
    let started = Instant::now();
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if started.elapsed() > CLIENT_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    assert!(
        status.is_some_and(|s| s.success()) && report.is_object(),
        "the websockets client failed ({}): {stdout}\n{stderr}",
        status.map_or_else(
            || format!("killed after {CLIENT_LIMIT:?}"),
            |s| s.to_string()
        )
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_client_and_server_talk_through_the_mesh() {
    let version = require_websockets();
    eprintln!("websockets {version}");
    let server = Server::start();
    let client_app = Backend::start("client").await;
    let mesh = Mesh::builder(POLICY)
        .proxy("client", client_app.addr())
        .proxy("web", server.addr)
        .start()
        .await;

    let outbound = mesh.outbound("client");
    let report = tokio::task::spawn_blocking(move || run_client(outbound))
        .await
        .expect("client task");

    // The handshake crossed both sidecars with its negotiation intact.
    assert_eq!(report["status"], 101, "{report}");
    assert_eq!(report["subprotocol"], "mesh.interop.v1", "{report}");
    assert!(
        report["extensions"]
            .as_str()
            .is_some_and(|e| e.starts_with("permessage-deflate")),
        "{report}"
    );
    assert_eq!(report["big_extensions"], Value::Null, "{report}");
    // Messages and control frames.
    assert_eq!(report["text"], "héllo, mesh ✓ 𝄞", "{report}");
    assert_eq!(report["binary_equal"], true, "{report}");
    assert_eq!(report["binary_type"], "bytes", "{report}");
    assert_eq!(report["client_ping_answered"], true, "{report}");
    assert_eq!(report["server_ping"], "pong received", "{report}");
    // Closes from either side: code and reason as sent, both ways.
    assert_eq!(report["client_close"]["code"], 4000, "{report}");
    assert_eq!(
        report["client_close"]["reason"], "client done ✓",
        "{report}"
    );
    assert_eq!(report["server_close"]["code"], 4001, "{report}");
    assert_eq!(
        report["server_close"]["reason"], "server done ✓",
        "{report}"
    );
    // 16 MiB each way.
    assert_eq!(report["download_bytes"], 16 * 1024 * 1024, "{report}");
    assert_eq!(report["upload_seen"], report["upload_sent"], "{report}");
    assert_eq!(report["download_seen"], report["download_sent"], "{report}");

    // What the server saw of each connection's close.
    let mut closed = server.next(3, Duration::from_secs(30));
    closed.sort_by_key(|e| e["path"].as_str().unwrap_or_default().to_string());
    let summary: Vec<(String, i64, String, String)> = closed
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap_or_default().to_string(),
                e["code"].as_i64().unwrap_or_default(),
                e["reason"].as_str().unwrap_or_default().to_string(),
                e["subprotocol"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let sub = "mesh.interop.v1".to_string();
    assert_eq!(
        summary,
        vec![
            ("/big".into(), 1000, String::new(), sub.clone()),
            ("/echo".into(), 4000, "client done ✓".into(), sub.clone()),
            ("/server-close".into(), 4001, "server done ✓".into(), sub),
        ],
        "{closed:?}"
    );

    // Each connection is one upgraded request in both sidecars' metrics.
    let client_metrics = mesh.admin_get("client", "/metrics").await.text();
    let upgraded = metric(
        &client_metrics,
        "mesh_requests_total",
        &[
            ("direction", "outbound"),
            ("service", "web"),
            ("route", "ws"),
            ("status", "101"),
        ],
    );
    assert_eq!(upgraded, 3.0, "{client_metrics}");
    let web_metrics = mesh.admin_get("web", "/metrics").await.text();
    let upgraded = metric(
        &web_metrics,
        "mesh_requests_total",
        &[
            ("direction", "inbound"),
            ("service", "web"),
            ("peer", "client"),
            ("status", "101"),
        ],
    );
    assert_eq!(upgraded, 3.0, "{web_metrics}");
}
