//! The rule table's data types: services, routes, authorization, observability and filters.
//!
//! Cross references are indices into the table's vectors (`ServiceId` into `services`,
//! `FilterId` into `filters`, `FileId` into `files`), so the encoding stays compact and the
//! decoder can check every one of them. Units are fixed: durations in milliseconds,
//! percentages in parts per million, sizes in bytes.

use serde::{Deserialize, Serialize};

/// Index of a service in [`Table::services`].
pub type ServiceId = u32;
/// Index of a filter in [`Table::filters`].
pub type FilterId = u32;
/// Index of a source file name in [`Table::files`].
pub type FileId = u32;

/// A percentage in parts per million: `100%` is `1_000_000`, `0.5%` is `5_000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ppm(pub u32);

impl Ppm {
    /// One hundred percent.
    pub const FULL: Ppm = Ppm(1_000_000);

    /// The fraction in `0.0..=1.0`.
    pub fn fraction(self) -> f64 {
        f64::from(self.0) / 1_000_000.0
    }
}

/// Where a rule was written: the policy file (index into [`Table::files`]), line and column (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceLoc {
    /// Index of the file name in [`Table::files`].
    pub file: FileId,
    /// 1-based line.
    pub line: u32,
    /// 1-based column (in characters).
    pub column: u32,
}

/// A whole compiled policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// The `mesh` declaration.
    pub mesh: MeshInfo,
    /// Policy file names as given to the compiler (relative to the policy directory), for [`SourceLoc`].
    pub files: Vec<String>,
    /// Every service, sorted by name.
    pub services: Vec<Service>,
    /// Every route, grouped by service and sorted by name within it.
    pub routes: Vec<Route>,
    /// At most one authorization policy per service, sorted by service.
    pub authorizations: Vec<Authorization>,
    /// At most one observability block per service, sorted by service.
    pub observes: Vec<Observe>,
    /// Every WASM filter, sorted by name.
    pub filters: Vec<Filter>,
}

/// The `mesh "name" { trust_domain "..." }` declaration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshInfo {
    /// The mesh's name.
    pub name: String,
    /// The SPIFFE trust domain: service `s` is `spiffe://<trust_domain>/s`.
    pub trust_domain: String,
    /// Where the declaration was written.
    pub loc: SourceLoc,
}

/// A service and how to reach and balance it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// The service name (a DNS label).
    pub name: String,
    /// The application's port behind its sidecar.
    pub port: u16,
    /// The application protocol.
    pub protocol: Protocol,
    /// Where the service's sidecars are.
    pub endpoints: Endpoints,
    /// How requests are spread over endpoints.
    pub balance: Balance,
    /// Active health checking.
    pub health: Option<HealthCheck>,
    /// Passive outlier ejection.
    pub outlier: Option<Outlier>,
    /// Whether plaintext callers are admitted.
    pub mtls: MtlsMode,
    /// Filters run by the service's own (inbound) sidecar, in order.
    pub filters: Vec<FilterId>,
    /// Circuit breaking: what each caller's sidecar lets through to this service at once.
    pub limits: Limits,
    /// Where the service was declared.
    pub loc: SourceLoc,
}

/// Circuit-breaking limits of a service (`limits { max_requests N  max_pending N }`),
/// enforced by each caller's outbound sidecar for its own requests to the service, as
/// Envoy's `max_requests`/`max_pending_requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Limits {
    /// Requests in flight at once (sent, response not yet ended).
    pub max_requests: u32,
    /// Requests waiting for an in-flight slot; beyond it, `503 overloaded` at once.
    pub max_pending: u32,
}

impl Limits {
    /// Envoy's defaults: 1024 and 1024.
    pub const DEFAULT: Limits = Limits {
        max_requests: 1024,
        max_pending: 1024,
    };
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::DEFAULT
    }
}

/// The application protocol of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 (cleartext to the application).
    Http2,
    /// gRPC over HTTP/2.
    Grpc,
}

/// Where a service's endpoints come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoints {
    /// A fixed list of `host:port` sidecar inbound addresses.
    Static(Vec<String>),
    /// Periodic DNS resolution of `host`, reached on `port`.
    Dns {
        /// The name to resolve.
        host: String,
        /// The port of every resolved address.
        port: u16,
    },
    /// Endpoints come from the control plane's registry at run time.
    Registry,
}

/// The load-balancing algorithm of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Each endpoint in turn (the default).
    RoundRobin,
    /// Power of two choices on outstanding requests.
    LeastRequest,
    /// Peak-EWMA of latency.
    Ewma,
    /// Uniformly random.
    Random,
    /// Consistent hashing on a request header (lower-case name).
    RingHash {
        /// The header whose value is hashed.
        header: String,
    },
}

