//! A request's fate: the engine's route, then each target's authorization, and their summary.

use mesh_engine::{Decider, PathError, Peer, RouteDecision};
use mesh_table::{Action, MtlsMode, ServiceId};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::{file_line, Policy, Request, Transport, UnknownService};
use crate::source::Loc;

/// What the caller's outbound proxy did with the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// This route (index into `Table::routes`) matched.
    Route(usize),
    /// The service has routes and none matched: 404.
    NoRoute,
    /// The service has no routes: the request goes to the service itself.
    ToService,
    /// The path was refused before any rule saw it: 400.
    BadPath(PathError),
}

/// Why the transport refused a caller before any rule was tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A plaintext caller, and the service is `mtls strict`.
    PlaintextToStrict,
    /// An identity of another trust domain.
    ForeignIdentity,
}

/// What decided one target's authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// A rule: its block (index into `Table::authorizations`) and its index in the block.
    Rule {
        /// The block.
        authorization: usize,
        /// The rule.
        rule: usize,
    },
    /// The block's default.
    Default {
        /// The block.
        authorization: usize,
    },
    /// The service has no `authorize` block: mesh identities are admitted, plaintext is not.
    NoBlock,
    /// The handshake refused the caller.
    Refused(Refusal),
}

/// One target's authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetDecision {
    /// The target service, whose inbound proxy decides.
    pub service: ServiceId,
    /// Allow or deny.
    pub action: Action,
    /// What decided.
    pub by: By,
}

/// Everything the proxies decide for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The service the authority names.
    pub service: ServiceId,
    /// The route decision.
    pub routed: Routed,
    /// Where the request goes: the route's targets in order, or the service itself.
    pub targets: Vec<ServiceId>,
    /// Each target's authorization, parallel to `targets`.
    pub authorizations: Vec<TargetDecision>,
}

/// How a decision's rule is named in reports: `{"file", "line"}`, `"default"` or `"mtls"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleRef {
    /// An `allow` or `deny` rule, where it was written.
    Source {
        /// The policy file's name.
        file: String,
        /// The 1-based line.
        line: u32,
    },
    /// A default: the block's `default`, or "no block" (mesh identities only).
    Default,
    /// The mTLS handshake refused the caller.
    Mtls,
}

impl Serialize for RuleRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            RuleRef::Source { file, line } => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("file", file)?;
                map.serialize_entry("line", line)?;
                map.end()
            }
            RuleRef::Default => serializer.serialize_str("default"),
            RuleRef::Mtls => serializer.serialize_str("mtls"),
        }
    }
}

impl std::fmt::Display for RuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuleRef::Source { file, line } => write!(f, "{file}:{line}"),
            RuleRef::Default => f.write_str("default"),
            RuleRef::Mtls => f.write_str("mtls"),
        }
    }
}

/// The short form of a verdict, as `meshc why --format json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// What the proxy itself answers (400, 403, 404), or `None` when the request goes on.
    pub status: Option<u16>,
    /// The chosen route's name.
    pub route: Option<String>,
    /// Where the request goes.
    pub targets: Vec<String>,
    /// `"allow"` or `"deny"`; `None` when no authorization took place (400, 404).
    pub decision: Option<&'static str>,
    /// What decided.
    pub rule: Option<RuleRef>,
}

/// The name of an action, as reports write it.
pub fn action_name(action: Action) -> &'static str {
    match action {
        Action::Allow => "allow",
        Action::Deny => "deny",
    }
}

impl Verdict {
    /// The authorization that stands for the whole request: the first target that denies,
    /// or the first target when all allow. `None` when nothing was authorized.
    pub fn deciding(&self) -> Option<&TargetDecision> {
        self.authorizations
            .iter()
            .find(|d| d.action == Action::Deny)
            .or_else(|| self.authorizations.first())
    }

    /// Allowed only when every target allows.
    pub fn decision(&self) -> Option<Action> {
        self.deciding().map(|d| d.action)
    }

