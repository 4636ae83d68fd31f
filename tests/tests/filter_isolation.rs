//! Filter isolation in a real sidecar: one client's requests that make a fail-closed WASM
//! filter spin past its time limit, trap or exhaust its memory each get their own 503
//! `filter-failed`, while another client's requests through the same filter and sidecar
//! keep succeeding (no filter-wide rest that fails everyone).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_tests::backend::Backend;
use mesh_tests::client::H1;
use mesh_tests::filters::wasm;
use mesh_tests::mesh::Mesh;

/// One filter per misbehaviour, each misbehaving only for paths under `/<kind>/bad`.
const POLICY: &str = r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service web { port 8001 endpoints ["{{web}}"] }
route spin on web { match { path prefix "/spin" } filters [spin] }
route trap on web { match { path prefix "/trap" } filters [crash] }
route grow on web { match { path prefix "/grow" } filters [hog] }
route fine on web { match { path prefix "/" } }
filter spin { module "misbehave.wasm" config { mode: "loop", path_prefix: "/spin/bad" } failure closed time_limit 20ms }
filter crash { module "misbehave.wasm" config { mode: "trap", path_prefix: "/trap/bad" } failure closed }
filter hog { module "misbehave.wasm" config { mode: "grow", path_prefix: "/grow/bad" } failure closed memory 2MiB }
"#;

/// How long each attack runs.
const ATTACK: Duration = Duration::from_secs(5);
/// The attacker's pace: 25 bad requests a second.
const ATTACK_EVERY: Duration = Duration::from_millis(40);

/// What one attack run saw.
#[derive(Debug, Default)]
struct Outcome {
    /// The normal client's slowest request (what a broken instance's replacement and a
    /// spinning callback on its worker cost it).
    normal_slowest: Duration,
    normal_ok: usize,
    normal_failed: Vec<String>,
    attacks: usize,
    attacks_refused: usize,
    attack_other: Vec<String>,
}

async fn mesh() -> (Mesh, Backend, Backend) {
    let client_app = Backend::start("client").await;
    let web = Backend::start("web").await;
    let path = wasm("misbehave");
    let module = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mesh = Mesh::builder(POLICY)
        .proxy("client", client_app.addr())
        .proxy("web", web.addr())
        .file("misbehave.wasm", module)
        .start()
        .await;
    (mesh, client_app, web)
}

/// For `ATTACK`: an attacker sends `/<kind>/bad` every `ATTACK_EVERY` (each on a new
/// connection) while a normal client sends `/<kind>/ok` back to back on its own connection.
async fn attack(mesh: &Mesh, kind: &str, attacking: bool) -> Outcome {
    let addr = mesh.outbound("client");
    let stop = Arc::new(AtomicBool::new(false));
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let normal = {
        let (stop, outcome) = (stop.clone(), outcome.clone());
        let path = format!("/{kind}/ok");
        tokio::spawn(async move {
            let mut conn = H1::open(addr).await;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let reply = conn.get("web", &path).await;
                let took = started.elapsed();
                let mut o = outcome.lock().expect("lock");
                o.normal_slowest = o.normal_slowest.max(took);
                if reply.status == 200 {
                    o.normal_ok += 1;
                } else {
                    o.normal_failed.push(format!(
                        "{} {:?}: {}",
                        reply.status,
                        reply.mesh_error(),
                        reply.text()
                    ));
                }
            }
        })
    };
    let attacker = {
        let (stop, outcome) = (stop.clone(), outcome.clone());
        let path = format!("/{kind}/bad");
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ATTACK_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let sent = AtomicUsize::new(0);
            let mut pending = Vec::new();
            while attacking && !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                sent.fetch_add(1, Ordering::Relaxed);
                let (outcome, path) = (outcome.clone(), path.clone());
                // Each on its own connection and task: the attacker does not wait for one
                // to fail before sending the next.
                pending.push(tokio::spawn(async move {
                    let mut conn = H1::open(addr).await;
                    let reply = conn.get("web", &path).await;
                    let mut o = outcome.lock().expect("lock");
                    o.attacks += 1;
                    if reply.status == 503 && reply.mesh_error() == Some("filter-failed") {
                        o.attacks_refused += 1;
                    } else {
                        o.attack_other
                            .push(format!("{} {:?}", reply.status, reply.mesh_error()));
                    }
                }));
            }
            for task in pending {
                task.await.expect("attack request");
            }
        })
    };
    tokio::time::sleep(ATTACK).await;
    stop.store(true, Ordering::Relaxed);
    normal.await.expect("normal client");
    attacker.await.expect("attacker");
    let mut o = outcome.lock().expect("lock");
    std::mem::take(&mut *o)
}

