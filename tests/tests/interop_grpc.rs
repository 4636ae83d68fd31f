//! gRPC C-core through the mesh: the interop client and server of `tests/interop/grpc/`
//! (grpcio, stubs generated from Debian's `grpc-proto` protos) run gRPC's interop cases
//! client → the caller's sidecar (h2c, `:authority` = the service) → mTLS HTTP/2 → the
//! service's sidecar → server. Each case is a test of its own, named after it. Beside the
//! cases: the caller's deadline (`grpc-timeout`) bounds the call and the proxy answers
//! DEADLINE_EXCEEDED itself; cancels reach the server; a route's `retry { on [unavailable] }`
//! retries a trailers-only UNAVAILABLE; and gRPC's health-checking protocol is the active
//! health check of `protocol grpc` services.

use std::time::{Duration, Instant};

use http::Method;
use http_body_util::BodyExt;
use mesh_tests::body::{channel, full};
use mesh_tests::client::{grpc_frame, h2_request, within, H2};
use mesh_tests::interop::grpc::{run_case, Server};
use mesh_tests::mesh::Mesh;

/// The caller (`client`, whose app is the interop client) and the gRPC service (`rpc`).
/// HalfDuplexCall, which the server answers only after the caller half-closes, has a route
/// timeout of its own: the proxy's deadline, shorter than any caller's.
const POLICY: &str = r#"
mesh "interop" { trust_domain "interop.local" }
service client { port 8000 endpoints ["{{client}}"] }
service rpc { port 8001 protocol grpc endpoints ["{{rpc}}"] }
route half-duplex on rpc {
  match { path prefix "/grpc.testing.TestService/HalfDuplexCall" }
  timeout 1s
}
route calls on rpc { }
"#;

/// How long a server may take to record what it saw.
const EVENT_LIMIT: Duration = Duration::from_secs(10);

/// The interop server behind the `rpc` sidecar, the mesh around it.
async fn start(policy: &str) -> (Mesh, Server) {
    let server = Server::start("rpc", "SERVING");
    // The client's sidecar needs an app address; the interop client only calls out.
    let mesh = Mesh::builder(policy)
        .proxy("client", server.addr())
        .proxy("rpc", server.addr())
        .start()
        .await;
    (mesh, server)
}

/// Runs interop case `case` through the mesh; fails naming the case and why.
async fn case(mesh: &Mesh, server: &Server, case: &str) -> serde_json::Value {
    let result = run_case(mesh.outbound("client"), "rpc", case, server, &[]).await;
    assert!(
        result.ok(),
        "gRPC interop case {case} failed: {}\n{}\nserver events:\n{:#?}\n{}",
        result.report["detail"],
        result.stderr,
        server.events(),
        server.log()
    );
    result.report
}

/// A test that runs one interop case and checks that the call reached the server.
macro_rules! interop_case {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (mesh, server) = start(POLICY).await;
            case(&mesh, &server, stringify!($name)).await;
            // Every case's calls went through both sidecars to the server (grpcio answers
            // the unimplemented ones without calling the servicer: nothing is recorded).
            if !stringify!($name).starts_with("unimplemented") {
                server.wait_event("start", stringify!($name), EVENT_LIMIT).await;
            }
        }
    )*};
}

