//! The proxy's TOML configuration, checked up front: a wrong key or value names the key and
//! the problem, and the process exits 2 before binding anything.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The whole `proxy.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The mesh service this sidecar fronts.
    pub service: String,
    /// The compiled rule table, watched; or else `control`.
    #[serde(default)]
    pub table: Option<PathBuf>,
    /// The control plane's proxy listener, `host:port`: tables come from it instead of a
    /// file (exactly one of `table` and `control`).
    #[serde(default)]
    pub control: Option<String>,
    /// The config file's directory (set by [`Config::load`]): where relative paths and the
    /// default state directory are.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// How often the table file is checked for changes, in milliseconds.
    #[serde(default = "default_table_poll_ms")]
    pub table_poll_ms: u64,
    /// Runtime worker threads; 0 (the default) means one per core.
    #[serde(default)]
    pub workers: usize,
    /// How long SIGTERM waits for requests in flight, in milliseconds.
    #[serde(default = "default_drain_ms")]
    pub drain_ms: u64,
    /// Log format: `human` (default) or `json`; the level comes from `RUST_LOG` or `log_level`.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Log level filter, such as `info` or `mesh_proxy=debug`.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Where other proxies reach this service.
    pub inbound: Inbound,
    /// Where the local application sends its calls.
    pub outbound: Outbound,
    /// The admin listener.
    #[serde(default)]
    pub admin: Admin,
    /// Connections to upstreams (other sidecars, the application).
    #[serde(default)]
    pub upstream: Upstream,
    /// How endpoints are discovered.
    #[serde(default)]
    pub discovery: Discovery,
    /// This sidecar's mesh identity: the mTLS credentials. Required (see [`Identity`]).
    pub identity: Option<Identity>,
    /// Where access-log lines go (which requests are logged: the table's `observe` blocks).
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// Where spans go (which requests are traced: the table's `observe` blocks and the
    /// incoming `traceparent`).
    #[serde(default)]
    pub tracing: TracingConfig,
    /// Where WASM filter modules are found, and the host's limits.
    #[serde(default)]
    pub filters: FiltersConfig,
    /// Limits on request heads, on every listener.
    #[serde(default)]
    pub limits: Limits,
    /// Written once every listener is bound: their actual addresses as TOML (`inbound`,
    /// `outbound`, `admin`), so a listener configured on port 0 can be found. Relative to
    /// the config file's directory.
    #[serde(default)]
    pub addresses_file: Option<PathBuf>,
}

/// `[filters]`: the table names each filter's module by file name and pins its SHA-256;
/// the proxy looks the file up in these directories and loads it only if the digest matches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FiltersConfig {
    /// Directories searched for modules, in order; the table file's directory when empty.
    #[serde(default)]
    pub modules: Vec<PathBuf>,
    /// How often module files are checked for a new version (ms); `table_poll_ms` if unset.
    pub poll_ms: Option<u64>,
    /// Longest a filter may hold a request paused on `http_call` (ms).
    #[serde(default = "default_filter_max_pause_ms")]
    pub max_pause_ms: u64,
}

/// `[limits]`: what a request head may be, on the inbound and outbound listeners alike
/// (defaults in the spirit of Envoy's).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// The request line and headers together, in bytes; beyond it 431.
    #[serde(default = "default_max_request_header_bytes")]
    pub max_request_header_bytes: usize,
    /// Header lines in one request; beyond it 431.
    #[serde(default = "default_max_request_headers")]
    pub max_request_headers: usize,
    /// The request target, in bytes; beyond it 414.
    #[serde(default = "default_max_uri_bytes")]
    pub max_uri_bytes: usize,
    /// The whole request head must arrive within this (ms), else the connection is closed.
    #[serde(default = "default_request_head_timeout_ms")]
    pub request_head_timeout_ms: u64,
    /// Open connections per listener (inbound, outbound); one more is accepted and closed
    /// at once, and counted (`mesh_connections_refused_total`).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    #[serde(default = "default_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_request_header_bytes: default_max_request_header_bytes(),
            max_request_headers: default_max_request_headers(),
            max_uri_bytes: default_max_uri_bytes(),
            request_head_timeout_ms: default_request_head_timeout_ms(),
            max_connections: default_max_connections(),
            max_concurrent_streams: default_max_concurrent_streams(),
        }
    }
}

