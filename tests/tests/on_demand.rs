//! A sidecar follows and probes only the destinations its application calls: a service's
//! cluster (endpoints, health checks) starts at its first request, which waits for the
//! first round of health checks so it does not go to an endpoint found down, and sleeps
//! once no request went there for `[outbound] destination_idle_ms`.

use std::time::{Duration, Instant};

use mesh_tests::backend::Backend;
use mesh_tests::mesh::{down_endpoint, Mesh};

/// The policy, with `DOWN` for a second endpoint of web that refuses connections.
const POLICY: &str = r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service web {
  port 8001
  endpoints ["{{web}}", "DOWN"]
  health { path "/healthz" interval 100ms timeout 100ms unhealthy_after 3 healthy_after 1 }
}
service api {
  port 8002
  endpoints ["{{api}}"]
  health { path "/healthz" interval 100ms timeout 100ms unhealthy_after 3 healthy_after 1 }
}
authorize web { allow from client }
authorize api { allow from client }
"#;

/// Health probes `app` received so far.
fn probes(app: &Backend) -> usize {
    app.stats()
        .seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .filter(|r| r.as_str() == "GET /healthz")
        .count()
}

/// The services the client's sidecar has a cluster for (`/endpoints`).
async fn clusters(mesh: &Mesh) -> serde_json::Value {
    mesh.admin_get("client", "/endpoints").await.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_destinations_in_use_are_probed_and_idle_ones_sleep_until_the_next_request() {
    let client = Backend::start("client").await;
    let web = Backend::start("web").await;
    let api = Backend::start("api").await;
    let (_held, down) = down_endpoint();
    let policy = POLICY.replace("DOWN", &down.to_string());
    let mesh = Mesh::builder(&policy)
        .proxy("client", client.addr())
        .proxy("web", web.addr())
        .proxy("api", api.addr())
        .outbound_config("destination_idle_ms = 1500")
        .start()
        .await;

    // No request yet: nothing is probed, no cluster is listed.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        (probes(&web), probes(&api)),
        (0, 0),
        "probed before any request"
    );
    let listed = clusters(&mesh).await;
    assert!(
        listed.get("web").is_none() && listed.get("api").is_none(),
        "{listed}"
    );

    // The first request to web is served, and by then the down endpoint is already out:
    // its first probe failed (one failure decides the first round, not `unhealthy_after`).
    let first = mesh.first_request("client", "web").await;
    assert_eq!(first.status, 200, "{}", first.text());
    let listed = clusters(&mesh).await;
    let down = down.to_string();
    let endpoints = listed["web"]["endpoints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let down_state = endpoints.iter().find(|e| e["address"] == down.as_str());
    assert_eq!(
        down_state.map(|e| e["healthy"].clone()),
        Some(serde_json::Value::Bool(false)),
        "{listed}"
    );
    assert!(listed.get("api").is_none(), "{listed}");
    assert!(probes(&web) >= 1);

    // Probing goes on for web while requests come; api, never called, is never probed.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(800) {
        assert_eq!(mesh.first_request("client", "web").await.status, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(probes(&web) >= 5, "web probed {} times", probes(&web));
    assert_eq!(probes(&api), 0);

    // Idle past destination_idle_ms: the cluster sleeps, probes stop.
    let started = Instant::now();
    while clusters(&mesh).await.get("web").is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "web's cluster never slept"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let asleep = probes(&web);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(probes(&web), asleep, "probes went on while asleep");

    // The next request wakes it: served, listed and probed again.
    let again = mesh.first_request("client", "web").await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert!(clusters(&mesh).await.get("web").is_some());
    let started = Instant::now();
    while probes(&web) <= asleep {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no probe after waking"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
