//! Observability through real sidecars: after a known mix of requests, `/metrics` counts
//! exactly what happened per route and status (counters and histogram counts, with the
//! service's own latency buckets), the text passes `promtool check metrics` (Debian's
//! `prometheus` package), and the access log has one JSON line per request, a denial
//! naming its rule.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use http::Method;
use mesh_tests::backend::Backend;
use mesh_tests::body::empty;
use mesh_tests::client::{h1_request, H1};
use mesh_tests::mesh::Mesh;

const POLICY: &str = r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service web { port 8001 endpoints ["{{web}}"] }
route a on web { match { path prefix "/a" } }
route b on web { match { path prefix "/b" } }
route internal on web { match { path prefix "/internal" } }
route upload on web { match { path prefix "/upload" } }
authorize web {
  deny  from any    to path prefix "/internal"
  allow from client to path prefix "/"
  default deny
}
observe web {
  access_log json sample 100%
  latency_buckets [1ms, 50ms, 2s]
}
"#;

/// One sample of the text format: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn parse(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|e| panic!("value of {line}: {e}"));
        let (name, labels) = match key.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or(rest);
                let labels = body
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair
                            .split_once("=\"")
                            .unwrap_or_else(|| panic!("label in {line}"));
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (name.to_string(), labels)
            }
            None => (key.to_string(), BTreeMap::new()),
        };
        samples.push((name, labels, value));
    }
    samples
}

/// The sum of the samples of `name` whose labels include all of `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

async fn metrics(mesh: &Mesh, service: &str) -> (String, Vec<Sample>) {
    let reply = mesh.admin_get(service, "/metrics").await;
    assert_eq!(reply.status, 200, "/metrics: {}", reply.text());
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "content type"
    );
    let text = reply.text();
    let samples = parse(&text);
    (text, samples)
}

