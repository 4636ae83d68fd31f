//! Timeouts that cover streams: a body that stalls after the response head is cut at the
//! route's `idle_timeout` (HTTP/1.1: the body ends short of its `Content-Length`; HTTP/2:
//! the stream is reset), with `idle-timeout` in the access log and `mesh_streams_cut_total`;
//! a body whose bytes keep coming is not cut by the idle timeout, and `stream_timeout` cuts
//! it all the same; a request body that stalls before the head gets `504 idle-timeout`.
//! Margins are wide: the bounds asserted are several times the timeouts.

use std::time::{Duration, Instant};

use http::Method;
use mesh_tests::backend::Backend;
use mesh_tests::body::{channel, drain, empty};
use mesh_tests::client::{h1_request, h2_request, within, H1, H2};
use mesh_tests::mesh::Mesh;

const POLICY: &str = r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service web { port 8001 endpoints ["{{web}}"] }
route stall on web { match { path prefix "/stall/" } timeout 5s idle_timeout 1s }
route drip on web { match { path prefix "/drip/" } timeout 5s idle_timeout 1500ms stream_timeout 30s }
route bounded on web { match { path prefix "/bounded/" } timeout 1s stream_timeout 3s }
route upload on web { match { path prefix "/count" } timeout 10s idle_timeout 1s }
observe web { access_log json sample 100% }
"#;

/// Far above every timeout here: what "never a hang" is checked against.
const LIMIT: Duration = Duration::from_secs(20);

struct Fixture {
    mesh: Mesh,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
    _apps: (Backend, Backend),
}

async fn start() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let client_app = Backend::start("client").await;
    let web = Backend::start("web").await;
    let mesh = Mesh::builder(POLICY)
        .proxy("client", client_app.addr())
        .proxy("web", web.addr())
        .extra_config(&format!("[access_log]\npath = \"{}\"", log.display()))
        .start()
        .await;
    Fixture {
        mesh,
        log,
        _dir: dir,
        _apps: (client_app, web),
    }
}

impl Fixture {
    /// The access-log line of the caller's sidecar for `path`, waited for (bounded).
    async fn outbound_line(&self, path: &str) -> serde_json::Value {
        for _ in 0..200 {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let found = text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|l| l["direction"] == "outbound" && l["path"] == path);
            if let Some(line) = found {
                return line;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no outbound access-log line for {path}: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    async fn cut_count(&self, reason: &str) -> f64 {
        let text = self.mesh.admin_get("client", "/metrics").await.text();
        text.lines()
            .filter(|l| l.starts_with("mesh_streams_cut_total{"))
            .filter(|l| l.contains(&format!("reason=\"{reason}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_cut_at_the_idle_timeout_over_h1_and_h2() {
    let f = start().await;

    // HTTP/1.1: the head, 3 of 1,000 bytes, then nothing.
    let mut conn = H1::open(f.mesh.outbound("client")).await;
    let started = Instant::now();
    let request = h1_request(Method::GET, "web", "/stall/3/1000")
        .body(empty())
        .expect("request");
    let response = within("h1 head", LIMIT, conn.send(request))
        .await
        .expect("head");
    assert_eq!(response.status(), 200);
    let body = within("h1 body", LIMIT, drain(response.into_body())).await;
    let elapsed = started.elapsed();
    assert!(body.is_err(), "the body must end short: {body:?}");
    assert!(
        elapsed >= Duration::from_millis(900),
        "not before the idle timeout: {elapsed:?}"
    );
    let line = f.outbound_line("/stall/3/1000").await;
    assert_eq!(line["error"], "idle-timeout", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["bytes_out"], 3, "{line}");

    // HTTP/2: the stream is reset.
    let mut h2 = H2::open(f.mesh.outbound("client")).await;
    let request = h2_request(Method::GET, "web", "/stall/5/1000")
        .body(empty())
        .expect("request");
    let response = within("h2 head", LIMIT, h2.send(request))
        .await
        .expect("head");
    assert_eq!(response.status(), 200);
    let body = within("h2 body", LIMIT, drain(response.into_body())).await;
    let error = body.expect_err("the stream must be reset");
    assert!(
        format!("{error:?}").contains("INTERNAL_ERROR") || format!("{error:?}").contains("Reset"),
        "{error:?}"
    );
    let line = f.outbound_line("/stall/5/1000").await;
    assert_eq!(line["error"], "idle-timeout", "{line}");
    assert!(f.cut_count("idle-timeout").await >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_keep_flowing_are_not_cut_until_the_stream_timeout() {
    let f = start().await;
    let mut conn = H1::open(f.mesh.outbound("client")).await;

    // 10 bytes, one every 300 ms: 3 s in all, past the 1.5 s idle timeout, never idle for it.
    let reply = within("drip", LIMIT, conn.get("web", "/drip/10/300")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.body.len(), 10, "the whole body");
    let line = f.outbound_line("/drip/10/300").await;
    assert!(line["error"].is_null(), "{line}");

    // The same drip for 12 s under a 3 s stream timeout: cut, short of its length.
    let started = Instant::now();
    let request = h1_request(Method::GET, "web", "/bounded/drip/40/300")
        .body(empty())
        .expect("request");
    let response = within("bounded head", LIMIT, conn.send(request))
        .await
        .expect("head");
    assert_eq!(response.status(), 200);
    let body = within("bounded body", LIMIT, drain(response.into_body())).await;
    let elapsed = started.elapsed();
    assert!(body.is_err(), "cut: {body:?}");
    assert!(elapsed >= Duration::from_millis(2_500), "{elapsed:?}");
    let line = f.outbound_line("/bounded/drip/40/300").await;
    assert_eq!(line["error"], "stream-timeout", "{line}");
    assert!(f.cut_count("stream-timeout").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_stalls_before_the_head_gets_504() {
    let f = start().await;
    let mut conn = H1::open(f.mesh.outbound("client")).await;
    // One byte of the body, then the sender is kept but sends nothing.
    let (tx, body) = channel(1);
    tx.send(Ok(hyper::body::Frame::data(bytes::Bytes::from_static(
        b"x",
    ))))
    .await
    .expect("send");
    let request = h1_request(Method::POST, "web", "/count")
        .header("content-length", "100")
        .body(body)
        .expect("request");
    let reply = within("stalled upload", LIMIT, conn.fetch(request)).await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert_eq!(reply.mesh_error(), Some("idle-timeout"));
    drop(tx);
    let line = f.outbound_line("/count").await;
    assert_eq!(line["error"], "idle-timeout", "{line}");
}