/// Active HTTP health checking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// The path probed.
    pub path: String,
    /// Time between probes, in ms.
    pub interval_ms: u64,
    /// Probe timeout, in ms.
    pub timeout_ms: u64,
    /// Consecutive failures before an endpoint turns unhealthy.
    pub unhealthy_after: u32,
    /// Consecutive successes before it turns healthy again.
    pub healthy_after: u32,
}

/// Passive outlier ejection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outlier {
    /// Consecutive 5xx responses that eject an endpoint.
    pub consecutive_5xx: u32,
    /// Base ejection time, in ms (grows with repeated ejections).
    pub eject_for_ms: u64,
    /// At most this share of the endpoint set is ejected at once.
    pub max_ejected: Ppm,
}

/// Whether a service admits plaintext callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MtlsMode {
    /// mTLS callers only (the default).
    Strict,
    /// Plaintext callers too; they are the principal `anyone`.
    Permissive,
}

/// An HTTP method; the nine standard ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
    /// CONNECT
    Connect,
    /// OPTIONS
    Options,
    /// TRACE
    Trace,
    /// PATCH
    Patch,
}

impl Method {
    /// All nine methods.
    pub const ALL: [Method; 9] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Delete,
        Method::Connect,
        Method::Options,
        Method::Trace,
        Method::Patch,
    ];

    /// The method's name as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Connect => "CONNECT",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Patch => "PATCH",
        }
    }

    /// Parses an upper-case method name.
    pub fn parse(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// Whether RFC 9110 calls the method idempotent (safe to replay after it was sent).
    pub fn is_idempotent(self) -> bool {
        !matches!(self, Method::Post | Method::Patch | Method::Connect)
    }
}

/// How a request path is matched (after normalization).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    /// The whole path equals this.
    Exact(String),
    /// Whole-segment prefix, as in the Gateway API.
    Prefix(String),
    /// An RE2-syntax regex that must match the whole path.
    Regex(String),
}

/// How one header is matched; names are lower case, values compare exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HeaderMatch {
    /// Lower-case header name.
    pub name: String,
    /// What the value must be.
    pub value: HeaderValueMatch,
}

/// The value part of a [`HeaderMatch`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderValueMatch {
    /// Equal to this.
    Exact(String),
    /// Starts with this.
    Prefix(String),
    /// Matches this regex as a whole.
    Regex(String),
    /// The header is present, whatever its value.
    Present,
}

/// What a request must look like for a route or rule to apply; clauses are ANDed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct RequestMatch {
    /// The path condition, if any.
    pub path: Option<PathMatch>,
    /// Allowed methods; empty means any.
    pub methods: Vec<Method>,
    /// Header conditions, all of which must hold.
    pub headers: Vec<HeaderMatch>,
}

/// A route: requests to `service` matching `matcher` go to `targets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// The route's name.
    pub name: String,
    /// The service (authority) the route applies to.
    pub service: ServiceId,
    /// What requests it takes.
    pub matcher: RequestMatch,
    /// Where they go; weights sum to [`Ppm::FULL`].
    pub targets: Vec<WeightedTarget>,
    /// Bound on the whole request, retries included, in ms.
    pub timeout_ms: Option<u64>,
    /// Longest time without a body byte in either direction once the response head is
    /// in, in ms (`idle_timeout`; none: the proxy's default, 5 minutes).
    pub idle_timeout_ms: Option<u64>,
    /// Bound on the whole stream, head and both bodies, in ms (`stream_timeout`; none: no
    /// bound beyond the idle timeout).
    pub stream_timeout_ms: Option<u64>,
    /// Retry policy.
    pub retry: Option<RetryPolicy>,
    /// Edits to the request headers.
    pub request_headers: Vec<HeaderEdit>,
    /// Edits to the response headers.
    pub response_headers: Vec<HeaderEdit>,
    /// Filters run by the caller's (outbound) sidecar, in order.
    pub filters: Vec<FilterId>,
    /// Where the route was declared.
    pub loc: SourceLoc,
}

/// A target service and its share of a route's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightedTarget {
    /// The target service.
    pub service: ServiceId,
    /// Its share.
    pub weight: Ppm,
}