interop_case!(
    empty_unary,
    large_unary,
    client_streaming,
    server_streaming,
    ping_pong,
    empty_stream,
    custom_metadata,
    status_code_and_message,
    special_status_message,
    unimplemented_method,
    unimplemented_service,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_after_begin() {
    let (mesh, server) = start(POLICY).await;
    case(&mesh, &server, "cancel_after_begin").await;
    // The cancel travelled as RST_STREAM through both sidecars: the server's call was
    // cancelled, not half-closed.
    let event = server
        .wait_event("cancelled", "cancel_after_begin", EVENT_LIMIT)
        .await;
    assert_eq!(event["method"], "StreamingInputCall", "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_after_first_response() {
    let (mesh, server) = start(POLICY).await;
    case(&mesh, &server, "cancel_after_first_response").await;
    let event = server
        .wait_event("cancelled", "cancel_after_first_response", EVENT_LIMIT)
        .await;
    assert_eq!(event["method"], "FullDuplexCall", "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_on_sleeping_server() {
    let (mesh, server) = start(POLICY).await;
    case(&mesh, &server, "timeout_on_sleeping_server").await;
    // The 2 s deadline reached the server through both sidecars (grpc-timeout), and the
    // server saw the call end by it.
    let propagated = "timeout_on_sleeping_server.propagated";
    let start = server.wait_event("start", propagated, EVENT_LIMIT).await;
    let remaining = start["time_remaining"].as_f64().unwrap_or(f64::NAN);
    assert!(
        remaining > 0.0 && remaining <= 2.1,
        "the server was given {remaining} s (grpc-timeout rounds up a little): {start}"
    );
    // It ended at the deadline: the server's own timer, or a cancel from whichever of the
    // client and the two sidecars enforced it first (they all know it), came at ~2 s.
    let ended = server.wait_ended(propagated, EVENT_LIMIT).await;
    let remaining = ended["time_remaining"].as_f64().unwrap_or(f64::NAN);
    assert!(remaining < 0.5, "the call ended early: {ended}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_is_answered_as_deadline_exceeded() {
    let (mesh, server) = start(POLICY).await;
    // HalfDuplexCall with a 20 s deadline; the route allows 1 s: the proxy answers
    // DEADLINE_EXCEEDED itself (x-mesh-error: timeout in the trailing metadata).
    let report = case(&mesh, &server, "route_timeout").await;
    let elapsed = report["elapsed"].as_f64().unwrap_or(f64::NAN);
    assert!(
        elapsed >= 0.9,
        "answered before the route timeout: {report}"
    );
    // The server saw its call cancelled when the proxy gave up on it.
    server
        .wait_event("cancelled", "route_timeout", EVENT_LIMIT)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_bounds_the_call_through_the_mesh() {
    let (mesh, server) = start(POLICY).await;
    // A caller that enforces no deadline of its own (a raw HTTP/2 client) but sends
    // `grpc-timeout: 1S` on a FullDuplexCall it never half-closes: the mesh ends the call
    // with DEADLINE_EXCEEDED in about a second, not at some proxy default (15 s).
    let (frames, body) = channel(4);
    let request = h2_request(
        Method::POST,
        "rpc",
        "/grpc.testing.TestService/FullDuplexCall",
    )
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("grpc-timeout", "1S")
    .header("x-interop-case", "raw-deadline")
    .body(body)
    .expect("request");
    // One empty StreamingOutputCallRequest: no responses asked for.
    frames
        .send(Ok(hyper::body::Frame::data(grpc_frame(b""))))
        .await
        .expect("the request body is open");
    let mut h2 = H2::open(mesh.outbound("client")).await;
    let started = Instant::now();
    let response = within("the deadline-bound call", Duration::from_secs(10), async {
        let response = h2.send(request).await.expect("a response");
        let (head, body) = response.into_parts();
        let trailers = body
            .collect()
            .await
            .ok()
            .and_then(|b| b.trailers().cloned());
        (head, trailers)
    })
    .await;
    let elapsed = started.elapsed();
    drop(frames);
    let (head, trailers) = response;
    assert_eq!(head.status, 200, "{head:?}");
    let status = trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| head.headers.get("grpc-status"));
    assert_eq!(
        status.and_then(|s| s.to_str().ok()),
        Some("4"),
        "DEADLINE_EXCEEDED: {head:?} {trailers:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(6),
        "answered after {elapsed:?}"
    );
    let start = server
        .wait_event("start", "raw-deadline", EVENT_LIMIT)
        .await;
    assert!(
        start["time_remaining"]
            .as_f64()
            .is_some_and(|r| r > 0.0 && r <= 1.1),
        "{start}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trailers_only_unavailable_is_retried() {
    let server = Server::start("rpc", "SERVING");
    // The server's refusal is trailers-only: grpc-status in the one HEADERS frame.
    let mut direct = H2::open(server.addr()).await;
    let refused = direct
        .fetch(
            h2_request(Method::POST, "rpc", "/grpc.testing.TestService/EmptyCall")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .header("x-interop-fail-first", "direct-probe")
                .body(full(grpc_frame(b"")))
                .expect("request"),
        )
        .await;
    assert_eq!(
        refused.header("grpc-status"),
        Some("14"),
        "{:?}",
        refused.headers
    );
    assert!(refused.body.is_empty() && refused.trailers.is_none());

    let policy = r#"
mesh "interop" { trust_domain "interop.local" }
service client { port 8000 endpoints ["{{client}}"] }
service rpc { port 8001 protocol grpc endpoints ["{{rpc}}"] }
route calls on rpc { retry { attempts 2 on [unavailable] backoff 1ms to 5ms } }
"#;
    let mesh = Mesh::builder(policy)
        .proxy("client", server.addr())
        .proxy("rpc", server.addr())
        .start()
        .await;
    let report = case(&mesh, &server, "retry_unavailable").await;
    let key = report["key"].as_str().expect("the case reports its key");
    let tries: Vec<u64> = server
        .events_of("try", "retry_unavailable")
        .iter()
        .filter(|e| e["key"] == key)
        .filter_map(|e| e["try_number"].as_u64())
        .collect();
    assert_eq!(tries, vec![1, 2], "the server saw these tries");
}

/// The policy of the health tests: `rpc`'s endpoints are the interop servers themselves
/// (h2c, so the mesh runs without mTLS): `serving` and `not-serving`.
fn health_policy(endpoints: &[&Server]) -> String {
    let list: Vec<String> = endpoints
        .iter()
        .map(|s| format!("\"{}\"", s.addr()))
        .collect();
    format!(
        r#"
mesh "interop" {{ trust_domain "interop.local" }}
service client {{ port 8000 endpoints ["{{{{client}}}}"] }}
service rpc {{
  port 8001
  protocol grpc
  endpoints [{}]
  health {{ interval 500ms timeout 500ms unhealthy_after 2 healthy_after 1 }}
}}
"#,
        list.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_checks_keep_calls_off_a_not_serving_endpoint() {
    let serving = Server::start("serving", "SERVING");
    let not_serving = Server::start("not-serving", "NOT_SERVING");
    let mesh = Mesh::builder(&health_policy(&[&serving, &not_serving]))
        .proxy("client", serving.addr())
        .insecure_plaintext()
        .start()
        .await;
    // Both answer Health/Check; the client's sidecar marks the NOT_SERVING one unhealthy
    // (its health checks start with the destination's first request).
    mesh.first_request("client", "rpc").await;
    let started = Instant::now();
    loop {
        let endpoints = mesh.admin_get("client", "/endpoints").await.json();
        let healthy = |addr: std::net::SocketAddr| {
            endpoints["rpc"]["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["address"] == addr.to_string() || e["addr"] == addr.to_string())
                .map(|e| e["healthy"].clone())
        };
        if healthy(not_serving.addr()) == Some(serde_json::Value::Bool(false))
            && healthy(serving.addr()) == Some(serde_json::Value::Bool(true))
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the NOT_SERVING endpoint was never marked unhealthy: {endpoints}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for server in [&serving, &not_serving] {
        let checks = server.events_of("health", "");
        assert!(!checks.is_empty(), "{} got no Health/Check", server.addr());
        assert_eq!(checks[0]["service"], "", "the server as a whole is checked");
    }
    // Every call goes to the SERVING endpoint.
    let result = run_case(
        mesh.outbound("client"),
        "rpc",
        "spread",
        &serving,
        &["--repeat", "20"],
    )
    .await;
    assert!(result.ok(), "{}\n{}", result.report, result.stderr);
    assert_eq!(serving.events_of("start", "spread").len(), 20);
    assert_eq!(not_serving.events_of("start", "spread").len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_checks_travel_over_mtls_through_the_sidecar() {
    // Two grpc services behind real sidecars, one SERVING, one not; an authorize block
    // that admits nobody: the probes are admitted anyway (they are the health check).
    let up = Server::start("up", "SERVING");
    let down = Server::start("down", "NOT_SERVING");
    let policy = r#"
mesh "interop" { trust_domain "interop.local" }
service client { port 8000 endpoints ["{{client}}"] }
service up {
  port 8001 protocol grpc endpoints ["{{up}}"]
  health { interval 500ms timeout 500ms unhealthy_after 2 healthy_after 1 }
}
service down {
  port 8002 protocol grpc endpoints ["{{down}}"]
  health { interval 500ms timeout 500ms unhealthy_after 2 healthy_after 1 }
}
authorize up { default deny }
authorize down { default deny }
"#;
    let mesh = Mesh::builder(policy)
        .proxy("client", up.addr())
        .proxy("up", up.addr())
        .proxy("down", down.addr())
        .start()
        .await;
    // Health checks start with each destination's first request (denied by policy).
    mesh.first_request("client", "up").await;
    mesh.first_request("client", "down").await;
    let started = Instant::now();
    loop {
        let endpoints = mesh.admin_get("client", "/endpoints").await.json();
        let up_healthy = &endpoints["up"]["endpoints"][0]["healthy"];
        let down_healthy = &endpoints["down"]["endpoints"][0]["healthy"];
        if *up_healthy == true && *down_healthy == false && !up.events_of("health", "").is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "want up healthy and down unhealthy: {endpoints}\nup: {:?}\ndown: {:?}\n{}",
            up.events(),
            down.events(),
            mesh.log("up")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!down.events_of("health", "").is_empty());
    // Nothing but the probe is admitted: a call from the client is denied, as gRPC's
    // PERMISSION_DENIED in trailers-only form.
    let mut h2 = H2::open(mesh.outbound("client")).await;
    let denied = h2
        .fetch(
            h2_request(Method::POST, "up", "/grpc.testing.TestService/EmptyCall")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(full(grpc_frame(b"")))
                .expect("request"),
        )
        .await;
    assert_eq!(denied.status, 200, "{:?}", denied.headers);
    assert_eq!(
        denied.header("grpc-status"),
        Some("7"),
        "{:?}",
        denied.headers
    );
    assert_eq!(denied.header("x-mesh-error"), Some("unauthorized"));
}
