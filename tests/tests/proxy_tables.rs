//! Rule tables at run time: swapped 50 times under a load of 20,000 requests without losing
//! one; corrupt tables refused while the old one keeps serving; SIGHUP forcing a reload; and
//! a sidecar that starts before its table exists becoming ready when it appears.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use mesh_tests::backend::Backend;
use mesh_tests::body::empty;
use mesh_tests::client::{get, h1_request, load, within, H1};
use mesh_tests::mesh::{table_checksum, Mesh};

/// `VERSION` is replaced by a table's name: the route stamps it on every request.
const POLICY: &str = r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service web { port 8001 endpoints ["{{web}}"] }
route all on web { match { path prefix "/" } request_headers { set "x-table" "VERSION" } }
"#;

fn policy(version: &str) -> String {
    POLICY.replace("VERSION", version)
}

async fn start(version: &str, poll_ms: u64) -> (Mesh, Backend, Backend) {
    let client_app = Backend::start("client").await;
    let web = Backend::start("web").await;
    let mesh = Mesh::builder(&policy(version))
        .proxy("client", client_app.addr())
        .proxy("web", web.addr())
        .table_poll_ms(poll_ms)
        .start()
        .await;
    (mesh, client_app, web)
}

/// The `x-table` the app saw on a fresh request through the client's sidecar.
async fn table_seen(mesh: &Mesh) -> String {
    let reply = get(mesh.outbound("client"), "web", "/probe").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.echoed_header("x-table").unwrap_or_default()
}

