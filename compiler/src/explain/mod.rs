//! Decisions explained: a checked policy's engine, and where each decision came from.
//!
//! `meshc test` and `meshc why` never decide anything themselves: the route and every
//! authorization come from [`mesh_engine::Engine`], exactly as a proxy would decide them.
//! What this module adds is the proxy's sequence around the engine and the way back from
//! a decision to the source that made it.
//!
//! The sequence: the caller's outbound proxy routes by authority ([`Engine::route`]); the
//! request then reaches the inbound proxy of the chosen target, which authorizes it with the
//! caller's identity ([`Engine::authorize`]). A split route sends a share of its requests to
//! each target, so each target's proxy is asked: the request is allowed only when every
//! target allows it (otherwise some of it is refused with 403), and the decision reported is
//! the first refusing target's, or the first target's when all allow. Plaintext callers reach
//! only `mtls permissive` services and a foreign identity none: the handshake refuses them
//! before any rule is tried, which is reported as a deny by `mtls` when the engine would
//! otherwise have allowed.

mod routes;
mod snippet;
mod verdict;

use std::sync::Arc;

use mesh_engine::{BuildError, Engine, Peer};
use mesh_table::{ServiceId, Table};

use crate::check::{check_with_sources, CheckOptions, Sources};
use crate::diag::{did_you_mean, Diagnostic};
use crate::source::{Loc, SourceFile};

pub use routes::{
    describe_header, describe_path, explain_routes, LostBecause, Miss, RouteCheck, RouteOutcome,
};
pub use snippet::{render_snippet, SnippetLabel, Tone};
pub use verdict::{action_name, By, Refusal, Routed, RuleRef, Summary, TargetDecision, Verdict};

/// A policy that checked without error, ready to decide requests.
#[derive(Debug)]
pub struct Policy {
    engine: Engine,
    sources: Sources,
}

/// What checking a policy for decisions produced.
#[derive(Debug)]
pub struct PolicyCheck {
    /// Every diagnostic, warnings included, sorted.
    pub diagnostics: Vec<Diagnostic>,
    /// The policy, when it has no error.
    pub policy: Result<Policy, PolicyError>,
}

/// Why a checked policy cannot decide requests.
#[derive(Debug)]
pub enum PolicyError {
    /// The policy has errors (they are among the diagnostics).
    Errors,
    /// The engine refused the table (a checker bug: checked tables always build).
    Engine(BuildError),
}

/// Checks `files` and, when they have no error, builds the engine over the table.
pub fn check_policy(files: &[Arc<SourceFile>], options: &CheckOptions) -> PolicyCheck {
    let (checked, sources) = check_with_sources(files, options);
    let policy = match (checked.table, sources) {
        (Some(table), Some(sources)) => Engine::new(Arc::new(table))
            .map(|engine| Policy { engine, sources })
            .map_err(PolicyError::Engine),
        _ => Err(PolicyError::Errors),
    };
    PolicyCheck {
        diagnostics: checked.diagnostics,
        policy,
    }
}

/// Who sends a request, as a test or `meshc why` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A client without a mesh identity (`plaintext`, or no caller given).
    Plaintext,
    /// A service of the policy, by name: its sidecar presents its SPIFFE ID.
    Service(String),
    /// A SPIFFE ID, `spiffe://<trust domain>/<path>`.
    Identity(String),
}

impl Caller {
    /// Reads `plaintext`, a `spiffe://` ID, or a service name.
    pub fn parse(text: &str) -> Caller {
        let text = text.trim();
        if text == "plaintext" {
            Caller::Plaintext
        } else if text.starts_with("spiffe://") {
            Caller::Identity(text.to_owned())
        } else {
            Caller::Service(text.to_owned())
        }
    }
}

/// A caller, or an authority, that names no service of the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownService {
    /// The name as given.
    pub name: String,
    /// The nearest service name, if one is near.
    pub suggestion: Option<String>,
}

