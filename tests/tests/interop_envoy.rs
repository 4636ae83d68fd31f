//! Envoy as the reference proxy-wasm host: every example filter (the SDK's and the two on
//! the public `proxy-wasm` crate) runs in Envoy 1.40 (V8) and in `mesh-proxy` on the same
//! requests, with the same config bytes, and what a client and the application see must
//! agree: status, the request headers the app got, response headers, local replies and the
//! `http_call`s a filter makes. Only what legitimately differs between two proxies is
//! normalized (each rule says why); the differences that remain are asserted here and
//! documented in docs/filters.md ("Differences from Envoy").

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use http::Method;
use mesh_tests::backend::Backend;
use mesh_tests::body::{empty, full};
use mesh_tests::client::{h1_request, Reply, H1};
use mesh_tests::filters::wasm;
use mesh_tests::interop::envoy::{Bootstrap, Envoy, Recorded, Recorder, WasmFilter};
use mesh_tests::mesh::{Mesh, MeshBuilder};
use serde_json::Value;

/// The policy both hosts run: one service per case, whose only route carries the case's
/// filters. `APP` and `AUTHZ` are the mesh's own application and `http_call` target.
const POLICY: &str = r#"
mesh "interop" { trust_domain "interop.local" }
service client { port 8000 endpoints ["{{client}}"] }
service authz { port 8001 endpoints ["AUTHZ"] }

filter noop { module "noop.wasm" config {} failure closed }
filter adder { module "header-adder.wasm" config { name: "x-added", value: "by-adder" } failure closed }
filter first { module "header-adder.wasm" config { name: "x-first", value: "1", label: "first" } failure closed }
filter second { module "header-adder.wasm" config { name: "x-second", value: "2", label: "second" } failure closed }
filter audit { module "audit.wasm" config { header: "x-audit-id" } failure closed }
filter auth {
  module "auth.wasm"
  config { tokens: { "good": ["GET"], "admin": ["*"] } }
  failure closed
}
filter limit { module "ratelimit.wasm" config { requests_per_second: 1, burst: 3 } failure open }
filter misbehave-ok { module "misbehave.wasm" config { mode: "ok" } failure closed }
filter misbehave-late { module "misbehave.wasm" config { mode: "ok", on: "response_headers" } failure closed }
filter crash-open { module "misbehave.wasm" config { mode: "trap", path_prefix: "/bad" } failure open }
filter crash-closed { module "misbehave.wasm" config { mode: "trap", path_prefix: "/bad" } failure closed }
filter crash-late {
  module "misbehave.wasm"
  config { mode: "trap", on: "response_headers", path_prefix: "/bad" }
  failure closed
}
filter pw-header { module "pw-header.wasm" config { value: "from-proxy-wasm" } failure closed }
filter call-ok { module "pw-authcall.wasm" config { upstream: "authz", path: "/status/200" } failure closed }
filter call-no { module "pw-authcall.wasm" config { upstream: "authz", path: "/status/403" } failure closed }
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
"#;

/// The modules the policy names, and the example each one is.
const MODULES: [(&str, &str); 8] = [
    ("noop.wasm", "noop"),
    ("header-adder.wasm", "header_adder"),
    ("audit.wasm", "audit"),
    ("auth.wasm", "auth"),
    ("ratelimit.wasm", "ratelimit"),
    ("misbehave.wasm", "misbehave"),
    ("pw-header.wasm", "pw_header"),
    ("pw-authcall.wasm", "pw_authcall"),
];

/// How much of two answers to the same request must agree.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Compare {
    /// Everything the client and the app saw (after normalizing).
    All,
    /// The status only: the proxies' own answers (a failed filter) differ by design.
    Status,
}

/// One request of a case.
#[derive(Debug, Clone)]
struct Req {
    method: Method,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: Option<&'static str>,
    compare: Compare,
}

fn get(path: &'static str) -> Req {
    Req {
        method: Method::GET,
        path,
        headers: Vec::new(),
        body: None,
        compare: Compare::All,
    }
}

