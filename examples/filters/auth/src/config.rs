//! The auth filter's config and the checks it makes of a credential.

use std::collections::BTreeMap;

/// The config.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The credential header.
    #[serde(default = "default_header")]
    pub header: String,
    /// The scheme before the token; empty: the whole value is the token.
    #[serde(default = "default_scheme")]
    pub scheme: String,
    /// The realm named in the 401's challenge.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Remove the credential before forwarding.
    #[serde(default = "default_strip")]
    pub strip: bool,
    /// Each token and the methods it may use (`*`: any).
    pub tokens: BTreeMap<String, Vec<String>>,
}

fn default_header() -> String {
    "authorization".into()
}

fn default_scheme() -> String {
    "Bearer".into()
}

fn default_realm() -> String {
    "mesh".into()
}

fn default_strip() -> bool {
    true
}

/// The config, ready to check requests.
#[derive(Debug)]
pub(crate) struct Policy {
    pub(crate) header: String,
    scheme: String,
    pub(crate) challenge: String,
    pub(crate) strip: bool,
    tokens: Vec<(Vec<u8>, Vec<String>)>,
}

impl Policy {
    pub(crate) fn new(config: Config) -> Result<Policy, String> {
        if config.tokens.is_empty() {
            return Err("tokens must name at least one token".into());
        }
        if config.tokens.values().any(Vec::is_empty) {
            return Err("every token needs at least one method".into());
        }
        let method =
            |m: &String| m == "*" || (!m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()));
        if let Some(bad) = config.tokens.values().flatten().find(|m| !method(m)) {
            return Err(format!(
                "{bad:?} is not a method (upper-case, or \"*\" for any)"
            ));
        }
        let challenge = if config.scheme.is_empty() {
            format!("Token realm=\"{}\"", config.realm)
        } else {
            format!("{} realm=\"{}\"", config.scheme, config.realm)
        };
        Ok(Policy {
            header: config.header.to_ascii_lowercase(),
            scheme: config.scheme,
            challenge,
            strip: config.strip,
            tokens: config
                .tokens
                .into_iter()
                .map(|(token, methods)| (token.into_bytes(), methods))
                .collect(),
        })
    }

    /// Whether `credential` (the header's value) is a known token allowed `method`.
    pub(crate) fn allows(&self, credential: &str, method: &str) -> bool {
        let Some(token) = self.token(credential) else {
            return false;
        };
        // Compare with every token, in time that does not depend on where they differ.
        let mut found: Option<&[String]> = None;
        for (known, methods) in &self.tokens {
            if constant_time_eq(known, token.as_bytes()) {
                found = Some(methods);
            }
        }
        found.is_some_and(|methods| methods.iter().any(|m| m == "*" || m == method))
    }

    /// The token in `credential`: after the scheme (case-insensitive) and one space.
    fn token<'a>(&self, credential: &'a str) -> Option<&'a str> {
        let credential = credential.trim();
        if self.scheme.is_empty() {
            return Some(credential);
        }
        let (scheme, token) = credential.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case(&self.scheme)
            .then_some(token.trim_start())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
