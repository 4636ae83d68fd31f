//! Authorization decisions: every `deny` first, then any `allow`, then the default; indexed
//! by principal and path so the cost follows the caller's rules, not the whole block.

use std::ops::ControlFlow;

use mesh_table::{Action, Authorization, Principal, ServiceId};
use rustc_hash::FxHashMap;

use crate::headers::RequestHeaders;
use crate::matcher::{method_bit_of, Conditions};
use crate::path::{normalize_path, PathError};
use crate::path_index::PathIndex;
use crate::{BuildError, Engine};

/// Who is calling, as the transport proved it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A plaintext caller (only `anyone` rules apply).
    Plaintext,
    /// A mesh identity of a declared service.
    Service(ServiceId),
    /// A mesh identity (our trust domain) of no declared service: matches `any`.
    OtherMeshIdentity,
}

impl Peer {
    fn is_authenticated(self) -> bool {
        !matches!(self, Peer::Plaintext)
    }
}

/// What decided an authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decider {
    /// The rule at this index of the service's `Authorization::rules`.
    Rule(usize),
    /// The block's `default` (or, with no block, "any mesh identity").
    Default,
}

/// An authorization decision and what made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthzDecision {
    /// Allow or deny.
    pub action: Action,
    /// The deciding rule, or the default.
    pub decider: Decider,
    /// The index of the service's block in `Table::authorizations`, if it has one.
    pub authorization: Option<usize>,
}

/// The rules of one action (deny or allow), by principal, each set indexed by path.
#[derive(Debug, Default)]
struct RuleSet {
    by_service: FxHashMap<ServiceId, PathIndex>,
    any: PathIndex,
    anyone: PathIndex,
}

/// One service's compiled `authorize` block.
#[derive(Debug)]
pub(crate) struct Authorizer {
    table_index: usize,
    default: Action,
    conditions: Box<[Conditions]>,
    deny: RuleSet,
    allow: RuleSet,
}

impl Authorizer {
    pub(crate) fn build(
        authorization: &Authorization,
        table_index: usize,
    ) -> Result<Authorizer, BuildError> {
        let mut conditions = Vec::with_capacity(authorization.rules.len());
        let (mut deny, mut allow) = (RuleSet::default(), RuleSet::default());
        for (i, rule) in authorization.rules.iter().enumerate() {
            let id = u32::try_from(i).map_err(|_| BuildError("too many rules".into()))?;
            conditions.push(Conditions::build(&rule.to)?);
            let set = match rule.action {
                Action::Deny => &mut deny,
                Action::Allow => &mut allow,
            };
            for principal in &rule.from {
                let index = match principal {
                    Principal::Service(s) => set.by_service.entry(*s).or_default(),
                    Principal::Any => &mut set.any,
                    Principal::Anyone => &mut set.anyone,
                };
                index.insert(rule.to.path.as_ref(), id)?;
            }
        }
        Ok(Authorizer {
            table_index,
            default: authorization.default,
            conditions: conditions.into_boxed_slice(),
            deny,
            allow,
        })
    }

    /// The lowest-numbered rule of `set` that applies to `peer` and the request.
    fn first_match<H: RequestHeaders + ?Sized>(
        &self,
        set: &RuleSet,
        peer: Peer,
        method: u16,
        path: &str,
        headers: &H,
    ) -> Option<usize> {
        let mut best: Option<u32> = None;
        let mut consider = |index: &PathIndex| {
            let _ = index.visit(path, |id| {
                if best.is_none_or(|b| id < b)
                    && self.conditions[id as usize].matches(method, headers)
                {
                    best = Some(id);
                }
                ControlFlow::<()>::Continue(())
            });
        };
        if let Peer::Service(s) = peer {
            if let Some(index) = set.by_service.get(&s) {
                consider(index);
            }
        }
        if peer.is_authenticated() && !set.any.is_empty() {
            consider(&set.any);
        }
        if !set.anyone.is_empty() {
            consider(&set.anyone);
        }
        best.map(|b| b as usize)
    }
}

impl Engine {
    /// The peer a SPIFFE ID names: `spiffe://<trust domain>/<service>`. `None` for a
    /// foreign trust domain or a malformed ID (the transport should have refused it).
    pub fn peer_from_spiffe_id(&self, id: &str) -> Option<Peer> {
        let rest = id.strip_prefix("spiffe://")?;
        let (domain, path) = rest.split_once('/')?;
        if domain != self.table.mesh.trust_domain {
            return None;
        }
        Some(
            self.service_id(path)
                .map_or(Peer::OtherMeshIdentity, Peer::Service),
        )
    }

    /// Whether `peer` may make this request to `service` (path normalized here).
    pub fn authorize<H: RequestHeaders + ?Sized>(
        &self,
        service: ServiceId,
        peer: Peer,
        method: &str,
        path: &str,
        headers: &H,
    ) -> Result<AuthzDecision, PathError> {
        let path = normalize_path(path)?;
        Ok(self.authorize_normalized(service, peer, method, &path, headers))
    }

    /// [`Engine::authorize`] for an already normalized path.
    pub fn authorize_normalized<H: RequestHeaders + ?Sized>(
        &self,
        service: ServiceId,
        peer: Peer,
        method: &str,
        path: &str,
        headers: &H,
    ) -> AuthzDecision {
        let Some(Some(authorizer)) = self.authorizers.get(service as usize) else {
            // No authorize block: any authenticated mesh identity is admitted.
            let action = if peer.is_authenticated() {
                Action::Allow
            } else {
                Action::Deny
            };
            return AuthzDecision {
                action,
                decider: Decider::Default,
                authorization: None,
            };
        };
        let method = method_bit_of(method);
        let authorization = Some(authorizer.table_index);
        if let Some(rule) = authorizer.first_match(&authorizer.deny, peer, method, path, headers) {
            return AuthzDecision {
                action: Action::Deny,
                decider: Decider::Rule(rule),
                authorization,
            };
        }
        if let Some(rule) = authorizer.first_match(&authorizer.allow, peer, method, path, headers) {
            return AuthzDecision {
                action: Action::Allow,
                decider: Decider::Rule(rule),
                authorization,
            };
        }
        AuthzDecision {
            action: authorizer.default,
            decider: Decider::Default,
            authorization,
        }
    }
}
