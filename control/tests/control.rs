//! The control plane end to end, in process on 127.0.0.1: policy distribution, rejected
//! policies, acks and nacks, bootstrap and renewal, the API's bearer token, slices and the
//! registry.

mod support;

use std::time::Duration;

use http::StatusCode;
use mesh_control::client;
use mesh_control::frames::{ACK, NACK};
use serde_json::json;
use support::*;

fn routes(table: &mesh_table::Table) -> Vec<String> {
    table.routes.iter().map(|r| r.name.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_change_is_streamed_and_broken_policy_is_kept_out() {
    let env = Env::new();
    let running = env.start(10_000).await;
    let config = proxy_config(&env, &running, "web").await;
    let mut stream = subscribe(
        running.proxies_addr,
        config,
        json!({"service": "web", "inbound": "127.0.0.1:7001", "healthy": true, "applied": null}),
    )
    .await;
    let (first, sum1) = next_table(&mut stream).await;
    assert_eq!(routes(&first), ["v1"]);
    stream
        .send_json(ACK, &json!({ "checksum": sum1 }))
        .await
        .expect("ack");

    // A change in the directory: a new route on api reaches web's sidecar.
    let changed = POLICY.replace(
        "route v1 on api { match { path prefix \"/v1\" } to api }",
        "route v1 on api { match { path prefix \"/v1\" } to api }\nroute v2 on api { match { path prefix \"/v2\" } to api }",
    );
    std::fs::write(env.policies().join("shop.mesh"), &changed).expect("write");
    let (second, sum2) = next_table(&mut stream).await;
    assert_eq!(routes(&second), ["v1", "v2"]);
    assert_ne!(sum1, sum2);
    let (_, policy) = op(running.api_addr, "GET", "/v1/policy", None).await;
    assert_eq!(policy["version"], 2, "{policy}");

    // A broken policy through the API: 422 with diagnostics, nothing written, old version served.
    let (status, v) = op(
        running.api_addr,
        "PUT",
        "/v1/policy",
        Some(json!({"files": {"shop.mesh": "service {"}})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["diagnostics"]["errors"].as_u64().unwrap_or(0) >= 1, "{v}");
    assert_eq!(
        std::fs::read_to_string(env.policies().join("shop.mesh")).expect("read"),
        changed
    );
    let (_, policy) = op(running.api_addr, "GET", "/v1/policy", None).await;
    assert_eq!(policy["version"], 2);
    assert_eq!(policy["last_compile"]["ok"], false, "{policy}");
    assert!(policy["diagnostics"]["errors"].as_u64().unwrap_or(0) >= 1);

    // A broken file in the directory: not shipped either; diagnostics kept.
    std::fs::write(
        env.policies().join("broken.mesh"),
        "route x on nowhere { to nowhere }",
    )
    .expect("write");
    assert!(
        eventually(5, || async {
            op(running.api_addr, "GET", "/v1/policy", None).await.1["last_compile"]["ok"] == false
                && op(running.api_addr, "GET", "/v1/policy", None).await.1["last_compile"]["source"]
                    == "watch"
        })
        .await
    );
    let (_, policy) = op(running.api_addr, "GET", "/v1/policy", None).await;
    assert_eq!(policy["version"], 2);
    std::fs::remove_file(env.policies().join("broken.mesh")).expect("rm");

    // A good PUT: 200, next version, streamed.
    let third_policy = changed.replace("prefix \"/v2\"", "prefix \"/v3\"");
    let (status, v) = op(
        running.api_addr,
        "PUT",
        "/v1/policy",
        Some(json!({"files": {"shop.mesh": third_policy}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["version"], 3, "{v}");
    let (third, sum3) = next_table(&mut stream).await;
    assert_eq!(
        third.routes[1].matcher.path,
        Some(mesh_table::PathMatch::Prefix("/v3".into()))
    );
    assert_ne!(sum3, sum2);

    // Bad file names are refused.
    let (status, _) = op(
        running.api_addr,
        "PUT",
        "/v1/policy",
        Some(json!({"files": {"../x.mesh": "x"}})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_is_recorded_and_visible() {
    let env = Env::new();
    let running = env.start(10_000).await;
    let config = proxy_config(&env, &running, "api").await;
    let mut stream = subscribe(
        running.proxies_addr,
        config,
        json!({"service": "api", "inbound": "127.0.0.1:7002", "healthy": true, "applied": null}),
    )
    .await;
    let (_, sum) = next_table(&mut stream).await;
    stream
        .send_json(
            NACK,
            &json!({ "checksum": sum, "reason": "filter module missing" }),
        )
        .await
        .expect("nack");
    assert!(
        eventually(5, || async {
            let (_, v) = op(running.api_addr, "GET", "/v1/proxies", None).await;
            v["proxies"][0]["last_nack"]["reason"] == "filter module missing"
                && v["proxies"][0]["last_nack"]["checksum"] == sum.as_str()
        })
        .await,
        "{}",
        op(running.api_addr, "GET", "/v1/proxies", None).await.1
    );
    stream
        .send_json(ACK, &json!({ "checksum": sum }))
        .await
        .expect("ack");
    assert!(
        eventually(5, || async {
            let (_, v) = op(running.api_addr, "GET", "/v1/proxies", None).await;
            let p = &v["proxies"][0];
            p["applied"] == sum.as_str()
                && p["in_sync"] == true
                && p["service"] == "api"
                && p["inbound"] == "127.0.0.1:7002"
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_with_current_checksum_gets_nothing() {
    let env = Env::new();
    let running = env.start(10_000).await;
    let config = proxy_config(&env, &running, "web").await;
    let mut stream = subscribe(
        running.proxies_addr,
        config.clone(),
        json!({"service": "web", "applied": null}),
    )
    .await;
    let (_, sum) = next_table(&mut stream).await;
    drop(stream);
    let mut again = subscribe(
        running.proxies_addr,
        config,
        json!({"service": "web", "applied": sum}),
    )
    .await;
    let got = tokio::time::timeout(Duration::from_millis(700), again.next()).await;
    assert!(
        got.is_err(),
        "nothing should be sent to a proxy that runs the current slice: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_renew_and_tokens() {
    let env = Env::new();
    let running = env.start(10_000).await;
    let bundle = env.bundle_pem();
    let (t, t_id) = token_and_id(running.api_addr, "payments").await;
    assert_eq!(t.len(), 64);
    let (status, v, key) = bootstrap(running.proxies_addr, &bundle, "payments", &t).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["spiffe_id"], "spiffe://shop.test/payments");
    let cert = v["cert_pem"].as_str().expect("cert");
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(cert.as_bytes())
        .map(|c: rustls::pki_types::CertificateDer<'static>| c)
        .expect("pem");
    assert_eq!(
        mesh_identity::spiffe_id_of(&der).expect("id").to_string(),
        "spiffe://shop.test/payments"
    );
    assert!(
        v["expires_at"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{v}"
    );

    // Wrong token, token of another service, revoked token: 403.
    let (status, v, _) =
        bootstrap(running.proxies_addr, &bundle, "payments", &"0".repeat(64)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        v["error"],
        "invalid or revoked join token for service `payments`"
    );
    let (status, _, _) = bootstrap(running.proxies_addr, &bundle, "ledger", &t).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Renewal over mTLS with the bootstrapped certificate: same identity.
    let mtls = client::mtls_config(cert, &key, &bundle, TD).expect("mtls");
    let mut conn = client::connect(running.proxies_addr, mtls, TD)
        .await
        .expect("connect");
    let (csr, _) = client::csr("spiffe://shop.test/payments").expect("csr");
    let (status, v) = client::post_json(&mut conn, "/v1/renew", &json!({ "csr_pem": csr }))
        .await
        .expect("renew");
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["spiffe_id"], "spiffe://shop.test/payments");

    // Revoked: no bootstrap, and no renewal of a certificate the token produced.
    let (status, _) = op(
        running.api_addr,
        "DELETE",
        &format!("/v1/tokens/{t_id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = bootstrap(running.proxies_addr, &bundle, "payments", &t).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, v) = client::post_json(&mut conn, "/v1/renew", &json!({ "csr_pem": csr }))
        .await
        .expect("renew");
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("revoked")),
        "{v}"
    );

    // Without a client certificate, renew and stream are refused.
    let anon = client::anonymous_config(&bundle, TD).expect("config");
    let mut conn = client::connect(running.proxies_addr, anon, TD)
        .await
        .expect("connect");
    let (status, _) = client::post_json(&mut conn, "/v1/renew", &json!({ "csr_pem": csr }))
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(client::Stream::open(&mut conn).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_survive_a_restart() {
    let env = Env::new();
    let running = env.start(10_000).await;
    let t = token(running.api_addr, "web").await;
    let (_, policy) = op(running.api_addr, "GET", "/v1/policy", None).await;
    drop(running);
    let running = env.start(10_000).await;
    let (status, v, _) = bootstrap(running.proxies_addr, &env.bundle_pem(), "web", &t).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, again) = op(running.api_addr, "GET", "/v1/policy", None).await;
    assert_eq!(again["checksum"], policy["checksum"]);
    assert_eq!(
        again["version"], policy["version"],
        "same policy, same version"
    );

    // Restarted with a policy directory that no longer compiles: the saved table is served.
    drop(running);
    std::fs::write(env.policies().join("broken.mesh"), "service {").expect("write");
    let running = env.start(10_000).await;
    let (_, broken) = op(running.api_addr, "GET", "/v1/policy", None).await;
    assert_eq!(broken["checksum"], policy["checksum"], "{broken}");
    assert_eq!(broken["version"], policy["version"]);
    assert_eq!(broken["last_compile"]["ok"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_needs_the_bearer_token() {
    let env = Env::new();
    let running = env.start(10_000).await;
    for path in ["/v1/proxies", "/v1/services", "/v1/policy", "/v1/traffic"] {
        let (status, _) = api(running.api_addr, "GET", path, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} without a token");
        let (status, _) = api(running.api_addr, "GET", path, None, Some("operator-secreT")).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{path} with a wrong token"
        );
        let (status, _) = op(running.api_addr, "GET", path, None).await;
        assert_eq!(status, StatusCode::OK, "{path} with the token");
    }
    let (status, _) = api(
        running.api_addr,
        "POST",
        "/v1/tokens",
        Some(json!({"service": "web"})),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_hold_only_what_a_service_may_call() {
    let env = Env::new();
    let running = env.start(10_000).await;
    let config = proxy_config(&env, &running, "web").await;
    let mut stream = subscribe(running.proxies_addr, config, json!({"service": "web"})).await;
    let (table, _) = next_table(&mut stream).await;
    mesh_table::validate(&table).expect("valid");
    // web may call api (api admits web) but not payments or ledger.
    assert_eq!(routes(&table), ["v1"]);
    let names: Vec<&str> = table.services.iter().map(|s| s.name.as_str()).collect();
    assert!(
        !names.contains(&"payments") && !names.contains(&"ledger"),
        "{names:?}"
    );

    let config = proxy_config(&env, &running, "api").await;
    let mut stream = subscribe(running.proxies_addr, config, json!({"service": "api"})).await;
    let (table, _) = next_table(&mut stream).await;
    assert_eq!(routes(&table), ["charge"], "api calls payments, not ledger");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_endpoints_appear_in_callers_slices_and_leave_after_grace() {
    let env = Env::new();
    let running = env.start(600).await;
    let web = proxy_config(&env, &running, "web").await;
    let mut web_stream = subscribe(
        running.proxies_addr,
        web,
        json!({"service": "web", "inbound": "127.0.0.1:7100", "healthy": true}),
    )
    .await;
    let (table, _) = next_table(&mut web_stream).await;
    let api_of = |t: &mesh_table::Table| {
        t.services[t.service_id("api").expect("api") as usize]
            .endpoints
            .clone()
    };
    assert_eq!(api_of(&table), mesh_table::Endpoints::Static(vec![]));

    let api = proxy_config(&env, &running, "api").await;
    let api_stream = subscribe(
        running.proxies_addr,
        api,
        json!({"service": "api", "inbound": "127.0.0.1:7200", "healthy": true}),
    )
    .await;
    let (table, _) = next_table(&mut web_stream).await;
    assert_eq!(
        api_of(&table),
        mesh_table::Endpoints::Static(vec!["127.0.0.1:7200".into()])
    );
    let (_, services) = op(running.api_addr, "GET", "/v1/services", None).await;
    let api_entry = services["services"]
        .as_array()
        .expect("list")
        .iter()
        .find(|s| s["name"] == "api")
        .cloned()
        .expect("api");
    assert_eq!(
        api_entry["endpoints"]["registry"],
        json!(["127.0.0.1:7200"]),
        "{services}"
    );

    // Unhealthy: out of the callers' slices; healthy again: back.
    let hello =
        |healthy: bool| json!({"service": "api", "inbound": "127.0.0.1:7200", "healthy": healthy});
    api_stream
        .send_json(mesh_control::frames::HELLO, &hello(false))
        .await
        .expect("hello");
    let (table, _) = next_table(&mut web_stream).await;
    assert_eq!(api_of(&table), mesh_table::Endpoints::Static(vec![]));
    api_stream
        .send_json(mesh_control::frames::HELLO, &hello(true))
        .await
        .expect("hello");
    let (table, _) = next_table(&mut web_stream).await;
    assert_eq!(
        api_of(&table),
        mesh_table::Endpoints::Static(vec!["127.0.0.1:7200".into()])
    );

    // Disconnected: still there within the grace period, gone after it.
    let gone_at = std::time::Instant::now();
    drop(api_stream);
    let (table, _) = next_table(&mut web_stream).await;
    assert!(
        gone_at.elapsed() >= Duration::from_millis(500),
        "removed only after the grace period"
    );
    assert_eq!(api_of(&table), mesh_table::Endpoints::Static(vec![]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_and_explain() {
    let env = Env::new();
    let running = env.start(10_000).await;
    let config = proxy_config(&env, &running, "web").await;
    let stream = subscribe(running.proxies_addr, config, json!({"service": "web"})).await;
    for (requests, p50, p99) in [(300, 1.0, 10.0), (100, 5.0, 20.0)] {
        stream.send_json(mesh_control::frames::TRAFFIC, &json!({"window_s": 5, "routes": [{"service": "api", "route": "v1", "requests": requests, "errors": 4, "p50_ms": p50, "p99_ms": p99}]})).await.expect("traffic");
    }
    assert!(
        eventually(5, || async {
            let (_, v) = op(running.api_addr, "GET", "/v1/traffic", None).await;
            let r = &v["routes"][0];
            r["requests"] == 400
                && r["p50_ms"] == 2.0
                && r["p99_ms"] == 20.0
                && r["error_rate"] == 0.02
        })
        .await,
        "{}",
        op(running.api_addr, "GET", "/v1/traffic", None).await.1
    );

    let (status, v) = op(
        running.api_addr,
        "GET",
        "/v1/explain?from=web&to=api&method=GET&path=/v1/x",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["route"], "v1");
    assert_eq!(v["decision"], "allow");
    let (_, v) = op(
        running.api_addr,
        "GET",
        "/v1/explain?from=web&to=payments&method=GET&path=/charge",
        None,
    )
    .await;
    assert_eq!(v["route"], "charge");
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["status"], 403);
    let (status, _) = op(
        running.api_addr,
        "GET",
        "/v1/explain?from=web&to=nowhere",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[test]
fn bad_config_exits_2_naming_the_key() {
    let env = Env::new();
    let path = env.path().join("control.toml");
    std::fs::write(&path, "policies = \"policies\"\nca = \"ca\"\ncert_ttl = \"forever\"\n[proxies]\nlisten = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\ntoken = \"operator-secret-of-at-least-32-characters\"\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mesh-control"))
        .arg("--config")
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cert_ttl"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_modules_are_served_by_digest_over_mtls() {
    let env = Env::new();
    // The smallest valid WebAssembly module.
    let module: &[u8] = b"\0asm\x01\0\0\0";
    std::fs::write(env.policies().join("tag.wasm"), module).expect("module");
    let with_filter = POLICY.replace(
        "route v1 on api { match { path prefix \"/v1\" } to api }",
        "filter tag { module \"tag.wasm\" }\nroute v1 on api { match { path prefix \"/v1\" } to api filters [tag] }",
    );
    std::fs::write(env.policies().join("shop.mesh"), with_filter).expect("policy");
    let running = env.start(10_000).await;
    let config = proxy_config(&env, &running, "web").await;
    let mut stream = subscribe(
        running.proxies_addr,
        config.clone(),
        json!({"service": "web"}),
    )
    .await;
    let (table, _) = next_table(&mut stream).await;
    assert_eq!(
        table.filters.len(),
        1,
        "web's slice carries the route filter"
    );
    let digest = mesh_control::policy::hex(&table.filters[0].sha256);

    let mut conn = client::connect(running.proxies_addr, config, TD)
        .await
        .expect("connect");
    let (status, bytes) = client::get(&mut conn, &format!("/v1/modules/{digest}"))
        .await
        .expect("get");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&bytes[..], module);
    let (status, _) = client::get(&mut conn, &format!("/v1/modules/{}", "0".repeat(64)))
        .await
        .expect("get");
    assert_eq!(status, StatusCode::NOT_FOUND);

    let anon = client::anonymous_config(&env.bundle_pem(), TD).expect("config");
    let mut conn = client::connect(running.proxies_addr, anon, TD)
        .await
        .expect("connect");
    let (status, _) = client::get(&mut conn, &format!("/v1/modules/{digest}"))
        .await
        .expect("get");
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "modules need a client certificate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_a_returning_proxy_keeps_its_endpoints_during_warm_up() {
    const GRACE_MS: u64 = 1500;
    let api_of = |t: &mesh_table::Table| {
        t.services[t.service_id("api").expect("api") as usize]
            .endpoints
            .clone()
    };
    let env = Env::new();
    let running = env.start(GRACE_MS).await;
    let web = proxy_config(&env, &running, "web").await;
    let api = proxy_config(&env, &running, "api").await;
    let mut web_stream = subscribe(
        running.proxies_addr,
        web.clone(),
        json!({"service": "web", "inbound": "127.0.0.1:7100", "healthy": true, "applied": null}),
    )
    .await;
    let api_stream = subscribe(
        running.proxies_addr,
        api.clone(),
        json!({"service": "api", "inbound": "127.0.0.1:7200", "healthy": true, "applied": null}),
    )
    .await;
    // web's table with api's endpoint in it.
    let applied = loop {
        let (table, sum) = next_table(&mut web_stream).await;
        if api_of(&table) == mesh_table::Endpoints::Static(vec!["127.0.0.1:7200".into()]) {
            break sum;
        }
    };
    web_stream
        .send_json(ACK, &json!({ "checksum": applied }))
        .await
        .expect("ack");
    drop((web_stream, api_stream));
    drop(running);

    // Restarted: the registry is empty. The caller reconnects first, with its table.
    let running = env.start(GRACE_MS).await;
    let started = std::time::Instant::now();
    let mut web_stream = subscribe(
        running.proxies_addr,
        web,
        json!({"service": "web", "inbound": "127.0.0.1:7100", "healthy": true, "applied": applied}),
    )
    .await;
    let got = tokio::time::timeout(Duration::from_millis(500), web_stream.next_table()).await;
    assert!(
        got.is_err(),
        "a returning proxy got a slice during the warm-up (api without endpoints): {got:?}"
    );

    // A new proxy (applied null) gets its slice at once, warm-up or not; api comes back on
    // another address.
    let mut api_stream = subscribe(
        running.proxies_addr,
        api,
        json!({"service": "api", "inbound": "127.0.0.1:7201", "healthy": true, "applied": null}),
    )
    .await;
    let api_first = tokio::time::timeout(Duration::from_millis(500), api_stream.next_table()).await;
    assert!(
        matches!(api_first, Ok(Ok(_))),
        "a new proxy is served at once: {api_first:?}"
    );

    // The caller's next table is the complete one, never one without api's endpoints.
    let (table, sum) = next_table(&mut web_stream).await;
    assert_eq!(
        api_of(&table),
        mesh_table::Endpoints::Static(vec!["127.0.0.1:7201".into()])
    );
    assert!(
        started.elapsed() >= Duration::from_millis(GRACE_MS - 100),
        "held until the warm-up ends"
    );
    web_stream
        .send_json(ACK, &json!({ "checksum": sum }))
        .await
        .expect("ack");
    assert!(
        eventually(5, || async {
            let (_, v) = op(running.api_addr, "GET", "/v1/proxies", None).await;
            let list = v["proxies"].as_array().cloned().unwrap_or_default();
            list.len() == 2
                && list
                    .iter()
                    .filter(|p| p["service"] == "web")
                    .all(|p| p["in_sync"] == true)
        })
        .await
    );
}

/// Renews over mTLS with `cert_pem`/`key`: the status and the answer.
async fn renew_with(
    addr: std::net::SocketAddr,
    cert_pem: &str,
    key: &str,
    bundle: &str,
    service: &str,
) -> (StatusCode, serde_json::Value) {
    let mtls = client::mtls_config(cert_pem, key, bundle, TD).expect("mtls");
    let mut conn = client::connect(addr, mtls, TD).await.expect("connect");
    let (csr, _) = client::csr(&format!("spiffe://{TD}/{service}")).expect("csr");
    client::post_json(&mut conn, "/v1/renew", &json!({ "csr_pem": csr }))
        .await
        .expect("renew")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_token_refuses_its_renewals_and_ends_its_streams() {
    let env = Env::new();
    let running = env.start(10_000).await;
    let bundle = env.bundle_pem();
    let (revoked, revoked_id) = token_and_id(running.api_addr, "web").await;
    let kept = token(running.api_addr, "api").await;
    let (status, web, web_key) = bootstrap(running.proxies_addr, &bundle, "web", &revoked).await;
    assert_eq!(status, StatusCode::OK, "{web}");
    let (status, api, api_key) = bootstrap(running.proxies_addr, &bundle, "api", &kept).await;
    assert_eq!(status, StatusCode::OK, "{api}");
    let web_cert = web["cert_pem"].as_str().expect("cert");
    let api_cert = api["cert_pem"].as_str().expect("cert");

    // A renewed certificate descends from the same token.
    let (status, renewed) =
        renew_with(running.proxies_addr, web_cert, &web_key, &bundle, "web").await;
    assert_eq!(status, StatusCode::OK, "{renewed}");

    let mtls = client::mtls_config(web_cert, &web_key, &bundle, TD).expect("mtls");
    let mut web_stream = subscribe(
        running.proxies_addr,
        mtls.clone(),
        json!({"service": "web", "inbound": "127.0.0.1:7001", "healthy": true, "applied": null}),
    )
    .await;
    next_table(&mut web_stream).await;
    let api_mtls = client::mtls_config(api_cert, &api_key, &bundle, TD).expect("mtls");
    let mut api_stream = subscribe(
        running.proxies_addr,
        api_mtls,
        json!({"service": "api", "inbound": "127.0.0.1:7002", "healthy": true, "applied": null}),
    )
    .await;
    next_table(&mut api_stream).await;

    let (status, _) = op(
        running.api_addr,
        "DELETE",
        &format!("/v1/tokens/{revoked_id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // The open stream ends at once (pings come every 10 s; the end comes first).
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match web_stream.next().await {
                Ok(Some(_)) => {}
                other => return other,
            }
        }
    })
    .await
    .expect("the revoked identity's stream ends within 5 s");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");

    // Renewal is refused with the reason; the certificate that was renewed from it descends
    // from the revoked token too.
    let (status, v) = renew_with(running.proxies_addr, web_cert, &web_key, &bundle, "web").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("revoked")),
        "{v}"
    );
    let renewed_der = rustls::pki_types::pem::PemObject::from_pem_slice(
        renewed["cert_pem"].as_str().expect("cert").as_bytes(),
    )
    .map(|c: rustls::pki_types::CertificateDer<'static>| c)
    .expect("pem");
    let renewed_serial = mesh_identity::CertInfo::parse(&renewed_der)
        .expect("info")
        .serial;
    assert!(
        running.shared.revoked(&renewed_serial).is_some(),
        "a renewal descends from the revoked token too"
    );

    // A new stream is refused.
    let mut conn = client::connect(running.proxies_addr, mtls, TD)
        .await
        .expect("connect");
    let refused = client::Stream::open(&mut conn).await.expect_err("refused");
    assert!(
        refused.contains("403") && refused.contains("revoked"),
        "{refused}"
    );
    let (status, _) = client::get(&mut conn, &format!("/v1/modules/{}", "0".repeat(64)))
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::FORBIDDEN, "modules are refused too");

    // The other token's identity is untouched: its stream lives on and it still renews.
    let (status, v) = renew_with(running.proxies_addr, api_cert, &api_key, &bundle, "api").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    // It was sent the revocation list, naming the revoked identity's certificates (both:
    // the bootstrapped one and its renewal), so its listeners refuse them; then nothing.
    let list = tokio::time::timeout(Duration::from_secs(5), api_stream.next())
        .await
        .expect("the revocation list within 5 s")
        .expect("a frame")
        .expect("the stream lives on");
    assert_eq!(list.0, mesh_control::frames::REVOKED);
    let list: serde_json::Value = serde_json::from_slice(&list.1).expect("JSON");
    let serials = list["serials"].as_array().expect("serials");
    assert_eq!(serials.len(), 2, "{list}");
    assert!(
        serials.iter().any(|s| s == renewed_serial.as_str()),
        "{list}"
    );
    let quiet = tokio::time::timeout(Duration::from_millis(500), api_stream.next()).await;
    assert!(quiet.is_err(), "the unrevoked stream ended: {quiet:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_planes_own_name_cannot_be_enrolled() {
    let env = Env::new();
    let running = env.start(10_000).await;
    let (status, v) = op(
        running.api_addr,
        "POST",
        "/v1/tokens",
        Some(json!({ "service": "mesh-control" })),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("reserved")),
        "{v}"
    );
    // A token for the name that got in some other way (an older version's state) still
    // cannot bootstrap it.
    let smuggled = running.shared.tokens.create("mesh-control").expect("token");
    let (status, v, _) = bootstrap(
        running.proxies_addr,
        &env.bundle_pem(),
        "mesh-control",
        &smuggled.token,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("reserved")),
        "{v}"
    );
}
