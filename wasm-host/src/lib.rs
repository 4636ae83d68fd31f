//! `mesh-wasm`: runs WASM filters written against the proxy-wasm ABI 0.2.1 in wasmtime,
//! each instance sandboxed (linear-memory cap, CPU time limit per callback).
//!
//! The seam with the proxy: the proxy makes one [`Host`], compiles modules with
//! [`Host::compile`] (cached by SHA-256), makes a [`Plugin`] per policy filter with
//! [`Host::plugin`], and per request starts a [`Stream`] per filter and calls its phases.
//! A failure ([`Failure`]) discards the instance it happened in; the proxy applies the
//! filter's `failure` mode. `http_call`s go out through the proxy's [`HttpCaller`].
//!
//! Inside: one pooled wasmtime engine with epoch interruption (a ticker thread advances
//! the epoch every millisecond; each guest call gets the filter's `time_limit` in ticks) and
//! a store limiter for the memory cap. Each plugin has one slot per worker thread, a mutex
//! around a warm instance whose root context is already configured; a request's context
//! lives in the slot it started in. The request head is moved into the store for each
//! synchronous guest call and moved back after it, so guest code never sees a dangling
//! borrow and the lock is never held across an `.await`.

mod abi;
mod budget;
mod cache;
mod engine;
mod header_cache;
mod hooks;
mod host;
mod instance;
mod interned;
mod mailbox;
mod plugin;
mod state;
mod strain;
mod stream;
mod tables;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use http;

/// A header list as the ABI sees it: lower-case names (pseudo-headers included), raw values.
pub type Pairs = Vec<(String, Vec<u8>)>;

/// Settings of the host; one host per proxy.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Warm instances kept per filter: one per worker thread of the proxy.
    pub slots: usize,
    /// Longest a filter may keep a request paused (waiting on `http_call` or
    /// `continue_stream`) before it counts as a failure.
    pub max_pause: Duration,
}

/// What the host needs from the proxy: sending a filter's `http_call` to a mesh service.
pub trait HttpCaller: Send + Sync + 'static {
    /// Sends `call`; an `Err` is a failed call (the filter sees a response with no headers).
    fn call(
        &self,
        call: OutgoingCall,
    ) -> Pin<Box<dyn Future<Output = Result<CallResponse, String>> + Send>>;
}

/// A filter's `proxy_http_call`.
#[derive(Debug, Clone)]
pub struct OutgoingCall {
    /// The filter making the call.
    pub filter: Arc<str>,
    /// The `upstream` argument: a mesh service name.
    pub upstream: String,
    /// Headers, pseudo-headers (`:method`, `:path`, `:authority`) included.
    pub headers: Pairs,
    /// The body.
    pub body: Bytes,
    /// Trailers.
    pub trailers: Pairs,
    /// The call's timeout.
    pub timeout: Duration,
}

/// The answer to an [`OutgoingCall`].
#[derive(Debug, Clone, Default)]
pub struct CallResponse {
    /// Headers, `:status` included.
    pub headers: Pairs,
    /// The body.
    pub body: Bytes,
    /// Trailers.
    pub trailers: Pairs,
}

/// A policy filter's settings.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// The filter's name (the plugin's root id and the `filter` label of its metrics).
    pub name: String,
    /// The policy's `config` object, as JSON (the plugin configuration buffer).
    pub config_json: String,
    /// Linear-memory cap of each instance, in bytes.
    pub memory_bytes: u64,
    /// CPU budget of one callback.
    pub time_limit: Duration,
}

/// Which side of the sidecar a stream runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A caller's request to this sidecar's service (service filters).
    Inbound,
    /// This sidecar's application calling another service (route filters).
    Outbound,
}

/// What a filter may read of a request through properties.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// Inbound or outbound.
    pub direction: Direction,
    /// The service this sidecar fronts.
    pub service: Arc<str>,
    /// The route, on outbound streams that matched one.
    pub route: Option<Arc<str>>,
    /// The service the request goes to (the target, or this service inbound).
    pub upstream_service: Option<Arc<str>>,
    /// The downstream peer's address.
    pub source: Option<SocketAddr>,
    /// The address the request arrived on.
    pub destination: Option<SocketAddr>,
    /// The caller's SPIFFE ID, when the transport proved one.
    pub peer_identity: Option<Arc<str>>,
    /// Whether the downstream connection is mTLS.
    pub mtls: bool,
}

/// A compiled module, shared by every plugin made from it.
#[derive(Clone)]
pub struct Module {
    inner: Arc<wasmtime::Module>,
    sha256: [u8; 32],
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("sha256", &self.sha256)
            .finish()
    }
}

impl Module {
    /// SHA-256 of the module's bytes.
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }
}

/// Why a module or plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not WebAssembly, or wasmtime refused it.
    #[error("the module does not compile: {0}")]
    Compile(String),
    /// It imports what the host does not provide, or lacks the ABI's exports.
    #[error("the module is not a proxy-wasm 0.2.x filter: {0}")]
    Abi(String),
    /// `_initialize`/`_start`, `proxy_on_vm_start` or `proxy_on_configure` trapped or refused.
    #[error("the filter did not start: {0}")]
    Start(String),
    /// The host could not be created (engine settings, pooling allocator).
    #[error("the WASM host could not start: {0}")]
    Host(String),
}

/// Why a filter failed on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The instance trapped (`unreachable`, out-of-bounds access, a panic in the guest).
    Trap,
    /// A callback ran past the filter's `time_limit`.
    Timeout,
    /// The instance reached its `memory` cap.
    Memory,
    /// No instance could be made for the request.
    Unavailable,
    /// The filter kept the request paused past the host's `max_pause`.
    Paused,
}

impl FailureReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Trap => "trap",
            FailureReason::Timeout => "timeout",
            FailureReason::Memory => "memory",
            FailureReason::Unavailable => "unavailable",
            FailureReason::Paused => "paused",
        }
    }
}

/// A filter failed on a request; its instance was discarded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("filter {filter} failed ({}): {message}", reason.as_str())]
pub struct Failure {
    /// The filter.
    pub filter: Arc<str>,
    /// Why.
    pub reason: FailureReason,
    /// The trap message or what ran out.
    pub message: String,
}

/// A filter's answer in place of the upstream's (`proxy_send_local_response`).
#[derive(Debug, Clone)]
pub struct LocalResponse {
    /// The status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Pairs,
    /// The body.
    pub body: Bytes,
    /// The filter's `status_code_details`.
    pub details: String,
}

/// What a phase came to.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Go on to the next filter / the upstream / the client.
    Continue,
    /// Body phases only: keep the bytes so far and call again with more (the filter paused).
    Buffer,
    /// Answer with this instead (the request is not forwarded; on a response phase, the
    /// upstream's response is replaced where it has not started to reach the client).
    Respond(LocalResponse),
    /// The filter closed the stream (`proxy_close_stream`): reset it.
    Reset,
}

/// A filter metric (`proxy_define_metric`), for `/metrics`.
#[derive(Debug, Clone)]
pub struct FilterMetric {
    /// The filter that defined it.
    pub filter: Arc<str>,
    /// The name it gave.
    pub name: String,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// Counter/gauge value; for a histogram, the number of records.
    pub value: i64,
    /// Histogram only: the sum of the recorded values.
    pub sum: u64,
}

/// The ABI's metric types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Set, or moved either way.
    Gauge,
    /// Recorded values.
    Histogram,
}

pub use host::Host;
pub use plugin::Plugin;
pub use stream::{Step, Stream};
