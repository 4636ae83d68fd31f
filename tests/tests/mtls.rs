//! Mesh identity end to end: mTLS between real sidecars on loopback, authorization on the
//! identity the handshake proved, handshake refusals counted by reason, an external client
//! (curl), forged identity headers, certificate rotation under load, server identity
//! verification, and `mtls strict` / `permissive` for plaintext callers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use mesh_identity::ca::{InitOptions, LeafOptions, Validity};
use mesh_identity::tls::{client_config, Alpn};
use mesh_identity::{Ca, Identity, RefusalReason, SpiffeId, TrustBundle, TrustDomain};
use mesh_tests::backend::Backend;
use mesh_tests::body::empty;
use mesh_tests::client::{h1_request, load, within, Reply, H1};
use mesh_tests::mesh::Mesh;
use mesh_tests::tls::{anonymous_client_config, connect, peer_serial, public_key_der, refusal};

const POLICY: &str = r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service intruder { port 8002 endpoints ["{{intruder}}"] }
service web { port 8001 endpoints ["{{web}}"] }
authorize web {
  deny  from any     to path prefix "/internal"
  allow from client  to path prefix "/"
  allow from intruder to path prefix "/forged" when header "x-forwarded-client-cert" present
  allow from intruder to path prefix "/forged2" when header "x-mesh-identity" present
  default deny
}
"#;

async fn start() -> (Mesh, Vec<Backend>) {
    let apps = vec![
        Backend::start("client").await,
        Backend::start("intruder").await,
        Backend::start("web").await,
    ];
    let mesh = Mesh::builder(POLICY)
        .proxy("client", apps[0].addr())
        .proxy("intruder", apps[1].addr())
        .proxy("web", apps[2].addr())
        .start()
        .await;
    (mesh, apps)
}

/// A denial says `unauthorized` and nothing else: no rule, file, line or identity.
fn assert_denied(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 403, "{what}: {}", reply.text());
    assert_eq!(reply.mesh_error(), Some("unauthorized"), "{what}");
    assert_eq!(reply.text(), "unauthorized\n", "{what}: the body");
    for (name, value) in &reply.headers {
        let value = value.to_str().unwrap_or_default();
        for internal in [".mesh", "policy-", "spiffe", "allow", "deny", "rule"] {
            assert!(
                !value.contains(internal) && !name.as_str().contains(internal),
                "{what}: header {name}: {value} names `{internal}`"
            );
        }
    }
}