impl Req {
    fn method(mut self, method: Method) -> Req {
        self.method = method;
        self
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Req {
        self.headers.push((name, value));
        self
    }

    fn body(mut self, body: &'static str) -> Req {
        self.body = Some(body);
        self
    }

    fn status_only(mut self) -> Req {
        self.compare = Compare::Status;
        self
    }
}

/// A case: a service (Envoy: a listener) whose route runs `filters`, and its requests.
struct Case {
    name: &'static str,
    filters: &'static [&'static str],
    requests: Vec<Req>,
}

/// The request set. Each case's requests run in order on one keep-alive connection.
fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "noop",
            filters: &["noop"],
            requests: vec![
                get("/noop?q=1")
                    .header("x-in", "1")
                    .header("x-echo-set", "x-out=2"),
                get("/noop/post")
                    .method(Method::POST)
                    .header("content-type", "text/plain")
                    .body("hello, filters"),
            ],
        },
        Case {
            // No label: the chain's label is the plugin's name (`plugin_name`).
            name: "adder",
            filters: &["adder"],
            requests: vec![
                get("/adder"),
                get("/adder/replaced").header("x-added", "by-caller"),
            ],
        },
        Case {
            name: "chain",
            filters: &["first", "second", "audit"],
            requests: vec![
                get("/chain"),
                get("/chain/kept").header("x-audit-id", "caller-chosen"),
                get("/chain/app-header").header("x-echo-set", "x-filter-chain=app"),
            ],
        },
        Case {
            name: "auth",
            filters: &["auth"],
            requests: vec![
                get("/auth/none"),
                get("/auth/unknown").header("authorization", "Bearer wrong"),
                get("/auth/method")
                    .method(Method::POST)
                    .header("authorization", "Bearer good"),
                get("/auth/good").header("authorization", "Bearer good"),
                get("/auth/admin")
                    .method(Method::DELETE)
                    .header("authorization", "bearer admin"),
                get("/auth/empty").header("authorization", "  "),
            ],
        },
        Case {
            // A bucket of 3, refilled at 1/s: the 4th request within a second is refused.
            name: "limit",
            filters: &["limit"],
            requests: vec![get("/1"), get("/2"), get("/3"), get("/4")],
        },
        Case {
            name: "misbehave-ok",
            filters: &["misbehave-ok", "misbehave-late"],
            requests: vec![get("/ok")],
        },
        Case {
            // The trapping request itself is a documented difference (below).
            name: "trap-open",
            filters: &["crash-open"],
            requests: vec![get("/fine")],
        },
        Case {
            name: "trap-closed",
            filters: &["crash-closed"],
            requests: vec![get("/fine"), get("/bad").status_only()],
        },
        Case {
            name: "trap-late",
            filters: &["crash-late"],
            requests: vec![get("/fine"), get("/bad").status_only()],
        },
        Case {
            name: "pw-header",
            filters: &["pw-header"],
            requests: vec![
                get("/pw").header("x-request-id", "caller-id-1"),
                get("/pw/generated"),
            ],
        },
        Case {
            name: "call-ok",
            filters: &["call-ok"],
            requests: vec![get("/call?x=1").method(Method::PUT).body("the body stays")],
        },
        Case {
            name: "call-no",
            filters: &["call-no"],
            requests: vec![get("/call")],
        },
        Case {
            name: "call-late",
            filters: &["ask-late", "pw-header"],
            requests: vec![get("/late")],
        },
        Case {
            name: "call-late-no",
            filters: &["pw-header", "refuse-late"],
            requests: vec![get("/late-no")],
        },
    ]
}

/// The mesh's policy: [`POLICY`] plus a service and route per case.
fn policy(app: SocketAddr, authz: SocketAddr) -> String {
    let mut policy = POLICY.replace("AUTHZ", &authz.to_string());
    for (port, case) in (8100..).zip(cases()) {
        let filters = case.filters.join(", ");
        policy.push_str(&format!(
            "service {name} {{ port {port} endpoints [\"{app}\"] }}\n\
             route {name} on {name} {{ match {{ path prefix \"/\" }} filters [{filters}] }}\n",
            name = case.name
        ));
    }
    policy
}

/// What one request came to, normalized.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    status: u16,
    /// Response headers (repeated values joined by `, `).
    headers: BTreeMap<String, String>,
    /// The app's echo of the request (method, path, version, headers), or the local reply.
    body: Answer,
}

