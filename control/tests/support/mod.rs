//! Shared set-up of the control plane tests: a CA, a policy directory, a started control
//! plane (in process, or as a child process), an operator API client and proxy clients.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use mesh_control::client;
use mesh_identity::ca::InitOptions;
use mesh_identity::{Ca, TrustDomain};
use serde_json::{json, Value};

pub const TD: &str = "shop.test";
pub const TOKEN: &str = "operator-secret-of-at-least-32-characters";

/// web and api come from the registry; payments admits only api; api admits web.
pub const POLICY: &str = r#"
mesh "shop" { trust_domain "shop.test" }

service web { port 8080 protocol http1 }
service api { port 8081 protocol http1 }
service payments { port 8082 protocol http1 endpoints ["127.0.0.1:9999"] }
service ledger { port 8083 protocol http1 endpoints ["127.0.0.1:9998"] }

route v1 on api { match { path prefix "/v1" } to api }
route charge on payments { match { path prefix "/charge" } to payments }
route book on ledger { match { path prefix "/book" } to ledger }

authorize api { allow from web }
authorize payments { allow from api }
authorize ledger { allow from payments }
"#;

pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = InitOptions {
            trust_domain: Some(TrustDomain::new(TD).expect("td")),
            ..InitOptions::default()
        };
        Ca::init(&dir.path().join("ca"), &options).expect("ca init");
        std::fs::create_dir_all(dir.path().join("policies")).expect("policies dir");
        std::fs::write(dir.path().join("policies/shop.mesh"), POLICY).expect("policy");
        Env { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn policies(&self) -> PathBuf {
        self.dir.path().join("policies")
    }

    /// Writes control.toml with these listeners; its path.
    pub fn config(&self, proxies: SocketAddr, api: SocketAddr, grace_ms: u64) -> PathBuf {
        let text = format!(
            "policies = \"policies\"\nca = \"ca\"\ncert_ttl = \"1h\"\nregistry_grace_ms = {grace_ms}\nwarm_up_ms = {grace_ms}\n\
             [proxies]\nlisten = \"{proxies}\"\n[api]\nlisten = \"{api}\"\ntoken = \"{TOKEN}\"\n"
        );
        let path = self.dir.path().join("control.toml");
        std::fs::write(&path, text).expect("config");
        path
    }

    pub async fn start(&self, grace_ms: u64) -> mesh_control::Running {
        if let Ok(filter) = std::env::var("MESH_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let path = self.config(any, any, grace_ms);
        let config = mesh_control::Config::load(&path).expect("config");
        mesh_control::start(config).await.expect("starts")
    }

    pub fn bundle_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ca/root.pem")).expect("root")
    }
}

/// One operator API call: status and JSON answer.
pub async fn api(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect api");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("http1");
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "control");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let resp = send
        .send_request(req.body(Full::new(body)).expect("request"))
        .await
        .expect("answer");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

pub async fn op(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    api(addr, method, path, body, Some(TOKEN)).await
}

/// A join token for `service`.
pub async fn token(api_addr: SocketAddr, service: &str) -> String {
    let (status, v) = op(
        api_addr,
        "POST",
        "/v1/tokens",
        Some(json!({ "service": service })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    v["token"].as_str().expect("token").to_owned()
}

/// A join token for `service` and its public id (by which it is revoked).
pub async fn token_and_id(api_addr: SocketAddr, service: &str) -> (String, String) {
    let (status, v) = op(
        api_addr,
        "POST",
        "/v1/tokens",
        Some(json!({ "service": service })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    (
        v["token"].as_str().expect("token").to_owned(),
        v["id"].as_str().expect("id").to_owned(),
    )
}

/// Bootstraps `service` with `token`: the status, answer and the key.
pub async fn bootstrap(
    addr: SocketAddr,
    bundle: &str,
    service: &str,
    token: &str,
) -> (StatusCode, Value, String) {
    let config = client::anonymous_config(bundle, TD).expect("config");
    let mut conn = client::connect(addr, config, TD).await.expect("connect");
    let (csr, key) = client::csr(&format!("spiffe://{TD}/{service}")).expect("csr");
    let (status, v) = client::post_json(
        &mut conn,
        "/v1/bootstrap",
        &json!({ "service": service, "token": token, "csr_pem": csr }),
    )
    .await
    .expect("answer");
    (status, v, key)
}

/// An mTLS client config for `service`, through bootstrap.
pub async fn proxy_config(
    env: &Env,
    running: &mesh_control::Running,
    service: &str,
) -> Arc<rustls::ClientConfig> {
    let t = token(running.api_addr, service).await;
    let (status, v, key) = bootstrap(running.proxies_addr, &env.bundle_pem(), service, &t).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    client::mtls_config(
        v["cert_pem"].as_str().expect("cert"),
        &key,
        v["bundle_pem"].as_str().expect("bundle"),
        TD,
    )
    .expect("mtls config")
}

/// Opens a stream and says hello; the stream.
pub async fn subscribe(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    hello: Value,
) -> client::Stream {
    let mut conn = client::connect(addr, config, TD).await.expect("connect");
    let stream = client::Stream::open(&mut conn).await.expect("stream");
    // The connection's task keeps running after `conn` (the request sender) is dropped.
    stream
        .send_json(mesh_control::frames::HELLO, &hello)
        .await
        .expect("hello");
    stream
}

/// The next table within 10 s, decoded.
pub async fn next_table(stream: &mut client::Stream) -> (mesh_table::Table, String) {
    let bytes = tokio::time::timeout(Duration::from_secs(10), stream.next_table())
        .await
        .expect("a table within 10 s")
        .expect("a table");
    let checksum = mesh_table::checksum_hex(&bytes).expect("checksum");
    (mesh_table::decode(&bytes).expect("decodes"), checksum)
}

/// Polls `f` every 50 ms for up to `secs` seconds.
pub async fn eventually<F, Fut>(secs: u64, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
