//! `control.toml`: the control plane's configuration, with paths relative to the file.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The longest `cert_ttl`: a certificate outlives the revocation of its join token by up to
/// its lifetime (proxies check the chain, not the control plane), so that window is capped.
pub const MAX_CERT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The shortest operator token accepted (`openssl rand -hex 16` gives 32 characters).
pub const MIN_API_TOKEN_LEN: usize = 32;

/// A secret from the configuration; `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How the operator API is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiTls {
    /// Plain HTTP (loopback, or `api.allow_plaintext = true`).
    Off,
    /// TLS with a certificate the control plane issues itself from the mesh CA, for these
    /// DNS names and addresses (`api.tls = true`, `api.tls_names`).
    Ca {
        /// DNS names.
        dns: Vec<String>,
        /// IP addresses.
        ips: Vec<IpAddr>,
    },
    /// TLS with the operator's certificate chain and key (`api.cert`, `api.key`, PEM).
    Files {
        /// The certificate chain.
        cert: PathBuf,
        /// The private key.
        key: PathBuf,
    },
}

/// The operator API listener's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// A connection must complete its TLS handshake and each request's headers within this.
    pub header_timeout: Duration,
    /// A connection with no request in flight and no bytes moving is closed after this.
    pub idle_timeout: Duration,
    /// Open connections, in total.
    pub max_connections: usize,
    /// Open connections per peer address.
    pub max_connections_per_peer: usize,
    /// Failed authentications per peer address in a minute before it is answered 429.
    pub auth_failures_per_minute: u32,
}

impl Default for ApiLimits {
    fn default() -> ApiLimits {
        ApiLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 256,
            max_connections_per_peer: 32,
            auth_failures_per_minute: 10,
        }
    }
}

/// A configuration that cannot be used; the message names the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory of `.mesh` files (one namespace), watched.
    pub policies: PathBuf,
    /// Extra directories searched for filter modules, after the policy directory.
    pub module_paths: Vec<PathBuf>,
    /// The mesh CA directory (`meshc ca init`).
    pub ca: PathBuf,
    /// Lifetime of the certificates issued to proxies.
    pub cert_ttl: Duration,
    /// How long a disconnected proxy stays in the registry.
    pub registry_grace: Duration,
    /// How long after a start returning proxies keep their own tables (see `warming_up`):
    /// by default the registry's grace plus the proxies' longest reconnect backoff, so that
    /// every proxy connected before a restart is back before slices go out.
    pub warm_up: Duration,
    /// Where join tokens and the last good table are kept.
    pub state: PathBuf,
    /// The proxies' listener (mTLS HTTP/2).
    pub proxies_listen: SocketAddr,
    /// The proxies' listener's deadlines and caps (`[proxies]`).
    pub proxies: ProxiesLimits,
    /// The operator API's listener.
    pub api_listen: SocketAddr,
    /// The operator API's bearer token.
    pub api_token: Secret,
    /// Whether and how the operator API speaks TLS.
    pub api_tls: ApiTls,
    /// The operator API listener's limits.
    pub api_limits: ApiLimits,
    /// How often the policy directory is polled.
    pub poll: Duration,
    /// How long the directory must stay unchanged before a compile.
    pub debounce: Duration,
    /// Written once both listeners are bound: their actual addresses as TOML (`proxies`,
    /// `api`), so a listener configured on port 0 can be found.
    pub addresses_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    policies: PathBuf,
    ca: PathBuf,
    #[serde(default)]
    module_paths: Vec<PathBuf>,
    cert_ttl: Option<String>,
    registry_grace_ms: Option<u64>,
    warm_up_ms: Option<u64>,
    state: Option<PathBuf>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    poll_ms: Option<u64>,
    debounce_ms: Option<u64>,
    addresses_file: Option<PathBuf>,
    proxies: RawProxies,
    api: RawApi,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxies {
    listen: String,
    handshake_timeout_ms: Option<u64>,
    first_request_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    max_streams_per_connection: Option<u32>,
    max_streams_per_identity: Option<usize>,
    max_header_list_size: Option<u32>,
    keep_alive_interval_ms: Option<u64>,
    keep_alive_timeout_ms: Option<u64>,
}

