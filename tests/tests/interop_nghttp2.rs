//! nghttp2's own clients (Debian `nghttp2-client`) against the sidecars. `nghttp` and
//! `h2load` speak h2c with prior knowledge (their default for `http://` URLs) to the
//! outbound listener, and to the inbound listener of an `mtls permissive` service (a
//! strict one admits no plaintext). Over TLS, `nghttp` presents a mesh certificate
//! (`--cert`/`--key`) to a strict inbound listener; `h2load` has no client-certificate
//! option, so a strict listener refuses it, which is checked too. The sidecars' `/metrics`
//! count what the tools report.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mesh_tests::backend::Backend;
use mesh_tests::mesh::Mesh;
use mesh_tests::metrics::sum as metric;
use serde_json::Value;

const POLICY: &str = r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service web { port 8001 endpoints ["{{web}}"] }
service open { port 8002 endpoints ["{{open}}"] mtls permissive }
// Plaintext callers match only `anyone`, and a service without rules refuses them.
authorize open { allow from anyone to path prefix "/" }
route hello on web {
  match { path prefix "/" }
  response_headers { set "x-mesh-route" "hello" }
}
"#;

/// h2load's load: requests, clients (connections), concurrent streams per client.
const REQUESTS: usize = 2000;
const LOAD: [&str; 6] = ["-n", "2000", "-c", "10", "-m", "10"];
const TOOL_LIMIT: Duration = Duration::from_secs(120);

/// Runs `program` with `args` for at most [`TOOL_LIMIT`] (killed past it); a program that
/// is not installed fails the test, naming the package.
async fn run(program: &'static str, args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || run_blocking(program, &args))
        .await
        .expect("tool task")
}

fn run_blocking(program: &str, args: &[String]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{program}` ({e}): it comes with Debian's `nghttp2-client` package, \
                 which .ci/run installs (apt-get install nghttp2-client)"
            )
        });
    let started = Instant::now();
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if started.elapsed() > TOOL_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{program} {args:?} did not finish within {TOOL_LIMIT:?}:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(&out).unwrap_or_default(),
        stderr: std::fs::read(&err).unwrap_or_default(),
    }
}

/// What `nghttp` got for one request: status and headers (from its HAR file) and body.
#[derive(Debug)]
struct Fetched {
    status: u64,
    headers: Vec<(String, String)>,
    body: String,
}

impl Fetched {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// `nghttp URL` with `:authority` set to `authority` (and `extra` arguments); what went
/// wrong when nghttp got no response.
async fn nghttp(url: String, authority: &str, extra: &[String]) -> Result<Fetched, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let har = dir.path().join("out.har");
    let mut args = vec![
        format!("--har={}", har.display()),
        format!("--header=:authority: {authority}"),
        "--header=x-from: nghttp".to_string(),
    ];
    args.extend_from_slice(extra);
    args.push(url);
    let out = run("nghttp", args).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    // nghttp exits 0 when a request fails ("Some requests were not processed"): what it
    // did is in the HAR, which has no entry then.
    let har = read_har(&har);
    let response = &har["log"]["entries"][0]["response"];
    let Some(status) = response["status"].as_u64().filter(|_| out.status.success()) else {
        return Err(format!("nghttp ({}): {stderr}\n{stdout}", out.status));
    };
    Ok(Fetched {
        status,
        headers: response["headers"]
            .as_array()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h["name"].as_str().unwrap_or_default().to_string(),
                            h["value"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        body: stdout,
    })
}

fn read_har(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("nghttp wrote no HAR at {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("HAR is not JSON ({e}): {text}"))
}

/// h2load's counts: `requests: N total, N started, N done, N succeeded, N failed, N
/// errored, N timeout` and `status codes: N 2xx, ...`, by word.
#[derive(Debug)]
struct Load {
    counts: std::collections::BTreeMap<String, u64>,
    text: String,
}

impl Load {
    fn get(&self, word: &str) -> u64 {
        *self
            .counts
            .get(word)
            .unwrap_or_else(|| panic!("h2load reported no `{word}`:\n{}", self.text))
    }
}

async fn h2load(url: String, extra: &[&str]) -> Load {
    let mut args: Vec<String> = LOAD.iter().map(|a| a.to_string()).collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    args.push(url);
    let out = run("h2load", args).await;
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut counts = std::collections::BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line
            .strip_prefix("requests: ")
            .or_else(|| line.strip_prefix("status codes: "))
        else {
            continue;
        };
        for part in rest.split(", ") {
            if let Some((n, word)) = part.trim().split_once(' ') {
                if let Ok(n) = n.parse() {
                    counts.insert(word.to_string(), n);
                }
            }
        }
    }
    if let Some(finished) = text.lines().find(|l| l.starts_with("finished in")) {
        eprintln!("h2load {}: {finished}", args_summary(&text));
    }
    Load { counts, text }
}

/// h2load's request line, for the log.
fn args_summary(text: &str) -> &str {
    text.lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_default()
}

async fn requests(mesh: &Mesh, sidecar: &str, labels: &[(&str, &str)]) -> f64 {
    let text = mesh.admin_get(sidecar, "/metrics").await.text();
    metric(&text, "mesh_requests_total", labels)
}

async fn start() -> (Mesh, [Backend; 3]) {
    let apps = [
        Backend::start("client").await,
        Backend::start("web").await,
        Backend::start("open").await,
    ];
    let mesh = Mesh::builder(POLICY)
        .proxy("client", apps[0].addr())
        .proxy("web", apps[1].addr())
        .proxy("open", apps[2].addr())
        .start()
        .await;
    (mesh, apps)
}