/// A route's retry policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// Timeout of each try, in ms.
    pub per_try_timeout_ms: Option<u64>,
    /// The conditions that allow a retry.
    pub on: Vec<RetryOn>,
    /// Backoff lower bound, in ms (exponential with full jitter).
    pub backoff_base_ms: u64,
    /// Backoff upper bound, in ms.
    pub backoff_max_ms: u64,
    /// Retries may add at most this share to the request rate.
    pub budget: Ppm,
    /// Whether non-idempotent requests (POST, PATCH) may be retried after they were sent
    /// (`retry { non_idempotent true }`); before that, only connection-level failures retry.
    pub non_idempotent: bool,
}

/// A condition under which a try may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// The connection could not be made: the request never left.
    ConnectFailure,
    /// HTTP/2 REFUSED_STREAM: the server did not process it.
    RefusedStream,
    /// The connection or stream was reset mid-request.
    Reset,
    /// A response status (a code or a class).
    Status(StatusMatch),
    /// A gRPC status code (`unavailable` is 14).
    Grpc(u8),
}

/// A status code or class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusMatch {
    /// One code, 100–599.
    Code(u16),
    /// A class: 1 to 5 for `1xx` to `5xx`.
    Class(u8),
}

impl StatusMatch {
    /// Whether `status` falls under this match.
    pub fn matches(self, status: u16) -> bool {
        match self {
            StatusMatch::Code(code) => code == status,
            StatusMatch::Class(class) => status / 100 == u16::from(class),
        }
    }
}

/// One header edit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderEdit {
    /// Replace the header's value (lower-case name).
    Set(String, String),
    /// Add a value, keeping existing ones.
    Add(String, String),
    /// Remove the header.
    Remove(String),
}

/// The `authorize` block of one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Authorization {
    /// The service whose inbound sidecar enforces it.
    pub service: ServiceId,
    /// The rules; every deny is tried before any allow.
    pub rules: Vec<AuthzRule>,
    /// The decision when no rule matches.
    pub default: Action,
    /// Where the `default` clause was written (the block, when it was not).
    pub default_loc: SourceLoc,
    /// Where the block was declared.
    pub loc: SourceLoc,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Admit the request.
    Allow,
    /// Refuse it with 403.
    Deny,
}

/// One `allow`/`deny` rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthzRule {
    /// Allow or deny.
    pub action: Action,
    /// Who the rule is about; any of them matches.
    pub from: Vec<Principal>,
    /// The request conditions (`to ...` and `when ...` together).
    pub to: RequestMatch,
    /// Where the rule was written.
    pub loc: SourceLoc,
}

/// Who a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Principal {
    /// A mesh service's identity.
    Service(ServiceId),
    /// Any authenticated mesh identity.
    Any,
    /// Anyone, plaintext callers included.
    Anyone,
}

/// The `observe` block of one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observe {
    /// The service observed.
    pub service: ServiceId,
    /// Access logging, if on.
    pub access_log: Option<AccessLog>,
    /// Trace sampling rate for traces this proxy starts.
    pub trace_sample: Option<Ppm>,
    /// Latency histogram bucket bounds in ms, ascending; empty means the default.
    pub latency_buckets_ms: Vec<u64>,
    /// Where the block was declared.
    pub loc: SourceLoc,
}

/// Access-log settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessLog {
    /// The line format.
    pub format: AccessLogFormat,
    /// Share of requests logged.
    pub sample: Ppm,
}

/// Access-log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
}

/// A WASM filter module and its limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    /// The filter's name.
    pub name: String,
    /// The module file name as written in the policy.
    pub module: String,
    /// SHA-256 of the module's bytes, pinned at compile time.
    pub sha256: [u8; 32],
    /// The `config` object as canonical JSON.
    pub config_json: String,
    /// What happens when the filter traps or times out.
    pub failure: FailureMode,
    /// Linear-memory cap of each instance, in bytes.
    pub memory_bytes: u64,
    /// CPU budget of one callback, in ms.
    pub time_limit_ms: u64,
    /// Where the filter was declared.
    pub loc: SourceLoc,
}

/// A filter's behaviour on failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Skip the filter.
    Open,
    /// Answer 503.
    Closed,
}

impl Table {
    /// Looks a service up by name (services are sorted by name).
    pub fn service_id(&self, name: &str) -> Option<ServiceId> {
        self.services
            .binary_search_by(|s| s.name.as_str().cmp(name))
            .ok()
            .and_then(|i| u32::try_from(i).ok())
    }

    /// The file name and line of a source location, for messages.
    pub fn describe(&self, loc: SourceLoc) -> String {
        let file = self
            .files
            .get(loc.file as usize)
            .map_or("<unknown>", String::as_str);
        format!("{file}:{}:{}", loc.line, loc.column)
    }
}
