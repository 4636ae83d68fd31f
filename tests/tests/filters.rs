//! WASM filters in real sidecars: the example filters (SDK) and two filters built with the
//! public `proxy-wasm` crate act on real requests; route filters run in the caller's
//! sidecar and service filters in the callee's, in declaration order on requests and in
//! reverse on responses; a filter that loops, allocates without bound or traps is stopped
//! and its `failure` mode applies, without taking the proxy down or leaking; modules are
//! hot-loaded (new table, new file, `POST /filters/NAME`) without losing a request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use mesh_tests::backend::Backend;
use mesh_tests::body::{empty, full};
use mesh_tests::client::{h1_request, Reply, H1};
use mesh_tests::filters::wasm;
use mesh_tests::mesh::Mesh;

/// The module of `name`, read.
fn module(name: &str) -> Vec<u8> {
    let path = wasm(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `module` with a custom section appended: the same filter, another digest (a "new
/// version" as far as pins and caches are concerned).
fn new_version(module: &[u8], version: &str) -> Vec<u8> {
    let name = b"mesh.test-version";
    let mut payload = vec![u8::try_from(name.len()).expect("short name")];
    payload.extend_from_slice(name);
    payload.extend_from_slice(version.as_bytes());
    let mut out = module.to_vec();
    out.push(0);
    out.push(u8::try_from(payload.len()).expect("a short section"));
    out.extend(payload);
    out
}

async fn get_with(conn: &mut H1, path: &str, headers: &[(&str, &str)]) -> Reply {
    get_method(conn, Method::GET, path, headers).await
}

async fn get_method(conn: &mut H1, method: Method, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = h1_request(method, "web", path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    conn.fetch(request.body(empty()).expect("request")).await
}

/// The sum of the samples of `name` whose label set contains `label`.
async fn metric(mesh: &Mesh, service: &str, name: &str, label: &str) -> f64 {
    let text = mesh.admin_get(service, "/metrics").await.text();
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

const EXAMPLES: &str = r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service web {
  port 8001
  endpoints ["{{web}}"]
  filters [auth]
}
route chained on web { match { path prefix "/chained" } filters [first, second, audit] }
route limited on web { match { path prefix "/limited" } filters [limit] }
route plain on web { match { path prefix "/" } }
authorize web {
  allow from client to path prefix "/"
  default deny
}
filter auth {
  module "auth.wasm"
  config { tokens: { "good": ["GET"], "admin": ["*"] } }
  failure closed
}
filter first {
  module "header-adder.wasm"
  config { name: "x-first", value: "1", label: "first" }
  failure closed
}
filter second {
  module "header-adder.wasm"
  config { name: "x-second", value: "2", label: "second" }
  failure closed
}
filter audit {
  module "audit.wasm"
  config { header: "x-audit-id" }
  failure closed
}
filter limit {
  module "ratelimit.wasm"
  config { requests_per_second: 1, burst: 3 }
  failure open
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_filters_act_on_requests_in_real_sidecars() {
    let client_app = Backend::start("client").await;
    let web = Backend::start("web").await;
    let mut builder = Mesh::builder(EXAMPLES)
        .proxy("client", client_app.addr())
        .proxy("web", web.addr());
    for name in ["auth", "header-adder", "audit", "ratelimit"] {
        builder = builder.file(&format!("{name}.wasm"), module(name));
    }
    let mesh = builder.start().await;
    let mut conn = H1::open(mesh.outbound("client")).await;

    // auth runs in web's own (inbound) sidecar and answers by itself.
    let reply = get_with(&mut conn, "/plain", &[]).await;
    assert_eq!(reply.status, 401, "no credential: {}", reply.text());
    assert!(
        reply
            .header("www-authenticate")
            .is_some_and(|c| c.contains("realm")),
        "401 without a challenge: {:?}",
        reply.headers
    );
    let reply = get_with(&mut conn, "/plain", &[("authorization", "Bearer wrong")]).await;
    assert_eq!(reply.status, 403, "unknown token: {}", reply.text());
    let reply = get_method(
        &mut conn,
        Method::POST,
        "/plain",
        &[("authorization", "Bearer good")],
    )
    .await;
    assert_eq!(
        reply.status,
        403,
        "a method the token may not use: {}",
        reply.text()
    );
    let reply = get_with(&mut conn, "/plain", &[("authorization", "Bearer good")]).await;
    assert_eq!(reply.status, 200, "a good token: {}", reply.text());
    assert_eq!(
        reply.echoed_header("authorization"),
        None,
        "the credential is stripped before the application"
    );
    assert_eq!(
        web.stats().requests.load(Ordering::Relaxed),
        1,
        "only the authorized request reached the app"
    );

    // Route filters run in the caller's sidecar: requests in declaration order, responses
    // in reverse.
    let reply = get_with(
        &mut conn,
        "/chained/x",
        &[("authorization", "Bearer admin")],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.echoed_header("x-first").as_deref(), Some("1"));
    assert_eq!(reply.echoed_header("x-second").as_deref(), Some("2"));
    let audit_id = reply
        .echoed_header("x-audit-id")
        .expect("audit adds its id header to the request");
    assert!(!audit_id.is_empty());
    assert_eq!(
        reply.header("x-audit-id"),
        Some(audit_id.as_str()),
        "audit echoes the id on the response"
    );
    let chain: Vec<&str> = reply
        .headers
        .get_all("x-filter-chain")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    assert_eq!(
        chain,
        ["second", "first"],
        "response phases run last filter first"
    );
    let reply = get_with(
        &mut conn,
        "/chained/y",
        &[("authorization", "Bearer admin")],
    )
    .await;
    assert_ne!(
        reply.echoed_header("x-audit-id"),
        Some(audit_id),
        "each request gets its own audit id"
    );
    // None of these filters has a body hook: once the first request showed the host so,
    // bodies pass untouched, their length included (no re-framing as chunked).
    assert!(
        reply.header("content-length").is_some() && reply.header("transfer-encoding").is_none(),
        "the response body was re-framed: {:?}",
        reply.headers
    );

    // ratelimit: a bucket of 3, refilled at 1/s.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let reply = get_with(&mut conn, "/limited", &[("authorization", "Bearer good")]).await;
        statuses.push(reply.status.as_u16());
    }
    assert_eq!(
        &statuses[..3],
        [200, 200, 200],
        "the burst passes: {statuses:?}"
    );
    assert!(
        statuses[3..].contains(&429),
        "past the burst is limited: {statuses:?}"
    );
    let rejected = metric(&mesh, "client", "mesh_filter_", "filter=\"limit\"").await;
    assert!(rejected >= 1.0, "the filter's own metric is on /metrics");
}

const PROXY_WASM: &str = r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service authz { port 8002 endpoints ["{{authz}}"] }
service web { port 8001 endpoints ["{{web}}"] }
route header on web { match { path prefix "/header" } filters [pw-header] }
route allowed on web { match { path prefix "/allowed" } filters [call-ok] }
route refused on web { match { path prefix "/refused" } filters [call-no] }
route checked on web { match { path prefix "/checked" } filters [call-ok, call-ok2, ask-late, pw-header] }
route late-no on web { match { path prefix "/late-no" } filters [pw-header, refuse-late] }
filter pw-header { module "pw-header.wasm" config { value: "from-proxy-wasm" } }
filter call-ok2 {
  module "pw-authcall.wasm"
  config { upstream: "authz", path: "/status/200" }
  failure closed
}
filter ask-late {
  module "pw-authcall.wasm"
  config { upstream: "authz", path: "/status/200", phase: "response" }
  failure closed
}
filter refuse-late {
  module "pw-authcall.wasm"
  config { upstream: "authz", path: "/status/403", phase: "response" }
  failure closed
}
filter call-ok {
  module "pw-authcall.wasm"
  config { upstream: "authz", path: "/status/200" }
  failure closed
}
filter call-no {
  module "pw-authcall.wasm"
  config { upstream: "authz", path: "/status/403" }
  failure closed
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_built_with_the_public_proxy_wasm_crate_run_unchanged() {
    let client_app = Backend::start("client").await;
    let web = Backend::start("web").await;
    let authz = Backend::start("authz").await;
    let mesh = Mesh::builder(PROXY_WASM)
        .proxy("client", client_app.addr())
        .proxy("web", web.addr())
        .proxy("authz", authz.addr())
        .file("pw-header.wasm", module("pw-header"))
        .file("pw-authcall.wasm", module("pw-authcall"))
        .start()
        .await;
    let mut conn = H1::open(mesh.outbound("client")).await;
    let reply = conn.get("web", "/header").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.echoed_header("x-pw-header").as_deref(),
        Some("from-proxy-wasm")
    );
    // The response phase reads the request as it was sent: with the request id the proxy
    // added after the filter's request phase.
    let sent_id = reply.echoed_header("x-request-id");
    assert!(sent_id.is_some(), "the proxy sends a request id");
    assert_eq!(reply.header("x-pw-request-id"), sent_id.as_deref());
    // http_call to the authz service through the mesh, then resume or answer 403.
    let reply = conn.get("web", "/allowed").await;
    assert_eq!(reply.status, 200, "the call answered 200: {}", reply.text());
    assert_eq!(reply.echoed_service(), "web");
    let reply = conn.get("web", "/refused").await;
    assert_eq!(reply.status, 403, "the call answered 403: {}", reply.text());
    assert_eq!(
        authz.stats().requests.load(Ordering::Relaxed),
        2,
        "each http_call reached the authz service"
    );
    assert_eq!(
        web.stats().requests.load(Ordering::Relaxed),
        2,
        "the refused request never reached web"
    );
    // Filters that pause one after another: two in the request phase, then one in the
    // response phase, with a filter after each pause.
    let reply = conn.get("web", "/checked").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.echoed_service(), "web");
    assert_eq!(
        reply.echoed_header("x-pw-header").as_deref(),
        Some("from-proxy-wasm"),
        "the filter after the request pauses ran"
    );
    assert_eq!(
        reply.header("x-pw-authcall"),
        Some("checked"),
        "the response paused, then went on with the filter's header"
    );
    assert_eq!(authz.stats().requests.load(Ordering::Relaxed), 5);
    // A filter that pauses on the response and then answers by itself.
    let reply = conn.get("web", "/late-no").await;
    assert_eq!(
        reply.status,
        403,
        "the late call answered 403: {}",
        reply.text()
    );
    assert_eq!(reply.header("x-pw-authcall"), Some("denied"));
    assert_eq!(authz.stats().requests.load(Ordering::Relaxed), 6);
    assert_eq!(
        web.stats().requests.load(Ordering::Relaxed),
        4,
        "a response-phase refusal comes after the request reached web"
    );
}

const MISBEHAVING: &str = r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service web { port 8001 endpoints ["{{web}}"] }
route loop on web { match { path prefix "/loop" } filters [spin] }
route grow on web { match { path prefix "/grow" } filters [hog] }
route trap-open on web { match { path prefix "/trap-open" } filters [crash-open] }
route trap-closed on web { match { path prefix "/trap-closed" } filters [crash-closed] }
route fine on web { match { path prefix "/" } }
filter spin { module "misbehave.wasm" config { mode: "loop" } failure open time_limit 20ms }
filter hog { module "misbehave.wasm" config { mode: "grow" } failure closed memory 2MiB }
filter crash-open { module "misbehave.wasm" config { mode: "trap" } failure open }
filter crash-closed { module "misbehave.wasm" config { mode: "trap" } failure closed }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_filters_are_stopped_and_their_failure_mode_applies() {
    let client_app = Backend::start("client").await;
    let web = Backend::start("web").await;
    let mesh = Mesh::builder(MISBEHAVING)
        .proxy("client", client_app.addr())
        .proxy("web", web.addr())
        .file("misbehave.wasm", module("misbehave"))
        .start()
        .await;
    let mut conn = H1::open(mesh.outbound("client")).await;

    // A filter that loops forever is stopped at its time limit; fail-open lets it pass.
    let fine = {
        let started = Instant::now();
        let reply = conn.get("web", "/fine").await;
        assert_eq!(reply.status, 200);
        started.elapsed()
    };
    let started = Instant::now();
    let reply = conn.get("web", "/loop").await;
    let looped = started.elapsed();
    assert_eq!(reply.status, 200, "fail-open passes: {}", reply.text());
    // Generous for a shared debug-build machine; bench/filters.sh measures it precisely.
    assert!(
        looped < fine + Duration::from_millis(20 + 500),
        "the loop ran {looped:?} (time limit 20 ms; a plain request took {fine:?})"
    );
    // Memory: stopped at the cap; fail-closed answers 503.
    let reply = conn.get("web", "/grow").await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.mesh_error(), Some("filter-failed"));
    // Traps.
    let reply = conn.get("web", "/trap-open").await;
    assert_eq!(reply.status, 200, "fail-open: {}", reply.text());
    let reply = conn.get("web", "/trap-closed").await;
    assert_eq!(reply.status, 503, "fail-closed: {}", reply.text());
    assert_eq!(reply.mesh_error(), Some("filter-failed"));
    for (filter, reason) in [
        ("spin", "timeout"),
        ("hog", "memory"),
        ("crash-open", "trap"),
    ] {
        let label = format!("filter=\"{filter}\",reason=\"{reason}\"");
        let count = metric(&mesh, "client", "mesh_filter_failures_total", &label).await;
        assert!(count >= 1.0, "{filter}'s failure is counted as {reason}");
    }

    // 10,000 trapping requests: every one answered, the proxy stays up, memory stays flat.
    let warm = run_load(&mesh, "/trap-open", 500, 200).await;
    assert_eq!(warm, 500);
    let before = mesh.rss_kib("client").expect("client's RSS");
    let ok = run_load(&mesh, "/trap-open", 10_000, 200).await;
    assert_eq!(ok, 10_000, "every trapping request passed (fail-open)");
    let after = mesh.rss_kib("client").expect("client's RSS");
    let grown = after.saturating_sub(before);
    println!("client RSS over 10,000 trapping requests: {before} KiB -> {after} KiB");
    assert!(
        grown < 32 * 1024,
        "RSS grew {grown} KiB over 10,000 trapping requests ({before} -> {after})"
    );
    assert!(
        mesh.try_exit("client").is_none(),
        "the proxy is still running"
    );
    // Other routes serve on as before (a new connection: the first one idled out).
    let mut conn = H1::open(mesh.outbound("client")).await;
    let reply = conn.get("web", "/fine").await;
    assert_eq!(reply.status, 200);
}

/// Sends `count` GETs of `path` on 8 connections; returns how many got `expect`.
async fn run_load(mesh: &Mesh, path: &str, count: usize, expect: u16) -> usize {
    let next = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (next, ok) = (Arc::clone(&next), Arc::clone(&ok));
        let addr = mesh.outbound("client");
        let path = path.to_string();
        tasks.push(tokio::spawn(async move {
            let mut conn = H1::open(addr).await;
            while next.fetch_add(1, Ordering::Relaxed) < count {
                if conn.get("web", &path).await.status == expect {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("load task");
    }
    ok.load(Ordering::Relaxed)
}

const ADDER: &str = r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service web { port 8001 endpoints ["{{web}}"] }
route tagged on web { match { path prefix "/" } filters [NAME] }
filter NAME { module "MODULE" config { name: "x-version", value: "VALUE" } failure closed }
"#;

/// One route with one header-adder filter named `adder`.
fn adder_policy(module: &str, value: &str) -> String {
    named_adder_policy("adder", module, value)
}

fn named_adder_policy(name: &str, module: &str, value: &str) -> String {
    ADDER
        .replace("NAME", name)
        .replace("MODULE", module)
        .replace("VALUE", value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_loading_twenty_versions_under_load_loses_no_request() {
    let client_app = Backend::start("client").await;
    let web = Backend::start("web").await;
    let base = module("header-adder");
    let mesh = Mesh::builder(&adder_policy("adder-0.wasm", "v0"))
        .proxy("client", client_app.addr())
        .proxy("web", web.addr())
        .file("adder-0.wasm", base.clone())
        .start()
        .await;
    // Twenty new versions: new module bytes (new digest) and a new value each.
    let tables: Vec<Vec<u8>> = (1..=20)
        .map(|i| {
            let name = format!("adder-{i}.wasm");
            std::fs::write(mesh.dir().join(&name), new_version(&base, &i.to_string()))
                .expect("write a module version");
            mesh.compile(&adder_policy(&name, &format!("v{i}")))
        })
        .collect();

    const TOTAL: usize = 20_000;
    let sent = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (sent, answered, failures) = (
            Arc::clone(&sent),
            Arc::clone(&answered),
            Arc::clone(&failures),
        );
        let addr = mesh.outbound("client");
        tasks.push(tokio::spawn(async move {
            let mut conn = H1::open(addr).await;
            while sent.fetch_add(1, Ordering::Relaxed) < TOTAL {
                let reply = conn.get("web", "/x").await;
                // Only a 200 is the echo's JSON; anything else is a failure to report.
                let version = (reply.status == 200)
                    .then(|| reply.echoed_header("x-version"))
                    .flatten();
                if version.as_deref().is_some_and(|v| v.starts_with('v')) {
                    answered.fetch_add(1, Ordering::Relaxed);
                } else {
                    failures.lock().expect("lock").push(format!(
                        "{} {:?}: {}",
                        reply.status,
                        version,
                        reply.text()
                    ));
                }
            }
        }));
    }
    // A new version every 900 requests (all 20 land within the 20,000), within a bound.
    let deadline = Instant::now() + Duration::from_secs(300);
    for (i, table) in tables.iter().enumerate() {
        while sent.load(Ordering::Relaxed) < (i + 1) * 900 {
            assert!(
                Instant::now() < deadline && !tasks.iter().all(|t| t.is_finished()),
                "the load stopped after {} requests",
                sent.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        mesh.install_table(table);
        // Each version is loaded before the next arrives: twenty real hot loads (a
        // table swapped again while its module compiles would skip that version).
        while metric(
            &mesh,
            "client",
            "mesh_filter_loads_total",
            "result=\"loaded\"",
        )
        .await
            < (i + 2) as f64
        {
            assert!(
                Instant::now() < deadline,
                "version {} was not loaded",
                i + 1
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for task in tasks {
        task.await.expect("load task");
    }
    let failures = failures.lock().expect("lock").clone();
    assert!(
        failures.is_empty(),
        "{} of {TOTAL} requests failed during hot loads, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(answered.load(Ordering::Relaxed), TOTAL);
    // Responses switch to the last version.
    let mut conn = H1::open(mesh.outbound("client")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let version = conn.get("web", "/x").await.echoed_header("x-version");
        if version.as_deref() == Some("v20") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {version:?} after the last load"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let loads = metric(
        &mesh,
        "client",
        "mesh_filter_loads_total",
        "result=\"loaded\"",
    )
    .await;
    assert!(loads >= 21.0, "every version was loaded ({loads})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_are_pinned_and_reloaded_from_files_and_the_admin_endpoint() {
    let client_app = Backend::start("client").await;
    let web = Backend::start("web").await;
    let base = module("header-adder");
    let mesh = Mesh::builder(&adder_policy("adder.wasm", "pinned"))
        .proxy("client", client_app.addr())
        .proxy("web", web.addr())
        .file("adder.wasm", base.clone())
        .start()
        .await;
    let mut conn = H1::open(mesh.outbound("client")).await;
    let version = |reply: &Reply| reply.echoed_header("x-version");
    assert_eq!(
        version(&conn.get("web", "/").await).as_deref(),
        Some("pinned")
    );

    // A file whose digest is not the table's pin is refused; the loaded one keeps serving.
    std::fs::write(
        mesh.dir().join("adder.wasm"),
        new_version(&base, "unpinned"),
    )
    .expect("write");
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(
        &mesh,
        "client",
        "mesh_filter_loads_total",
        "result=\"refused\"",
    )
    .await
        < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "the unpinned file was not refused"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let filters = mesh.admin_get("client", "/filters").await.json();
    let adder = &filters["filters"][0];
    assert!(
        adder["refused"]
            .as_str()
            .is_some_and(|r| r.contains("pins")),
        "/filters says why: {filters}"
    );
    let reply = conn.get("web", "/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(version(&reply).as_deref(), Some("pinned"));

    // A new filter whose module file is missing: fail-closed answers 503 until the file
    // appears. (A new version of a loaded filter would leave the loaded one serving.)
    std::fs::write(mesh.dir().join("later.wasm"), new_version(&base, "later")).expect("write");
    let table = mesh.compile(&named_adder_policy("late", "later.wasm", "later"));
    std::fs::remove_file(mesh.dir().join("later.wasm")).expect("remove");
    mesh.install_table(&table);
    // Until the proxy sees the new table the old filter serves; then the missing one fails closed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = conn.get("web", "/").await;
        if reply.status == 503 {
            assert_eq!(reply.mesh_error(), Some("filter-failed"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the missing module never failed closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::write(mesh.dir().join("later.wasm"), new_version(&base, "later")).expect("write");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = conn.get("web", "/").await;
        if reply.status == 200 {
            assert_eq!(version(&reply).as_deref(), Some("later"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the module that appeared was not loaded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // POST /filters/NAME: a development module, whatever the pin; garbage is refused.
    let mut admin = H1::open(mesh.admin("client")).await;
    let post = |name: &str, bytes: Vec<u8>| {
        h1_request(Method::POST, "localhost", &format!("/filters/{name}"))
            .body(full(bytes))
            .expect("request")
    };
    let dev = new_version(&base, "development");
    let reply = admin.fetch(post("late", dev.clone())).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let loaded = reply.json()["sha256"].as_str().expect("sha256").to_string();
    let filters = mesh.admin_get("client", "/filters").await.json();
    assert_eq!(
        filters["filters"][0]["loaded_sha256"].as_str(),
        Some(loaded.as_str())
    );
    assert_eq!(filters["filters"][0]["source"].as_str(), Some("admin"));
    let reply = admin.fetch(post("late", b"not a module".to_vec())).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(
        reply.text().contains("compile"),
        "says why: {}",
        reply.text()
    );
    let reply = admin.fetch(post("nosuch", dev)).await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    let filters = mesh.admin_get("client", "/filters").await.json();
    assert_eq!(
        filters["filters"][0]["loaded_sha256"].as_str(),
        Some(loaded.as_str()),
        "a refused module leaves the loaded one in place"
    );
    assert_eq!(conn.get("web", "/").await.status, 200);
}
