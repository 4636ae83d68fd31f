//! Circuit breaking: a service's `limits { max_requests  max_pending }` bound what each
//! caller's sidecar sends it at once. With more concurrent clients than the limits admit,
//! against a slow application, the surplus is answered at once with `503` and
//! `x-mesh-error: overloaded` (counted in `mesh_overloaded_total`), the application never
//! sees more than `max_requests` at a time, and the admitted requests succeed. The
//! assertions do not depend on timing beyond "the surplus is answered before the slow
//! application answers the admitted ones" (5 s against answers that take milliseconds).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mesh_tests::backend::Backend;
use mesh_tests::client::{within, H1};
use mesh_tests::mesh::Mesh;

const POLICY: &str = r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service web {
  port 8001
  endpoints ["{{web}}"]
  limits { max_requests 2  max_pending 0 }
}
service queue {
  port 8002
  endpoints ["{{queue}}"]
  limits { max_requests 1  max_pending 1 }
}
route slow on web { match { path prefix "/" } timeout 30s }
route queued on queue { match { path prefix "/" } timeout 30s }
"#;

const SLOW_MS: u64 = 5_000;
const LIMIT: Duration = Duration::from_secs(60);

/// `n` concurrent GETs of `path` on `host`, each on its own connection: (status, mesh
/// error, time to the answer) of each.
async fn concurrent(
    mesh: &Mesh,
    host: &'static str,
    path: &'static str,
    n: usize,
) -> Vec<(u16, Option<String>, Duration)> {
    let mut conns = Vec::new();
    for _ in 0..n {
        conns.push(H1::open(mesh.outbound("client")).await);
    }
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            tokio::spawn(async move {
                let started = Instant::now();
                let reply = conn.get(host, path).await;
                (
                    reply.status.as_u16(),
                    reply.mesh_error().map(str::to_string),
                    started.elapsed(),
                )
            })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(within("a client", LIMIT, task).await.expect("join"));
    }
    out
}

fn overloaded_total(metrics: &str, service: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("mesh_overloaded_total{"))
        .filter(|l| l.contains(&format!("service=\"{service}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_surplus_is_refused_at_once_and_the_admitted_succeed() {
    let client_app = Backend::start("client").await;
    let web = Backend::start("web").await;
    let queue = Backend::start("queue").await;
    let mesh = Mesh::builder(POLICY)
        .proxy("client", client_app.addr())
        .proxy("web", web.addr())
        .proxy("queue", queue.addr())
        .start()
        .await;

    // Six clients against `max_requests 2  max_pending 0`.
    let path: &'static str = Box::leak(format!("/slow/{SLOW_MS}").into_boxed_str());
    let replies = concurrent(&mesh, "web", path, 6).await;
    let ok: Vec<_> = replies.iter().filter(|r| r.0 == 200).collect();
    let over: Vec<_> = replies
        .iter()
        .filter(|r| r.0 == 503 && r.1.as_deref() == Some("overloaded"))
        .collect();
    assert_eq!(
        ok.len() + over.len(),
        6,
        "only 200s and 503 overloaded: {replies:?}"
    );
    assert!(ok.len() >= 2, "the admitted succeed: {replies:?}");
    assert!(!over.is_empty(), "the surplus is refused: {replies:?}");
    for refused in &over {
        assert!(
            refused.2 < Duration::from_millis(SLOW_MS),
            "refused at once, not queued behind the slow ones: {replies:?}"
        );
    }
    assert_eq!(
        web.stats().requests.load(Ordering::Relaxed),
        ok.len() as u64,
        "refused requests never reach the application"
    );
    let metrics = mesh.admin_get("client", "/metrics").await.text();
    assert_eq!(
        overloaded_total(&metrics, "web"),
        over.len() as f64,
        "{metrics}"
    );

    // Three clients against `max_requests 1  max_pending 1`: one in flight, one waits and
    // then succeeds, the third is refused.
    let replies = concurrent(&mesh, "queue", "/slow/2000", 3).await;
    let ok = replies.iter().filter(|r| r.0 == 200).count();
    let over = replies
        .iter()
        .filter(|r| r.0 == 503 && r.1.as_deref() == Some("overloaded"))
        .count();
    assert_eq!(ok + over, 3, "{replies:?}");
    assert!(
        ok >= 2,
        "the waiting one is admitted when a slot frees: {replies:?}"
    );

    // Once the slow ones are done, the service takes requests again.
    let mut conn = H1::open(mesh.outbound("client")).await;
    assert_eq!(conn.get("web", "/after").await.status, 200);
}