    /// What the proxy itself answers: 400 (bad path), 404 (no route), 403 (denied), or
    /// `None` when the request reaches the application.
    pub fn status(&self) -> Option<u16> {
        match self.routed {
            Routed::BadPath(_) => Some(400),
            Routed::NoRoute => Some(404),
            Routed::Route(_) | Routed::ToService => {
                (self.decision() == Some(Action::Deny)).then_some(403)
            }
        }
    }

    /// The chosen route's index.
    pub fn route(&self) -> Option<usize> {
        match self.routed {
            Routed::Route(index) => Some(index),
            _ => None,
        }
    }

    /// The short form.
    pub fn summary(&self, policy: &Policy) -> Summary {
        Summary {
            status: self.status(),
            route: self.route().map(|i| policy.route_name(i).to_owned()),
            targets: self
                .targets
                .iter()
                .map(|&t| policy.service_name(t).to_owned())
                .collect(),
            decision: self.decision().map(action_name),
            rule: self.deciding().map(|d| policy.rule_ref(d.by)),
        }
    }
}

impl Policy {
    /// Decides a request the way the proxies do. `Err` when the caller or the authority
    /// names no service of the policy.
    pub fn decide(&self, request: &Request) -> Result<Verdict, UnknownService> {
        let service = self.authority_service(&request.authority)?;
        let transport = self.transport(&request.caller)?;
        let headers = request.headers.as_slice();
        let decision =
            self.engine
                .route(&request.authority, &request.method, &request.path, headers);
        let (routed, targets) = match decision {
            RouteDecision::Matched { index, route, .. } => (
                Routed::Route(index),
                route.targets.iter().map(|t| t.service).collect(),
            ),
            RouteDecision::NoRoute { .. } => (Routed::NoRoute, Vec::new()),
            RouteDecision::ToService { service } => (Routed::ToService, vec![service]),
            RouteDecision::BadPath(err) => (Routed::BadPath(err), Vec::new()),
            // The authority was found above; the engine agrees or the table is broken.
            RouteDecision::UnknownService => return Err(self.unknown(&request.authority)),
        };
        let mut authorizations = Vec::with_capacity(targets.len());
        for &target in &targets {
            if let Some(decision) =
                self.authorize(target, transport, &request.method, &request.path, headers)
            {
                authorizations.push(decision);
            }
        }
        Ok(Verdict {
            service,
            routed,
            targets,
            authorizations,
        })
    }

    /// The inbound proxy of `target`: the handshake, then the engine. `None` only for a path
    /// the engine refuses, which routing has refused already.
    fn authorize(
        &self,
        target: ServiceId,
        transport: Transport,
        method: &str,
        path: &str,
        headers: &[(String, String)],
    ) -> Option<TargetDecision> {
        let refused = |refusal| TargetDecision {
            service: target,
            action: Action::Deny,
            by: By::Refused(refusal),
        };
        let peer = match transport {
            Transport::Peer(peer) => peer,
            Transport::Foreign => return Some(refused(Refusal::ForeignIdentity)),
        };
        let decision = self
            .engine
            .authorize(target, peer, method, path, headers)
            .ok()?;
        let strict = self
            .table()
            .services
            .get(target as usize)
            .is_none_or(|s| s.mtls == MtlsMode::Strict);
        if peer == Peer::Plaintext && strict && decision.action == Action::Allow {
            // An `allow from anyone` on a strict service: the engine admits what the
            // handshake never lets through.
            return Some(refused(Refusal::PlaintextToStrict));
        }
        let by = match (decision.decider, decision.authorization) {
            (Decider::Rule(rule), Some(authorization)) => By::Rule {
                authorization,
                rule,
            },
            (_, Some(authorization)) => By::Default { authorization },
            (_, None) => By::NoBlock,
        };
        Some(TargetDecision {
            service: target,
            action: decision.action,
            by,
        })
    }

