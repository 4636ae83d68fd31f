//! `Identity`: this workload's own certificate chain and private key, loaded from PEM.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::cert::CertInfo;
use crate::error::IdentityError;
use crate::spiffe::SpiffeId;
use crate::tls::provider;

/// A workload's credentials: the chain it presents (leaf first) with the matching key, and
/// the SPIFFE ID its leaf carries.
#[derive(Debug, Clone)]
pub struct Identity {
    key: Arc<CertifiedKey>,
    id: SpiffeId,
    info: CertInfo,
}

impl Identity {
    /// Reads `cert.pem` (leaf then intermediates) and `key.pem` (PKCS#8, SEC1 or PKCS#1).
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, IdentityError> {
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let chain = certificates(&cert_pem).map_err(|e| e.in_file(cert))?;
        let private = private_key(&key_pem).map_err(|e| e.in_file(key))?;
        Identity::new(chain, private).map_err(|e| e.in_file(cert))
    }

    /// Builds an identity from PEM text.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Identity, IdentityError> {
        Identity::new(certificates(cert_pem)?, private_key(key_pem)?)
    }

    /// Checks that the key matches the leaf and that the leaf carries a SPIFFE ID and may
    /// authenticate a TLS peer. Validity is not checked here ([`Credentials`](crate::Credentials)
    /// checks it against the bundle at load time).
    fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Identity, IdentityError> {
        let leaf = chain
            .first()
            .ok_or_else(|| IdentityError::Pem("no certificate found".into()))?;
        let info = CertInfo::parse(leaf)?;
        let id = info.spiffe_id()?;
        info.check_leaf_usage()?;
        let key = CertifiedKey::from_der(chain, key, &provider()).map_err(|err| match err {
            rustls::Error::InconsistentKeys(_) => IdentityError::KeyMismatch,
            other => IdentityError::Key(other.to_string()),
        })?;
        Ok(Identity {
            key: Arc::new(key),
            id,
            info,
        })
    }

    /// The SPIFFE ID of the leaf.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.id
    }

    /// The leaf's serial, validity and usages.
    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// The chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.key.cert
    }

    /// The chain and signing key as rustls uses them.
    pub(crate) fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.key
    }
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, IdentityError> {
    std::fs::read(path).map_err(|source| IdentityError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every `CERTIFICATE` section of PEM text, in order; at least one.
pub(crate) fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| IdentityError::Pem(format!("not valid PEM: {err}")))?;
    if certs.is_empty() {
        return Err(IdentityError::Pem("no CERTIFICATE section found".into()));
    }
    Ok(certs)
}

/// The first private key section of PEM text.
fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, IdentityError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|err| match err {
        rustls::pki_types::pem::Error::NoItemsFound => {
            IdentityError::Pem("no PRIVATE KEY section found".into())
        }
        other => IdentityError::Pem(format!("not valid PEM: {other}")),
    })
}
