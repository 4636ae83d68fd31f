//! Routing through the full hop (client → its sidecar's outbound → the target's sidecar's
//! inbound → the application): precedence by path, method and headers, a route to another
//! service, and a weighted split. Each route stamps `x-route` on the request, and the echo
//! backend names itself, so every reply proves which route and which backend served it.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use mesh_tests::backend::Backend;
use mesh_tests::body::empty;
use mesh_tests::client::{h1_request, load, within, H1};
use mesh_tests::mesh::Mesh;

const POLICY: &str = r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service web { port 8001 endpoints ["{{web}}"] }
service alt { port 8002 endpoints ["{{alt}}"] }

route exact on web { match { path exact "/api/v1/users" } request_headers { set "x-route" "exact" } }
route long on web { match { path prefix "/api/v1" } request_headers { set "x-route" "long-prefix" } }
route short on web { match { path prefix "/api" } request_headers { set "x-route" "short-prefix" } }
route numbered on web { match { path regex "/(api|things)/[0-9]+" } request_headers { set "x-route" "regex" } }
route m-post on web { match { path prefix "/m" method [POST] } request_headers { set "x-route" "m-post" } }
route m-any on web { match { path prefix "/m" } request_headers { set "x-route" "m-any" } }
route h-two on web {
  match { path prefix "/h" header "x-a" exact "1" header "x-b" present }
  request_headers { set "x-route" "h-two" }
}
route h-one on web { match { path prefix "/h" header "x-a" exact "1" } request_headers { set "x-route" "h-one" } }
route h-none on web { match { path prefix "/h" } request_headers { set "x-route" "h-none" } }
route other on web { match { path prefix "/other" } to alt request_headers { set "x-route" "other" } }
route split on web { match { path prefix "/split" } split { web 90% alt 10% } }
"#;

/// A request (method, path, extra headers) and the backend and `x-route` that must serve it.
type Case = (
    Method,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
    Option<&'static str>,
);

async fn start() -> (Mesh, Backend, Backend, Backend) {
    let client_app = Backend::start("client").await;
    let web = Backend::start("web").await;
    let alt = Backend::start("alt").await;
    let mesh = Mesh::builder(POLICY)
        .proxy("client", client_app.addr())
        .proxy("web", web.addr())
        .proxy("alt", alt.addr())
        .start()
        .await;
    (mesh, client_app, web, alt)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_path_method_and_headers_in_precedence_order() {
    let (mesh, client_app, web, alt) = start().await;
    let mut conn = H1::open(mesh.outbound("client")).await;
    let cases: &[Case] = &[
        (Method::GET, "/api/v1/users", &[], "web", Some("exact")),
        (
            Method::GET,
            "/api/v1/users?page=2",
            &[],
            "web",
            Some("exact"),
        ),
        (Method::GET, "/api//v1/./users", &[], "web", Some("exact")),
        (
            Method::GET,
            "/api/v1/users/7",
            &[],
            "web",
            Some("long-prefix"),
        ),
        (Method::GET, "/api/v1", &[], "web", Some("long-prefix")),
        // Prefixes match whole segments.
        (Method::GET, "/api/v1x", &[], "web", Some("short-prefix")),
        // A prefix beats a regex that matches too.
        (Method::GET, "/api/42", &[], "web", Some("short-prefix")),
        (Method::GET, "/things/42", &[], "web", Some("regex")),
        (Method::POST, "/m", &[], "web", Some("m-post")),
        (Method::POST, "/m/1", &[], "web", Some("m-post")),
        (Method::GET, "/m", &[], "web", Some("m-any")),
        (Method::PUT, "/m/1", &[], "web", Some("m-any")),
        (
            Method::GET,
            "/h",
            &[("x-a", "1"), ("x-b", "anything")],
            "web",
            Some("h-two"),
        ),
        (Method::GET, "/h", &[("x-a", "1")], "web", Some("h-one")),
        (
            Method::GET,
            "/h",
            &[("x-a", "2"), ("x-b", "1")],
            "web",
            Some("h-none"),
        ),
        (Method::GET, "/h/x", &[], "web", Some("h-none")),
        (Method::GET, "/other/page", &[], "alt", Some("other")),
    ];
    for (method, path, headers, backend, route) in cases {
        let mut request = h1_request(method.clone(), "web", path);
        for (name, value) in *headers {
            request = request.header(*name, *value);
        }
        let reply = conn.fetch(request.body(empty()).expect("request")).await;
        let what = format!("{method} {path} {headers:?}");
        assert_eq!(reply.status, 200, "{what}: {}", reply.text());
        let echo = reply.json();
        assert_eq!(echo["service"], *backend, "{what}: {echo}");
        assert_eq!(
            echo["headers"]["x-route"].as_str(),
            *route,
            "{what}: {echo}"
        );
        assert_eq!(echo["method"], method.as_str(), "{what}");
        // The application sees the normalized path the route was chosen on, with the query
        // as sent (docs/language.md, "Paths").
        let normalized = if *path == "/api//v1/./users" {
            "/api/v1/users"
        } else {
            path
        };
        assert_eq!(echo["path"], normalized, "{what}");
        assert_eq!(echo["headers"]["host"], "web", "{what}");
    }
    // The authority may carry a port and any case.
    for host in ["web:8001", "WEB", "Web:80"] {
        let request = h1_request(Method::GET, host, "/api/v1/users")
            .body(empty())
            .expect("request");
        let reply = conn.fetch(request).await;
        assert_eq!(reply.status, 200, "Host {host}: {}", reply.text());
        assert_eq!(
            reply.echoed_header("x-route").as_deref(),
            Some("exact"),
            "Host {host}"
        );
    }
    // A service with routes and none matching: 404 from the proxy, the app never asked.
    let before = web
        .stats()
        .requests
        .load(std::sync::atomic::Ordering::SeqCst);
    let reply = conn.get("web", "/things/abc").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.mesh_error(), Some("no-route"));
    assert_eq!(
        web.stats()
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        before
    );
    // A service without routes goes to the service itself.
    let reply = conn.get("alt", "/anything").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.echoed_service(), "alt");
    assert_eq!(reply.echoed_header("x-route"), None);
    let served = web
        .stats()
        .requests
        .load(std::sync::atomic::Ordering::SeqCst)
        + alt
            .stats()
            .requests
            .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(served, cases.len() as u64 + 4);
    assert_eq!(
        client_app
            .stats()
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_90_10_split_holds_within_5_points_over_2000_requests() {
    let (mesh, _client_app, _web, _alt) = start().await;
    let started = Instant::now();
    let replies = within(
        "2,000 split requests",
        Duration::from_secs(120),
        load(
            mesh.outbound("client"),
            8,
            2_000,
            Arc::new(AtomicUsize::new(0)),
            |i| {
                h1_request(Method::GET, "web", &format!("/split/{i}"))
                    .body(empty())
                    .expect("request")
            },
        ),
    )
    .await;
    assert_eq!(replies.len(), 2_000);
    let mut web = 0usize;
    let mut alt = 0usize;
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.text());
        match reply.echoed_service().as_str() {
            "web" => web += 1,
            "alt" => alt += 1,
            other => panic!("unexpected backend `{other}`"),
        }
    }
    assert_eq!(web + alt, 2_000);
    let alt_share = alt as f64 * 100.0 / 2_000.0;
    assert!(
        (5.0..=15.0).contains(&alt_share),
        "alt got {alt_share:.1}% (web {web}, alt {alt})"
    );
    eprintln!(
        "split: web {web}, alt {alt} ({alt_share:.1}%) in {:?}",
        started.elapsed()
    );
}
