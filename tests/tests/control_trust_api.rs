//! The control plane's trust, operator side, end to end with real processes: join tokens
//! kept as hashes in a private state directory, listed, limited (`--ttl`, `--max-uses`) and
//! revoked by id through `meshc`; the operator API over TLS (`curl --cacert`,
//! `openssl s_client`, `meshc --control https://… --cacert`); plaintext beyond loopback and
//! short operator tokens refused at start; `Bearer` in any case; failed authentications
//! rate limited (429); slow headers closed within the deadline while a good client is
//! served; client-supplied names escaped in the log (issue 27).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mesh_tests::backend::Backend;
use mesh_tests::binary;
use mesh_tests::client::{h1_request, Reply, H1};
use mesh_tests::control::{ControlPlane, OPERATOR_TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TRUST_DOMAIN: &str = "trust.local";

const POLICY: &str = r#"
mesh "trust" { trust_domain "trust.local" }
service web { port 8001 }
"#;

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One request to the plain-HTTP operator API with `authorization` (none when `None`).
async fn call(
    api: SocketAddr,
    method: http::Method,
    path: &str,
    authorization: Option<&str>,
    body: Option<serde_json::Value>,
) -> Reply {
    let mut connection = H1::open(api).await;
    let mut request = h1_request(method, "control", path);
    if let Some(a) = authorization {
        request = request.header("authorization", a);
    }
    let body = body.map_or_else(mesh_tests::body::empty, |b| {
        mesh_tests::body::full(b.to_string())
    });
    connection
        .fetch(request.body(body).unwrap_or_else(|e| panic!("{e}")))
        .await
}

/// The `meshc token list --format json` entries.
fn token_list(control: &ControlPlane) -> Vec<serde_json::Value> {
    let out = control.meshc(&[
        "token",
        "list",
        "--format",
        "json",
        "--control",
        &control.url(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    v["tokens"].as_array().cloned().unwrap_or_default()
}

async fn wait_log(what: &str, limit: Duration, log: impl Fn() -> String, needle: &str) {
    let started = Instant::now();
    while !log().contains(needle) {
        assert!(
            started.elapsed() < limit,
            "{what}: `{needle}` not logged within {limit:?}:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_listed_limited_and_revoked_by_id_through_meshc() {
    let control = ControlPlane::start(POLICY, TRUST_DOMAIN, "24h").await;
    let app = Backend::start("web").await;

    // One use: the first replica bootstraps, the second is refused.
    let (once, once_id) = control.create_token_with("web", &["--max-uses", "1"]);
    assert_eq!(once_id.len(), 16, "{once_id}");
    let first = control.sidecar("web", app.addr(), &once);
    first.wait_ready().await;
    let second = control.sidecar("web", app.addr(), &once);
    wait_log(
        "second replica",
        Duration::from_secs(20),
        || second.log(),
        "has reached its maximum number of uses",
    )
    .await;
    wait_log(
        "control plane",
        Duration::from_secs(5),
        || control.log(),
        "used up",
    )
    .await;
    assert!(!second.is_ready().await);

    // An expired token is refused too, and the proxy is told why.
    let (brief, brief_id) = control.create_token_with("web", &["--ttl", "1s"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let late = control.sidecar("web", app.addr(), &brief);
    wait_log(
        "late replica",
        Duration::from_secs(20),
        || late.log(),
        "has expired",
    )
    .await;
    wait_log(
        "control plane",
        Duration::from_secs(5),
        || control.log(),
        "expired",
    )
    .await;

    // The text form of create: the secret alone on stdout, the id on stderr.
    let out = control.meshc(&["token", "create", "web", "--control", &control.url()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plain = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(plain.len(), 64, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("shown once"),
        "{}",
        text(&out)
    );

    // The list: ids, uses, limits, never a secret.
    let list = token_list(&control);
    assert_eq!(list.len(), 3, "{list:?}");
    let once_entry = list
        .iter()
        .find(|t| t["id"] == once_id.as_str())
        .unwrap_or_else(|| panic!("{list:?}"));
    assert_eq!(once_entry["service"], "web");
    assert_eq!(once_entry["uses"], 1, "{once_entry}");
    assert_eq!(once_entry["max_uses"], 1, "{once_entry}");
    assert!(once_entry["last_used_at"].is_u64(), "{once_entry}");
    let brief_entry = list
        .iter()
        .find(|t| t["id"] == brief_id.as_str())
        .unwrap_or_else(|| panic!("{list:?}"));
    assert!(brief_entry["expires_at"].is_u64(), "{brief_entry}");
    assert_eq!(brief_entry["uses"], 0);
    let dump = serde_json::to_string(&list).unwrap_or_default();
    for secret in [&once, &brief, &plain] {
        assert!(
            !dump.contains(secret.as_str()),
            "a secret is listed: {dump}"
        );
    }
    let out = control.meshc(&["token", "list", "--control", &control.url()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    for column in [
        "ID",
        "SERVICE",
        "CREATED",
        "LAST USED",
        "USES",
        "EXPIRES",
        "MAX USES",
    ] {
        assert!(table.contains(column), "{table}");
    }
    assert!(
        table.contains(&once_id) && table.contains("unlimited") && table.contains("never"),
        "{table}"
    );

    // Nothing at rest holds a secret.
    let at_rest =
        std::fs::read_to_string(control.dir().join("state/tokens.json")).unwrap_or_default();
    assert!(at_rest.contains(&once_id), "{at_rest}");
    for secret in [&once, &brief, &plain] {
        assert!(
            !at_rest.contains(secret.as_str()),
            "a secret is stored: {at_rest}"
        );
    }

    // Revoke by id, never by the secret; the enrolled replica's stream ends.
    let out = control.meshc(&["token", "revoke", &once, "--control", &control.url()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not its id"),
        "{}",
        text(&out)
    );
    let reply = call(
        control.api,
        http::Method::DELETE,
        &format!("/v1/tokens/{once}"),
        Some(&format!("Bearer {OPERATOR_TOKEN}")),
        None,
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    let out = control.meshc(&["token", "revoke", &once_id, "--control", &control.url()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    wait_log(
        "control plane",
        Duration::from_secs(10),
        || control.log(),
        "ending the stream: its",
    )
    .await;
    assert!(token_list(&control)
        .iter()
        .all(|t| t["id"] != once_id.as_str()));
    let out = control.meshc(&["token", "revoke", &once_id, "--control", &control.url()]);
    assert_eq!(out.status.code(), Some(1), "revoking twice: {}", text(&out));
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_directory_is_private_and_plaintext_tokens_are_migrated() {
    use std::os::unix::fs::PermissionsExt;
    let control = ControlPlane::start(POLICY, TRUST_DOMAIN, "24h").await;
    let (_, _) = control.create_token_with("web", &[]);
    let state = control.dir().join("state");
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    assert_eq!(mode(&state), 0o700, "the state directory");
    assert_eq!(mode(&state.join("tokens.json")), 0o600, "tokens.json");
    for entry in std::fs::read_dir(&state)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(Result::ok)
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp"), "a temporary file is left: {name}");
    }
    // Another local user cannot read it (when the tests run as root, as in CI's container).
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if is_root {
        let out = Command::new("su")
            .args(["nobody", "-s", "/bin/sh", "-c"])
            .arg(format!("cat '{}'", state.join("tokens.json").display()))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("su: {e}"));
        assert!(
            !out.status.success(),
            "nobody read the tokens: {}",
            text(&out)
        );
    }

    // An old state: the secret in plaintext, the directory world-readable.
    control.kill();
    let secret = "5e".repeat(32);
    std::fs::write(
        state.join("tokens.json"),
        format!(r#"{{"tokens":[{{"token":"{secret}","service":"web","created_at":1700000000}}]}}"#),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("{e}"));
    control.spawn().await;
    assert_eq!(mode(&state), 0o700, "made private again at start");
    let at_rest = std::fs::read_to_string(state.join("tokens.json")).unwrap_or_default();
    assert!(
        !at_rest.contains(&secret),
        "the plaintext secret is still there: {at_rest}"
    );
    assert_eq!(mode(&state.join("tokens.json")), 0o600);
    let list = token_list(&control);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["created_at"], 1_700_000_000_u64);
    assert!(control.log().contains("plaintext"), "{}", control.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_api_speaks_tls_to_curl_openssl_and_meshc() {
    let control = ControlPlane::start_with_api(POLICY, TRUST_DOMAIN, "24h", "tls = true").await;
    let root = control.bundle();
    let url = control.url();
    assert!(url.starts_with("https://"), "{url}");

    let out = Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(&root)
        .args(["-H", &format!("Authorization: Bearer {OPERATOR_TOKEN}")])
        .arg(format!("{url}/v1/tokens"))
        .output()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    assert!(out.status.success(), "curl: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"tokens\""),
        "{}",
        text(&out)
    );

    // Without the CA, curl does not trust it; plain http to it gets no answer.
    let out = Command::new("curl")
        .args([
            "-sS",
            "--fail",
            "-H",
            &format!("Authorization: Bearer {OPERATOR_TOKEN}"),
        ])
        .arg(format!("{url}/v1/tokens"))
        .output()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    assert!(
        !out.status.success(),
        "curl trusted it without --cacert: {}",
        text(&out)
    );
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "5"])
        .arg(format!("http://{}/v1/tokens", control.api))
        .output()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    assert!(!out.status.success(), "plain HTTP answered: {}", text(&out));

    let mut s_client = Command::new("openssl")
        .args(["s_client", "-connect", &control.api.to_string(), "-CAfile"])
        .arg(&root)
        .args([
            "-verify_return_error",
            "-verify_ip",
            &control.api.ip().to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("openssl: {e}"));
    drop(s_client.stdin.take());
    let out = s_client
        .wait_with_output()
        .unwrap_or_else(|e| panic!("openssl: {e}"));
    let all = text(&out);
    assert!(
        all.contains("Verify return code: 0 (ok)"),
        "openssl s_client: {all}"
    );
    assert!(
        all.contains(&format!("spiffe://{TRUST_DOMAIN}/mesh-control")) || all.contains("TLSv1.3"),
        "{all}"
    );

    let root_arg = root.to_string_lossy().into_owned();
    let out = control.meshc(&[
        "token",
        "create",
        "web",
        "--control",
        &url,
        "--cacert",
        &root_arg,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = control.meshc(&["status", "--control", &url, "--cacert", &root_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = control.meshc(&["token", "list", "--control", &url]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "https without --cacert: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--cacert"),
        "{}",
        text(&out)
    );
    // A CA that did not issue it is refused.
    let other = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let made = mesh_tests::meshc(
        other.path(),
        &["ca", "init", "ca", "--trust-domain", "other.local"],
    );
    assert!(made.status.success(), "{}", text(&made));
    let foreign = other
        .path()
        .join("ca/root.pem")
        .to_string_lossy()
        .into_owned();
    let out = control.meshc(&["token", "list", "--control", &url, "--cacert", &foreign]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a foreign CA was trusted: {}",
        text(&out)
    );
}

/// Runs `mesh-control` on `config` (in `dir`) until it exits or `limit` passes; its exit
/// code (`None`: still running, then killed) and stderr.
fn run_control(dir: &Path, config: &str, limit: Duration) -> (Option<i32>, String) {
    let path = dir.join("probe.toml");
    std::fs::write(&path, config).unwrap_or_else(|e| panic!("{e}"));
    let log = dir.join("probe.log");
    let stderr = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(binary("mesh-control"))
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("mesh-control: {e}"));
    let started = Instant::now();
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (code, std::fs::read_to_string(&log).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_beyond_loopback_and_short_tokens_are_refused_at_start() {
    let control = ControlPlane::start(POLICY, TRUST_DOMAIN, "24h").await;
    let base = |api_listen: &str, extra: &str, token: &str| {
        format!(
            "policies = \"policies\"\nca = \"ca\"\nstate = \"probe-state\"\naddresses_file = \"probe.addresses\"\n\
             [proxies]\nlisten = \"127.0.0.1:0\"\n[api]\nlisten = \"{api_listen}\"\ntoken = \"{token}\"\n{extra}\n"
        )
    };
    let (code, log) = run_control(
        control.dir(),
        &base("0.0.0.0:0", "", OPERATOR_TOKEN),
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("api.allow_plaintext") && log.contains("api.listen"),
        "{log}"
    );
    let (code, log) = run_control(
        control.dir(),
        &base("127.0.0.1:0", "", "short-token-of-24-chars!"),
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("`api.token`") && log.contains("at least 32"),
        "{log}"
    );
    // Said to be meant: it starts (still running when killed).
    let (code, log) = run_control(
        control.dir(),
        &base("0.0.0.0:0", "allow_plaintext = true", OPERATOR_TOKEN),
        Duration::from_secs(3),
    );
    assert_eq!(code, None, "it did not keep running: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_in_any_case_and_failed_authentications_are_rate_limited() {
    let control = ControlPlane::start(POLICY, TRUST_DOMAIN, "24h").await;
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let reply = call(
            control.api,
            http::Method::GET,
            "/v1/tokens",
            Some(&format!("{scheme} {OPERATOR_TOKEN}")),
            None,
        )
        .await;
        assert_eq!(reply.status, 200, "{scheme}: {}", reply.text());
    }
    for i in 0..10 {
        let reply = call(
            control.api,
            http::Method::GET,
            "/v1/tokens",
            Some(&format!("Bearer wrong-{i}")),
            None,
        )
        .await;
        assert_eq!(reply.status, 401, "attempt {i}: {}", reply.text());
    }
    let reply = call(
        control.api,
        http::Method::GET,
        "/v1/tokens",
        Some("Bearer wrong-10"),
        None,
    )
    .await;
    assert_eq!(reply.status, 429, "the 11th: {}", reply.text());
    // Not even the right token is checked for the rest of the minute.
    let reply = call(
        control.api,
        http::Method::GET,
        "/v1/tokens",
        Some(&format!("Bearer {OPERATOR_TOKEN}")),
        None,
    )
    .await;
    assert_eq!(reply.status, 429, "{}", reply.text());
    let log = control.log();
    assert!(
        log.matches("missing or wrong bearer token").count() >= 10,
        "{log}"
    );
    assert!(
        !log.contains(OPERATOR_TOKEN),
        "the operator token is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_closed_within_the_deadline_while_a_good_client_is_served() {
    let control =
        ControlPlane::start_with_api(POLICY, TRUST_DOMAIN, "24h", "header_timeout_ms = 1000").await;
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut tcp = tokio::net::TcpStream::connect(control.api)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tcp.write_all(b"GET /v1/proxies HTTP/1.1\r\nHost: control\r\nX-Slow: ")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        slow.push(tcp);
    }
    let started = Instant::now();
    let reply = call(
        control.api,
        http::Method::GET,
        "/v1/tokens",
        Some(&format!("Bearer {OPERATOR_TOKEN}")),
        None,
    )
    .await;
    assert_eq!(reply.status, 200, "the good client: {}", reply.text());
    for (i, tcp) in slow.iter_mut().enumerate() {
        let mut buf = [0_u8; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {} // a 408 first, then the close
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "slow connection {i} still open after {:?}",
            started.elapsed()
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_supplied_names_are_escaped_in_the_log() {
    let control = ControlPlane::start(POLICY, TRUST_DOMAIN, "24h").await;
    let evil = "web\n2030-01-01T00:00:00.000000Z  INFO mesh_control: forged line\u{1b}[2J";
    let reply = call(
        control.api,
        http::Method::POST,
        "/v1/tokens",
        Some(&format!("Bearer {OPERATOR_TOKEN}")),
        Some(serde_json::json!({ "service": evil })),
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    wait_log(
        "control plane",
        Duration::from_secs(5),
        || control.log(),
        "token refused",
    )
    .await;
    let log = control.log();
    assert!(
        !log.contains('\u{1b}'),
        "a raw escape byte in the log:\n{log:?}"
    );
    assert!(
        !log.lines()
            .any(|l| l.starts_with("2030-01-01T00:00:00.000000Z")),
        "a forged line in the log:\n{log}"
    );
    assert!(
        log.contains(r"web\n2030"),
        "the name is logged escaped:\n{log}"
    );
}