/// `promtool check metrics` on the text; a missing promtool fails the test.
fn promtool(text: &str, what: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `promtool` ({e}): it comes with Debian's `prometheus` package, \
                 which .ci/run installs (apt-get install prometheus)"
            )
        });
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).expect("write to promtool");
    }
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics refused the {what} metrics:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_access_logs_count_exactly_what_happened() {
    let logs = tempfile::tempdir().expect("tempdir");
    let log_path = logs.path().join("access.log");
    let client_app = Backend::start("client").await;
    let web = Backend::start("web").await;
    let mesh = Mesh::builder(POLICY)
        .proxy("client", client_app.addr())
        .proxy("web", web.addr())
        .extra_config(&format!("[access_log]\npath = \"{}\"", log_path.display()))
        .start()
        .await;
    let mut conn = H1::open(mesh.outbound("client")).await;
    for i in 0..7 {
        let reply = conn.get("web", &format!("/a/{i}")).await;
        assert_eq!(reply.status, 200, "route a: {}", reply.text());
    }
    for _ in 0..3 {
        let reply = conn.get("web", "/nowhere").await;
        assert_eq!(reply.status, 404);
        assert_eq!(reply.mesh_error(), Some("no-route"));
    }
    for _ in 0..2 {
        let request = h1_request(Method::GET, "web", "/b/fail")
            .header("x-echo-status", "503")
            .body(empty())
            .expect("request");
        let reply = conn.fetch(request).await;
        assert_eq!(reply.status, 503, "the app's 503");
        assert_eq!(reply.mesh_error(), None);
    }
    for _ in 0..2 {
        let reply = conn.get("web", "/internal/secret").await;
        assert_eq!(reply.status, 403);
        assert_eq!(reply.mesh_error(), Some("unauthorized"));
    }

    // A streamed request body of 100,000 bytes (more than the 64 KiB kept for retries).
    let request = h1_request(Method::POST, "web", "/upload")
        .body(mesh_tests::body::RepeatBody::boxed(100_000))
        .expect("request");
    assert_eq!(conn.fetch(request).await.status, 200, "upload");

    // The caller's sidecar: outbound, by route and status.
    let (text, s) = metrics(&mesh, "client").await;
    let out = [
        ("direction", "outbound"),
        ("service", "web"),
        ("peer", "client"),
    ];
    let requests = |route: &str, target: &str, status: &str| {
        let mut labels = out.to_vec();
        labels.extend([("route", route), ("target", target), ("status", status)]);
        value(&s, "mesh_requests_total", &labels)
    };
    assert_eq!(requests("a", "web", "200"), 7.0, "\n{text}");
    assert_eq!(requests("none", "none", "404"), 3.0, "\n{text}");
    assert_eq!(requests("b", "web", "503"), 2.0, "\n{text}");
    assert_eq!(requests("internal", "web", "403"), 2.0, "\n{text}");
    assert_eq!(requests("upload", "web", "200"), 1.0, "\n{text}");
    assert_eq!(
        value(&s, "mesh_request_bytes_total", &[("route", "upload")]),
        100_000.0,
        "request bytes, counted as they stream\n{text}"
    );
    assert_eq!(
        value(&s, "mesh_requests_total", &[("direction", "outbound")]),
        15.0,
        "nothing else was counted\n{text}"
    );
    // Histograms: one observation per request, in the service's own buckets.
    let hist = |route: &str, suffix: &str, le: Option<&str>| {
        let mut labels = vec![
            ("direction", "outbound"),
            ("service", "web"),
            ("route", route),
        ];
        if let Some(le) = le {
            labels.push(("le", le));
        }
        value(
            &s,
            &format!("mesh_request_duration_seconds{suffix}"),
            &labels,
        )
    };
    assert_eq!(hist("a", "_count", None), 7.0, "\n{text}");
    assert_eq!(hist("a", "_bucket", Some("+Inf")), 7.0, "\n{text}");
    assert_eq!(hist("none", "_count", None), 3.0, "\n{text}");
    assert_eq!(hist("b", "_count", None), 2.0, "\n{text}");
    assert_eq!(hist("internal", "_count", None), 2.0, "\n{text}");
    for le in ["0.001", "0.05", "2"] {
        assert!(
            s.iter()
                .any(|(n, l, _)| n == "mesh_request_duration_seconds_bucket"
                    && l.get("le").map(String::as_str) == Some(le)),
            "the `observe` bucket {le} is used\n{text}"
        );
    }
    assert!(
        value(&s, "mesh_response_bytes_total", &[("route", "a")]) > 0.0,
        "response bytes counted\n{text}"
    );
    assert_eq!(
        value(
            &s,
            "mesh_endpoints",
            &[("service", "web"), ("state", "healthy")]
        ),
        1.0,
        "\n{text}"
    );
    let checksum = mesh.config("client").await["checksum"]
        .as_str()
        .expect("checksum")
        .to_string();
    assert_eq!(
        value(&s, "mesh_table_version_info", &[("checksum", &checksum)]),
        1.0,
        "\n{text}"
    );
    assert_eq!(value(&s, "mesh_table_loads_total", &[]), 1.0, "\n{text}");
    assert!(
        value(&s, "mesh_open_connections", &[("listener", "outbound")]) >= 1.0,
        "our connection is open\n{text}"
    );
    promtool(&text, "caller's");

    // The service's sidecar: inbound, by status, and the denials by rule.
    let (text, s) = metrics(&mesh, "web").await;
    let inbound = |status: &str| {
        value(
            &s,
            "mesh_requests_total",
            &[
                ("direction", "inbound"),
                ("service", "web"),
                ("peer", "client"),
                ("status", status),
            ],
        )
    };
    assert_eq!(inbound("200"), 8.0, "\n{text}");
    assert_eq!(
        value(&s, "mesh_request_bytes_total", &[("direction", "inbound")]),
        100_000.0,
        "\n{text}"
    );
    assert_eq!(inbound("503"), 2.0, "\n{text}");
    assert_eq!(inbound("403"), 2.0, "\n{text}");
    let deny_line = POLICY
        .lines()
        .position(|l| l.contains("deny  from any"))
        .expect("the deny rule")
        + 1;
    let denied: Vec<&Sample> = s
        .iter()
        .filter(|(n, _, _)| n == "mesh_authz_denied_total")
        .collect();
    assert_eq!(denied.len(), 1, "one deciding rule\n{text}");
    let rule = denied[0].1["rule"].clone();
    assert!(
        rule.ends_with(&format!(":{deny_line}")),
        "the rule label is file:line of the deny rule: {rule}"
    );
    assert_eq!(denied[0].2, 2.0);
    promtool(&text, "service's");

    // The access log: written in the background, so wait (bounded) for all the lines.
    let expected = 15 + 12;
    let started = Instant::now();
    let lines: Vec<serde_json::Value> = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
            .collect();
        if lines.len() >= expected || started.elapsed() > Duration::from_secs(10) {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(lines.len(), expected, "one line per request: {lines:#?}");
    let denied: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["direction"] == "inbound" && l["status"] == 403)
        .collect();
    assert_eq!(denied.len(), 2);
    for line in denied {
        let logged = line["rule"].as_str().expect("rule");
        assert!(
            logged.contains(&format!("{rule}:")),
            "the access log names the deciding rule ({rule}): {line}"
        );
        assert_eq!(line["path"], "/internal/secret");
        assert_eq!(line["method"], "GET");
        assert!(line["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("spiffe://")));
        assert_eq!(line["error"], "unauthorized");
    }
    let routed = lines
        .iter()
        .find(|l| l["direction"] == "outbound" && l["route"] == "a")
        .expect("a line for route a");
    for field in [
        "time",
        "duration_ms",
        "bytes_in",
        "bytes_out",
        "endpoint",
        "retries",
        "service",
        "target",
    ] {
        assert!(!routed[field].is_null(), "{field} in {routed}");
    }
    assert!(routed["bytes_out"].as_u64().is_some_and(|b| b > 0));
    for direction in ["outbound", "inbound"] {
        let upload = lines
            .iter()
            .find(|l| l["direction"] == direction && l["method"] == "POST")
            .expect("the upload's line");
        assert_eq!(upload["bytes_in"], 100_000, "{upload}");
    }
    let no_route = lines
        .iter()
        .find(|l| l["status"] == 404)
        .expect("a no-route line");
    assert_eq!(no_route["error"], "no-route");
}

/// `meshc why --format json` on the mesh's policy.
fn why(mesh: &Mesh, from: &str, to: &str, method: &str, path: &str) -> serde_json::Value {
    let out = mesh_tests::meshc(
        mesh.dir(),
        &[
            "why",
            "policy-0.mesh",
            method,
            path,
            "--from",
            from,
            "--to",
            to,
            "--format",
            "json",
        ],
    );
    assert!(
        out.status.success(),
        "meshc why: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("meshc why JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_explains_changes_the_log_level_and_quits() {
    let client_app = Backend::start("client").await;
    let web = Backend::start("web").await;
    let mesh = Mesh::builder(POLICY)
        .proxy("client", client_app.addr())
        .proxy("web", web.addr())
        .start()
        .await;

    // /explain agrees with `meshc why` on the same table: a routed request and a denied one.
    for (path, status, decision) in [
        ("/a/1", None, "allow"),
        ("/internal/x", Some(403u64), "deny"),
    ] {
        let reply = mesh
            .admin_get(
                "client",
                &format!("/explain?authority=web&method=GET&path={path}&header=x-any:1"),
            )
            .await;
        assert_eq!(reply.status, 200, "/explain: {}", reply.text());
        let explained = reply.json();
        let why = why(&mesh, "client", "web", "GET", path);
        assert_eq!(explained["route"], why["route"], "{explained} vs {why}");
        assert_eq!(
            explained["decision"], why["decision"],
            "{explained} vs {why}"
        );
        assert_eq!(explained["decision"], decision);
        assert_eq!(explained["status"], why["status"], "{explained} vs {why}");
        assert_eq!(explained["status"].as_u64(), status);
        assert_eq!(
            explained["rule"]["line"], why["rule"]["line"],
            "{explained} vs {why}"
        );
        let (ours, theirs) = (
            explained["rule"]["file"].as_str().expect("file"),
            why["rule"]["file"].as_str().expect("meshc's file"),
        );
        assert!(
            theirs.ends_with(ours) || ours.ends_with(theirs),
            "same file: {ours} vs {theirs}"
        );
    }
    let reply = mesh
        .admin_get("client", "/explain?authority=web&path=/nowhere")
        .await;
    assert_eq!(reply.json()["status"], 404);
    assert_eq!(
        mesh.admin_get("client", "/explain?path=/").await.status,
        400,
        "authority is required"
    );

    // /logging: debug lines appear only once the level is debug.
    let mut conn = H1::open(mesh.outbound("client")).await;
    assert_eq!(conn.get("web", "/a/before").await.status, 200);
    assert!(!mesh.log("web").contains("DEBUG"), "info by default");
    let reply = mesh.admin_get("web", "/logging?level=debug").await;
    assert_eq!(reply.status, 200, "/logging: {}", reply.text());
    assert_eq!(
        mesh.admin_get("web", "/logging?level=not%20a%20level%3D%3D")
            .await
            .status,
        400
    );
    assert_eq!(conn.get("web", "/a/after").await.status, 200);
    let started = Instant::now();
    while !mesh.log("web").contains("DEBUG") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no debug line after /logging?level=debug:\n{}",
            mesh.log("web")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // /quitquitquit: POST only; then the proxy drains and exits 0.
    assert_eq!(mesh.admin_get("web", "/quitquitquit").await.status, 405);
    let mut admin = H1::open(mesh.admin("web")).await;
    let reply = admin
        .fetch(
            h1_request(Method::POST, "admin", "/quitquitquit")
                .body(empty())
                .expect("request"),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    drop(admin);
    let status = mesh
        .wait_exit("web", Duration::from_secs(15))
        .await
        .unwrap_or_else(|| {
            let log = mesh.log("web");
            let tail: Vec<&str> = log.lines().filter(|l| !l.contains("DEBUG")).collect();
            panic!(
                "the proxy did not exit after /quitquitquit:\n{}",
                tail.join("\n")
            )
        });
    assert!(status.success(), "exit status {status}");
}