/// The proxies' listener's deadlines and caps (docs/control.md, Threat model: the proxies
/// listener). Every value is above zero.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxiesLimits {
    /// From accept to the end of the TLS handshake.
    pub handshake_timeout: Duration,
    /// From the end of the handshake to the first request's complete headers (the HTTP/2
    /// preface, SETTINGS and a HEADERS block).
    pub first_request_timeout: Duration,
    /// A connection with no request in progress is closed after this long.
    pub idle_timeout: Duration,
    /// Connections open at once, all peers together (beyond: closed at accept).
    pub max_connections: usize,
    /// Connections open at once from one peer IP address (beyond: closed at accept).
    pub max_connections_per_ip: usize,
    /// HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS of each connection.
    pub max_streams_per_connection: u32,
    /// Requests in progress at once per client certificate (its serial), over all of its
    /// connections (beyond: 429).
    pub max_streams_per_identity: usize,
    /// HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE.
    pub max_header_list_size: u32,
    /// HTTP/2 PING interval on every connection.
    pub keep_alive_interval: Duration,
    /// A connection whose PING is not answered within this is closed.
    pub keep_alive_timeout: Duration,
}

impl Default for ProxiesLimits {
    fn default() -> ProxiesLimits {
        ProxiesLimits {
            handshake_timeout: Duration::from_secs(5),
            first_request_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            max_connections: 20_000,
            max_connections_per_ip: 2_048,
            max_streams_per_connection: 16,
            max_streams_per_identity: 32,
            max_header_list_size: 16 * 1024,
            keep_alive_interval: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(20),
        }
    }
}

