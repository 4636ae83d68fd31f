//! Repeated request headers over raw sockets (issue 21, "Repeated headers"): header matchers
//! in routes and authorization read a repeated header as its values joined with `, `, so
//! `x-h: 0` + `x-h: 1` is decided exactly as `x-h: 0, 1` and `x-h: 1` + `x-h: 0` exactly as
//! `x-h: 1, 0`; no order of duplicates picks the route or rule of one of its values.

use std::net::SocketAddr;

use mesh_tests::backend::Backend;
use mesh_tests::mesh::Mesh;

const POLICY: &str = r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service web { port 8001 endpoints ["{{web}}"] mtls permissive }
route zero on web {
  match { header "x-h" exact "0" }
  response_headers { set "x-route" "zero" }
}
route one on web {
  match { header "x-h" exact "1" }
  response_headers { set "x-route" "one" }
}
route both on web {
  match { header "x-h" exact "0, 1" }
  response_headers { set "x-route" "both" }
}
route rest on web {
  match { path prefix "/" }
  response_headers { set "x-route" "rest" }
}
authorize web {
  deny  from anyone to path prefix "/" when header "x-d" regex "(.*, )?0(, .*)?"
  allow from anyone to path prefix "/" when header "x-a" exact "0, 1"
  default deny
}
"#;

/// The status and head of the answer to one raw request (sent with `Connection: close`).
async fn exchange(addr: SocketAddr, headers: &[&str]) -> (u16, String) {
    mesh_tests::raw::get_web(addr, "/r", headers).await
}

/// A header of a response head, by name.
fn header(head: &str, name: &str) -> Option<String> {
    mesh_tests::raw::header(head.as_bytes(), name)
}

async fn start() -> (Mesh, Backend, Backend) {
    Mesh::client_and_web(POLICY).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_headers_route_as_their_joined_value_in_either_order() {
    let (mesh, _client_app, _web) = start().await;
    let outbound = mesh.outbound("client");
    // Authorization needs `x-a: 0, 1`; it is given joined here so only `x-h` varies.
    let route = |x_h: &'static [&'static str]| async move {
        let mut headers = vec!["x-a: 0, 1"];
        headers.extend_from_slice(x_h);
        let (status, head) = exchange(outbound, &headers).await;
        assert_eq!(status, 200, "{x_h:?}: {head}");
        header(&head, "x-route").unwrap_or_else(|| panic!("{x_h:?}: no x-route in {head}"))
    };
    assert_eq!(route(&["x-h: 0"]).await, "zero");
    assert_eq!(route(&["x-h: 1"]).await, "one");
    assert_eq!(route(&["x-h: 0, 1"]).await, "both");
    // 0 then 1 is `0, 1`: neither `zero` nor `one`.
    assert_eq!(route(&["x-h: 0", "x-h: 1"]).await, "both");
    assert_eq!(route(&["X-H: 0", "x-h: 1"]).await, "both");
    // 1 then 0 is `1, 0`, which no header route takes: as `x-h: 1, 0` does.
    assert_eq!(route(&["x-h: 1, 0"]).await, "rest");
    assert_eq!(route(&["x-h: 1", "x-h: 0"]).await, "rest");
    // A header between the duplicates changes nothing.
    assert_eq!(route(&["x-h: 0", "x-other: z", "x-h: 1"]).await, "both");
    // Three values.
    assert_eq!(route(&["x-h: 0", "x-h: 1", "x-h: 0"]).await, "rest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_headers_authorize_as_their_joined_value_in_either_order() {
    let (mesh, _client_app, web) = start().await;
    // Through a full mesh hop (the caller's sidecar, mTLS, the service's sidecar) and
    // straight at the service's plaintext inbound listener: the same decisions.
    for (listener, addr) in [
        ("outbound", mesh.outbound("client")),
        ("inbound (plaintext)", mesh.inbound("web")),
    ] {
        let cases: [(&[&str], u16); 12] = [
            // allow ... when header "x-a" exact "0, 1"
            (&["x-a: 0, 1"], 200),
            (&["x-a: 0", "x-a: 1"], 200),
            (&["x-a: 1, 0"], 403),
            (&["x-a: 1", "x-a: 0"], 403),
            (&["x-a: 0"], 403),
            (&["x-a: 1"], 403),
            // deny ... when header "x-d" regex "(.*, )?0(, .*)?": a 0 anywhere in the list
            (&["x-a: 0, 1", "x-d: 1"], 200),
            (&["x-a: 0, 1", "x-d: 0"], 403),
            (&["x-a: 0, 1", "x-d: 0, 1"], 403),
            (&["x-a: 0, 1", "x-d: 0", "x-d: 1"], 403),
            (&["x-a: 0, 1", "x-d: 1", "x-d: 0"], 403),
            (&["x-a: 0, 1", "x-d: 1", "x-d: 1"], 200),
        ];
        for (headers, want) in cases {
            let (status, head) = exchange(addr, headers).await;
            assert_eq!(status, want, "{listener}: {headers:?}: {head}");
            if want == 403 {
                assert_eq!(
                    header(&head, "x-mesh-error").as_deref(),
                    Some("unauthorized"),
                    "{listener}: {headers:?}: {head}"
                );
            }
        }
    }
    // The application got the allowed requests only.
    let seen = web.stats().seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 2 * 4, "{seen:?}");
}