#[derive(Debug, Clone, PartialEq)]
enum Answer {
    /// The app answered: the request as it saw it.
    App {
        method: String,
        path: String,
        version: String,
        headers: BTreeMap<String, String>,
        body_bytes: u64,
    },
    /// The proxy (or a filter in it) answered: the body as text.
    Local(String),
}

/// Response headers one proxy adds of its own, whatever the filters do.
fn proxy_response_header(name: &str) -> bool {
    // `date`: the time of the answer. `server`: Envoy names itself (`server: envoy`).
    // `x-envoy-*`: Envoy's own (`x-envoy-upstream-service-time`). `x-mesh-*`: ours (the
    // reason of the proxy's own answers, `x-mesh-error`). `x-request-id`: each proxy's own
    // id for the request, where it echoes one.
    matches!(name, "date" | "server" | "x-request-id")
        || name.starts_with("x-envoy-")
        || name.starts_with("x-mesh-")
}

/// Request headers a proxy adds on the way to the app, whatever the filters do.
fn proxy_request_header(name: &str) -> bool {
    // `x-forwarded-*`: each proxy's own forwarding record (Envoy sets
    // `x-forwarded-proto`, ours `x-forwarded-for`). `x-envoy-*`: Envoy's own
    // (`x-envoy-expected-rq-timeout-ms`). `x-mesh-*` and `x-forwarded-client-cert`: the
    // caller's identity our sidecars pass on. `traceparent`: our sidecar's trace context.
    // (`x-request-id` is kept: its value is normalized in `normalize`.)
    name.starts_with("x-forwarded-")
        || name.starts_with("x-envoy-")
        || name.starts_with("x-mesh-")
        || name == "traceparent"
}

/// Joins repeated header values with `, ` under lower-case names.
fn header_map(headers: &http::HeaderMap, keep: impl Fn(&str) -> bool) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        if !keep(name.as_str()) {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    out
}

/// The normalized view of `reply` to `req`; `host` names the proxy in messages.
fn normalize(host: &str, req: &Req, reply: &Reply) -> Seen {
    // How the body is framed on the client's hop (`transfer-encoding: chunked` or a
    // `content-length`) is that hop's business (RFC 9112 §6); the bodies are compared.
    // Where the framing differs is documented (docs/filters.md).
    let mut headers = header_map(&reply.headers, |n| {
        !proxy_response_header(n) && n != "transfer-encoding"
    });
    let echo: Option<Value> = serde_json::from_slice(&reply.body)
        .ok()
        .filter(|v: &Value| v["service"].as_str() == Some("app"));
    let body = match echo {
        Some(echo) => {
            // The echo's length follows the request headers the app saw, which differ by
            // the proxies' own (above).
            headers.remove("content-length");
            let mut seen: BTreeMap<String, String> = echo["headers"]
                .as_object()
                .into_iter()
                .flatten()
                // Framing again: the body's length is compared as `body_bytes`.
                .filter(|(name, _)| !proxy_request_header(name) && *name != "content-length")
                .map(|(name, value)| (name.clone(), value.as_str().unwrap_or_default().to_string()))
                .collect();
            // A request id each proxy made up: present in both, its value its own. A
            // caller's id is kept as it was and compared.
            let callers_id = req.headers.iter().any(|(n, _)| *n == "x-request-id");
            let id = seen.get("x-request-id").cloned();
            if !callers_id {
                if let Some(id) = &id {
                    assert!(!id.is_empty(), "{host}: an empty x-request-id");
                    seen.insert("x-request-id".into(), "<generated>".into());
                    // pw-header reads the request as sent in the response phase.
                    if let Some(read) = headers.get_mut("x-pw-request-id") {
                        assert_eq!(read, id, "{host}: x-pw-request-id is the id sent");
                        *read = "<generated>".into();
                    }
                }
            }
            // audit's own id (clock, counter and context id): the app and the response
            // carry the same one.
            let callers_audit = req.headers.iter().any(|(n, _)| *n == "x-audit-id");
            if let (false, Some(audit)) = (callers_audit, seen.get("x-audit-id").cloned()) {
                assert_eq!(
                    headers.get("x-audit-id"),
                    Some(&audit),
                    "{host}: the response echoes the audit id the app saw"
                );
                assert!(audit.len() == 25, "{host}: an audit id of 16+1+8: {audit}");
                seen.insert("x-audit-id".into(), "<generated>".into());
                headers.insert("x-audit-id".into(), "<generated>".into());
            }
            Answer::App {
                method: echo["method"].as_str().unwrap_or_default().to_string(),
                path: echo["path"].as_str().unwrap_or_default().to_string(),
                version: echo["version"].as_str().unwrap_or_default().to_string(),
                headers: seen,
                body_bytes: echo["body_bytes"].as_u64().unwrap_or_default(),
            }
        }
        None => Answer::Local(reply.text()),
    };
    Seen {
        status: reply.status.as_u16(),
        headers,
        body,
    }
}