impl RawProxies {
    fn limits(&self) -> Result<ProxiesLimits, ConfigError> {
        fn positive<T: Copy + PartialEq + Default>(
            key: &str,
            value: Option<T>,
            default: T,
        ) -> Result<T, ConfigError> {
            match value {
                Some(v) if v == T::default() => {
                    Err(ConfigError(format!("key `proxies.{key}`: must be above 0")))
                }
                Some(v) => Ok(v),
                None => Ok(default),
            }
        }
        let ms = |key: &str, value: Option<u64>, default: Duration| {
            positive(key, value, 0).map(|v| {
                if v == 0 {
                    default
                } else {
                    Duration::from_millis(v)
                }
            })
        };
        let d = ProxiesLimits::default();
        Ok(ProxiesLimits {
            handshake_timeout: ms(
                "handshake_timeout_ms",
                self.handshake_timeout_ms,
                d.handshake_timeout,
            )?,
            first_request_timeout: ms(
                "first_request_timeout_ms",
                self.first_request_timeout_ms,
                d.first_request_timeout,
            )?,
            idle_timeout: ms("idle_timeout_ms", self.idle_timeout_ms, d.idle_timeout)?,
            max_connections: positive("max_connections", self.max_connections, d.max_connections)?,
            max_connections_per_ip: positive(
                "max_connections_per_ip",
                self.max_connections_per_ip,
                d.max_connections_per_ip,
            )?,
            max_streams_per_connection: positive(
                "max_streams_per_connection",
                self.max_streams_per_connection,
                d.max_streams_per_connection,
            )?,
            max_streams_per_identity: positive(
                "max_streams_per_identity",
                self.max_streams_per_identity,
                d.max_streams_per_identity,
            )?,
            max_header_list_size: positive(
                "max_header_list_size",
                self.max_header_list_size,
                d.max_header_list_size,
            )?,
            keep_alive_interval: ms(
                "keep_alive_interval_ms",
                self.keep_alive_interval_ms,
                d.keep_alive_interval,
            )?,
            keep_alive_timeout: ms(
                "keep_alive_timeout_ms",
                self.keep_alive_timeout_ms,
                d.keep_alive_timeout,
            )?,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: String,
    token: Option<String>,
    token_file: Option<PathBuf>,
    tls: Option<bool>,
    tls_names: Option<Vec<String>>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    #[serde(default)]
    allow_plaintext: bool,
    header_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_peer: Option<usize>,
    auth_failures_per_minute: Option<u32>,
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read `{}`: {e}", path.display())))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Config::parse(&text, base)
            .map_err(|e| ConfigError(format!("`{}`: {}", path.display(), e.0)))
    }

    /// Parses a configuration whose relative paths are relative to `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: Raw = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        let at = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let cert_ttl = match &raw.cert_ttl {
            None => Duration::from_secs(24 * 3600),
            Some(ttl) => mesh_identity::parse_ttl(ttl)
                .map_err(|e| ConfigError(format!("key `cert_ttl`: {e}")))?,
        };
        if cert_ttl > MAX_CERT_TTL {
            return Err(ConfigError(format!(
                "key `cert_ttl`: {} is longer than the 30 days allowed (a revoked identity keeps working with other proxies until its certificate expires)",
                raw.cert_ttl.as_deref().unwrap_or_default()
            )));
        }
        let listen = |key: &str, value: &str| {
            value
                .parse::<SocketAddr>()
                .map_err(|e| ConfigError(format!("key `{key}`: `{value}` is not an address: {e}")))
        };
        let proxies_listen = listen("proxies.listen", &raw.proxies.listen)?;
        let proxies = raw.proxies.limits()?;
        let api_listen = listen("api.listen", &raw.api.listen)?;
        let api_tls = api_tls(&raw.api, api_listen, &at)?;
        let defaults = ApiLimits::default();
        let api_limits = ApiLimits {
            header_timeout: raw
                .api
                .header_timeout_ms
                .map_or(defaults.header_timeout, Duration::from_millis),
            idle_timeout: raw
                .api
                .idle_timeout_ms
                .map_or(defaults.idle_timeout, Duration::from_millis),
            max_connections: raw.api.max_connections.unwrap_or(defaults.max_connections),
            max_connections_per_peer: raw
                .api
                .max_connections_per_peer
                .unwrap_or(defaults.max_connections_per_peer),
            auth_failures_per_minute: raw
                .api
                .auth_failures_per_minute
                .unwrap_or(defaults.auth_failures_per_minute),
        };
        for (key, zero) in [
            ("api.header_timeout_ms", api_limits.header_timeout.is_zero()),
            ("api.idle_timeout_ms", api_limits.idle_timeout.is_zero()),
            ("api.max_connections", api_limits.max_connections == 0),
            (
                "api.max_connections_per_peer",
                api_limits.max_connections_per_peer == 0,
            ),
            (
                "api.auth_failures_per_minute",
                api_limits.auth_failures_per_minute == 0,
            ),
        ] {
            if zero {
                return Err(ConfigError(format!("key `{key}`: must be more than 0")));
            }
        }
        // The token may sit in [api] or at the top level; exactly one source.
        let token_key = if raw.api.token.is_some() || raw.api.token_file.is_some() {
            "api."
        } else {
            ""
        };
        let token = raw.api.token.or(raw.token);
        let token_file = raw.api.token_file.or(raw.token_file);
        let token_key = if token_file.is_some() {
            format!("{token_key}token_file")
        } else {
            format!("{token_key}token")
        };
        let api_token = match (token, token_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError(
                    "keys `token` and `token_file`: give one, not both".into(),
                ))
            }
            (Some(t), None) => t,
            (None, Some(file)) => {
                let file = at(&file);
                std::fs::read_to_string(&file)
                    .map_err(|e| {
                        ConfigError(format!(
                            "key `token_file`: cannot read `{}`: {e}",
                            file.display()
                        ))
                    })?
                    .trim()
                    .to_owned()
            }
            (None, None) => {
                return Err(ConfigError(
                    "key `token` (or `token_file`): the operator API needs a bearer token".into(),
                ))
            }
        };
        if api_token.chars().count() < MIN_API_TOKEN_LEN {
            return Err(ConfigError(format!(
                "key `{token_key}`: the operator token must be at least {MIN_API_TOKEN_LEN} characters (it has {}); make one with `openssl rand -hex 16`",
                api_token.chars().count()
            )));
        }
        let api_token = Secret(api_token);
        let registry_grace = Duration::from_millis(raw.registry_grace_ms.unwrap_or(10_000));
        Ok(Config {
            policies: at(&raw.policies),
            module_paths: raw.module_paths.iter().map(|p| at(p)).collect(),
            ca: at(&raw.ca),
            cert_ttl,
            registry_grace,
            warm_up: raw.warm_up_ms.map_or(
                registry_grace + mesh_table::frames::MAX_RECONNECT_BACKOFF,
                Duration::from_millis,
            ),
            state: raw.state.as_deref().map_or_else(|| base.join("state"), at),
            proxies_listen,
            proxies,
            api_listen,
            api_token,
            api_tls,
            api_limits,
            poll: Duration::from_millis(raw.poll_ms.unwrap_or(200)),
            debounce: Duration::from_millis(raw.debounce_ms.unwrap_or(100)),
            addresses_file: raw.addresses_file.as_deref().map(at),
        })
    }
}