impl Limits {
    /// The smallest `max_request_header_bytes`: hyper's smallest read buffer.
    pub const MIN_HEADER_BYTES: usize = 8192;

    /// The limits as the listeners apply them.
    pub fn head_limits(&self) -> crate::framing::HeadLimits {
        crate::framing::HeadLimits {
            header_bytes: self.max_request_header_bytes,
            headers: self.max_request_headers,
            uri_bytes: self.max_uri_bytes,
            head_timeout: Duration::from_millis(self.request_head_timeout_ms),
            connections: self.max_connections,
            streams: self.max_concurrent_streams,
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.max_request_header_bytes < Limits::MIN_HEADER_BYTES {
            return Err(format!(
                "key `limits.max_request_header_bytes`: must be at least {}",
                Limits::MIN_HEADER_BYTES
            ));
        }
        for (key, value) in [
            (
                "limits.max_request_headers",
                self.max_request_headers as u64,
            ),
            ("limits.max_uri_bytes", self.max_uri_bytes as u64),
            (
                "limits.request_head_timeout_ms",
                self.request_head_timeout_ms,
            ),
            ("limits.max_connections", self.max_connections as u64),
            (
                "limits.max_concurrent_streams",
                u64::from(self.max_concurrent_streams),
            ),
        ] {
            if value == 0 {
                return Err(format!("key `{key}`: must be above 0"));
            }
        }
        if self.max_uri_bytes > self.max_request_header_bytes {
            return Err(format!(
                "key `limits.max_uri_bytes`: must be at most `max_request_header_bytes` ({})",
                self.max_request_header_bytes
            ));
        }
        Ok(())
    }
}

fn default_max_request_header_bytes() -> usize {
    60 * 1024
}
fn default_max_request_headers() -> usize {
    100
}
fn default_max_uri_bytes() -> usize {
    16 * 1024
}
fn default_request_head_timeout_ms() -> u64 {
    10_000
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_concurrent_streams() -> u32 {
    1024
}

/// `[tracing]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The OTLP/HTTP traces endpoint of a collector (`http://127.0.0.1:4318/v1/traces`);
    /// without it no span is exported (`traceparent` is still propagated).
    pub otlp_endpoint: Option<String>,
}

impl TracingConfig {
    /// The endpoint, parsed (`check` made sure it is an `http://` URI).
    pub fn endpoint(&self) -> Option<http::Uri> {
        self.otlp_endpoint.as_deref()?.parse().ok()
    }
}

/// `[access_log]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// A file the lines are appended to; default stdout. Relative to the working directory.
    pub path: Option<PathBuf>,
}

/// `[identity]`: the workload's certificate, key and trust bundle (PEM files written by
/// `meshc ca issue`), relative to the config file's directory or absolute. Between sidecars
/// it is mTLS only; a config without them does not start, unless it opts out for
/// development with `insecure_plaintext = true`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// The certificate chain, leaf first (`cert.pem`).
    pub cert: Option<PathBuf>,
    /// Its private key (`key.pem`).
    pub key: Option<PathBuf>,
    /// The trust bundle: the mesh's root(s) (`bundle.pem`). With `token_file`, the roots
    /// the control plane's certificate must chain to.
    pub bundle: Option<PathBuf>,
    /// A join token (`meshc token create SERVICE`), instead of `cert` and `key`: the proxy
    /// gets its certificate from the control plane and renews it itself.
    pub token_file: Option<PathBuf>,
    /// With `token_file`: where the bootstrapped certificate, key and bundle are kept
    /// (default `<service>.state` beside the config file).
    pub dir: Option<PathBuf>,
    /// How often the three files are checked for changes, in milliseconds (SIGHUP also
    /// reloads them).
    #[serde(default = "default_identity_poll_ms")]
    pub poll_ms: u64,
    /// Development only: no mTLS at all. Outbound connections to other sidecars are h2c,
    /// and every caller of the inbound listener is a plaintext caller (the principal
    /// `anyone` only), whatever the service's `mtls` mode says.
    #[serde(default)]
    pub insecure_plaintext: bool,
}

