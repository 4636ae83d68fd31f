//! SIGTERM drains: requests in flight through the signalled sidecar finish with 200, its
//! listeners refuse new connections at once, and it exits 0 as soon as they are done, or
//! when the drain time runs out.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::Method;
use mesh_tests::backend::Backend;
use mesh_tests::body::empty;
use mesh_tests::client::{h1_request, within, Reply, H1};
use mesh_tests::mesh::Mesh;

const POLICY: &str = r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service web { port 8001 endpoints ["{{web}}"] }
"#;

async fn start(drain_ms: u64) -> (Mesh, Backend, Backend) {
    let client_app = Backend::start("client").await;
    let web = Backend::start("web").await;
    let mesh = Mesh::builder(POLICY)
        .proxy("client", client_app.addr())
        .proxy("web", web.addr())
        .drain_ms(drain_ms)
        .start()
        .await;
    (mesh, client_app, web)
}

/// Starts `n` requests through the client's sidecar, each on its own connection, that the
/// app answers after `sleep_ms`.
async fn slow_requests(
    mesh: &Mesh,
    n: usize,
    sleep_ms: u64,
) -> Vec<tokio::task::JoinHandle<Option<Reply>>> {
    let mut calls = Vec::new();
    for i in 0..n {
        let mut conn = H1::open(mesh.outbound("client")).await;
        calls.push(tokio::spawn(async move {
            let request = h1_request(Method::GET, "web", &format!("/slow-call/{i}"))
                .header("x-echo-sleep-ms", sleep_ms.to_string())
                .body(empty())
                .expect("request");
            let response = conn.send(request).await.ok()?;
            Reply::read(response).await.ok()
        }));
    }
    calls
}

async fn wait_in_flight(app: &Backend, n: i64) {
    let started = Instant::now();
    while app.stats().in_flight.load(Ordering::SeqCst) < n {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the app never had {n} requests in flight"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until connecting to `addr` is refused; fails after `limit`.
async fn wait_refused(addr: SocketAddr, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
            .await
        {
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return started.elapsed()
            }
            _ => {}
        }
        assert!(
            started.elapsed() < limit,
            "{addr} still accepts connections {limit:?} after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_in_flight_refuses_new_ones_and_exits_0() {
    let (mesh, _client_app, web) = start(5_000).await;
    let calls = slow_requests(&mesh, 4, 1_000).await;
    wait_in_flight(&web, 4).await;
    let signalled = Instant::now();
    mesh.signal("web", "TERM");

    // New connections are refused at once, while the four are still in flight.
    for addr in [mesh.inbound("web"), mesh.outbound("web"), mesh.admin("web")] {
        wait_refused(addr, Duration::from_millis(500)).await;
    }
    assert_eq!(
        web.stats().in_flight.load(Ordering::SeqCst),
        4,
        "the requests in flight were cut"
    );
    // A new call to the draining service does not reach it.
    let reply = H1::open(mesh.outbound("client"))
        .await
        .get("web", "/after-sigterm")
        .await;
    assert!(
        [502, 503].contains(&reply.status.as_u16()) && reply.mesh_error().is_some(),
        "a call after SIGTERM: {} {} {:?}",
        reply.status,
        reply.text(),
        reply.mesh_error()
    );

    for call in calls {
        let reply = within("a request in flight", Duration::from_secs(10), call)
            .await
            .expect("task")
            .expect("the request in flight was answered");
        assert_eq!(
            reply.status,
            200,
            "{} {:?}",
            reply.text(),
            reply.mesh_error()
        );
        assert_eq!(reply.echoed_service(), "web");
    }
    let status = mesh
        .wait_exit("web", Duration::from_secs(5))
        .await
        .unwrap_or_else(|| {
            panic!(
                "the sidecar did not exit within the drain time:\n{}",
                mesh.log("web")
            )
        });
    let exited = signalled.elapsed();
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        mesh.log("web")
    );
    assert!(
        exited >= Duration::from_millis(800),
        "it exited before its requests were done ({exited:?})"
    );
    assert!(
        exited < Duration::from_millis(2_500),
        "it lingered {exited:?} after its requests were done"
    );
    assert_eq!(web.stats().requests.load(Ordering::SeqCst), 4);
    assert_eq!(web.stats().completed.load(Ordering::SeqCst), 4);
    eprintln!("drained 4 requests and exited {exited:?} after SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_time_bounds_the_wait_for_requests_in_flight() {
    let (mesh, _client_app, web) = start(1_000).await;
    let calls = slow_requests(&mesh, 1, 10_000).await;
    wait_in_flight(&web, 1).await;
    let signalled = Instant::now();
    mesh.signal("web", "TERM");
    let status = mesh
        .wait_exit("web", Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("the sidecar did not exit:\n{}", mesh.log("web")));
    let exited = signalled.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        exited >= Duration::from_millis(900) && exited < Duration::from_millis(2_000),
        "exited {exited:?} after SIGTERM with a 1 s drain time"
    );
    // The cut request fails at the client's sidecar instead of hanging.
    for call in calls {
        let reply = within("the cut request", Duration::from_secs(5), call)
            .await
            .expect("task");
        let reply = reply.expect("the client's sidecar answers");
        assert_eq!(reply.status, 502, "{}", reply.text());
    }
}