/// Waits until `service`'s sidecar reports `checksum`; fails after `limit`.
async fn wait_checksum(mesh: &Mesh, service: &str, checksum: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        if mesh.config(service).await["checksum"] == checksum {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "{service} did not load table {checksum} within {limit:?}:\n{}",
            mesh.log(service)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `service`'s sidecar reports `load_failures == failures`; fails after `limit`.
async fn wait_failures(
    mesh: &Mesh,
    service: &str,
    failures: u64,
    limit: Duration,
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let config = mesh.config(service).await;
        if config["load_failures"] == failures {
            return config;
        }
        assert!(
            started.elapsed() < limit,
            "{service}: load_failures never reached {failures}: {config}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_table_swaps_under_20000_requests_lose_none() {
    const TOTAL: usize = 20_000;
    const SWAPS: usize = 50;
    const EVERY: usize = 300; // swap k waits for k × 300 replies, so all happen mid-load
    let (mesh, _client_app, web) = start("t0", 10).await;
    let mesh = Arc::new(mesh);
    let tables = Arc::new([
        mesh.compile(&policy("a")),
        mesh.compile(&policy("b")),
        mesh.compile(&policy("final")),
    ]);
    let done = Arc::new(AtomicUsize::new(0));

    let swapper = {
        let (mesh, tables, done) = (Arc::clone(&mesh), Arc::clone(&tables), Arc::clone(&done));
        tokio::spawn(async move {
            let started = Instant::now();
            let mut confirmed_at = Vec::new();
            for k in 1..=SWAPS {
                while done.load(Ordering::Relaxed) < k * EVERY {
                    assert!(
                        started.elapsed() < Duration::from_secs(150),
                        "the load stalled before swap {k}"
                    );
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let table = if k == SWAPS {
                    &tables[2]
                } else {
                    &tables[k % 2]
                };
                mesh.install_table(table);
                let checksum = table_checksum(table);
                for service in ["client", "web"] {
                    wait_checksum(&mesh, service, &checksum, Duration::from_secs(5)).await;
                }
                confirmed_at.push(done.load(Ordering::Relaxed));
            }
            confirmed_at
        })
    };
    let started = Instant::now();
    let replies = within(
        "20,000 requests",
        Duration::from_secs(180),
        load(mesh.outbound("client"), 16, TOTAL, Arc::clone(&done), |i| {
            h1_request(Method::GET, "web", &format!("/load/{i}"))
                .body(empty())
                .expect("request")
        }),
    )
    .await;
    let elapsed = started.elapsed();
    let confirmed_at = within("swapper", Duration::from_secs(30), swapper)
        .await
        .expect("swapper");

    assert_eq!(confirmed_at.len(), SWAPS);
    let last_swap = *confirmed_at.last().expect("swaps");
    assert!(
        last_swap < TOTAL,
        "the last swap took effect after the load ended ({last_swap} replies in)"
    );
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(
            reply.status,
            200,
            "request {i}: {} {:?}",
            reply.text(),
            reply.mesh_error()
        );
        let echo = reply.json();
        assert_eq!(
            echo["path"],
            format!("/load/{i}"),
            "request {i} got another's reply"
        );
        let table = echo["headers"]["x-table"]
            .as_str()
            .unwrap_or("none")
            .to_string();
        // Requests that started after the last swap took effect see the last table.
        if i >= last_swap + 16 {
            assert_eq!(table, "final", "request {i} after the last swap");
        }
        *seen.entry(table).or_default() += 1;
    }
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        ["a", "b", "final", "t0"],
        "{seen:?}"
    );
    assert_eq!(web.stats().requests.load(Ordering::SeqCst), TOTAL as u64);
    for _ in 0..20 {
        assert_eq!(table_seen(&mesh).await, "final");
    }
    for service in ["client", "web"] {
        let config = mesh.config(service).await;
        assert_eq!(config["loads"], 1 + SWAPS, "{service}: {config}");
        assert_eq!(config["load_failures"], 0, "{service}: {config}");
        assert_eq!(config["checksum"], table_checksum(&tables[2]));
    }
    eprintln!("{TOTAL} requests in {elapsed:?} with {SWAPS} swaps, tables seen: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_tables_are_refused_and_the_old_one_keeps_serving() {
    let (mesh, _client_app, _web) = start("a", 10).await;
    let good = mesh.initial_table().to_vec();
    let checksum = table_checksum(&good);
    let before = mesh.config("client").await;
    assert_eq!(before["checksum"], checksum);
    assert_eq!(before["loads"], 1);
    assert_eq!(before["load_failures"], 0);
    assert_eq!(table_seen(&mesh).await, "a");

    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0xff;
    let mut bad_magic = good.clone();
    bad_magic[0] ^= 0x01;
    let corruptions: [(&str, Vec<u8>); 4] = [
        ("a flipped payload byte", flipped),
        ("a flipped magic byte", bad_magic),
        ("a table cut in half", good[..good.len() / 2].to_vec()),
        ("an empty file", Vec::new()),
    ];
    let mut conn = H1::open(mesh.outbound("client")).await;
    for (n, (what, bytes)) in corruptions.iter().enumerate() {
        mesh.install_table(bytes);
        for service in ["client", "web"] {
            let config = wait_failures(&mesh, service, n as u64 + 1, Duration::from_secs(5)).await;
            assert_eq!(
                config["checksum"], checksum,
                "{what}: {service} changed table"
            );
            assert_eq!(config["loads"], 1, "{what}: {service}");
        }
        // Traffic keeps flowing, on a kept-alive connection and a new one, the old way.
        for _ in 0..5 {
            let reply = conn.get("web", "/after-corruption").await;
            assert_eq!(reply.status, 200, "{what}: {}", reply.text());
            assert_eq!(
                reply.echoed_header("x-table").as_deref(),
                Some("a"),
                "{what}"
            );
        }
        assert_eq!(table_seen(&mesh).await, "a", "{what}");
        assert_eq!(
            mesh.admin_get("client", "/ready").await.status,
            200,
            "{what}"
        );
    }
    assert!(
        mesh.log("client").contains("rule table refused"),
        "{}",
        mesh.log("client")
    );

    // A good table after the bad ones is taken.
    let next = mesh.compile(&policy("b"));
    mesh.install_table(&next);
    wait_checksum(
        &mesh,
        "client",
        &table_checksum(&next),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(table_seen(&mesh).await, "b");
    let config = mesh.config("client").await;
    assert_eq!(config["loads"], 2);
    assert_eq!(config["load_failures"], corruptions.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_forces_a_reload() {
    // Polls are an hour apart: only SIGHUP makes the sidecar look at the file.
    let (mesh, _client_app, _web) = start("a", 3_600_000).await;
    let first = table_checksum(mesh.initial_table());
    let next = mesh.compile(&policy("b"));
    mesh.install_table(&next);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        mesh.config("client").await["checksum"],
        first,
        "reloaded without a poll or SIGHUP"
    );
    assert_eq!(table_seen(&mesh).await, "a");

    mesh.signal("client", "HUP");
    wait_checksum(
        &mesh,
        "client",
        &table_checksum(&next),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(table_seen(&mesh).await, "b");
    let config = mesh.config("client").await;
    assert_eq!(config["loads"], 2);
    assert_eq!(config["load_failures"], 0);

    // A corrupt table on SIGHUP is refused like any other.
    let mut corrupt = next.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x55;
    mesh.install_table(&corrupt);
    mesh.signal("client", "HUP");
    let config = wait_failures(&mesh, "client", 1, Duration::from_secs(5)).await;
    assert_eq!(config["checksum"], table_checksum(&next));
    assert_eq!(table_seen(&mesh).await, "b");
    assert!(
        mesh.try_exit("client").is_none(),
        "SIGHUP ended the sidecar"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_started_before_its_table_becomes_ready_when_it_appears() {
    let client_app = Backend::start("client").await;
    let web = Backend::start("web").await;
    let mesh = Mesh::builder(&policy("a"))
        .proxy("client", client_app.addr())
        .proxy("web", web.addr())
        .without_table()
        .start()
        .await;
    assert!(!mesh.table_path().exists());
    for service in ["client", "web"] {
        let ready = mesh.admin_get(service, "/ready").await;
        assert_eq!(ready.status, 503, "{service}: {}", ready.text());
        assert_eq!(ready.json()["ready"], false);
        assert_eq!(mesh.admin_get(service, "/live").await.status, 200);
        let config = mesh.config(service).await;
        assert!(config["checksum"].is_null());
        // Waiting for a table that is not there yet is not a refused table.
        assert_eq!(config["load_failures"], 0, "{service}: {config}");
    }
    let reply = get(mesh.outbound("client"), "web", "/early").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.mesh_error(), Some("no-table"));

    mesh.install_table(mesh.initial_table());
    let started = Instant::now();
    for service in ["client", "web"] {
        within(
            "ready after the table appears",
            Duration::from_secs(10),
            mesh.wait_ready(service),
        )
        .await;
        assert_eq!(
            mesh.config(service).await["checksum"],
            table_checksum(mesh.initial_table())
        );
    }
    eprintln!("ready {:?} after the table appeared", started.elapsed());
    assert_eq!(table_seen(&mesh).await, "a");
    assert_eq!(web.stats().requests.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_table_with_the_same_size_and_mtime_is_still_seen() {
    // Reproducible builds, `cp -p`, `rsync -t` and `tar` give files fixed modification
    // times; "a" and "b" compile to tables of the same size.
    let (mesh, _client_app, _web) = start("a", 10).await;
    let fixed = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    mesh.install_table_modified(mesh.initial_table(), fixed);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let next = mesh.compile(&policy("b"));
    assert_eq!(next.len(), mesh.initial_table().len());
    mesh.install_table_modified(&next, fixed);
    wait_checksum(
        &mesh,
        "client",
        &table_checksum(&next),
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(table_seen(&mesh).await, "b");
}