fn http(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nghttp_and_h2load_speak_h2c_to_the_outbound_listener() {
    let (mesh, [_, web, _]) = start().await;
    let outbound = mesh.outbound("client");

    let fetched = nghttp(http(outbound, "/hello?x=1"), "web", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fetched.status, 200, "{fetched:?}");
    assert_eq!(fetched.header("x-mesh-route"), Some("hello"), "{fetched:?}");
    assert_eq!(fetched.header("x-mesh-error"), None, "{fetched:?}");
    let echo = fetched.json();
    assert_eq!(echo["service"], "web", "{echo}");
    assert_eq!(echo["path"], "/hello?x=1", "{echo}");
    assert_eq!(echo["headers"]["x-from"], "nghttp", "{echo}");
    assert_eq!(echo["headers"]["host"], "web", "{echo}");

    // h2load names the service in its URLs and connects to the listener instead.
    let load = h2load(
        "http://web/load".to_string(),
        &[&format!("--connect-to={outbound}")],
    )
    .await;
    assert_eq!(load.get("total"), REQUESTS as u64, "{}", load.text);
    assert_eq!(load.get("succeeded"), REQUESTS as u64, "{}", load.text);
    assert_eq!(load.get("failed"), 0, "{}", load.text);
    assert_eq!(load.get("errored"), 0, "{}", load.text);
    assert_eq!(load.get("timeout"), 0, "{}", load.text);
    assert_eq!(load.get("2xx"), REQUESTS as u64, "{}", load.text);

    let all = 1.0 + REQUESTS as f64;
    let outbound_count = requests(
        &mesh,
        "client",
        &[
            ("direction", "outbound"),
            ("service", "web"),
            ("route", "hello"),
            ("status", "200"),
        ],
    )
    .await;
    assert_eq!(outbound_count, all);
    let inbound_count = requests(
        &mesh,
        "web",
        &[
            ("direction", "inbound"),
            ("service", "web"),
            ("peer", "client"),
            ("status", "200"),
        ],
    )
    .await;
    assert_eq!(inbound_count, all);
    assert_eq!(
        web.stats()
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        1 + REQUESTS as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nghttp_and_h2load_speak_h2c_to_a_permissive_inbound_listener() {
    let (mesh, [_, _, open]) = start().await;
    let inbound = mesh.inbound("open");

    let fetched = nghttp(http(inbound, "/direct"), "open", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fetched.status, 200, "{fetched:?}");
    let echo = fetched.json();
    assert_eq!(echo["service"], "open", "{echo}");
    assert_eq!(echo["path"], "/direct", "{echo}");
    // A plaintext caller has no identity to forward.
    assert_eq!(echo["headers"]["x-forwarded-client-cert"], Value::Null);

    let load = h2load(
        "http://open/load".to_string(),
        &[&format!("--connect-to={inbound}")],
    )
    .await;
    assert_eq!(load.get("succeeded"), REQUESTS as u64, "{}", load.text);
    assert_eq!(load.get("failed"), 0, "{}", load.text);
    assert_eq!(load.get("errored"), 0, "{}", load.text);
    assert_eq!(load.get("2xx"), REQUESTS as u64, "{}", load.text);

    let count = requests(
        &mesh,
        "open",
        &[
            ("direction", "inbound"),
            ("service", "open"),
            ("peer", "plaintext"),
            ("status", "200"),
        ],
    )
    .await;
    assert_eq!(count, 1.0 + REQUESTS as f64);
    assert_eq!(
        open.stats()
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        1 + REQUESTS as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_inbound_listener_takes_nghttp_with_a_mesh_certificate_only() {
    let (mesh, [_, web, _]) = start().await;
    let inbound = mesh.inbound("web");
    let certs = mesh.certs("client");
    let tls = [
        format!("--cert={}", certs.join("cert.pem").display()),
        format!("--key={}", certs.join("key.pem").display()),
    ];

    // h2 over mTLS with the client's certificate: admitted as `client`.
    let fetched = nghttp(format!("https://{inbound}/secure"), "web", &tls)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fetched.status, 200, "{fetched:?}");
    let echo = fetched.json();
    assert_eq!(echo["service"], "web", "{echo}");
    let xfcc = echo["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or_default();
    assert!(
        xfcc.contains("URI=spiffe://e2e.local/client"),
        "x-forwarded-client-cert: {echo}"
    );

    // No certificate, or no TLS at all: refused before any HTTP.
    let refused = nghttp(format!("https://{inbound}/secure"), "web", &[]).await;
    assert!(refused.is_err(), "{refused:?}");
    let refused = nghttp(http(inbound, "/plain"), "web", &[]).await;
    assert!(refused.is_err(), "{refused:?}");
    let load = h2load(format!("https://{inbound}/load"), &[]).await;
    assert_eq!(load.get("succeeded"), 0, "{}", load.text);
    assert_eq!(
        web.stats()
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "only the request with a certificate reached the application"
    );
    let text = mesh.admin_get("web", "/metrics").await.text();
    let no_certificate = metric(
        &text,
        "mesh_tls_handshake_failures_total",
        &[("direction", "inbound"), ("reason", "no-certificate")],
    );
    assert!(no_certificate >= 2.0, "{text}");
    let plaintext = metric(
        &text,
        "mesh_tls_handshake_failures_total",
        &[("direction", "inbound"), ("reason", "plaintext-refused")],
    );
    assert!(plaintext >= 1.0, "{text}");
}
