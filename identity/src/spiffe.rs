//! SPIFFE IDs (`spiffe://trust.domain/path`) and trust domains, validated as the SPIFFE spec says.
//!
//! The mesh names a workload `spiffe://<trust domain>/<service>`; the rules below are those of
//! the SPIFFE ID standard (lowercase trust domain of `[a-z0-9._-]`, path segments of
//! `[A-Za-z0-9._-]`, no `.`/`..` segments, no empty segments, no query, fragment, port or
//! user info), so an ID that passes here is accepted by any SPIFFE implementation.

use std::fmt;
use std::str::FromStr;

use crate::error::IdentityError;

/// The URI scheme of every SPIFFE ID, with its `//`.
const SCHEME: &str = "spiffe://";
/// The SPIFFE spec's limit on a trust domain name, in bytes.
const MAX_TRUST_DOMAIN: usize = 255;
/// The SPIFFE spec's limit on a whole SPIFFE ID, in bytes.
const MAX_ID: usize = 2048;

/// A trust domain name, such as `shop.example`: the authority part of a SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Validates a trust domain name (`shop.example`; not a URI).
    pub fn new(name: &str) -> Result<TrustDomain, IdentityError> {
        let bad = |problem: &'static str| IdentityError::TrustDomain {
            input: name.to_owned(),
            problem,
        };
        if name.is_empty() {
            return Err(bad("it is empty"));
        }
        if name.len() > MAX_TRUST_DOMAIN {
            return Err(bad("it is longer than 255 bytes"));
        }
        if name.contains(':') {
            return Err(bad("a trust domain has no port"));
        }
        if name.contains('@') {
            return Err(bad("a trust domain has no user info"));
        }
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad("use lowercase letters"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        {
            return Err(bad("only a-z, 0-9, `.`, `-` and `_` are allowed"));
        }
        Ok(TrustDomain(name.to_owned()))
    }

    /// Parses the trust domain's own SPIFFE ID, `spiffe://shop.example` (no path), as a CA
    /// certificate carries it.
    pub fn from_id(uri: &str) -> Result<TrustDomain, IdentityError> {
        let rest = uri
            .strip_prefix(SCHEME)
            .ok_or_else(|| IdentityError::SpiffeId {
                input: uri.to_owned(),
                problem: "it does not start with `spiffe://`",
            })?;
        TrustDomain::new(rest)
    }

    /// The name, `shop.example`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain's own SPIFFE ID, `spiffe://shop.example`.
    pub fn id_uri(&self) -> String {
        format!("{SCHEME}{}", self.0)
    }

    /// The SPIFFE ID of a service in this trust domain: `spiffe://shop.example/payments`.
    pub fn service(&self, service: &str) -> Result<SpiffeId, IdentityError> {
        SpiffeId::parse(&format!("{SCHEME}{}/{service}", self.0))
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<TrustDomain, IdentityError> {
        TrustDomain::new(s)
    }
}

/// A workload's SPIFFE ID: `spiffe://<trust domain>/<path>`, with a non-empty path.
///
/// Compared, hashed and printed in its one canonical form (the SPIFFE spec allows no other
/// spelling: no uppercase trust domain, no percent-encoding, no trailing slash).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    /// Starts with `/`, never ends with one.
    path: String,
}

impl SpiffeId {
    /// Parses and validates `spiffe://trust.domain/path`.
    pub fn parse(input: &str) -> Result<SpiffeId, IdentityError> {
        let bad = |problem: &'static str| IdentityError::SpiffeId {
            input: input.to_owned(),
            problem,
        };
        if input.len() > MAX_ID {
            return Err(bad("it is longer than 2048 bytes"));
        }
        let rest = input
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("it does not start with `spiffe://`"))?;
        if rest.contains(['?', '#']) {
            return Err(bad("a SPIFFE ID has no query or fragment"));
        }
        let (domain, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        let trust_domain = TrustDomain::new(domain).map_err(|err| match err {
            IdentityError::TrustDomain { problem, .. } => bad(problem),
            other => other,
        })?;
        if path.is_empty() {
            return Err(bad("a workload's SPIFFE ID needs a path (`/service`)"));
        }
        for segment in path[1..].split('/') {
            if segment.is_empty() {
                return Err(bad("the path has an empty segment or a trailing `/`"));
            }
            if segment == "." || segment == ".." {
                return Err(bad("the path has a `.` or `..` segment"));
            }
            if !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(bad(
                    "path segments allow only letters, digits, `.`, `-` and `_`",
                ));
            }
        }
        Ok(SpiffeId {
            trust_domain,
            path: path.to_owned(),
        })
    }

    /// The trust domain, `shop.example`.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path, `/payments` (always starts with `/`).
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}{}", self.trust_domain, self.path)
    }
}

impl FromStr for SpiffeId {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<SpiffeId, IdentityError> {
        SpiffeId::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_identity_round_trips() {
        let id = SpiffeId::parse("spiffe://shop.example/payments").expect("valid");
        assert_eq!(id.trust_domain().as_str(), "shop.example");
        assert_eq!(id.path(), "/payments");
        assert_eq!(id.to_string(), "spiffe://shop.example/payments");
        let td = TrustDomain::new("shop.example").expect("valid");
        assert_eq!(td.service("payments").expect("valid"), id);
        assert_eq!(td.id_uri(), "spiffe://shop.example");
        assert_eq!(
            TrustDomain::from_id("spiffe://shop.example").expect("valid"),
            td
        );
    }

    #[test]
    fn multi_segment_paths_are_allowed() {
        let id = SpiffeId::parse("spiffe://d/ns/prod/sa_1.x-y").expect("valid");
        assert_eq!(id.path(), "/ns/prod/sa_1.x-y");
    }

    #[test]
    fn invalid_ids_are_refused_with_the_reason() {
        for (input, needle) in [
            ("https://d/x", "spiffe://"),
            ("SPIFFE://d/x", "spiffe://"),
            ("spiffe://D/x", "lowercase"),
            ("spiffe://d:443/x", "port"),
            ("spiffe://u@d/x", "user info"),
            ("spiffe:///x", "empty"),
            ("spiffe://d", "needs a path"),
            ("spiffe://d/", "empty segment"),
            ("spiffe://d/a//b", "empty segment"),
            ("spiffe://d/a/", "trailing"),
            ("spiffe://d/a/../b", "`..`"),
            ("spiffe://d/a?x=1", "query"),
            ("spiffe://d/a#f", "fragment"),
            ("spiffe://d/a%20b", "path segments"),
            ("spiffe://d/a b", "path segments"),
            ("spiffe://d!/a", "only a-z"),
        ] {
            let err = SpiffeId::parse(input).expect_err(input).to_string();
            assert!(err.contains(needle), "{input}: {err}");
        }
        let long = format!("spiffe://d/{}", "a".repeat(2048));
        assert!(SpiffeId::parse(&long).is_err());
        assert!(TrustDomain::new(&"a".repeat(256)).is_err());
    }
}
