//! Certificate serials the control plane revoked: both verifiers refuse them before expiry.

use std::collections::HashSet;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::cert::CertInfo;

/// The revoked serials (lowercase hex, as [`CertInfo::serial`]) the handshakes of one
/// process refuse. Replaced whole when the control plane sends a new list; empty for a
/// proxy without a control plane, where a certificate is good until it expires.
#[derive(Debug, Default)]
pub struct RevokedSerials(ArcSwap<HashSet<String>>);

impl RevokedSerials {
    /// Replaces the list; returns how many serials it now holds.
    pub fn replace(&self, serials: impl IntoIterator<Item = String>) -> usize {
        let set: HashSet<String> = serials
            .into_iter()
            .map(|s| s.trim().to_ascii_lowercase())
            .collect();
        let len = set.len();
        self.0.store(Arc::new(set));
        len
    }

    /// Whether `serial` is revoked.
    pub fn contains(&self, serial: &str) -> bool {
        self.0.load().contains(serial)
    }

    /// How many serials are revoked.
    pub fn len(&self) -> usize {
        self.0.load().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses a leaf whose serial is revoked, as rustls' own `Revoked` error: the peer
    /// then gets a `certificate_revoked` alert that any TLS stack names (our own reason
    /// would travel as `certificate_unknown`). The identity and serial are logged here,
    /// since rustls' error carries neither.
    pub(crate) fn check(&self, leaf: &CertInfo) -> Result<(), rustls::Error> {
        if self.contains(&leaf.serial) {
            tracing::warn!(
                spiffe_id = %leaf.spiffe_id().map_or_else(|_| "-".to_owned(), |id| id.to_string()),
                serial = %leaf.serial,
                "handshake refused: the certificate was revoked"
            );
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked,
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_normalizes_and_counts() {
        let revoked = RevokedSerials::default();
        assert!(revoked.is_empty());
        assert_eq!(
            revoked.replace(["1F".to_owned(), " 1f ".to_owned(), "2a".to_owned()]),
            2
        );
        assert!(revoked.contains("1f"));
        assert!(!revoked.contains("3b"));
        assert_eq!(revoked.replace(Vec::new()), 0);
        assert!(!revoked.contains("1f"));
    }
}
