//! Handshake counters, by direction and by refusal reason (`RefusalReason::as_str`), for
//! the admin listener's `/tls` (the metrics issue moves them to `/metrics`).

use std::sync::atomic::{AtomicU64, Ordering};

use mesh_identity::RefusalReason;

/// The reason label of a plaintext connection refused by an `mtls strict` service.
pub const PLAINTEXT_REFUSED: &str = "plaintext-refused";

/// One counter per [`RefusalReason`].
#[derive(Debug, Default)]
pub struct ByReason([AtomicU64; RefusalReason::ALL.len()]);

impl ByReason {
    /// Counts one refusal for `reason`.
    pub fn count(&self, reason: RefusalReason) {
        if let Some(i) = RefusalReason::ALL.iter().position(|r| *r == reason) {
            self.0[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The count for `reason`.
    pub fn get(&self, reason: RefusalReason) -> u64 {
        RefusalReason::ALL
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.0[i].load(Ordering::Relaxed))
    }

    fn json(&self) -> serde_json::Map<String, serde_json::Value> {
        RefusalReason::ALL
            .iter()
            .map(|r| (r.as_str().to_string(), self.get(*r).into()))
            .collect()
    }
}

/// What the transport has seen since start.
#[derive(Debug, Default)]
pub struct TlsStats {
    /// Inbound mTLS handshakes completed with a verified caller.
    pub inbound_handshakes: AtomicU64,
    /// Inbound handshakes refused, by the caller certificate's (or the alert's) reason.
    pub inbound_refused: ByReason,
    /// Inbound plaintext connections closed because the service is `mtls strict`.
    pub plaintext_refused: AtomicU64,
    /// Inbound plaintext connections admitted (`mtls permissive`, `insecure_plaintext`).
    pub plaintext_admitted: AtomicU64,
    /// Inbound connections that ended before any verdict (timeout, reset, not TLS).
    pub inbound_failed: AtomicU64,
    /// Outbound mTLS handshakes completed with the expected server.
    pub outbound_handshakes: AtomicU64,
    /// Outbound handshakes refused, by the server certificate's (or the alert's) reason.
    pub outbound_refused: ByReason,
    /// Outbound handshakes that failed without a certificate verdict.
    pub outbound_failed: AtomicU64,
}

impl TlsStats {
    /// The counters as JSON.
    pub fn json(&self) -> serde_json::Value {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut inbound_refused = self.inbound_refused.json();
        inbound_refused.insert(
            PLAINTEXT_REFUSED.to_string(),
            load(&self.plaintext_refused).into(),
        );
        serde_json::json!({
            "inbound": {
                "handshakes": load(&self.inbound_handshakes),
                "refused": inbound_refused,
                "plaintext_admitted": load(&self.plaintext_admitted),
                "failed": load(&self.inbound_failed),
            },
            "outbound": {
                "handshakes": load(&self.outbound_handshakes),
                "refused": self.outbound_refused.json(),
                "failed": load(&self.outbound_failed),
            },
        })
    }
}