/// Sends `req` on `conn` with `Host: host`.
async fn send(conn: &mut H1, host: &str, req: &Req) -> Reply {
    let mut request = h1_request(req.method.clone(), host, req.path);
    for (name, value) in &req.headers {
        request = request.header(*name, *value);
    }
    let body = req.body.map_or_else(empty, |b| full(b.as_bytes().to_vec()));
    conn.fetch(request.body(body).expect("a request")).await
}

/// The `http_call`s a host made, normalized like the app's view of requests.
fn calls(recorder: &Recorder) -> Vec<Recorded> {
    recorder
        .take()
        .into_iter()
        .map(|mut call| {
            // As for requests to the app (`proxy_request_header`); and the request id
            // a proxy gives its own calls.
            call.headers
                .retain(|name, _| !proxy_request_header(name) && name != "x-request-id");
            call
        })
        .collect()
}

/// `req` sent once to each host, on a new connection: (Envoy's reply, the mesh's).
async fn both(hosts: &Hosts, case: &str, req: &Req) -> (Reply, Reply) {
    let mut conn = H1::open(hosts.envoy.listener(case)).await;
    let theirs = send(&mut conn, case, req).await;
    let mut conn = H1::open(hosts.mesh.outbound("client")).await;
    (theirs, send(&mut conn, case, req).await)
}

/// What one host did with one case.
#[derive(Debug)]
struct Outcome {
    seen: Vec<Seen>,
    calls: Vec<Recorded>,
    raw: Vec<Reply>,
}

async fn run_case(target: SocketAddr, case: &Case, authz: &Recorder) -> Outcome {
    let mut conn = H1::open(target).await;
    let started = Instant::now();
    let mut outcome = Outcome {
        seen: Vec::new(),
        calls: Vec::new(),
        raw: Vec::new(),
    };
    for req in &case.requests {
        let reply = send(&mut conn, case.name, req).await;
        outcome.seen.push(normalize(case.name, req, &reply));
        outcome.raw.push(reply);
    }
    if case.name == "limit" {
        // The bucket refills 1 token/s: the test's premise is that its requests came
        // within a second.
        assert!(
            started.elapsed().as_millis() < 1000,
            "the rate-limit case took {:?}",
            started.elapsed()
        );
    }
    outcome.calls = calls(authz);
    outcome
}

/// Starts both hosts with the same filters, configs and modules.
struct Hosts {
    envoy: Envoy,
    mesh: Mesh,
    envoy_authz: Recorder,
    mesh_authz: Recorder,
    _apps: (Backend, Backend),
}

