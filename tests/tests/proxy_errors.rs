//! How the sidecars fail, as a client sees it through the full hop: each failure is a
//! status with an `x-mesh-error` reason; timeouts answer on time; bad paths are refused
//! before routing; and hop-by-hop headers stop at the proxy while `x-forwarded-for` and
//! `x-request-id` travel on.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::Method;
use mesh_identity::tls::Alpn;
use mesh_tests::backend::Backend;
use mesh_tests::body::empty;
use mesh_tests::client::{h1_request, within, Reply, H1};
use mesh_tests::mesh::Mesh;

const POLICY: &str = r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service web { port 8001 endpoints ["{{web}}"] }
service routed { port 8002 }
service empty { port 8003 }
service down { port 8004 endpoints ["{{nothing}}"] }
route only on routed { match { path prefix "/only" } to web }
route slow on web { match { path prefix "/slow" } timeout 300ms }
route rest on web { match { path prefix "/" } }
"#;

async fn start() -> (Mesh, Backend, Backend) {
    Mesh::client_and_web(POLICY).await
}

fn assert_error(reply: &Reply, status: u16, reason: &str, what: &str) {
    assert_eq!(reply.status, status, "{what}: {}", reply.text());
    assert_eq!(reply.mesh_error(), Some(reason), "{what}");
    assert_eq!(
        reply.text(),
        format!("{reason}\n"),
        "{what}: the body names the reason only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_has_its_status_and_reason() {
    let (mesh, _client_app, web) = start().await;
    let mut conn = H1::open(mesh.outbound("client")).await;

    assert_error(
        &conn.get("nosuch", "/").await,
        404,
        "unknown-service",
        "unknown authority",
    );
    assert_error(
        &conn.get("routed", "/elsewhere").await,
        404,
        "no-route",
        "no matching route",
    );
    assert_eq!(
        conn.get("routed", "/only/here").await.status,
        200,
        "the matching route"
    );
    assert_error(
        &conn.get("empty", "/").await,
        503,
        "no-endpoint",
        "no endpoints",
    );
    let started = Instant::now();
    assert_error(
        &conn.get("down", "/").await,
        502,
        "connect-failed",
        "endpoint down",
    );
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "a refused connect took {:?}",
        started.elapsed()
    );
    // The connection stays usable after each of the proxy's own answers.
    let reply = conn.get("web", "/fine").await;
    assert_eq!(reply.status, 200);
    // The app saw only the two requests that were meant to reach it.
    assert_eq!(web.stats().requests.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_app_gets_504_within_the_route_timeout_plus_100ms() {
    let (mesh, _client_app, web) = start().await;
    let mut conn = H1::open(mesh.outbound("client")).await;
    // Within the timeout: answered normally.
    let request = h1_request(Method::GET, "web", "/slow/ok")
        .header("x-echo-sleep-ms", "50")
        .body(empty())
        .expect("request");
    assert_eq!(conn.fetch(request).await.status, 200);
    for attempt in 0..3 {
        let request = h1_request(Method::GET, "web", "/slow/late")
            .header("x-echo-sleep-ms", "2000")
            .body(empty())
            .expect("request");
        let started = Instant::now();
        let response = within("504", Duration::from_secs(5), conn.send(request))
            .await
            .expect("response");
        let elapsed = started.elapsed();
        let reply = Reply::read(response).await.expect("body");
        assert_error(&reply, 504, "timeout", "slow app");
        assert!(
            elapsed >= Duration::from_millis(300) && elapsed <= Duration::from_millis(400),
            "attempt {attempt}: the 504 came after {elapsed:?}, not within 300 ms + 100 ms"
        );
    }
    assert_eq!(web.stats().requests.load(Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_are_refused_with_400_before_routing() {
    let (mesh, _client_app, web) = start().await;
    let cases = [
        ("/a/%2f", "path-encoded-separator"),
        ("/a/%2F/b", "path-encoded-separator"),
        ("/a/%5c", "path-encoded-separator"),
        ("/a/%zz", "path-invalid-percent-encoding"),
        ("/a/../../etc/passwd", "path-above-root"),
    ];
    for (path, reason) in cases {
        // Through the client's outbound listener, and straight at the web sidecar's inbound
        // (over mTLS, as the client's sidecar would).
        let reply = H1::open(mesh.outbound("client"))
            .await
            .get("web", path)
            .await;
        assert_error(&reply, 400, reason, path);
        let config = mesh.mtls_client("client", "web", Alpn::Http1);
        let tls = mesh_tests::tls::connect(mesh.inbound("web"), config)
            .await
            .expect("mTLS to the web sidecar");
        let reply = H1::over(tls).await.expect("h1").get("web", path).await;
        assert_error(&reply, 400, reason, path);
    }
    assert_eq!(
        web.stats().requests.load(Ordering::SeqCst),
        0,
        "a bad path reached the app"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_stop_and_forwarding_headers_travel() {
    let (mesh, _client_app, _web) = start().await;
    let mut conn = H1::open(mesh.outbound("client")).await;
    let request = h1_request(Method::GET, "web", "/headers")
        .header("connection", "keep-alive, x-secret")
        .header("x-secret", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("upgrade", "h2c")
        .header("x-request-id", "req-123")
        .header("x-forwarded-for", "10.1.2.3")
        .header("x-kept", "yes")
        .body(empty())
        .expect("request");
    let reply = conn.fetch(request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echo = reply.json();
    let headers = echo["headers"].as_object().expect("headers");
    for gone in ["x-secret", "keep-alive", "proxy-connection", "upgrade"] {
        assert!(
            !headers.contains_key(gone),
            "`{gone}` reached the app: {echo}"
        );
    }
    if let Some(connection) = headers.get("connection") {
        assert!(
            !connection.as_str().unwrap_or_default().contains("x-secret"),
            "{echo}"
        );
    }
    assert_eq!(headers["x-kept"], "yes");
    assert_eq!(
        headers["x-request-id"], "req-123",
        "the caller's request id is kept"
    );
    // Each sidecar appends the address it got the request from.
    assert_eq!(
        headers["x-forwarded-for"], "10.1.2.3, 127.0.0.1, 127.0.0.1",
        "{echo}"
    );

    // Without a request id the first sidecar makes one, and it reaches the app.
    let reply = conn.get("web", "/headers").await;
    let id = reply.echoed_header("x-request-id").expect("a request id");
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    assert_eq!(
        reply.echoed_header("x-forwarded-for").as_deref(),
        Some("127.0.0.1, 127.0.0.1")
    );
    let other = conn
        .get("web", "/headers")
        .await
        .echoed_header("x-request-id");
    assert_ne!(
        other.as_deref(),
        Some(id.as_str()),
        "request ids are unique"
    );

    // The same holds for the app's response on its way back.
    let request = h1_request(Method::GET, "web", "/response-headers")
        .header("x-echo-set", "connection=x-internal")
        .header("x-echo-set", "x-internal=1")
        .header("x-echo-set", "keep-alive=timeout=9")
        .header("x-echo-set", "proxy-connection=keep-alive")
        .header("x-echo-set", "x-visible=1")
        .body(empty())
        .expect("request");
    let reply = conn.fetch(request).await;
    assert_eq!(reply.status, 200);
    for gone in ["x-internal", "proxy-connection"] {
        assert!(
            reply.header(gone).is_none(),
            "`{gone}` came back: {:?}",
            reply.headers
        );
    }
    assert_ne!(
        reply.header("keep-alive"),
        Some("timeout=9"),
        "{:?}",
        reply.headers
    );
    assert_eq!(reply.header("x-visible"), Some("1"));
}