/// `[inbound]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inbound {
    /// Listen address.
    pub listen: SocketAddr,
    /// The local application; default `127.0.0.1:<the service's port from the table>`.
    pub app: Option<SocketAddr>,
    /// A connection from another sidecar with no request for this long is closed, in
    /// milliseconds (above the callers' pool idle time, so they close first).
    #[serde(default = "default_server_idle_ms")]
    pub idle_timeout_ms: u64,
}

/// `[outbound]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outbound {
    /// Listen address.
    pub listen: SocketAddr,
    /// Timeout for connecting to an endpoint, in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Timeout of a request whose route sets none, in milliseconds (Envoy's default: 15 s).
    #[serde(default = "default_request_timeout_ms")]
    pub default_timeout_ms: u64,
    /// A connection from the application with no request for this long is closed, in
    /// milliseconds.
    #[serde(default = "default_server_idle_ms")]
    pub idle_timeout_ms: u64,
    /// A destination service no request went to for this long has its state dropped (its
    /// endpoints, health checks, DNS lookups) until the next request, in milliseconds.
    #[serde(default = "default_destination_idle_ms")]
    pub destination_idle_ms: u64,
}

/// `[upstream]`: the connections this proxy opens, in both directions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// A pooled connection with no request for this long is closed, in milliseconds.
    #[serde(default = "default_pool_idle_ms")]
    pub idle_timeout_ms: u64,
}

impl Default for Upstream {
    fn default() -> Upstream {
        Upstream {
            idle_timeout_ms: default_pool_idle_ms(),
        }
    }
}

/// `[discovery]`: DNS resolution of `discovery dns` services (and static names).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discovery {
    /// The nameserver, `ip:port`; default `$MESH_DNS_SERVER`, else the system's
    /// (`/etc/resolv.conf`).
    pub dns_server: Option<SocketAddr>,
    /// Names are resolved again at most this often, in milliseconds, whatever the TTL.
    #[serde(default = "default_dns_min_refresh_ms")]
    pub dns_min_refresh_ms: u64,
    /// Names are resolved again at least this often, in milliseconds, whatever the TTL.
    #[serde(default = "default_dns_max_refresh_ms")]
    pub dns_max_refresh_ms: u64,
}

