//! The control plane end to end: a real `mesh-control` and sidecars that bootstrap their
//! certificates from join tokens and take their tables over the subscription stream.
//! `meshc apply` reaches every proxy (ACK) and changes routing; a broken policy is refused
//! with diagnostics and traffic is untouched; a control plane restart loses no request; a
//! new proxy registers and gets traffic; certificates renew; bad join tokens are refused.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_tests::backend::Backend;
use mesh_tests::control::{get_web, ControlPlane, Sidecar};

const TRUST_DOMAIN: &str = "cp.local";

const POLICY_V1: &str = r#"
mesh "cp" { trust_domain "cp.local" }
service client { port 8000 }
service web { port 8001 }
service alt { port 8002 }
route main on web { match { path prefix "/" } request_headers { set "x-route" "main" } }
"#;

const POLICY_V2: &str = r#"
mesh "cp" { trust_domain "cp.local" }
service client { port 8000 }
service web { port 8001 }
service alt { port 8002 }
route main on web { match { path prefix "/" } request_headers { set "x-route" "main" } }
route other on web { match { path prefix "/other" } to alt request_headers { set "x-route" "other" } }
"#;

const POLICY_BROKEN: &str = r#"
mesh "cp" { trust_domain "cp.local" }
service client { port 8000 }
service web { port 8001 }
route main on web { match { path prefix "/" } to nowhere }
"#;

/// Three services, each with a bootstrapped sidecar, all ready. The control plane is
/// dropped last: its directory holds the sidecars' logs, printed when a test fails.
struct Fixture {
    client: Sidecar,
    web: Sidecar,
    alt: Sidecar,
    _apps: Vec<Backend>,
    control: ControlPlane,
}

async fn start(cert_ttl: &str) -> Fixture {
    let control = ControlPlane::start(POLICY_V1, TRUST_DOMAIN, cert_ttl).await;
    let client_app = Backend::start("client").await;
    let web_app = Backend::start("web").await;
    let alt_app = Backend::start("alt").await;
    let client = control.sidecar("client", client_app.addr(), &control.create_token("client"));
    let web = control.sidecar("web", web_app.addr(), &control.create_token("web"));
    let alt = control.sidecar("alt", alt_app.addr(), &control.create_token("alt"));
    for sidecar in [&client, &web, &alt] {
        sidecar.wait_ready().await;
    }
    Fixture {
        client,
        web,
        alt,
        _apps: vec![client_app, web_app, alt_app],
        control,
    }
}

