//! The operator API's TLS (`[api] tls = true`, or `cert`/`key`): a certificate the control
//! plane issues itself from the mesh CA for the names clients dial (re-issued at two thirds
//! of its life), or the operator's own chain and key. No client certificates: operators
//! authenticate with the bearer token, which TLS keeps off the network.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use mesh_identity::ca::LeafOptions;
use mesh_identity::{Ca, TrustDomain};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::config::ApiTls;

/// The certificate the API presents.
#[derive(Debug)]
pub struct ApiCert(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for ApiCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

fn certified(chain_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the certificate: {e}"))?;
    if chain.is_empty() {
        return Err("the certificate: no PEM certificate in it".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("the key: {e}"))?;
    let signing = mesh_identity::tls::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("the key: {e}"))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| format!("the key does not match the certificate: {e}"))?;
    Ok(certified)
}

/// Issues the API's certificate from the CA: the control plane's own SPIFFE ID, server
/// authentication only (it cannot be used as a client), and the configured names.
fn issue(
    ca: &Ca,
    td: &TrustDomain,
    dns: &[String],
    ips: &[std::net::IpAddr],
    ttl: Duration,
) -> Result<CertifiedKey, String> {
    let id = td
        .service(crate::tls::CONTROL_SERVICE)
        .map_err(|e| e.to_string())?;
    let options = LeafOptions {
        server_auth: true,
        client_auth: false,
        dns_names: dns.to_vec(),
        ip_addresses: ips.to_vec(),
        ..LeafOptions::ttl(ttl)
    };
    let issued = ca
        .issue_with(&id, &options)
        .map_err(|e| format!("cannot issue the API certificate: {e}"))?;
    certified(issued.cert.cert_pem.as_bytes(), issued.key_pem.as_bytes())
}

/// What re-issues a CA-issued certificate, to be spawned once the control plane runs.
pub type Renewal = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The API's TLS acceptor (`None`: plain HTTP) and, for a CA-issued certificate, the loop
/// that re-issues it. The error names the key at fault.
pub fn acceptor(
    tls: &ApiTls,
    ca: &Arc<Ca>,
    td: &TrustDomain,
    ttl: Duration,
) -> Result<Option<(tokio_rustls::TlsAcceptor, Option<Renewal>)>, String> {
    let (cert, renewal) = match tls {
        ApiTls::Off => return Ok(None),
        ApiTls::Files { cert, key } => {
            let chain = std::fs::read(cert)
                .map_err(|e| format!("key `api.cert`: cannot read `{}`: {e}", cert.display()))?;
            let key_pem = std::fs::read(key)
                .map_err(|e| format!("key `api.key`: cannot read `{}`: {e}", key.display()))?;
            let certified = certified(&chain, &key_pem)
                .map_err(|e| format!("keys `api.cert`/`api.key`: {e}"))?;
            (Arc::new(ApiCert(ArcSwap::from_pointee(certified))), None)
        }
        ApiTls::Ca { dns, ips } => {
            let first = issue(ca, td, dns, ips, ttl).map_err(|e| format!("key `api.tls`: {e}"))?;
            let cert = Arc::new(ApiCert(ArcSwap::from_pointee(first)));
            let (renewed, ca, td, dns, ips) = (
                Arc::clone(&cert),
                Arc::clone(ca),
                td.clone(),
                dns.clone(),
                ips.clone(),
            );
            let task: Renewal = Box::pin(async move {
                loop {
                    tokio::time::sleep(ttl * 2 / 3).await;
                    match issue(&ca, &td, &dns, &ips, ttl) {
                        Ok(key) => {
                            renewed.0.store(Arc::new(key));
                            tracing::info!("operator API certificate renewed");
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot renew the operator API certificate");
                        }
                    }
                }
            });
            (cert, Some(task))
        }
    };
    let mut config = ServerConfig::builder_with_provider(mesh_identity::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("key `api.tls`: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some((
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        renewal,
    )))
}