impl Default for Discovery {
    fn default() -> Discovery {
        Discovery {
            dns_server: None,
            dns_min_refresh_ms: default_dns_min_refresh_ms(),
            dns_max_refresh_ms: default_dns_max_refresh_ms(),
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Listen address; loopback by default.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// Whether requests are counted in the request families of `/metrics` (requests,
    /// latency, bytes, retries, timeouts, connect errors); `false` only to measure what
    /// they cost.
    #[serde(default = "default_true")]
    pub request_metrics: bool,
}

impl Default for Admin {
    fn default() -> Admin {
        Admin {
            listen: default_admin_listen(),
            request_metrics: true,
        }
    }
}

/// How the proxy's own logs are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

fn default_table_poll_ms() -> u64 {
    250
}
impl Default for FiltersConfig {
    fn default() -> FiltersConfig {
        FiltersConfig {
            modules: Vec::new(),
            poll_ms: None,
            max_pause_ms: default_filter_max_pause_ms(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_filter_max_pause_ms() -> u64 {
    10_000
}
fn default_drain_ms() -> u64 {
    10_000
}
fn default_log_level() -> String {
    "info".into()
}
fn default_connect_timeout_ms() -> u64 {
    1_000
}
fn default_request_timeout_ms() -> u64 {
    15_000
}
fn default_server_idle_ms() -> u64 {
    60_000
}
fn default_destination_idle_ms() -> u64 {
    300_000
}
fn default_pool_idle_ms() -> u64 {
    30_000
}
fn default_dns_min_refresh_ms() -> u64 {
    1_000
}
fn default_dns_max_refresh_ms() -> u64 {
    30_000
}
fn default_identity_poll_ms() -> u64 {
    1_000
}
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 15000))
}

/// A configuration that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or a key is wrong.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What and where (line, column, key).
        message: String,
    },
}

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        if let Some(dir) = path.parent() {
            config.base_dir = dir.to_path_buf();
            config.resolve_identity_paths(dir);
            if let Some(file) = config.addresses_file.as_mut().filter(|f| f.is_relative()) {
                *file = dir.join(&*file);
            }
        }
        Ok(config)
    }

    /// Makes the `[identity]` paths relative to `dir` (the config file's directory) absolute.
    pub fn resolve_identity_paths(&mut self, dir: &Path) {
        if let Some(identity) = &mut self.identity {
            for path in [
                &mut identity.cert,
                &mut identity.key,
                &mut identity.bundle,
                &mut identity.token_file,
                &mut identity.dir,
            ]
            .into_iter()
            .flatten()
            {
                if path.is_relative() {
                    *path = dir.join(&*path);
                }
            }
        }
    }

    /// The credential files, or `None` when the config opted out of mTLS
    /// (`insecure_plaintext`). `check` made sure it is one or the other.
    pub fn identity_paths(&self) -> Option<mesh_identity::IdentityPaths> {
        let identity = self.identity.as_ref()?;
        if identity.token_file.is_some() {
            return Some(mesh_identity::IdentityPaths::in_dir(&self.state_dir()));
        }
        Some(mesh_identity::IdentityPaths {
            cert: identity.cert.clone()?,
            key: identity.key.clone()?,
            bundle: identity.bundle.clone()?,
        })
    }

    /// Where the proxy keeps what the control plane gave it (bootstrapped credentials,
    /// fetched filter modules): `[identity] dir`, else `<service>.state` beside the config.
    pub fn state_dir(&self) -> PathBuf {
        self.identity
            .as_ref()
            .and_then(|i| i.dir.clone())
            .unwrap_or_else(|| self.base_dir.join(format!("{}.state", self.service)))
    }

    /// Where filter modules are looked for when `[filters] modules` is empty: the table
    /// file's directory, or with a control plane the state directory's `modules`.
    pub fn default_module_dir(&self) -> PathBuf {
        match &self.table {
            Some(table) => table
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            None => self.state_dir().join("modules"),
        }
    }

    /// Parses and checks a configuration's text; the error says what and where.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| describe_toml_error(text, &e))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        let label = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.starts_with(|c: char| c.is_ascii_lowercase())
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        if !label(&self.service) {
            return Err(format!(
                "key `service`: `{}` is not a service name ([a-z][a-z0-9-]*, at most 63 characters)",
                self.service
            ));
        }
        if let Some(endpoint) = &self.tracing.otlp_endpoint {
            let ok = endpoint.parse::<http::Uri>().is_ok_and(|u| {
                u.scheme() == Some(&http::uri::Scheme::HTTP) && u.authority().is_some()
            });
            if !ok {
                return Err(format!(
                    "key `tracing.otlp_endpoint`: `{endpoint}` is not an http:// URL (such as http://127.0.0.1:4318/v1/traces)"
                ));
            }
        }
        match (&self.table, &self.control) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(
                    "keys `table` and `control`: exactly one is required: `table = \"FILE\"` \
                     (a compiled rule table) or `control = \"HOST:PORT\"` (the control plane)"
                        .into(),
                )
            }
            (None, Some(control)) if !is_host_port(control) => {
                return Err(format!(
                    "key `control`: `{control}` is not a host:port (such as 127.0.0.1:7070)"
                ))
            }
            _ => {}
        }
        if self.table_poll_ms == 0 {
            return Err("key `table_poll_ms`: must be above 0".into());
        }
        if self.outbound.connect_timeout_ms == 0 {
            return Err("key `outbound.connect_timeout_ms`: must be above 0".into());
        }
        for (key, value) in [
            ("inbound.idle_timeout_ms", self.inbound.idle_timeout_ms),
            ("outbound.idle_timeout_ms", self.outbound.idle_timeout_ms),
            (
                "outbound.destination_idle_ms",
                self.outbound.destination_idle_ms,
            ),
            ("upstream.idle_timeout_ms", self.upstream.idle_timeout_ms),
            (
                "discovery.dns_min_refresh_ms",
                self.discovery.dns_min_refresh_ms,
            ),
        ] {
            if value == 0 {
                return Err(format!("key `{key}`: must be above 0"));
            }
        }
        if self.discovery.dns_max_refresh_ms < self.discovery.dns_min_refresh_ms {
            return Err(format!(
                "key `discovery.dns_max_refresh_ms`: must be at least `dns_min_refresh_ms` ({})",
                self.discovery.dns_min_refresh_ms
            ));
        }
        // Port 0 asks the system for a free port, so two such listeners never collide.
        if self.inbound.listen == self.outbound.listen && self.inbound.listen.port() != 0 {
            return Err("keys `inbound.listen` and `outbound.listen`: must differ".into());
        }
        self.limits.check()?;
        self.check_identity()
    }

    /// Security by default: the three credential files, or an explicit opt-out.
    fn check_identity(&self) -> Result<(), String> {
        const HOW: &str = "mTLS between sidecars needs `[identity]` with `cert`, `key` and \
            `bundle` (the files `meshc ca issue SERVICE --ca DIR --out DIR` writes); for \
            development only, `[identity] insecure_plaintext = true` disables mTLS";
        let Some(identity) = &self.identity else {
            return Err(format!("no `[identity]`: {HOW}"));
        };
        if identity.token_file.is_some() {
            return self.check_token_identity(identity);
        }
        if identity.dir.is_some() {
            return Err("key `identity.dir`: only with `identity.token_file`".into());
        }
        let given = [
            ("cert", identity.cert.is_some()),
            ("key", identity.key.is_some()),
            ("bundle", identity.bundle.is_some()),
        ];
        if identity.insecure_plaintext {
            if let Some((key, _)) = given.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "key `identity.{key}`: `insecure_plaintext = true` disables mTLS; \
                     remove one or the other"
                ));
            }
            if self.control.is_some() {
                return Err(
                    "key `identity.insecure_plaintext`: the control plane is reached \
                     over mTLS; give `cert`, `key` and `bundle`, or `token_file` and `bundle`"
                        .into(),
                );
            }
            return Ok(());
        }
        if let Some((key, _)) = given.iter().find(|(_, set)| !*set) {
            return Err(format!("key `identity.{key}` is missing: {HOW}"));
        }
        if identity.poll_ms == 0 {
            return Err("key `identity.poll_ms`: must be above 0".into());
        }
        Ok(())
    }

    /// A join token instead of certificate files: needs the control plane and the bundle
    /// that authenticates it, and excludes the files it replaces.
    fn check_token_identity(&self, identity: &Identity) -> Result<(), String> {
        for (key, set) in [
            ("cert", identity.cert.is_some()),
            ("key", identity.key.is_some()),
            ("insecure_plaintext", identity.insecure_plaintext),
        ] {
            if set {
                return Err(format!(
                    "key `identity.{key}`: `identity.token_file` gets the certificate from the \
                     control plane; remove one or the other"
                ));
            }
        }
        if self.control.is_none() {
            return Err(
                "key `identity.token_file`: a join token needs `control = \"HOST:PORT\"`".into(),
            );
        }
        if identity.bundle.is_none() {
            return Err(
                "key `identity.bundle` is missing: with `identity.token_file`, the \
                 bundle authenticates the control plane"
                    .into(),
            );
        }
        if identity.poll_ms == 0 {
            return Err("key `identity.poll_ms`: must be above 0".into());
        }
        Ok(())
    }

    /// The drain time.
    pub fn drain(&self) -> Duration {
        Duration::from_millis(self.drain_ms)
    }
}