/// The sum of the samples of `name` whose label set contains `label`.
async fn metric(mesh: &Mesh, name: &str, label: &str) -> f64 {
    let text = mesh.admin_get("client", "/metrics").await.text();
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

fn check(kind: &str, o: &Outcome, alone: usize) {
    let total = o.normal_ok + o.normal_failed.len();
    println!(
        "{kind}: normal client {}/{total} ok ({:.0}% of its {alone} alone), slowest {:?}; \
         attacker {} sent, {} refused 503 filter-failed",
        o.normal_ok,
        100.0 * o.normal_ok as f64 / alone.max(1) as f64,
        o.normal_slowest,
        o.attacks,
        o.attacks_refused
    );
    assert!(
        o.attacks as f64 >= ATTACK.as_secs_f64() * 10.0,
        "{kind}: the attacker sent at least 10 a second ({})",
        o.attacks
    );
    assert_eq!(
        o.attacks_refused, o.attacks,
        "{kind}: every attacking request gets its own 503 filter-failed: {:?}",
        o.attack_other
    );
    assert!(total >= 100, "{kind}: the normal client ran ({total})");
    assert!(
        o.normal_ok as f64 >= 0.999 * total as f64,
        "{kind}: normal client {}/{total} ok; failures: {:?}",
        o.normal_ok,
        &o.normal_failed[..o.normal_failed.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_spinning_trapping_or_hoarding_request_fails_alone() {
    let (mesh, _client_app, _web) = mesh().await;
    let started = Instant::now();
    // The normal client alone first, for its throughput without an attacker (printed; the
    // throughput target is bench/'s to measure, not a shared debug-build machine's).
    let alone = attack(&mesh, "spin", false).await;
    assert!(alone.normal_failed.is_empty(), "{:?}", alone.normal_failed);
    for (kind, reason) in [("spin", "timeout"), ("trap", "trap"), ("grow", "memory")] {
        let outcome = attack(&mesh, kind, true).await;
        check(kind, &outcome, alone.normal_ok);
        let failed = metric(
            &mesh,
            "mesh_filter_failures_total",
            &format!("reason=\"{reason}\""),
        )
        .await;
        assert!(
            failed >= outcome.attacks as f64,
            "{kind}: each attack counted as {reason} ({failed} for {})",
            outcome.attacks
        );
    }
    let unavailable = metric(
        &mesh,
        "mesh_filter_failures_total",
        "reason=\"unavailable\"",
    )
    .await;
    assert_eq!(
        unavailable, 0.0,
        "no request failed for another's failure (unavailable)"
    );
    let rebound = metric(&mesh, "mesh_filter_streams_rebound_total", "").await;
    let start_max = metric(&mesh, "mesh_filter_instance_start_max_seconds", "").await;
    println!(
        "three attacks in {:?}; {rebound} normal requests moved to a fresh instance; \
         longest instance start {start_max} s",
        started.elapsed()
    );
    assert!(
        start_max > 0.0 && start_max < 2.0,
        "replacing an instance is bounded: the longest start took {start_max} s"
    );
    assert!(mesh.try_exit("client").is_none(), "the proxy is still up");
}