/// `[api]`'s TLS keys; plain HTTP beyond loopback only with `api.allow_plaintext = true`.
fn api_tls(
    raw: &RawApi,
    listen: SocketAddr,
    at: &dyn Fn(&Path) -> PathBuf,
) -> Result<ApiTls, ConfigError> {
    let tls = match (&raw.cert, &raw.key) {
        (Some(cert), Some(key)) => {
            if raw.tls == Some(false) {
                return Err(ConfigError(
                    "keys `api.cert`/`api.key` and `api.tls = false`: a certificate is given but TLS is off".into(),
                ));
            }
            if raw.tls_names.is_some() {
                return Err(ConfigError(
                    "key `api.tls_names`: names a certificate the control plane issues; with `api.cert` the certificate is yours".into(),
                ));
            }
            ApiTls::Files {
                cert: at(cert),
                key: at(key),
            }
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(ConfigError(
                "keys `api.cert` and `api.key`: give both (PEM files), or neither".into(),
            ))
        }
        (None, None) if raw.tls == Some(true) => {
            let names = match &raw.tls_names {
                Some(names) if !names.is_empty() => names.clone(),
                _ if listen.ip().is_unspecified() => {
                    return Err(ConfigError(format!(
                        "key `api.tls_names`: the API listens on {listen}, so say which DNS names or addresses clients dial (the certificate names them)"
                    )))
                }
                _ if listen.ip().is_loopback() => {
                    vec![listen.ip().to_string(), "localhost".to_owned()]
                }
                _ => vec![listen.ip().to_string()],
            };
            let (mut dns, mut ips) = (Vec::new(), Vec::new());
            for name in names {
                if let Ok(ip) = name.parse::<IpAddr>() {
                    ips.push(ip);
                } else {
                    dns.push(
                        mesh_identity::ca::dns_name(&name).map_err(|e| {
                            ConfigError(format!("key `api.tls_names`: `{name}`: {e}"))
                        })?,
                    );
                }
            }
            ApiTls::Ca { dns, ips }
        }
        (None, None) => {
            if raw.tls_names.is_some() {
                return Err(ConfigError(
                    "key `api.tls_names`: only with `api.tls = true`".into(),
                ));
            }
            ApiTls::Off
        }
    };
    if tls == ApiTls::Off && !listen.ip().is_loopback() && !raw.allow_plaintext {
        return Err(ConfigError(format!(
            "key `api.listen`: {listen} is beyond loopback and the operator API would be plaintext (its bearer token readable on the network); set `api.tls = true` (a certificate from the mesh CA) or `api.cert`/`api.key`, or `api.allow_plaintext = true` if something else protects it"
        )));
    }
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
policies = "policies"
ca = "/etc/mesh/ca"
[proxies]
listen = "127.0.0.1:15010"
[api]
listen = "127.0.0.1:15011"
token = "secret-token-secret-token-secret-token"
"#;

    #[test]
    fn defaults_and_relative_paths() {
        let c = Config::parse(GOOD, Path::new("/srv/control")).expect("valid");
        assert_eq!(c.policies, Path::new("/srv/control/policies"));
        assert_eq!(c.ca, Path::new("/etc/mesh/ca"));
        assert_eq!(c.state, Path::new("/srv/control/state"));
        assert_eq!(c.cert_ttl, Duration::from_secs(86_400));
        assert_eq!(c.registry_grace, Duration::from_secs(10));
        assert_eq!(
            c.warm_up,
            Duration::from_secs(20),
            "the grace plus the proxies' longest reconnect backoff"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let bad_ttl = GOOD.replace("ca = ", "cert_ttl = \"soon\"\nca = ");
        let err = Config::parse(&bad_ttl, Path::new(".")).expect_err("bad ttl");
        assert!(err.0.contains("cert_ttl"), "{err}");
        let long_ttl = GOOD.replace("ca = ", "cert_ttl = \"31d\"\nca = ");
        let err = Config::parse(&long_ttl, Path::new(".")).expect_err("too long");
        assert!(
            err.0.contains("cert_ttl") && err.0.contains("30 days"),
            "{err}"
        );
        let month = GOOD.replace("ca = ", "cert_ttl = \"30d\"\nca = ");
        assert_eq!(
            Config::parse(&month, Path::new("."))
                .expect("30 days is allowed")
                .cert_ttl,
            MAX_CERT_TTL
        );
        let bad_listen = GOOD.replace("127.0.0.1:15010", "nowhere");
        let err = Config::parse(&bad_listen, Path::new(".")).expect_err("bad listen");
        assert!(err.0.contains("proxies.listen"), "{err}");
        let unknown = GOOD.replace("ca = ", "colour = 1\nca = ");
        let err = Config::parse(&unknown, Path::new(".")).expect_err("unknown key");
        assert!(err.0.contains("colour"), "{err}");
        let no_token = GOOD.replace("token = \"secret-token-secret-token-secret-token\"", "");
        let err = Config::parse(&no_token, Path::new(".")).expect_err("no token");
        assert!(err.0.contains("token"), "{err}");
        let short = GOOD.replace(
            "secret-token-secret-token-secret-token",
            "short-secret-token",
        );
        let err = Config::parse(&short, Path::new(".")).expect_err("short token");
        assert!(
            err.0.contains("`api.token`") && err.0.contains("32"),
            "{err}"
        );
    }

    #[test]
    fn the_api_beyond_loopback_needs_tls_or_a_say_so() {
        let wide = GOOD.replace("127.0.0.1:15011", "0.0.0.0:15011");
        let err = Config::parse(&wide, Path::new(".")).expect_err("plaintext");
        assert!(err.0.contains("api.allow_plaintext"), "{err}");
        let allowed = wide.replace("[api]\n", "[api]\nallow_plaintext = true\n");
        assert_eq!(
            Config::parse(&allowed, Path::new("."))
                .expect("meant")
                .api_tls,
            ApiTls::Off
        );
        let tls = wide.replace("[api]\n", "[api]\ntls = true\n");
        let err = Config::parse(&tls, Path::new(".")).expect_err("names");
        assert!(err.0.contains("api.tls_names"), "{err}");
        let named = wide.replace(
            "[api]\n",
            "[api]\ntls = true\ntls_names = [\"cp.example\", \"10.0.0.5\"]\n",
        );
        assert_eq!(
            Config::parse(&named, Path::new(".")).expect("tls").api_tls,
            ApiTls::Ca {
                dns: vec!["cp.example".into()],
                ips: vec!["10.0.0.5".parse().expect("ip")]
            }
        );
        let half = GOOD.replace("[api]\n", "[api]\ncert = \"c.pem\"\n");
        let err = Config::parse(&half, Path::new(".")).expect_err("half");
        assert!(err.0.contains("api.key"), "{err}");
        let c = Config::parse(GOOD, Path::new(".")).expect("valid");
        assert!(
            !format!("{c:?}").contains("secret-token"),
            "Debug hides the token"
        );
    }
}