/// `host:port` with a non-empty host and a port number.
fn is_host_port(text: &str) -> bool {
    text.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// toml's message plus the line and column of the problem, and the key when the problem
/// is a value (toml's own message for a bad value does not name its key).
fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end().to_string();
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            match value_key(text, span.start) {
                Some(key) => format!("line {line}, column {column}: key `{key}`: {message}"),
                None => format!("line {line}, column {column}: {message}"),
            }
        }
        None => message,
    }
}

/// The dotted key (`outbound.listen`) whose value starts at `offset`: the key before `=`
/// on that line under the nearest `[table]` header above. `None` when `offset` is not in a
/// value (unknown and missing keys, whose messages name them already).
fn value_key(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(line_start..)?.lines().next()?;
    let equals = line.find('=')?;
    if line_start + equals >= offset {
        return None;
    }
    let key = line[..equals].trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') || key.starts_with('#') {
        return None;
    }
    let table = text[..line_start].lines().rev().find_map(|l| {
        let l = l.trim();
        l.strip_prefix('[')?
            .strip_suffix(']')
            .map(|t| t.trim().to_string())
    });
    Some(match table {
        Some(table) => format!("{table}.{key}"),
        None => key.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::Config;

    const GOOD: &str = r#"
service = "payments"
table = "build/shop.table"
[inbound]
listen = "127.0.0.1:15206"
app = "127.0.0.1:9000"
[outbound]
listen = "127.0.0.1:15001"
[admin]
listen = "127.0.0.1:15000"
[identity]
cert = "certs/payments/cert.pem"
key = "certs/payments/key.pem"
bundle = "/etc/mesh/bundle.pem"
"#;

    #[test]
    fn the_documented_example_parses_with_defaults() {
        let c = Config::parse(GOOD).expect("valid");
        assert_eq!(c.service, "payments");
        assert_eq!(c.outbound.connect_timeout_ms, 1000);
        assert_eq!(c.drain_ms, 10_000);
        assert_eq!(c.inbound.app.map(|a| a.port()), Some(9000));
    }

    #[test]
    fn resilience_keys_have_defaults_and_are_checked() {
        let c = Config::parse(GOOD).expect("valid");
        assert_eq!(c.inbound.idle_timeout_ms, 60_000);
        assert_eq!(c.outbound.idle_timeout_ms, 60_000);
        assert_eq!(c.outbound.destination_idle_ms, 300_000);
        assert_eq!(c.upstream.idle_timeout_ms, 30_000);
        assert_eq!(c.discovery.dns_server, None);
        assert_eq!(
            (
                c.discovery.dns_min_refresh_ms,
                c.discovery.dns_max_refresh_ms
            ),
            (1_000, 30_000)
        );
        let dns = format!(
            "{GOOD}[discovery]\ndns_server = \"127.0.0.1:5353\"\ndns_min_refresh_ms = 200\n"
        );
        let c = Config::parse(&dns).expect("valid");
        assert_eq!(c.discovery.dns_server.map(|a| a.port()), Some(5353));
        let inverted =
            format!("{GOOD}[discovery]\ndns_min_refresh_ms = 5000\ndns_max_refresh_ms = 100\n");
        let e = Config::parse(&inverted).expect_err("max below min");
        assert!(e.contains("dns_max_refresh_ms"), "{e}");
        let zero = format!("{GOOD}[upstream]\nidle_timeout_ms = 0\n");
        let e = Config::parse(&zero).expect_err("zero idle");
        assert!(e.contains("upstream.idle_timeout_ms"), "{e}");
    }

    #[test]
    fn limits_have_defaults_and_are_checked() {
        let c = Config::parse(GOOD).expect("valid");
        assert_eq!(c.limits.max_request_header_bytes, 60 * 1024);
        assert_eq!(c.limits.max_request_headers, 100);
        assert_eq!(c.limits.max_uri_bytes, 16 * 1024);
        assert_eq!(c.limits.request_head_timeout_ms, 10_000);
        assert_eq!(c.limits.max_connections, 10_000);
        assert_eq!(c.limits.max_concurrent_streams, 1024);
        let set =
            format!("{GOOD}[limits]\nmax_request_headers = 20\nrequest_head_timeout_ms = 500\n");
        let c = Config::parse(&set).expect("valid");
        assert_eq!(c.limits.head_limits().headers, 20);
        for (toml, key) in [
            (
                "max_request_header_bytes = 100",
                "limits.max_request_header_bytes",
            ),
            ("max_request_headers = 0", "limits.max_request_headers"),
            ("max_connections = 0", "limits.max_connections"),
            (
                "max_concurrent_streams = 0",
                "limits.max_concurrent_streams",
            ),
            ("max_uri_bytes = 0", "limits.max_uri_bytes"),
            ("max_uri_bytes = 100000", "limits.max_uri_bytes"),
            (
                "request_head_timeout_ms = 0",
                "limits.request_head_timeout_ms",
            ),
            (
                "request_head_timeout_ms = \"soon\"",
                "limits.request_head_timeout_ms",
            ),
            ("max_headers = 5", "max_headers"),
        ] {
            let e = Config::parse(&format!("{GOOD}[limits]\n{toml}\n")).expect_err(toml);
            assert!(e.contains(key), "{toml}: {e}");
        }
    }

    #[test]
    fn errors_name_the_key_and_the_place() {
        let unknown = GOOD.replace("app =", "aplication =");
        let e = Config::parse(&unknown).expect_err("unknown key");
        assert!(e.contains("aplication") && e.contains("line 6"), "{e}");
        let bad_addr = GOOD.replace("127.0.0.1:15001", "nowhere");
        let e = Config::parse(&bad_addr).expect_err("bad address");
        assert!(
            e.contains("line 8") && e.contains("key `outbound.listen`") && e.contains("address"),
            "{e}"
        );
        let bad_number = GOOD.replace(
            "service = \"payments\"",
            "service = \"payments\"\ndrain_ms = \"soon\"",
        );
        let e = Config::parse(&bad_number).expect_err("bad number");
        assert!(e.contains("key `drain_ms`"), "{e}");
        let missing = GOOD.replace("table = \"build/shop.table\"\n", "");
        let e = Config::parse(&missing).expect_err("missing table");
        assert!(e.contains("table"), "{e}");
        let bad_name = GOOD.replace("service = \"payments\"", "service = \"Payments\"");
        let e = Config::parse(&bad_name).expect_err("bad name");
        assert!(e.contains("key `service`"), "{e}");
    }

    #[test]
    fn identity_is_required_unless_explicitly_opted_out() {
        let c = Config::parse(GOOD).expect("valid");
        assert!(c.identity_paths().is_some());
        let (head, _) = GOOD.split_once("[identity]").expect("identity section");
        let e = Config::parse(head).expect_err("no identity");
        assert!(
            e.contains("[identity]") && e.contains("insecure_plaintext"),
            "{e}"
        );
        let partial = format!("{head}[identity]\ncert = \"c.pem\"\nkey = \"k.pem\"\n");
        let e = Config::parse(&partial).expect_err("no bundle");
        assert!(e.contains("identity.bundle"), "{e}");
        let insecure = format!("{head}[identity]\ninsecure_plaintext = true\n");
        let c = Config::parse(&insecure).expect("opted out");
        assert!(c.identity_paths().is_none());
        let both = format!("{head}[identity]\ninsecure_plaintext = true\ncert = \"c.pem\"\n");
        let e = Config::parse(&both).expect_err("contradiction");
        assert!(e.contains("identity.cert"), "{e}");
    }

    #[test]
    fn exactly_one_of_table_and_control() {
        let control = GOOD.replace(
            "table = \"build/shop.table\"",
            "control = \"127.0.0.1:7070\"",
        );
        let c = Config::parse(&control).expect("control instead of table");
        assert_eq!(c.control.as_deref(), Some("127.0.0.1:7070"));
        assert!(c.table.is_none());
        let both = GOOD.replace(
            "table = \"build/shop.table\"",
            "table = \"t\"\ncontrol = \"127.0.0.1:7070\"",
        );
        let e = Config::parse(&both).expect_err("both");
        assert!(e.contains("exactly one") && e.contains("control"), "{e}");
        let bad = control.replace("127.0.0.1:7070", "localhost");
        let e = Config::parse(&bad).expect_err("no port");
        assert!(
            e.contains("key `control`") && e.contains("host:port"),
            "{e}"
        );
    }

    #[test]
    fn a_join_token_replaces_cert_and_key() {
        let (head, _) = GOOD.split_once("[identity]").expect("identity section");
        let head = head.replace("table = \"build/shop.table\"", "control = \"cp:7070\"");
        let token = format!("{head}[identity]\ntoken_file = \"token\"\nbundle = \"b.pem\"\n");
        let mut c = Config::parse(&token).expect("token");
        c.base_dir = "/srv/proxy".into();
        c.resolve_identity_paths(std::path::Path::new("/srv/proxy"));
        let paths = c.identity_paths().expect("paths");
        assert_eq!(
            paths.cert,
            std::path::Path::new("/srv/proxy/payments.state/cert.pem")
        );
        assert_eq!(
            c.default_module_dir(),
            std::path::Path::new("/srv/proxy/payments.state/modules")
        );
        let dir = format!("{token}dir = \"/var/lib/mesh\"\n");
        let c = Config::parse(&dir).expect("dir");
        assert_eq!(c.state_dir(), std::path::Path::new("/var/lib/mesh"));
        let with_cert = format!("{token}cert = \"c.pem\"\n");
        let e = Config::parse(&with_cert).expect_err("token and cert");
        assert!(e.contains("identity.cert"), "{e}");
        let no_bundle = format!("{head}[identity]\ntoken_file = \"token\"\n");
        let e = Config::parse(&no_bundle).expect_err("no bundle");
        assert!(e.contains("identity.bundle"), "{e}");
        let file_table = format!("{GOOD}token_file = \"token\"\n").replace(
            "cert = \"certs/payments/cert.pem\"\nkey = \"certs/payments/key.pem\"\n",
            "",
        );
        let e = Config::parse(&file_table).expect_err("token without control");
        assert!(e.contains("needs `control"), "{e}");
        let dir_alone = format!("{GOOD}dir = \"state\"\n");
        let e = Config::parse(&dir_alone).expect_err("dir without token");
        assert!(e.contains("identity.dir"), "{e}");
    }

    #[test]
    fn identity_paths_are_relative_to_the_config_file() {
        let mut c = Config::parse(GOOD).expect("valid");
        c.resolve_identity_paths(std::path::Path::new("/srv/proxy"));
        let paths = c.identity_paths().expect("paths");
        assert_eq!(
            paths.cert,
            std::path::Path::new("/srv/proxy/certs/payments/cert.pem")
        );
        assert_eq!(paths.bundle, std::path::Path::new("/etc/mesh/bundle.pem"));
    }
}
