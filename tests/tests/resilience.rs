//! Resilience through a real sidecar: balancers (least request, peak EWMA, ring hash),
//! retries (status conditions, budgets, per-try timeouts, non-idempotent requests), route
//! timeouts, health checks and outlier ejection when a backend dies and comes back, the
//! keep-alive race, and DNS discovery against a real resolver.
//!
//! Unless a test needs a second sidecar, the service's endpoints are test servers listed
//! directly in the table (they speak h2c like a sidecar's inbound did before mTLS), so the
//! client's sidecar is the proxy under test and every count is exact. Since a test server
//! cannot present a mesh certificate for each service it stands in for, these meshes opt out
//! of mTLS (`insecure_plaintext`); resilience over mTLS between real sidecars is covered by
//! the other end-to-end tests and `mtls.rs`. Tests whose numbers depend on
//! timing hold [`exclusive`] so that they do not share the two cores with each other.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::Method;
use mesh_tests::body::full;
use mesh_tests::client::{h1_request, H1};
use mesh_tests::mesh::{table_checksum, Mesh};
use mesh_tests::resilience_support::{
    exclusive, get, load, send, served, Dnsmasq, Outcome, Server,
};

const PRELUDE: &str = r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
"#;

/// A one-sidecar mesh (the client's) whose policy is PRELUDE + `services`.
async fn client_mesh(services: &str, app: &Server) -> Mesh {
    Mesh::builder(&format!("{PRELUDE}{services}"))
        .proxy("client", app.addr())
        .insecure_plaintext()
        .start()
        .await
}

/// Compiles PRELUDE + `services`, installs it and waits until the client's sidecar uses it.
async fn swap(mesh: &Mesh, services: &str) {
    install(mesh, &mesh.compile(&format!("{PRELUDE}{services}"))).await;
}