    /// A route's name.
    pub fn route_name(&self, index: usize) -> &str {
        self.table()
            .routes
            .get(index)
            .map_or("?", |r| r.name.as_str())
    }

    /// How reports name what decided.
    pub fn rule_ref(&self, by: By) -> RuleRef {
        match by {
            By::Rule {
                authorization,
                rule,
            } => match self.rule_loc(authorization, rule) {
                Some(loc) => RuleRef::Source {
                    file: loc.file.name.clone(),
                    line: loc.line_col().0,
                },
                None => RuleRef::Default,
            },
            By::Default { .. } | By::NoBlock => RuleRef::Default,
            By::Refused(_) => RuleRef::Mtls,
        }
    }

    /// Where what decided was written (the service, for "no block" and refusals).
    pub fn decider_loc(&self, decision: &TargetDecision) -> Option<&Loc> {
        match decision.by {
            By::Rule {
                authorization,
                rule,
            } => self.rule_loc(authorization, rule),
            By::Default { authorization } => self.default_loc(authorization),
            By::NoBlock | By::Refused(_) => self.service_loc(decision.service),
        }
    }

    /// One line saying what decided: "rule shop.mesh:122", "the default (deny) of ...".
    pub fn describe_decider(&self, decision: &TargetDecision) -> String {
        let service = self.service_name(decision.service);
        match decision.by {
            By::Rule { .. } => match self.decider_loc(decision) {
                Some(loc) => format!("the rule at {}", file_line(loc)),
                None => "a rule".to_owned(),
            },
            By::Default { authorization } => {
                let action = action_name(decision.action);
                match self.default_loc(authorization) {
                    Some(loc) if self.default_written(authorization) => {
                        format!("`default {action}` of `{service}` ({})", file_line(loc))
                    }
                    Some(loc) => format!(
                        "the default of `{service}`'s authorize block ({}): no rule matched and `default` is `deny` when absent",
                        file_line(loc)
                    ),
                    None => format!("the default ({action})"),
                }
            }
            By::NoBlock => match decision.action {
                Action::Allow => format!(
                    "the default: `{service}` has no authorize block, so any mesh identity is admitted"
                ),
                Action::Deny => format!(
                    "the default: `{service}` has no authorize block, which admits mesh identities only, not plaintext callers"
                ),
            },
            By::Refused(Refusal::PlaintextToStrict) => format!(
                "mtls: `{service}` is `mtls strict`, so a plaintext caller is refused at the handshake"
            ),
            By::Refused(Refusal::ForeignIdentity) => format!(
                "mtls: the caller's identity is not of trust domain `{}`; the handshake refuses it",
                self.table().mesh.trust_domain
            ),
        }
    }

    /// The label put on what decided, in source snippets.
    pub fn decider_label(&self, decision: &TargetDecision) -> String {
        let action = action_name(decision.action);
        let service = self.service_name(decision.service);
        match decision.by {
            By::Rule { .. } => format!("this rule decided: {action}"),
            By::Default { .. } => format!("no rule matched: the default decided: {action}"),
            By::NoBlock => format!("`{service}` has no authorize block: {action}"),
            By::Refused(_) => format!("`{service}` refused the handshake: deny"),
        }
    }

    /// Whether a test's `expect.rule` (`default`, `mtls` or `file:line`) names what decided.
    pub fn rule_matches(&self, expected: &str, decision: &TargetDecision) -> bool {
        let expected = expected.trim();
        match decision.by {
            By::Rule { .. } => self
                .decider_loc(decision)
                .is_some_and(|loc| super::names_location(expected, loc)),
            By::Default { authorization } => {
                expected == "default"
                    || (self.default_written(authorization)
                        && self
                            .default_loc(authorization)
                            .is_some_and(|loc| super::names_location(expected, loc)))
            }
            By::NoBlock => expected == "default",
            By::Refused(_) => expected == "mtls",
        }
    }
}
