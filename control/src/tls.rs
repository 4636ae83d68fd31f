//! The proxies' listener TLS: the control plane's own certificate (`spiffe://<td>/mesh-control`,
//! re-issued before it expires) and client certificates that are optional at the handshake
//! (bootstrap has none) and required by the handlers that need an identity.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use mesh_identity::{Ca, SpiffeId, TrustDomain};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

/// The name of the control plane's identity under the trust domain.
pub const CONTROL_SERVICE: &str = "mesh-control";

/// The certificate currently presented.
#[derive(Debug)]
pub struct ServerCert(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

impl ServerCert {
    /// Issues the first certificate.
    pub fn issue(ca: &Ca, td: &TrustDomain, ttl: Duration) -> Result<Arc<ServerCert>, String> {
        Ok(Arc::new(ServerCert(ArcSwap::from_pointee(certified(
            ca, td, ttl,
        )?))))
    }

    /// Issues a fresh certificate every two thirds of `ttl`, for as long as the process runs.
    pub async fn renew_forever(self: Arc<Self>, ca: Arc<Ca>, td: TrustDomain, ttl: Duration) {
        loop {
            tokio::time::sleep(ttl * 2 / 3).await;
            match certified(&ca, &td, ttl) {
                Ok(key) => {
                    self.0.store(Arc::new(key));
                    tracing::info!("control plane certificate renewed");
                }
                Err(e) => tracing::error!(error = %e, "cannot renew the control plane certificate"),
            }
        }
    }
}

fn certified(ca: &Ca, td: &TrustDomain, ttl: Duration) -> Result<CertifiedKey, String> {
    let id: SpiffeId = td.service(CONTROL_SERVICE).map_err(|e| e.to_string())?;
    let issued = ca
        .issue(&id, ttl)
        .map_err(|e| format!("cannot issue {id}: {e}"))?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(issued.cert.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
    let key =
        PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).map_err(|e| e.to_string())?;
    let signing = mesh_identity::tls::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| e.to_string())?;
    Ok(CertifiedKey::new(chain, signing))
}

/// The listener's config: TLS 1.3, ALPN `h2`, client certificates verified against the
/// CA's roots when presented, never resumed (each handshake verifies the certificate).
pub fn server_config(ca: &Ca, cert: Arc<ServerCert>) -> Result<Arc<ServerConfig>, String> {
    let mut roots = RootCertStore::empty();
    let bundle = mesh_identity::TrustBundle::from_pem(ca.bundle_pem().as_bytes())
        .map_err(|e| e.to_string())?;
    for root in bundle.certificates() {
        roots.add(root.clone()).map_err(|e| e.to_string())?;
    }
    let provider = mesh_identity::tls::provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .allow_unauthenticated()
            .build()
            .map_err(|e| e.to_string())?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}