async fn install(mesh: &Mesh, table: &[u8]) {
    mesh.install_table(table);
    let want = table_checksum(table);
    let started = Instant::now();
    loop {
        if mesh.config("client").await["checksum"] == want.as_str() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new table was not loaded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn share(outcomes: &[Outcome], name: &str) -> f64 {
    let n = outcomes
        .iter()
        .filter(|o| o.served_by.as_deref() == Some(name))
        .count();
    n as f64 / outcomes.len().max(1) as f64
}

fn failures(outcomes: &[Outcome]) -> Vec<&Outcome> {
    outcomes.iter().filter(|o| !o.ok()).collect()
}

async fn three(names: [&str; 3]) -> [Server; 3] {
    [
        Server::start(names[0]).await,
        Server::start(names[1]).await,
        Server::start(names[2]).await,
    ]
}

fn endpoints(servers: &[&Server]) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|s| format!("\"{}\"", s.addr()))
        .collect();
    format!("[{}]", list.join(", "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_sends_less_to_a_slow_endpoint_than_round_robin() {
    let _only = exclusive().await;
    let app = Server::start("app").await;
    let [a, b, c] = three(["a", "b", "c"]).await;
    c.knobs().delay_ms.store(100, Ordering::SeqCst);
    let web = |balance: &str| {
        format!(
            "service web {{ port 8001 endpoints {} balance {balance} }}",
            endpoints(&[&a, &b, &c])
        )
    };
    let mesh = client_mesh(&web("round_robin"), &app).await;
    let run = || {
        load(
            mesh.outbound("client"),
            8,
            300,
            Duration::from_secs(60),
            |_| get("web", "/", &[]),
        )
    };
    let rr = run().await;
    swap(&mesh, &web("least_request")).await;
    let lr = run().await;
    assert!(failures(&rr).is_empty() && failures(&lr).is_empty());
    let (rr_c, lr_c) = (share(&rr, "c"), share(&lr, "c"));
    eprintln!("slow endpoint's share: round robin {rr_c:.3}, least request {lr_c:.3}");
    assert!(
        rr_c > 0.30,
        "round robin gives each endpoint a third: {:?}",
        served(&rr)
    );
    assert!(
        lr_c < rr_c / 2.0,
        "least request: {:?}, round robin: {:?}",
        served(&lr),
        served(&rr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ewma_moves_traffic_away_from_an_endpoint_that_turns_slow() {
    let _only = exclusive().await;
    let app = Server::start("app").await;
    let [a, b, c] = three(["a", "b", "c"]).await;
    let web = format!(
        "service web {{ port 8001 endpoints {} balance ewma }}",
        endpoints(&[&a, &b, &c])
    );
    let mesh = client_mesh(&web, &app).await;
    let addr = mesh.outbound("client");
    let before = load(addr, 6, usize::MAX, Duration::from_millis(1500), |_| {
        get("web", "/", &[])
    })
    .await;
    for name in ["a", "b", "c"] {
        assert!(share(&before, name) > 0.15, "{name}: {:?}", served(&before));
    }
    c.knobs().delay_ms.store(150, Ordering::SeqCst);
    let after = load(addr, 6, usize::MAX, Duration::from_secs(3), |_| {
        get("web", "/", &[])
    })
    .await;
    assert!(failures(&after).is_empty());
    // Give it a second to notice; from then on the slow endpoint gets little.
    let settled: Vec<Outcome> = after
        .into_iter()
        .filter(|o| o.at >= Duration::from_secs(1))
        .collect();
    eprintln!("after c turned slow: {:?}", served(&settled));
    assert!(
        settled.len() > 50,
        "too few requests to judge: {}",
        settled.len()
    );
    assert!(share(&settled, "c") < 0.10, "{:?}", served(&settled));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_hash_keeps_users_on_their_endpoint_and_removing_one_moves_only_its_users() {
    let app = Server::start("app").await;
    let [a, b, c] = three(["a", "b", "c"]).await;
    let d = Server::start("d").await;
    let web = |servers: &[&Server]| {
        format!(
            "service web {{ port 8001 endpoints {} balance ring_hash header \"x-user\" }}",
            endpoints(servers)
        )
    };
    let mesh = client_mesh(&web(&[&a, &b, &c, &d]), &app).await;
    let mut connection = H1::open(mesh.outbound("client")).await;
    let users: Vec<String> = (0..80).map(|i| format!("user-{i}")).collect();
    let mut owners = Vec::new();
    for user in &users {
        let o = send(
            &mut connection,
            get("web", "/", &[("x-user", user.clone())]),
            Duration::ZERO,
        )
        .await;
        assert!(o.ok());
        owners.push(o.served_by.unwrap_or_default());
    }
    for (user, owner) in users.iter().zip(&owners) {
        let o = send(
            &mut connection,
            get("web", "/", &[("x-user", user.clone())]),
            Duration::ZERO,
        )
        .await;
        assert_eq!(
            o.served_by.as_ref(),
            Some(owner),
            "{user} moved with nothing changed"
        );
    }
    let distinct: std::collections::BTreeSet<&String> = owners.iter().collect();
    assert_eq!(
        distinct.len(),
        4,
        "80 users spread over 4 endpoints: {owners:?}"
    );
    // Without the header: any endpoint.
    let mut anonymous = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let o = send(&mut connection, get("web", "/", &[]), Duration::ZERO).await;
        anonymous.insert(o.served_by.unwrap_or_default());
    }
    assert!(anonymous.len() >= 3, "{anonymous:?}");

    swap(&mesh, &web(&[&a, &b, &c])).await;
    let mut moved = 0;
    for (user, owner) in users.iter().zip(&owners) {
        let o = send(
            &mut connection,
            get("web", "/", &[("x-user", user.clone())]),
            Duration::ZERO,
        )
        .await;
        let now = o.served_by.unwrap_or_default();
        if owner == "d" {
            assert_ne!(now, "d");
            moved += 1;
        } else {
            assert_eq!(&now, owner, "{user} moved although its endpoint stayed");
        }
    }
    eprintln!("{moved} of {} users moved, all of them d's", users.len());
    assert!(moved > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_on_503_hide_backends_that_fail_30_percent() {
    let _only = exclusive().await;
    let app = Server::start("app").await;
    let [a, b, _] = three(["a", "b", "unused"]).await;
    a.knobs().fail_percent.store(30, Ordering::SeqCst);
    b.knobs().fail_percent.store(30, Ordering::SeqCst);
    let web = format!(
        "service web {{ port 8001 endpoints {} }}\n\
         route flaky on web {{ match {{ method [GET] }} timeout 5s retry {{ attempts 4 on [503] backoff 1ms to 10ms budget 100% }} }}",
        endpoints(&[&a, &b])
    );
    let mesh = client_mesh(&web, &app).await;
    let outcomes = load(
        mesh.outbound("client"),
        8,
        600,
        Duration::from_secs(60),
        |_| get("web", "/", &[]),
    )
    .await;
    let failed = failures(&outcomes).len();
    let retries: u32 = outcomes.iter().map(|o| o.retries).sum();
    let backend_failed =
        a.counts().failed.load(Ordering::SeqCst) + b.counts().failed.load(Ordering::SeqCst);
    let backend_requests = a.requests() + b.requests();
    eprintln!("{failed} of 600 failed at the client; backends failed {backend_failed} of {backend_requests}; {retries} retries");
    assert!(
        backend_failed as f64 > 0.2 * backend_requests as f64,
        "the backends fail as asked"
    );
    assert_eq!(
        u64::from(retries) + 600,
        backend_requests,
        "every try is a retry or a request"
    );
    assert!(failed * 100 < 2 * 600, "{failed} failures");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_cut_mid_body_is_retried_where_reset_is_retried() {
    // `a` dies mid-body on every GET (head sent, 3 of 10 bytes, RST_STREAM). A small
    // response on a route that retries resets is read whole within the try, so the cut
    // is a failed try, not a cut client stream.
    let app = Server::start("app").await;
    let [a, b, _] = three(["a", "b", "unused"]).await;
    a.knobs().cut_body.store(true, Ordering::SeqCst);
    let web = format!(
        "service web {{ port 8001 endpoints {} }}\n\
         route cut on web {{ match {{ method [GET] }} timeout 5s retry {{ attempts 2 on [reset] backoff 1ms to 10ms budget 100% }} }}",
        endpoints(&[&a, &b])
    );
    let mesh = client_mesh(&web, &app).await;
    let mut client = H1::open(mesh.outbound("client")).await;
    for i in 0..20 {
        let reply = client.get("web", &format!("/r{i}")).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
        assert_eq!(reply.text(), "b", "request {i}: the whole body, from b");
    }
    let cut = a.counts().failed.load(Ordering::SeqCst);
    assert!(cut > 0, "a was tried and cut its answers ({cut})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_budget_of_20_percent_bounds_retries_and_the_client_sees_the_rest() {
    let _only = exclusive().await;
    let app = Server::start("app").await;
    let a = Server::start("a").await;
    a.knobs().fail_percent.store(50, Ordering::SeqCst);
    let web = format!(
        "service web {{ port 8001 endpoints {} }}\n\
         route limited on web {{ match {{ method [GET] }} retry {{ attempts 3 on [503] backoff 1ms to 5ms budget 20% }} }}",
        endpoints(&[&a])
    );
    let mesh = client_mesh(&web, &app).await;
    let started = Instant::now();
    let outcomes = load(
        mesh.outbound("client"),
        8,
        1000,
        Duration::from_secs(60),
        |_| get("web", "/", &[]),
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let retries = a.requests() - 1000;
    // 20% of the requests, plus the floor of 10 retries a second over each 10 s window.
    let windows = (elapsed / 10.0).ceil().max(1.0);
    let bound = 0.2 * 1000.0 + 100.0 * windows + 5.0;
    let refused: Vec<&Outcome> = failures(&outcomes);
    eprintln!("{retries} retries for 1000 requests in {elapsed:.1} s (bound {bound}); {} 503s reached the client", refused.len());
    assert!((retries as f64) <= bound, "{retries} retries > {bound}");
    assert!(
        retries >= 100,
        "the budget allowed at least its floor: {retries}"
    );
    // Without the budget about 750 retries would have hidden most failures.
    assert!(refused.len() > 150, "{}", refused.len());
    for o in refused {
        assert_eq!(o.status, 503);
        assert_eq!(o.mesh_error, None, "the backend's own 503 is passed on");
        assert_eq!(o.served_by.as_deref(), Some("a"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_backend_gets_a_504_within_the_route_timeout() {
    let _only = exclusive().await;
    let app = Server::start("app").await;
    let a = Server::start("a").await;
    a.knobs().hang.store(true, Ordering::SeqCst);
    let web = format!(
        "service web {{ port 8001 endpoints {} }}\n\
         route plain on web {{ match {{ path prefix \"/plain\" method [GET] }} timeout 500ms }}\n\
         route retried on web {{ match {{ path prefix \"/retried\" method [GET] }} timeout 600ms \
           retry {{ attempts 3 per_try_timeout 200ms on [reset] backoff 10ms to 20ms }} }}",
        endpoints(&[&a])
    );
    let mesh = client_mesh(&web, &app).await;
    let mut connection = H1::open(mesh.outbound("client")).await;
    for (path, limit) in [("/plain", 500), ("/retried", 600)] {
        for _ in 0..3 {
            let o = send(&mut connection, get("web", path, &[]), Duration::ZERO).await;
            assert_eq!(
                (o.status, o.mesh_error.as_deref()),
                (504, Some("timeout")),
                "{path}"
            );
            let ms = o.elapsed.as_millis();
            assert!(
                ms >= limit - 5 && ms < limit + 100,
                "{path}: 504 after {ms} ms (timeout {limit} ms)"
            );
        }
    }
    // Per-try timeouts and backoff: three tries started for each /retried request.
    assert_eq!(a.requests(), 3 + 3 * 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_try_timeouts_move_the_request_to_a_healthy_endpoint() {
    let _only = exclusive().await;
    let app = Server::start("app").await;
    let [a, b, _] = three(["a", "b", "unused"]).await;
    a.knobs().hang.store(true, Ordering::SeqCst);
    let web = format!(
        "service web {{ port 8001 endpoints {} }}\n\
         route r on web {{ match {{ method [GET] }} timeout 3s retry {{ attempts 2 per_try_timeout 200ms on [reset] backoff 1ms to 5ms }} }}",
        endpoints(&[&a, &b])
    );
    let mesh = client_mesh(&web, &app).await;
    let mut connection = H1::open(mesh.outbound("client")).await;
    let mut moved = 0;
    for _ in 0..10 {
        let o = send(&mut connection, get("web", "/", &[]), Duration::ZERO).await;
        assert!(o.ok(), "{o:?}");
        assert_eq!(o.served_by.as_deref(), Some("b"));
        if o.retries == 1 {
            moved += 1;
            let ms = o.elapsed.as_millis();
            assert!(
                (200..1_000).contains(&ms),
                "moved after the 200 ms per-try timeout: {ms} ms"
            );
        }
    }
    assert!(
        moved >= 3,
        "round robin sent some first tries to the hanging endpoint: {moved}"
    );
    assert_eq!(u64::try_from(moved).unwrap_or(0), a.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_is_ejected_and_marked_unhealthy_then_comes_back() {
    let _only = exclusive().await;
    let app = Server::start("app").await;
    let [a, b, c] = three(["a", "b", "c"]).await;
    let web = format!(
        "service web {{ port 8001 endpoints {}\n\
           health {{ path \"/healthz\" interval 300ms timeout 200ms unhealthy_after 2 healthy_after 2 }}\n\
           outlier {{ consecutive_5xx 3 eject_for 1s max_ejected 50% }} }}\n\
         route r on web {{ match {{ method [GET] }} timeout 2s retry {{ attempts 3 on [connect_failure, refused_stream, reset, 503] backoff 1ms to 10ms budget 100% }} }}",
        endpoints(&[&a, &b, &c])
    );
    let mesh = client_mesh(&web, &app).await;
    let addr = mesh.outbound("client");
    let traffic = tokio::spawn(load(addr, 4, usize::MAX, Duration::from_secs(8), |_| {
        get("web", "/", &[])
    }));
    let start = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed = start.elapsed();
    c.kill();
    // Two failed probes 300 ms apart (and ejection, sooner) take it out.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let state = mesh.admin_get("client", "/endpoints").await.json();
    let c_state = state["web"]["endpoints"]
        .as_array()
        .and_then(|e| {
            e.iter()
                .find(|e| e["address"] == c.addr().to_string())
                .cloned()
        })
        .unwrap_or_default();
    assert_eq!(c_state["healthy"], false, "{state}");
    assert!(
        state["web"]["ejections"].as_u64() >= Some(1),
        "ejected by its failures first: {state}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let restarted = start.elapsed();
    c.restart().await;
    let outcomes = traffic.await.unwrap_or_else(|e| panic!("load: {e}"));
    let detected = killed + Duration::from_millis(1200);
    let back_within = restarted + Duration::from_millis(2 * 300 + 1_000);
    let errors = failures(&outcomes);
    let late_errors: Vec<&&Outcome> = errors.iter().filter(|o| o.at >= detected).collect();
    let while_down: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.at >= detected && o.at < restarted)
        .collect();
    let back: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.at >= back_within && o.served_by.as_deref() == Some("c"))
        .collect();
    let first_back = outcomes
        .iter()
        .filter(|o| o.at >= restarted && o.served_by.as_deref() == Some("c"))
        .map(|o| o.at - restarted)
        .min();
    eprintln!(
        "{} requests, {} errors ({} after detection); c back after {first_back:?}",
        outcomes.len(),
        errors.len(),
        late_errors.len()
    );
    assert!(late_errors.is_empty(), "{late_errors:?}");
    assert!(
        while_down.len() > 50
            && while_down
                .iter()
                .all(|o| o.served_by.as_deref() != Some("c"))
    );
    assert!(
        first_back.is_some_and(|d| d <= Duration::from_millis(1_600)),
        "c back after {first_back:?}"
    );
    assert!(!back.is_empty(), "c takes traffic again");
    assert!(b.requests() > 0 && a.requests() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_retried_after_it_was_sent_only_when_the_route_allows_it() {
    let app = Server::start("app").await;
    let a = Server::start("a").await;
    a.knobs().fail_posts.store(true, Ordering::SeqCst);
    let services = format!(
        "service web {{ port 8001 endpoints {a} }}\n\
         service half {{ port 8002 endpoints [\"{{{{down}}}}\", \"{addr}\"] }}\n\
         route writes on web {{ retry {{ attempts 3 on [connect_failure, 503] backoff 1ms to 5ms non_idempotent true }} }}\n\
         route writes-half on half {{ retry {{ attempts 3 on [connect_failure, 503] backoff 1ms to 5ms non_idempotent true }} }}",
        a = endpoints(&[&a]),
        addr = a.addr(),
    );
    let mesh = client_mesh(&services, &app).await;
    let addr = mesh.outbound("client");
    let post = |host: &str| {
        h1_request(Method::POST, host, "/orders")
            .body(full(vec![b'x'; 1000]))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let mut connection = H1::open(addr).await;
    // As compiled (`non_idempotent true`): the POST is sent three times, whole each time.
    let o = send(&mut connection, post("web"), Duration::ZERO).await;
    assert_eq!((o.status, o.retries), (503, 2));
    assert_eq!(
        *a.counts()
            .post_bodies
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
        [1000, 1000, 1000]
    );

    // The same table with `non_idempotent false`, as a table could arrive from elsewhere
    // (meshc refuses to write it): no retry once the POST was sent, GET still retried.
    let mut table =
        mesh_table::decode(mesh.initial_table()).unwrap_or_else(|e| panic!("decode: {e}"));
    for route in &mut table.routes {
        if let Some(retry) = &mut route.retry {
            retry.non_idempotent = false;
        }
    }
    install(&mesh, &mesh_table::encode(&table)).await;
    let before = a.requests();
    let o = send(&mut connection, post("web"), Duration::ZERO).await;
    assert_eq!(
        (o.status, o.retries, o.mesh_error.as_deref()),
        (503, 0, None)
    );
    assert_eq!(a.requests(), before + 1, "the POST went once");
    a.knobs().fail_percent.store(100, Ordering::SeqCst);
    let o = send(&mut connection, get("web", "/orders", &[]), Duration::ZERO).await;
    assert_eq!((o.status, o.retries), (503, 2), "a GET is retried on 503");
    a.knobs().fail_percent.store(0, Ordering::SeqCst);

    // A connection failure means the POST never left: retried even so, to the endpoint
    // that is up, where its 503 is final.
    let before = a.requests();
    for _ in 0..6 {
        let o = send(&mut connection, post("half"), Duration::ZERO).await;
        assert_eq!((o.status, o.mesh_error.as_deref()), (503, None), "{o:?}");
        assert!(o.retries <= 1);
    }
    assert_eq!(
        a.requests(),
        before + 6,
        "each POST reached the live endpoint once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unavailable_in_a_trailers_only_answer_is_retried_on_another_endpoint() {
    let app = Server::start("app").await;
    let [a, b, _] = three(["a", "b", "unused"]).await;
    a.knobs().grpc_unavailable.store(true, Ordering::SeqCst);
    // gRPC calls are POSTs; UNAVAILABLE means the call was not processed, so retrying
    // it needs no `non_idempotent`.
    let rpc = format!(
        "service rpc {{ port 8003 protocol grpc endpoints {} }}\n\
         route calls on rpc {{ match {{ method [POST] }} retry {{ attempts 2 on [unavailable] backoff 1ms to 5ms }} }}",
        endpoints(&[&a, &b])
    );
    let mesh = client_mesh(&rpc, &app).await;
    let mut connection = H1::open(mesh.outbound("client")).await;
    let mut retried = 0;
    for _ in 0..10 {
        let request = h1_request(Method::POST, "rpc", "/test.Echo/Unary")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(full(vec![0u8, 0, 0, 0, 1, b'x']))
            .unwrap_or_else(|e| panic!("{e}"));
        let reply = connection.fetch(request).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header("grpc-status"),
            Some("0"),
            "{:?}",
            reply.headers
        );
        assert_eq!(reply.header("x-served-by"), Some("b"));
        retried += u64::from(reply.header("x-mesh-retries") == Some("1"));
    }
    assert!(
        retried >= 3,
        "round robin sent some calls to a first: {retried}"
    );
    assert_eq!(a.requests(), retried);
}

/// Seconds the keep-alive race test runs: 20, or `MESH_KEEPALIVE_SECS` (60 for a long run).
fn keepalive_secs() -> u64 {
    std::env::var("MESH_KEEPALIVE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_closed_by_idle_servers_as_requests_arrive_cause_no_errors() {
    let idle = Some(Duration::from_secs(1));
    let app = Server::start("app").await;
    // An HTTP/1.1 application behind the web sidecar, and an h2c endpoint reached
    // directly; both close connections idle for one second.
    let web_app = Server::start_on("web-app", SocketAddr::from(([127, 0, 0, 1], 0)), idle).await;
    let direct = Server::start_on("direct", SocketAddr::from(([127, 0, 0, 1], 0)), idle).await;
    // The direct endpoint speaks h2c, so the mesh runs without mTLS, and the web sidecar
    // then sees plaintext callers: it admits them (`anyone`).
    let policy = format!(
        "{PRELUDE}service web {{ port 8001 protocol http1 endpoints [\"{{{{web}}}}\"] mtls permissive }}\n\
         authorize web {{ allow from anyone }}\n\
         service direct {{ port 8002 endpoints [\"{}\"] }}\n",
        direct.addr()
    );
    let mesh = Mesh::builder(&policy)
        .proxy("client", app.addr())
        .proxy("web", web_app.addr())
        .insecure_plaintext()
        .start()
        .await;
    let secs = keepalive_secs();
    let addr = mesh.outbound("client");
    let every_second = |host: &'static str| async move {
        let mut connection = H1::open(addr).await;
        let start = Instant::now();
        let mut outcomes = Vec::new();
        while start.elapsed() < Duration::from_secs(secs) {
            outcomes.push(send(&mut connection, get(host, "/", &[]), start.elapsed()).await);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        outcomes
    };
    let (web, direct_outcomes) = tokio::join!(every_second("web"), every_second("direct"));
    let errors: Vec<&Outcome> = web
        .iter()
        .chain(&direct_outcomes)
        .filter(|o| !o.ok())
        .collect();
    let (web_conns, direct_conns) = (
        web_app.counts().connections.load(Ordering::SeqCst),
        direct.counts().connections.load(Ordering::SeqCst),
    );
    eprintln!(
        "{} requests in {secs} s; connections: web app {web_conns}, direct {direct_conns}; errors {errors:?}",
        web.len() + direct_outcomes.len()
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert!(web.len() as u64 >= secs / 2 && direct_outcomes.len() as u64 >= secs / 2);
    // The servers did close idle connections: the proxy reconnected again and again.
    assert!(
        web_conns >= 3 && direct_conns >= 3,
        "web app {web_conns}, direct {direct_conns}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_upstream_connections_close_after_the_idle_time() {
    let app = Server::start("app").await;
    let a = Server::start("a").await;
    let mesh = Mesh::builder(&format!(
        "{PRELUDE}service web {{ port 8001 endpoints {} }}",
        endpoints(&[&a])
    ))
    .proxy("client", app.addr())
    .insecure_plaintext()
    .extra_config("[upstream]\nidle_timeout_ms = 300\n")
    .start()
    .await;
    let mut connection = H1::open(mesh.outbound("client")).await;
    for _ in 0..5 {
        assert!(send(&mut connection, get("web", "/", &[]), Duration::ZERO)
            .await
            .ok());
    }
    assert_eq!(
        a.counts().connections.load(Ordering::SeqCst),
        1,
        "one pooled connection"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(send(&mut connection, get("web", "/", &[]), Duration::ZERO)
        .await
        .ok());
    assert_eq!(
        a.counts().connections.load(Ordering::SeqCst),
        2,
        "the idle one was closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_discovery_follows_a_resolver_and_keeps_the_last_good_set() {
    let app = Server::start("app").await;
    // Two endpoints on one port, told apart by address, as DNS discovery requires.
    // The second binds the first's port directly (no probe released first): if that port
    // is taken on 127.0.0.3, try another.
    let (a, b) = loop {
        let a = Server::start_on("a", SocketAddr::from(([127, 0, 0, 2], 0)), None).await;
        let port = a.addr().port();
        if let Ok(b) =
            Server::try_start_on("b", SocketAddr::from(([127, 0, 0, 3], port)), None).await
        {
            break (a, b);
        }
    };
    let port = a.addr().port();
    // A third on IPv6 loopback, for an AAAA record, where the machine has one.
    let ipv6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    let c = match Server::try_start_on("c", ipv6, None).await {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("no IPv6 loopback ({e}): AAAA records not tested");
            None
        }
    };
    let name = "web.mesh.test";
    let ip = |last: u8| IpAddr::from([127, 0, 0, last]);
    let mut dns = Dnsmasq::start(&[(name, ip(2))]).await;
    let mesh = Mesh::builder(&format!(
        "{PRELUDE}service web {{ port 8001 discovery dns \"{name}:{port}\" }}"
    ))
    .proxy("client", app.addr())
    .insecure_plaintext()
    .extra_config(&format!(
        "[discovery]\ndns_server = \"{}\"\ndns_min_refresh_ms = 200\ndns_max_refresh_ms = 1000\n",
        dns.addr()
    ))
    .start()
    .await;
    let mut connection = H1::open(mesh.outbound("client")).await;
    let mut seen = std::collections::BTreeMap::new();
    let mut ask = async |n: usize, seen: &mut std::collections::BTreeMap<String, usize>| {
        for _ in 0..n {
            let o = send(&mut connection, get("web", "/", &[]), Duration::ZERO).await;
            if let Some(by) = o.served_by {
                *seen.entry(by).or_insert(0) += 1;
            }
        }
    };
    // The first answer arrives within a refresh or two.
    let started = Instant::now();
    while seen.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no endpoint from DNS"
        );
        ask(1, &mut seen).await;
    }
    ask(20, &mut seen).await;
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["a"]);

    // Addresses added (A, and AAAA) and the resolver reloaded: the proxy finds them within
    // a few refreshes.
    let mut records = vec![(name, ip(2)), (name, ip(3))];
    if c.is_some() {
        records.push((name, IpAddr::from(std::net::Ipv6Addr::LOCALHOST)));
    }
    dns.set(&records);
    let started = Instant::now();
    while !seen.contains_key("b") || (c.is_some() && !seen.contains_key("c")) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the new address was not picked up: {seen:?}"
        );
        ask(5, &mut seen).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "new addresses found {:?} after the reload: {seen:?}",
        started.elapsed()
    );

    // The resolver gone, lookups fail: the last good set keeps serving.
    dns.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut later = std::collections::BTreeMap::new();
    ask(40, &mut later).await;
    assert_eq!(
        later.values().sum::<usize>(),
        40,
        "every request answered: {later:?}"
    );
    assert!(
        later.contains_key("a") && later.contains_key("b"),
        "{later:?}"
    );
    assert!(b.requests() > 0);
    if let Some(c) = &c {
        assert!(later.contains_key("c"), "{later:?}");
        assert!(c.requests() > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_endpoint_fails_its_health_checks_traffic_spreads_over_all_in_panic_mode() {
    let app = Server::start("app").await;
    let [a, b, _] = three(["a", "b", "unused"]).await;
    let web = format!(
        "service web {{ port 8001 endpoints {} \
           health {{ path \"/healthz\" interval 200ms timeout 100ms unhealthy_after 1 healthy_after 1 }} }}",
        endpoints(&[&a, &b])
    );
    let mesh = client_mesh(&web, &app).await;
    a.knobs().unhealthy.store(true, Ordering::SeqCst);
    b.knobs().unhealthy.store(true, Ordering::SeqCst);
    // Health checks start with the destination's first request (served in panic mode).
    mesh.first_request("client", "web").await;
    let started = Instant::now();
    loop {
        let state = mesh.admin_get("client", "/endpoints").await.json();
        let endpoints = state["web"]["endpoints"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !endpoints.is_empty() && endpoints.iter().all(|e| e["healthy"] == false) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never unhealthy: {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut connection = H1::open(mesh.outbound("client")).await;
    let mut outcomes = Vec::new();
    for _ in 0..20 {
        outcomes.push(send(&mut connection, get("web", "/", &[]), Duration::ZERO).await);
    }
    assert!(failures(&outcomes).is_empty(), "{:?}", failures(&outcomes));
    assert_eq!(
        served(&outcomes).len(),
        2,
        "both endpoints still serve: {:?}",
        served(&outcomes)
    );
    let state = mesh.admin_get("client", "/endpoints").await.json();
    assert!(state["web"]["panic_picks"].as_u64() >= Some(20), "{state}");
    assert!(
        mesh.log("client").contains("panic mode"),
        "a log line says so"
    );
}
