//! Authorization denials, by service and deciding rule (`file:line` of the policy, or
//! `default`).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// The labels of `mesh_authz_denied_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DeniedLabels {
    /// The service whose authorization denied.
    pub service: Arc<str>,
    /// `file:line` of the deciding rule, or `default` (also for callers outside the trust
    /// domain, whom no rule can admit).
    pub rule: String,
}

/// The authorization family.
#[derive(Debug, Default, Clone)]
pub struct AuthzMetrics {
    /// `mesh_authz_denied_total`.
    pub denied: Family<DeniedLabels, Counter>,
}

impl AuthzMetrics {
    /// Registers the family.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "mesh_authz_denied",
            "Inbound requests denied by authorization, by service and deciding rule",
            self.denied.clone(),
        );
    }
}
