//! `control.toml`: the control plane's configuration, with paths relative to the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The longest `cert_ttl`: a certificate outlives the revocation of its join token by up to
/// its lifetime (proxies check the chain, not the control plane), so that window is capped.
pub const MAX_CERT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

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
    /// The operator API's listener.
    pub api_listen: SocketAddr,
    /// The operator API's bearer token.
    pub api_token: String,
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: String,
    token: Option<String>,
    token_file: Option<PathBuf>,
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
        let api_listen = listen("api.listen", &raw.api.listen)?;
        // The token may sit in [api] or at the top level; exactly one source.
        let token = raw.api.token.or(raw.token);
        let token_file = raw.api.token_file.or(raw.token_file);
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
        if api_token.len() < 8 {
            return Err(ConfigError(
                "key `token`: the bearer token must be at least 8 characters".into(),
            ));
        }
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
            api_listen,
            api_token,
            poll: Duration::from_millis(raw.poll_ms.unwrap_or(200)),
            debounce: Duration::from_millis(raw.debounce_ms.unwrap_or(100)),
            addresses_file: raw.addresses_file.as_deref().map(at),
        })
    }
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
token = "secret-token"
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
        let no_token = GOOD.replace("token = \"secret-token\"", "");
        let err = Config::parse(&no_token, Path::new(".")).expect_err("no token");
        assert!(err.0.contains("token"), "{err}");
    }
}