async fn start_hosts() -> Hosts {
    let (envoy_app, mesh_app) = (Backend::start("app").await, Backend::start("app").await);
    let (envoy_authz, mesh_authz) = (Recorder::start().await, Recorder::start().await);
    // One sidecar, for the client: each case's route filters run in it, and it forwards
    // to the app (an endpoint without a sidecar, spoken to in h2c as Envoy's cluster is).
    let client_app = Backend::start("client").await;
    let mut builder: MeshBuilder = Mesh::builder(&policy(mesh_app.addr(), mesh_authz.addr()))
        .insecure_plaintext()
        .proxy("client", client_app.addr());
    for (file, example) in MODULES {
        let path = wasm(example);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        builder = builder.file(file, bytes);
    }
    let mesh = builder.start().await;

    // Envoy gets each filter as the mesh's table has it: the same config bytes, failure
    // mode and module file.
    let table = mesh_table::decode(mesh.initial_table()).expect("the compiled table decodes");
    let filter = |name: &str| -> WasmFilter {
        let filter = table
            .filters
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no filter {name} in the table"));
        let example = MODULES
            .iter()
            .find(|(file, _)| *file == filter.module)
            .map(|(_, example)| *example)
            .unwrap_or_else(|| panic!("no example module {}", filter.module));
        WasmFilter {
            name: filter.name.clone(),
            module: wasm(example),
            config: filter.config_json.clone(),
            fail_open: filter.failure == mesh_table::FailureMode::Open,
        }
    };
    let mut bootstrap = Bootstrap::default()
        .cluster("app", envoy_app.addr())
        .cluster("authz", envoy_authz.addr());
    for case in cases() {
        let filters = case.filters.iter().map(|name| filter(name)).collect();
        bootstrap = bootstrap.listener(case.name, filters, "app");
    }
    let envoy = Envoy::start(&bootstrap).await;
    Hosts {
        envoy,
        mesh,
        envoy_authz,
        mesh_authz,
        _apps: (envoy_app, mesh_app),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_filters_behave_the_same_in_envoy_and_in_the_mesh() {
    let mut hosts = start_hosts().await;
    let mut report = Vec::new();
    for case in cases() {
        let envoy = run_case(hosts.envoy.listener(case.name), &case, &hosts.envoy_authz).await;
        let ours = run_case(hosts.mesh.outbound("client"), &case, &hosts.mesh_authz).await;
        for (i, req) in case.requests.iter().enumerate() {
            let (theirs, mine) = (&envoy.seen[i], &ours.seen[i]);
            let what = format!(
                "case {} request {i} ({} {})",
                case.name, req.method, req.path
            );
            match req.compare {
                Compare::All => assert_eq!(
                    theirs, mine,
                    "{what}: Envoy (left) and mesh-proxy (right) differ\nEnvoy: {:?}\nmesh:  {:?}",
                    envoy.raw[i], ours.raw[i]
                ),
                Compare::Status => assert_eq!(
                    theirs.status, mine.status,
                    "{what}: Envoy {:?}, mesh {:?}",
                    envoy.raw[i], ours.raw[i]
                ),
            }
            report.push(format!("{what}: {}", theirs.status));
        }
        assert_eq!(
            envoy.calls, ours.calls,
            "case {}: the http_calls differ (Envoy left, mesh right)",
            case.name
        );
        if !envoy.calls.is_empty() {
            report.push(format!(
                "case {}: {} http_call(s) agree",
                case.name,
                envoy.calls.len()
            ));
        }
    }
    println!("{}", report.join("\n"));

    // Documented differences (docs/filters.md, "Differences from Envoy"), asserted so the
    // document follows if either host changes.
    // A trap with `failure open`: Envoy fails the request the VM crashed in (503) and
    // skips the dead filter from then on; the mesh skips the filter for that request too.
    let (theirs, mine) = both(&hosts, "trap-open", &get("/bad")).await;
    assert_eq!(
        (theirs.status.as_u16(), mine.status.as_u16()),
        (503, 200),
        "a trap, failing open: Envoy {theirs:?}, mesh {mine:?}"
    );
    // After it both let every request through: Envoy without the filter, the mesh with a
    // fresh instance (which traps again on /bad, and fails open).
    for path in ["/fine", "/bad"] {
        let req = get(path);
        let (theirs, mine) = both(&hosts, "trap-open", &req).await;
        assert_eq!(
            normalize("envoy", &req, &theirs),
            normalize("mesh", &req, &mine),
            "after a trap, failing open, {path}: Envoy {theirs:?}, mesh {mine:?}"
        );
    }
    // A trap with `failure closed`: both answer 503 (above); after it Envoy's VM is gone and
    // FAIL_CLOSED answers 503 to every later request of that filter, where the mesh
    // discards the one instance and the next request gets a fresh one.
    let (theirs, mine) = both(&hosts, "trap-closed", &get("/fine")).await;
    assert_eq!(
        (theirs.status.as_u16(), mine.status.as_u16()),
        (503, 200),
        "after a trap, failing closed: Envoy {theirs:?}, mesh {mine:?}"
    );

    assert!(hosts.envoy.running(), "envoy is still running");
    assert!(
        hosts.mesh.try_exit("client").is_none(),
        "the sidecar is still running"
    );
}
