//! The credentials a config reads at each handshake: an `ArcSwap` that rotation replaces.
//!
//! Configs hold a [`Source`] rather than a certificate and roots, so a rotation reaches new
//! handshakes without rebuilding configs, and a connection that finished its handshake has
//! nothing left to read from it.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::ResolvesClientCert;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use crate::bundle::TrustBundle;
use crate::error::IdentityError;
use crate::identity::Identity;
use crate::tls::provider;

/// One consistent set of credentials.
#[derive(Debug)]
pub(crate) struct Material {
    pub(crate) identity: Identity,
    pub(crate) bundle: TrustBundle,
    /// webpki's client-certificate verifier over the bundle's roots.
    pub(crate) client_verifier: Arc<dyn ClientCertVerifier>,
}

impl Material {
    pub(crate) fn new(identity: Identity, bundle: TrustBundle) -> Result<Material, IdentityError> {
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(bundle.roots()), provider())
                .build()
                .map_err(|err| IdentityError::Certificate(format!("trust bundle: {err}")))?;
        Ok(Material {
            identity,
            bundle,
            client_verifier,
        })
    }
}

/// The current credentials, shared by every config built from them.
pub(crate) type Source = Arc<ArcSwap<Material>>;

/// A source that never changes.
pub(crate) fn fixed(identity: &Identity, bundle: &TrustBundle) -> Result<Source, IdentityError> {
    Ok(Arc::new(ArcSwap::from_pointee(Material::new(
        identity.clone(),
        bundle.clone(),
    )?)))
}

/// Presents the current certificate, as a server and as a client.
#[derive(Debug)]
pub(crate) struct CurrentCert(pub(crate) Source);

impl CurrentCert {
    fn key(&self) -> Arc<CertifiedKey> {
        Arc::clone(self.0.load().identity.certified_key())
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }
}

impl ResolvesClientCert for CurrentCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
