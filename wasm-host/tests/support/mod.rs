//! Shared pieces of the host tests: WAT module assembly, a mock `HttpCaller`, requests.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_wasm::{
    CallResponse, Direction, Host, HostConfig, HttpCaller, OutgoingCall, Plugin, PluginSpec,
    StreamInfo,
};

/// A proxy-wasm module: `imports` (WAT import fields), the ABI's exports (memory, a bump
/// allocator, the version marker, a no-op `proxy_on_context_create`), and `body`.
pub fn module(imports: &str, body: &str) -> String {
    format!(
        r#"(module
  {imports}
  (memory (export "memory") 4)
  (global $bump (mut i32) (i32.const 65536))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    ;; Wraps around well inside the 4 pages: tests allocate little.
    (if (i32.gt_u (i32.add (global.get $bump) (local.get $n)) (i32.const 250000))
      (then (global.set $bump (i32.const 65536))))
    (local.set $p (global.get $bump))
    (global.set $bump
      (i32.and (i32.add (i32.add (global.get $bump) (local.get $n)) (i32.const 7)) (i32.const -8)))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  {body}
)"#
    )
}

/// What the mock caller answers and what it saw.
#[derive(Default)]
pub struct MockCaller {
    pub status: Mutex<String>,
    /// How long a call takes, in ms (5 when 0).
    pub delay_ms: AtomicU64,
    pub seen: Mutex<Vec<OutgoingCall>>,
}

impl HttpCaller for MockCaller {
    fn call(
        &self,
        call: OutgoingCall,
    ) -> Pin<Box<dyn Future<Output = Result<CallResponse, String>> + Send>> {
        let status = self.status.lock().expect("lock").clone();
        self.seen.lock().expect("lock").push(call);
        let delay = match self.delay_ms.load(Ordering::Relaxed) {
            0 => 5,
            ms => ms,
        };
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            Ok(CallResponse {
                headers: vec![(":status".into(), status.into_bytes())],
                body: bytes::Bytes::from_static(b"ok"),
                trailers: Vec::new(),
            })
        })
    }
}

pub fn host_with(caller: Arc<MockCaller>, max_pause: Duration) -> Arc<Host> {
    Host::new(
        HostConfig {
            slots: 2,
            max_pause,
        },
        caller,
    )
    .expect("host")
}

pub fn host() -> Arc<Host> {
    host_with(Arc::new(MockCaller::default()), Duration::from_secs(5))
}

pub fn spec(name: &str) -> PluginSpec {
    PluginSpec {
        name: name.into(),
        config_json: "{\"k\":1}".into(),
        memory_bytes: 16 << 20,
        time_limit: Duration::from_millis(50),
    }
}

pub fn plugin(host: &Arc<Host>, wat: &str, spec: PluginSpec) -> Arc<Plugin> {
    let module = host.compile(wat.as_bytes()).expect("compiles");
    host.plugin(&module, spec).expect("plugin starts")
}

pub fn info() -> StreamInfo {
    StreamInfo {
        direction: Direction::Inbound,
        service: "payments".into(),
        route: Some("charge".into()),
        upstream_service: Some("payments".into()),
        source: Some("10.0.0.7:1234".parse().expect("addr")),
        destination: Some("10.0.0.1:8080".parse().expect("addr")),
        peer_identity: Some("spiffe://mesh/ns/default/sa/web".into()),
        mtls: true,
    }
}

pub fn request(path: &str) -> http::request::Parts {
    http::Request::builder()
        .method("GET")
        .uri(path)
        .header("host", "payments")
        .header("x-request-id", "req-1")
        .body(())
        .expect("request")
        .into_parts()
        .0
}
