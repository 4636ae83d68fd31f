//! `TrustBundle`: the root certificates a workload trusts, loaded from PEM. During a root
//! rotation it holds both the old and the new root.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use crate::cert::CertInfo;
use crate::error::IdentityError;
use crate::identity::{certificates, read};

/// The roots of trust: a peer's chain must lead to one of them.
#[derive(Debug, Clone)]
pub struct TrustBundle {
    roots: Arc<RootCertStore>,
    certs: Vec<CertificateDer<'static>>,
}

impl TrustBundle {
    /// Reads `bundle.pem`: one or more root certificates.
    pub fn load(path: &Path) -> Result<TrustBundle, IdentityError> {
        TrustBundle::from_pem(&read(path)?).map_err(|e| e.in_file(path))
    }

    /// Builds a bundle from PEM text holding one or more CA certificates.
    pub fn from_pem(pem: &[u8]) -> Result<TrustBundle, IdentityError> {
        let certs = certificates(pem)?;
        let mut roots = RootCertStore::empty();
        for (n, cert) in certs.iter().enumerate() {
            let info = CertInfo::parse(cert)?;
            if !info.is_ca {
                return Err(IdentityError::Certificate(format!(
                    "certificate {} of the bundle (serial {}) is not a CA",
                    n + 1,
                    info.serial
                )));
            }
            roots.add(cert.clone()).map_err(|err| {
                IdentityError::Certificate(format!("certificate {} of the bundle: {err}", n + 1))
            })?;
        }
        Ok(TrustBundle {
            roots: Arc::new(roots),
            certs,
        })
    }

    /// The number of roots.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Never true: a bundle holds at least one root.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// The root certificates, in file order.
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// This bundle plus the roots of `other` it lacks: the bundle of a root rotation.
    pub fn merge(&self, other: &TrustBundle) -> Result<TrustBundle, IdentityError> {
        let mut certs = self.certs.clone();
        for cert in &other.certs {
            if !certs.contains(cert) {
                certs.push(cert.clone());
            }
        }
        let mut roots = RootCertStore::empty();
        for cert in &certs {
            roots
                .add(cert.clone())
                .map_err(|err| IdentityError::Certificate(format!("trust bundle: {err}")))?;
        }
        Ok(TrustBundle {
            roots: Arc::new(roots),
            certs,
        })
    }

    /// The roots as PEM, one `CERTIFICATE` section each: the text of `bundle.pem`.
    pub fn to_pem(&self) -> String {
        let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
        self.certs
            .iter()
            .map(|cert| pem::encode_config(&pem::Pem::new("CERTIFICATE", cert.to_vec()), config))
            .collect()
    }

    /// The roots as rustls uses them.
    pub(crate) fn roots(&self) -> &Arc<RootCertStore> {
        &self.roots
    }
}