impl std::fmt::Display for UnknownService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` is not a service of this policy", self.name)?;
        if let Some(near) = &self.suggestion {
            write!(f, "; did you mean `{near}`?")?;
        }
        Ok(())
    }
}

/// A request as a proxy sees it.
#[derive(Debug, Clone)]
pub struct Request {
    /// Who sends it.
    pub caller: Caller,
    /// The authority (`Host`): a service name, with or without a port.
    pub authority: String,
    /// The method, as sent.
    pub method: String,
    /// The request target, as sent (normalized by the engine).
    pub path: String,
    /// The request headers.
    pub headers: Vec<(String, String)>,
}

/// The peer a caller is, once the transport has looked at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// It presents this peer to the engine.
    Peer(Peer),
    /// Its identity is of another trust domain: every handshake fails.
    Foreign,
}

impl Policy {
    /// The engine deciding for this policy.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The compiled table.
    pub fn table(&self) -> &Table {
        self.engine.table()
    }

    /// The name of a service.
    pub fn service_name(&self, id: ServiceId) -> &str {
        self.table()
            .services
            .get(id as usize)
            .map_or("?", |s| s.name.as_str())
    }

    /// The service called `name`, or what is wrong with the name.
    pub fn service(&self, name: &str) -> Result<ServiceId, UnknownService> {
        self.engine
            .service_id(name)
            .ok_or_else(|| self.unknown(name))
    }

    /// The service a request's authority names, or what is wrong with it.
    pub fn authority_service(&self, authority: &str) -> Result<ServiceId, UnknownService> {
        self.engine
            .service_for_authority(authority)
            .ok_or_else(|| self.unknown(authority))
    }

    fn unknown(&self, name: &str) -> UnknownService {
        let names = self.table().services.iter().map(|s| s.name.as_str());
        UnknownService {
            name: name.to_owned(),
            suggestion: did_you_mean(name, names).map(str::to_owned),
        }
    }

    /// Checks that a caller names a service of the policy (IDs and plaintext always do).
    pub fn check_caller(&self, caller: &Caller) -> Result<(), UnknownService> {
        match caller {
            Caller::Service(name) => self.service(name).map(|_| ()),
            Caller::Plaintext | Caller::Identity(_) => Ok(()),
        }
    }

    /// What the transport makes of a caller.
    pub(crate) fn transport(&self, caller: &Caller) -> Result<Transport, UnknownService> {
        Ok(match caller {
            Caller::Plaintext => Transport::Peer(Peer::Plaintext),
            Caller::Service(name) => Transport::Peer(Peer::Service(self.service(name)?)),
            Caller::Identity(id) => self
                .engine
                .peer_from_spiffe_id(id)
                .map_or(Transport::Foreign, Transport::Peer),
        })
    }

    /// The SPIFFE ID a caller presents, for messages.
    pub fn identity(&self, caller: &Caller) -> Option<String> {
        match caller {
            Caller::Plaintext => None,
            Caller::Service(name) => Some(format!(
                "spiffe://{}/{name}",
                self.table().mesh.trust_domain
            )),
            Caller::Identity(id) => Some(id.clone()),
        }
    }

    /// Where a route was declared: its name, and its `match` block when it has one.
    pub fn route_locs(&self, index: usize) -> (Option<&Loc>, Option<&Loc>) {
        self.sources
            .routes
            .get(index)
            .map_or((None, None), |r| (Some(&r.name), r.matcher.as_ref()))
    }

    /// Where a service was declared (its name).
    pub fn service_loc(&self, id: ServiceId) -> Option<&Loc> {
        self.sources.services.get(id as usize)
    }

    /// Where a rule of an `authorize` block was written.
    pub fn rule_loc(&self, authorization: usize, rule: usize) -> Option<&Loc> {
        self.sources
            .authorizations
            .get(authorization)
            .and_then(|a| a.rules.get(rule))
    }

    /// Where an `authorize` block's default comes from: its `default` clause, or the block.
    pub fn default_loc(&self, authorization: usize) -> Option<&Loc> {
        self.sources
            .authorizations
            .get(authorization)
            .map(|a| a.default.as_ref().unwrap_or(&a.decl))
    }

    /// Whether the `authorize` block wrote its `default` clause.
    pub fn default_written(&self, authorization: usize) -> bool {
        self.sources
            .authorizations
            .get(authorization)
            .is_some_and(|a| a.default.is_some())
    }
}

/// `file:line` of a location, the way tests name rules.
pub fn file_line(loc: &Loc) -> String {
    format!("{}:{}", loc.file.name, loc.line_col().0)
}

/// Whether `expected` (`shop.mesh:12`, `policies/shop.mesh:12`, or with a column) names the
/// place `loc` starts at. The file may be given by any trailing part of its path, so a test
/// holds wherever the policy is checked from.
pub fn names_location(expected: &str, loc: &Loc) -> bool {
    let (line, column) = loc.line_col();
    let mut parts = expected.rsplitn(3, ':');
    let (Some(last), Some(middle)) = (parts.next(), parts.next()) else {
        return false;
    };
    let (file, want_line, want_column) = match parts.next() {
        Some(file) if middle.parse::<u32>().is_ok() => (file, middle, Some(last)),
        Some(file) => (&expected[..file.len() + 1 + middle.len()], last, None),
        None => (middle, last, None),
    };
    let line_ok = want_line.parse::<u32>().is_ok_and(|l| l == line);
    let column_ok = want_column.is_none_or(|c| c.parse::<u32>().is_ok_and(|c| c == column));
    line_ok && column_ok && path_ends_with(&loc.file.name, file)
}

/// Whether `name` is `tail` or ends with `/tail`.
fn path_ends_with(name: &str, tail: &str) -> bool {
    let name = name.replace('\\', "/");
    let tail = tail.replace('\\', "/");
    let tail = tail.trim_start_matches("./");
    name == tail
        || name
            .strip_suffix(tail)
            .is_some_and(|head| head.ends_with('/'))
}

#[cfg(test)]
mod tests {
    use super::{names_location, Caller};
    use crate::source::{Loc, SourceFile};

    #[test]
    fn locations_match_by_trailing_path_and_line() {
        let file = SourceFile::new("examples/policies/shop.mesh", "a\nbb\n  ccc\n");
        let loc = Loc::new(&file, 7..10);
        assert!(names_location("shop.mesh:3", &loc));
        assert!(names_location("policies/shop.mesh:3", &loc));
        assert!(names_location("examples/policies/shop.mesh:3", &loc));
        assert!(names_location("shop.mesh:3:3", &loc));
        assert!(!names_location("shop.mesh:3:1", &loc));
        assert!(!names_location("hop.mesh:3", &loc));
        assert!(!names_location("shop.mesh:2", &loc));
        assert!(!names_location("shop.mesh", &loc));
        assert!(!names_location("default", &loc));
    }

    #[test]
    fn callers_parse() {
        assert_eq!(Caller::parse("plaintext"), Caller::Plaintext);
        assert_eq!(
            Caller::parse("frontend"),
            Caller::Service("frontend".into())
        );
        assert_eq!(
            Caller::parse("spiffe://shop.example/x"),
            Caller::Identity("spiffe://shop.example/x".into())
        );
    }
}