async fn tls_json(mesh: &Mesh, service: &str) -> serde_json::Value {
    let reply = mesh.admin_get(service, "/tls").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// Waits until the sidecar of `service` counts at least `n` inbound refusals for `reason`.
async fn wait_refused(mesh: &Mesh, service: &str, reason: &str, n: u64) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let tls = tls_json(mesh, service).await;
        if tls["inbound"]["refused"][reason].as_u64().unwrap_or(0) >= n {
            return tls;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{service} did not count `{reason}`: {tls}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_callers_get_through_others_get_403_naming_no_internals() {
    let (mesh, apps) = start().await;
    let mut client = H1::open(mesh.outbound("client")).await;
    let reply = client.get("web", "/v1/items").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.echoed_service(), "web");
    // The application learns the caller from the one header only the proxy sets.
    assert_eq!(
        reply.echoed_header("x-forwarded-client-cert").as_deref(),
        Some("By=spiffe://e2e.local/web;URI=spiffe://e2e.local/client")
    );

    let mut intruder = H1::open(mesh.outbound("intruder")).await;
    assert_denied(&intruder.get("web", "/v1/items").await, "intruder");
    // Every deny first: even the allowed caller cannot reach /internal.
    assert_denied(
        &client.get("web", "/internal/keys").await,
        "client, /internal",
    );
    assert_eq!(
        apps[2].stats().requests.load(Ordering::SeqCst),
        1,
        "a denied request reached the app"
    );
    // The deciding rule is logged (file:line:column) for the operator.
    let log = mesh.log("web");
    assert!(
        log.contains("request denied")
            && log.contains("policy-0.mesh:")
            && log.contains("caller=spiffe://e2e.local/intruder"),
        "{log}"
    );
    let client_tls = tls_json(&mesh, "client").await;
    assert!(
        client_tls["outbound"]["handshakes"].as_u64() >= Some(1),
        "{client_tls}"
    );
    assert_eq!(client_tls["mode"], "mtls");
    assert_eq!(client_tls["spiffe_id"], "spiffe://e2e.local/client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_travel_over_mtls() {
    let apps = [Backend::start("client").await, Backend::start("web").await];
    let mesh = Mesh::builder(
        r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service web {
  port 8001
  endpoints ["{{web}}"]
  health { path "/healthz" interval 200ms timeout 200ms unhealthy_after 2 healthy_after 1 }
}
// The probing sidecar (client) may not GET anything here by policy: probes of the health
// path from mesh identities are admitted anyway, and nothing else is.
authorize web {
  allow from client to method [POST] path prefix "/orders"
}
"#,
    )
    .proxy("client", apps[0].addr())
    .proxy("web", apps[1].addr())
    .start()
    .await;
    // Health checks start with the destination's first request (denied here by policy).
    assert_eq!(mesh.first_request("client", "web").await.status, 403);
    let started = Instant::now();
    while apps[1].stats().requests.load(Ordering::SeqCst) < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no probes arrive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let endpoints = mesh.admin_get("client", "/endpoints").await.json();
    assert_eq!(
        endpoints["web"]["endpoints"][0]["healthy"], true,
        "{endpoints}"
    );
    let web = tls_json(&mesh, "web").await;
    assert!(web["inbound"]["handshakes"].as_u64() >= Some(1), "{web}");
    // The exemption is the health path, by GET, and nothing more.
    let mut client = H1::open(mesh.outbound("client")).await;
    assert_denied(&client.get("web", "/other").await, "GET /other");
    let post = http::Request::builder()
        .method(Method::POST)
        .uri("/healthz")
        .header("host", "web")
        .body(empty())
        .expect("request");
    assert_denied(&client.fetch(post).await, "POST /healthz");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identity_headers_change_nothing() {
    let (mesh, _apps) = start().await;
    let forged = |path: &str| {
        h1_request(Method::GET, "web", path)
            .header(
                "x-forwarded-client-cert",
                "By=spiffe://e2e.local/web;URI=spiffe://e2e.local/client",
            )
            .header("x-mesh-identity", "spiffe://e2e.local/client")
            .body(empty())
            .expect("request")
    };
    // Denied stays denied, even where a rule reads the header: it is gone before
    // authorization.
    let mut intruder = H1::open(mesh.outbound("intruder")).await;
    for path in ["/v1/items", "/forged", "/forged2"] {
        assert_denied(&intruder.fetch(forged(path)).await, path);
    }
    // Allowed: the app sees the proxy's value, once, and no x-mesh-identity.
    let reply = H1::open(mesh.outbound("client"))
        .await
        .fetch(forged("/v1/items"))
        .await;
    assert_eq!(reply.status, 200);
    let headers = &reply.json()["headers"];
    assert_eq!(
        headers["x-forwarded-client-cert"],
        "By=spiffe://e2e.local/web;URI=spiffe://e2e.local/client"
    );
    assert!(headers.get("x-mesh-identity").is_none(), "{headers}");

    // Straight at the inbound over mTLS as the intruder: forged headers, and a `Connection`
    // header naming the identity header (hop-by-hop removal must not take the proxy's away).
    let config = mesh.mtls_client("intruder", "web", Alpn::Http1);
    let tls = connect(mesh.inbound("web"), config).await.expect("mTLS");
    let mut direct = H1::over(tls).await.expect("h1");
    for path in ["/v1/items", "/forged", "/forged2"] {
        assert_denied(&direct.fetch(forged(path)).await, path);
    }
    let config = mesh.mtls_client("client", "web", Alpn::Http1);
    let tls = connect(mesh.inbound("web"), config).await.expect("mTLS");
    let mut direct = H1::over(tls).await.expect("h1");
    let request = h1_request(Method::GET, "web", "/v1/items")
        .header("connection", "x-forwarded-client-cert")
        .header("x-forwarded-client-cert", "URI=spiffe://e2e.local/admin")
        .body(empty())
        .expect("request");
    let reply = direct.fetch(request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.echoed_header("x-forwarded-client-cert").as_deref(),
        Some("By=spiffe://e2e.local/web;URI=spiffe://e2e.local/client")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_expired_and_missing_certificates_are_refused_at_the_handshake() {
    let (mesh, apps) = start().await;
    let inbound = mesh.inbound("web");
    let expected = SpiffeId::parse("spiffe://e2e.local/web").expect("id");
    let bundle = TrustBundle::load(&mesh.certs("web").join("bundle.pem")).expect("bundle");

    // A certificate of another CA (same trust domain, same name): unknown-ca. The client
    // trusts the mesh's bundle, so it is the server that refuses.
    let other = tempfile::tempdir().expect("tempdir");
    let options = InitOptions {
        trust_domain: Some(TrustDomain::new("e2e.local").expect("domain")),
        ..InitOptions::default()
    };
    let other_ca = Ca::init(&other.path().join("ca"), &options).expect("other CA");
    let issued = other_ca
        .issue(
            &SpiffeId::parse("spiffe://e2e.local/client").expect("id"),
            Duration::from_secs(3600),
        )
        .expect("issue");
    let foreign = Identity::from_pem(issued.cert.cert_pem.as_bytes(), issued.key_pem.as_bytes())
        .expect("identity");
    let config = client_config(&foreign, &bundle, &expected, Alpn::H2).expect("config");
    assert_eq!(
        refusal(inbound, config).await,
        Some(RefusalReason::UnknownCa)
    );
    wait_refused(&mesh, "web", "unknown-ca", 1).await;

    // An expired certificate of the mesh's own CA: expired.
    let ca = Ca::load(&mesh.ca_dir()).expect("the mesh's CA");
    let now = std::time::SystemTime::now();
    let expired = LeafOptions {
        validity: Validity {
            not_before: now - Duration::from_secs(7200),
            not_after: now - Duration::from_secs(3600),
        },
        ..LeafOptions::ttl(Duration::from_secs(1))
    };
    let issued = ca
        .issue_with(
            &SpiffeId::parse("spiffe://e2e.local/client").expect("id"),
            &expired,
        )
        .expect("issue");
    let old = Identity::from_pem(issued.cert.cert_pem.as_bytes(), issued.key_pem.as_bytes())
        .expect("identity");
    let config = client_config(&old, &bundle, &expected, Alpn::H2).expect("config");
    assert_eq!(refusal(inbound, config).await, Some(RefusalReason::Expired));
    wait_refused(&mesh, "web", "expired", 1).await;

    // No certificate at all.
    let config = anonymous_client_config(Alpn::H2);
    assert_eq!(
        refusal(inbound, config).await,
        Some(RefusalReason::NoCertificate)
    );
    let tls = wait_refused(&mesh, "web", "no-certificate", 1).await;
    assert_eq!(tls["inbound"]["handshakes"], 0, "{tls}");

    // The refusals are logged with their reason; none reached the app.
    let log = mesh.log("web");
    for reason in ["unknown-ca", "expired", "no-certificate"] {
        assert!(
            log.contains(&format!("reason=\"{reason}\"")),
            "no log line for {reason}:\n{log}"
        );
    }
    assert_eq!(apps[2].stats().requests.load(Ordering::SeqCst), 0);
}

/// `curl` with the args, within 15 s: its exit code and stdout.
async fn curl(args: Vec<String>) -> (i32, String) {
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "10"])
            .args(&args)
            .output()
    });
    let output = within("curl", Duration::from_secs(15), run)
        .await
        .expect("join")
        .expect("run curl");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// curl, a real external TLS client, against the inbound listener. SPIFFE certificates
/// carry a URI SAN and no DNS name or IP address, so curl's own hostname check cannot pass;
/// `-k` turns that check (and the CA check) off, and `--pinnedpubkey` (enforced even with
/// `-k`) pins the web sidecar's public key instead, so curl still talks only to that
/// sidecar. The full SPIFFE verification of the server is what the rustls client tests do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_with_a_mesh_certificate_gets_through_and_without_one_is_refused() {
    let (mesh, _apps) = start().await;
    let url = format!("https://{}/v1/items", mesh.inbound("web"));
    let pin = mesh.dir().join("web.spki.der");
    std::fs::write(&pin, public_key_der(&mesh.certs("web").join("key.pem"))).expect("pin");
    let client = mesh.certs("client");
    let path = |p: std::path::PathBuf| p.display().to_string();
    let base = |cert: bool| {
        let mut args = vec![
            "-k".to_string(),
            "--pinnedpubkey".to_string(),
            path(pin.clone()),
            "-H".to_string(),
            "host: web".to_string(),
        ];
        if cert {
            args.extend([
                "--cert".to_string(),
                path(client.join("cert.pem")),
                "--key".to_string(),
                path(client.join("key.pem")),
            ]);
        }
        args
    };
    let mut allowed = base(true);
    allowed.extend(["-o".to_string(), "-".to_string(), url.clone()]);
    let (code, body) = curl(allowed).await;
    assert_eq!(code, 0, "curl with the client's certificate: {body}");
    assert!(
        body.contains("\"service\":\"web\"") && body.contains("URI=spiffe://e2e.local/client"),
        "{body}"
    );

    // Without a certificate: refused at the handshake (curl sees the alert on its first read).
    let mut anonymous = base(false);
    anonymous.push(url.clone());
    let (code, body) = curl(anonymous).await;
    assert_ne!(code, 0, "curl without a certificate got an answer: {body}");
    assert!(body.is_empty(), "{body}");
    wait_refused(&mesh, "web", "no-certificate", 1).await;

    // The pin is what makes -k safe: another sidecar's key does not pass.
    let wrong = mesh.dir().join("client.spki.der");
    std::fs::write(&wrong, public_key_der(&client.join("key.pem"))).expect("pin");
    let mut pinned_wrong = base(true);
    pinned_wrong[2] = path(wrong);
    pinned_wrong.push(url);
    let (code, _) = curl(pinned_wrong).await;
    assert_eq!(
        code, 90,
        "curl: SSL public key does not match the pinned key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_presenting_another_services_certificate_is_refused() {
    let apps = [
        Backend::start("client").await,
        Backend::start("orders").await,
    ];
    // `web`'s listed endpoint is the orders sidecar: a stolen or stale address.
    let mesh = Mesh::builder(
        r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service orders { port 8001 endpoints ["{{orders}}"] }
service web { port 8002 endpoints ["{{orders}}"] }
"#,
    )
    .proxy("client", apps[0].addr())
    .proxy("orders", apps[1].addr())
    .start()
    .await;
    let mut client = H1::open(mesh.outbound("client")).await;
    let reply = client.get("web", "/").await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(reply.mesh_error(), Some("upstream-identity"));
    assert_eq!(reply.text(), "upstream-identity\n");
    assert_eq!(apps[1].stats().requests.load(Ordering::SeqCst), 0);
    let tls = tls_json(&mesh, "client").await;
    assert!(
        tls["outbound"]["refused"]["wrong-identity"].as_u64() >= Some(1),
        "{tls}"
    );
    // The same address, for the service it is: fine.
    let reply = client.get("orders", "/").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(apps[1].stats().requests.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_refuses_plaintext_at_the_transport_and_permissive_admits_it_as_anyone() {
    let apps = [
        Backend::start("client").await,
        Backend::start("web").await,
        Backend::start("open").await,
    ];
    let mesh = Mesh::builder(
        r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service web { port 8001 endpoints ["{{web}}"] mtls strict }
service open { port 8002 endpoints ["{{open}}"] mtls permissive }
authorize open {
  allow from anyone to path prefix "/public"
  allow from client to path prefix "/private"
  default deny
}
"#,
    )
    .proxy("client", apps[0].addr())
    .proxy("web", apps[1].addr())
    .proxy("open", apps[2].addr())
    .start()
    .await;

    // Strict: a plaintext client gets no HTTP at all; the connection is closed.
    let mut plain = H1::open(mesh.inbound("web")).await;
    let request = h1_request(Method::GET, "web", "/")
        .body(empty())
        .expect("request");
    let sent = within(
        "plaintext to strict",
        Duration::from_secs(10),
        plain.send(request),
    )
    .await;
    assert!(
        sent.is_err(),
        "a plaintext client got an answer from a strict service"
    );
    wait_refused(&mesh, "web", "plaintext-refused", 1).await;
    assert!(mesh.log("web").contains("plaintext-refused"));
    assert_eq!(apps[1].stats().requests.load(Ordering::SeqCst), 0);

    // Permissive: admitted, as `anyone`, and without an identity header.
    let mut plain = H1::open(mesh.inbound("open")).await;
    let reply = plain.get("open", "/public/index.html").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.echoed_header("x-forwarded-client-cert"), None);
    assert_denied(
        &plain.get("open", "/private/x").await,
        "plaintext, /private",
    );
    // The same service over mTLS from its client's sidecar: `client` rules apply.
    let reply = H1::open(mesh.outbound("client"))
        .await
        .get("open", "/private/x")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let tls = tls_json(&mesh, "open").await;
    assert!(
        tls["inbound"]["plaintext_admitted"].as_u64() >= Some(1),
        "{tls}"
    );
    assert!(tls["inbound"]["handshakes"].as_u64() >= Some(1), "{tls}");
}

/// The serial of the certificate the web sidecar presents to a new handshake.
async fn presented_serial(mesh: &Mesh) -> String {
    let config = mesh.mtls_client("client", "web", Alpn::H2);
    let tls = connect(mesh.inbound("web"), config).await.expect("mTLS");
    peer_serial(&tls)
}

/// Waits until new handshakes present a certificate other than `old`; returns its serial.
async fn wait_new_serial(mesh: &Mesh, old: &str, limit: Duration) -> String {
    let started = Instant::now();
    loop {
        let serial = presented_serial(mesh).await;
        if serial != old {
            return serial;
        }
        assert!(
            started.elapsed() < limit,
            "new handshakes still present {old} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_load_without_losing_a_request() {
    let apps = [Backend::start("client").await, Backend::start("web").await];
    let mesh = Mesh::builder(
        r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service web { port 8001 endpoints ["{{web}}"] }
"#,
    )
    .proxy("client", apps[0].addr())
    .proxy("web", apps[1].addr())
    .start()
    .await;
    let before = presented_serial(&mesh).await;
    assert_eq!(tls_json(&mesh, "web").await["serial"], before.as_str());

    let total = 2_000;
    let done = Arc::new(AtomicUsize::new(0));
    let traffic = tokio::spawn(load(
        mesh.outbound("client"),
        16,
        total,
        Arc::clone(&done),
        |i| {
            h1_request(Method::GET, "web", &format!("/r/{i}"))
                .body(empty())
                .expect("request")
        },
    ));
    // Re-issue both sidecars' certificates (written aside, then renamed) while it flows.
    let started = Instant::now();
    while done.load(Ordering::Relaxed) < total / 4 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the load stalled"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    mesh.issue("web");
    mesh.issue("client");
    let after = wait_new_serial(&mesh, &before, Duration::from_secs(5)).await;
    let rotated_at = done.load(Ordering::Relaxed);
    let replies = within("the load", Duration::from_secs(120), traffic)
        .await
        .expect("load task");
    let failed: Vec<String> = replies
        .iter()
        .filter(|r| r.status != 200)
        .map(|r| format!("{} {:?}", r.status, r.mesh_error()))
        .collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(replies.len(), total);
    eprintln!("rotated after {rotated_at} of {total} requests: serial {before} -> {after}");
    let web = tls_json(&mesh, "web").await;
    assert_eq!(web["serial"], after.as_str(), "{web}");
    assert!(web["loads"].as_u64() >= Some(2), "{web}");
    let client = tls_json(&mesh, "client").await;
    assert!(client["loads"].as_u64() >= Some(2), "{client}");
    // A new connection from the client's sidecar (after its pooled one is gone) works with
    // both new certificates.
    let reply = H1::open(mesh.outbound("client"))
        .await
        .get("web", "/after")
        .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_credentials() {
    let apps = [Backend::start("client").await, Backend::start("web").await];
    // Polling effectively off: only SIGHUP can pick up the new files.
    let mesh = Mesh::builder(
        r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service web { port 8001 endpoints ["{{web}}"] }
"#,
    )
    .proxy("client", apps[0].addr())
    .proxy("web", apps[1].addr())
    .identity_poll_ms(3_600_000)
    .start()
    .await;
    let before = presented_serial(&mesh).await;
    mesh.issue("web");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        presented_serial(&mesh).await,
        before,
        "reloaded without SIGHUP"
    );
    mesh.signal("web", "HUP");
    let after = wait_new_serial(&mesh, &before, Duration::from_secs(5)).await;
    assert_eq!(tls_json(&mesh, "web").await["serial"], after.as_str());
    let reply = H1::open(mesh.outbound("client"))
        .await
        .get("web", "/")
        .await;
    assert_eq!(reply.status, 200);
}