/// Waits until `path` is answered 200 by the backend `backend`.
async fn wait_served_by(outbound: SocketAddr, path: &str, backend: &str) {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(20) {
        if let Some(reply) = get_web(outbound, path).await {
            if reply.status == 200 && reply.echoed_service() == backend {
                return;
            }
            last = format!("{} {}", reply.status, reply.text());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} was not served by {backend} within 20s; last answer: {last}");
}

fn text(output: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Writes `policy` as the only file of a new directory and `meshc apply`s it.
fn apply(control: &ControlPlane, name: &str, policy: &str) -> std::process::Output {
    let dir = control.dir().join(name);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {name}: {e}"));
    std::fs::write(dir.join("policy.mesh"), policy).unwrap_or_else(|e| panic!("write: {e}"));
    control.meshc(&[
        "apply",
        &dir.display().to_string(),
        "--control",
        &control.url(),
        "--timeout",
        "20s",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_reaches_every_proxy_and_a_broken_policy_changes_nothing() {
    let f = start("24h").await;
    wait_served_by(f.client.outbound(), "/other/1", "web").await;

    let out = apply(&f.control, "v2", POLICY_V2);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("3 proxies applied"),
        "{}",
        text(&out)
    );
    // Applied everywhere as soon as `apply` returns: routing changed at once.
    let reply = get_web(f.client.outbound(), "/other/1")
        .await
        .expect("an answer");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.echoed_service(), "alt");
    assert_eq!(reply.echoed_header("x-route").as_deref(), Some("other"));
    let before = [
        f.client.checksum().await,
        f.web.checksum().await,
        f.alt.checksum().await,
    ];

    let out = apply(&f.control, "broken", POLICY_BROKEN);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nowhere") && stderr.contains("mesh::"),
        "{}",
        text(&out)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = [
        f.client.checksum().await,
        f.web.checksum().await,
        f.alt.checksum().await,
    ];
    assert_eq!(before, after, "a refused policy changed a proxy's table");
    let reply = get_web(f.client.outbound(), "/other/1")
        .await
        .expect("an answer");
    assert_eq!(reply.echoed_service(), "alt");

    let out = f.control.meshc(&["status", "--control", &f.control.url()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for needle in ["PROXIES (3)", "client", "web", "alt", "ACK", "TRAFFIC"] {
        assert!(stdout.contains(needle), "`{needle}` missing:\n{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_proxy_registers_and_receives_traffic() {
    let f = start("24h").await;
    wait_served_by(f.client.outbound(), "/", "web").await;
    let second_app = Backend::start("web-2").await;
    let second = f
        .control
        .sidecar("web", second_app.addr(), &f.control.create_token("web"));
    second.wait_ready().await;
    // The registry adds the second replica to the client's slice: both get requests.
    wait_served_by(f.client.outbound(), "/", "web-2").await;
    let mut served = std::collections::BTreeSet::new();
    for _ in 0..40 {
        if let Some(reply) = get_web(f.client.outbound(), "/").await {
            assert_eq!(reply.status, 200, "{}", reply.text());
            served.insert(reply.echoed_service());
        }
    }
    assert_eq!(served.len(), 2, "{served:?}");
    let services = f.control.api_get("/v1/services").await;
    assert!(
        services.to_string().contains(&second.inbound().to_string()),
        "{services}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_restart_loses_no_request() {
    let f = start("24h").await;
    wait_served_by(f.client.outbound(), "/", "web").await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let outbound = f.client.outbound();
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match get_web(outbound, "/").await {
                    Some(reply) if reply.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        failures.push(other.map(|r| format!("{} {}", r.status, r.text())));
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            failures
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    f.control.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    f.control.spawn().await;
    // Every proxy back on the stream, in sync with the restarted control plane.
    let started = Instant::now();
    loop {
        let proxies = f.control.api_get("/v1/proxies").await;
        let list = proxies["proxies"].as_array().cloned().unwrap_or_default();
        let synced = list
            .iter()
            .filter(|p| p["connected"] == true && p["in_sync"] == true)
            .count();
        if synced == 3 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the proxies did not come back: {proxies}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let failures = load.await.expect("the load loop");
    let ok = ok.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {} failed: {failures:?}",
        failures.len(),
        ok
    );
    assert!(ok > 50, "only {ok} requests");
    // The proxies noticed, and came back with backoff.
    assert!(
        f.client.log().contains("control plane stream lost"),
        "{}",
        f.client.log()
    );
    let _ = (&f.web, &f.alt);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_bootstraps_from_a_join_token_and_renews_its_certificate() {
    let control = ControlPlane::start(POLICY_V1, TRUST_DOMAIN, "30s").await;
    let app = Backend::start("web").await;
    let web = control.sidecar("web", app.addr(), &control.create_token("web"));
    web.wait_ready().await;
    let tls = web.tls().await;
    assert_eq!(tls["spiffe_id"], "spiffe://cp.local/web", "{tls}");
    let first = tls["serial"].as_str().unwrap_or_default().to_string();
    assert!(!first.is_empty(), "{tls}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(web.state.join("key.pem"))
            .expect("the key is written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Renewed at two thirds of 30 s, before it expires.
    let started = Instant::now();
    loop {
        let serial = web.tls().await["serial"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if !serial.is_empty() && serial != first {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the certificate was not renewed:\n{}",
            web.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        web.log().contains("workload certificate renewed"),
        "{}",
        web.log()
    );
    assert!(web.is_ready().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_and_revoked_join_tokens_are_refused() {
    let control = ControlPlane::start(POLICY_V1, TRUST_DOMAIN, "24h").await;
    let app = Backend::start("web").await;
    let (token, id) = control.create_token_with("web", &[]);
    let out = control.meshc(&["token", "revoke", &id, "--control", &control.url()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let revoked = control.sidecar("web", app.addr(), &token);
    let wrong = control.sidecar("web", app.addr(), "0123456789abcdef");
    let other_service = control.sidecar("alt", app.addr(), &control.create_token("web"));
    let started = Instant::now();
    for sidecar in [&revoked, &wrong, &other_service] {
        while !sidecar.log().contains("invalid or revoked join token") {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no refusal logged:\n{}",
                sidecar.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!sidecar.is_ready().await, "{}", sidecar.log());
        assert!(!sidecar.state.join("cert.pem").exists());
    }
}

/// A sidecar's certificate serial, from its `/tls` page (empty when it has none).
async fn serial_of(sidecar: &Sidecar) -> String {
    sidecar.tls().await["serial"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_ends_renewal_and_streams_while_another_keeps_renewing() {
    // 30 s certificates, renewed at two thirds: about 20 s after the bootstrap.
    let control = ControlPlane::start(POLICY_V1, TRUST_DOMAIN, "30s").await;
    let web_app = Backend::start("web").await;
    let alt_app = Backend::start("alt").await;
    let (revoked, revoked_id) = control.create_token_with("web", &[]);
    let web = control.sidecar("web", web_app.addr(), &revoked);
    let alt = control.sidecar("alt", alt_app.addr(), &control.create_token("alt"));
    web.wait_ready().await;
    alt.wait_ready().await;
    let bootstrapped = Instant::now();
    let (web_first, alt_first) = (serial_of(&web).await, serial_of(&alt).await);
    assert!(!web_first.is_empty() && !alt_first.is_empty());

    let out = control.meshc(&["token", "revoke", &revoked_id, "--control", &control.url()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // The open stream ends at once, and reconnecting is refused.
    let started = Instant::now();
    while !control
        .log()
        .contains("ending the stream: its certificate was revoked")
        || !web
            .log()
            .contains("the control plane refused the stream (403 Forbidden)")
    {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the revoked identity's stream did not end and stay refused:\n{}\n--- web ---\n{}",
            control.log(),
            web.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The renewal is refused with the reason and the serial stays; the other token's
    // sidecar renews.
    loop {
        let web_refused = web
            .log()
            .lines()
            .any(|l| l.contains("certificate renewal failed") && l.contains("was revoked"));
        let alt_renewed = {
            let s = serial_of(&alt).await;
            !s.is_empty() && s != alt_first
        };
        if web_refused && alt_renewed {
            break;
        }
        assert!(
            bootstrapped.elapsed() < Duration::from_secs(60),
            "web refused: {web_refused}, alt renewed: {alt_renewed}\n--- web ---\n{}\n--- alt ---\n{}",
            web.log(),
            alt.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(serial_of(&web).await, web_first, "{}", web.log());
    assert!(
        !web.log().contains("workload certificate renewed"),
        "{}",
        web.log()
    );
    assert!(
        alt.log().contains("workload certificate renewed"),
        "{}",
        alt.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_planes_name_cannot_get_a_token() {
    let control = ControlPlane::start(POLICY_V1, TRUST_DOMAIN, "24h").await;
    let out = control.meshc(&[
        "token",
        "create",
        "mesh-control",
        "--control",
        &control.url(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`mesh-control`") && stderr.contains("reserved"),
        "{}",
        text(&out)
    );
    assert!(out.stdout.is_empty(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_need_a_token_and_a_reachable_control_plane() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str], token: Option<&str>| {
        let mut command = std::process::Command::new(mesh_tests::binary("meshc"));
        command.args(args).current_dir(dir.path());
        match token {
            Some(t) => command.env("MESH_CONTROL_TOKEN", t),
            None => command.env_remove("MESH_CONTROL_TOKEN"),
        };
        command.output().expect("meshc runs")
    };
    // A port held bound but not listening: nothing answers there, and nothing can start to.
    let (_held, unused) = mesh_tests::mesh::down_endpoint();
    let url = format!("http://{unused}");
    let out = run(&["status", "--control", &url], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MESH_CONTROL_TOKEN"));
    let out = run(&["status", "--control", &url], Some("t0k3n-t0k3n"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach"),
        "{}",
        text(&out)
    );
    let out = run(
        &["token", "create", "web", "--control", "https://x:1"],
        Some("t"),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = run(&["apply", "--control", &url], Some("t"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = run(
        &["apply", ".", "--control", &url, "--timeout", "soon"],
        Some("t"),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}
