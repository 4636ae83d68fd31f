//! HTTP/2 over TLS to the control plane: connections, one-shot JSON requests, and the
//! verifier used before the proxy has a certificate of its own.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_identity::{spiffe_id_of, CertInfo, SpiffeId, TrustBundle, TrustDomain};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;

use crate::body::Body;

/// The path of the control plane's SPIFFE ID: `spiffe://<trust domain>/mesh-control`.
pub(crate) const CONTROL_SERVICE: &str = "mesh-control";

/// Connecting and the TLS handshake, each.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A one-shot request, from sending to the end of the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The largest answer read (certificates, module bytes).
const MAX_ANSWER: usize = 64 << 20;

/// Sends requests on one HTTP/2 connection; cheap to clone.
pub(crate) type Sender = SendRequest<Body>;

/// Opens an HTTP/2 connection over TLS to `addr` (`host:port`).
pub(crate) async fn connect(addr: &str, tls: Arc<ClientConfig>) -> Result<Sender, String> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connecting to {addr} timed out"))?
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    // Not sent (no SNI) and not verified (the SPIFFE ID is).
    let name = ServerName::try_from(CONTROL_SERVICE).map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_rustls::TlsConnector::from(tls).connect(name, tcp),
    )
    .await
    .map_err(|_| format!("the TLS handshake with {addr} timed out"))?
    .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP/2 handshake with {addr}: {e}"))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "control plane connection ended");
        }
    });
    Ok(sender)
}

/// A request to the control plane (`https://addr/path`).
pub(crate) fn request(
    addr: &str,
    method: http::Method,
    path: &str,
    body: Body,
) -> Result<http::Request<Body>, String> {
    http::Request::builder()
        .method(method)
        .uri(format!("https://{addr}{path}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(|e| e.to_string())
}

/// Sends `request` and reads the whole answer: its status and body.
pub(crate) async fn exchange(
    sender: &mut Sender,
    request: http::Request<Body>,
) -> Result<(http::StatusCode, Bytes), String> {
    let exchange = async {
        sender.ready().await.map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| "the control plane did not answer in time".to_string())?
}

/// The `error` of a JSON error answer, else the body as text.
pub(crate) fn error_text(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string())
}

/// A client config without a client certificate (bootstrap) that accepts only a control
/// plane whose chain leads to `bundle`. The proxy's own trust domain is not known before the
/// first certificate: the one the bundle's roots name (`meshc ca init --trust-domain`) is
/// the only one accepted for the control plane, whose SPIFFE ID is recorded in `seen` for
/// the CSR.
pub(crate) fn bootstrap_tls(
    bundle: &TrustBundle,
    seen: Arc<Mutex<Option<SpiffeId>>>,
) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    for cert in bundle.certificates() {
        roots.add(cert.clone()).map_err(|e| e.to_string())?;
    }
    let trust_domains: Vec<TrustDomain> = bundle
        .certificates()
        .iter()
        .filter_map(|c| CertInfo::parse(c).ok()?.ca_trust_domain())
        .collect();
    let verifier = Arc::new(ControlVerifier {
        roots: Arc::new(roots),
        trust_domains,
        seen,
    });
    let mut config = ClientConfig::builder_with_provider(mesh_identity::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.enable_sni = false;
    Ok(Arc::new(config))
}

/// The chain against the bundle, then the SPIFFE ID `spiffe://<td>/mesh-control`.
#[derive(Debug)]
struct ControlVerifier {
    roots: Arc<RootCertStore>,
    /// The trust domains the bundle's roots name; empty when none names one.
    trust_domains: Vec<TrustDomain>,
    seen: Arc<Mutex<Option<SpiffeId>>>,
}

/// Whether `id` is the control plane's: exactly `spiffe://<td>/mesh-control` for a trust
/// domain the roots name. Roots that name none (a CA made without `--trust-domain`) leave
/// only the path to check.
fn check_control_id(id: &SpiffeId, trust_domains: &[TrustDomain]) -> Result<(), String> {
    let is_control = |td: &TrustDomain| td.service(CONTROL_SERVICE).is_ok_and(|c| &c == id);
    let ok = if trust_domains.is_empty() {
        id.path() == format!("/{CONTROL_SERVICE}")
    } else {
        trust_domains.iter().any(is_control)
    };
    if ok {
        return Ok(());
    }
    let expected: Vec<String> = trust_domains
        .iter()
        .filter_map(|td| td.service(CONTROL_SERVICE).ok().map(|c| c.to_string()))
        .collect();
    Err(if expected.is_empty() {
        format!("the server is {id}, not the control plane")
    } else {
        format!(
            "the server is {id}, not the control plane ({})",
            expected.join(" or ")
        )
    })
}

impl ServerCertVerifier for ControlVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            mesh_identity::tls::provider()
                .signature_verification_algorithms
                .all,
        )?;
        let id = spiffe_id_of(end_entity).map_err(|r| rustls::Error::General(r.detail))?;
        check_control_id(&id, &self.trust_domains).map_err(rustls::Error::General)?;
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = Some(id);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &mesh_identity::tls::provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &mesh_identity::tls::provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        mesh_identity::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).expect("id")
    }

    #[test]
    fn the_control_plane_is_checked_with_its_trust_domain() {
        let td = vec![TrustDomain::new("shop.example").expect("td")];
        assert!(check_control_id(&id("spiffe://shop.example/mesh-control"), &td).is_ok());
        let err = check_control_id(&id("spiffe://evil.example/mesh-control"), &td)
            .expect_err("another trust domain's control plane");
        assert!(err.contains("spiffe://shop.example/mesh-control"), "{err}");
        assert!(check_control_id(&id("spiffe://shop.example/payments"), &td).is_err());
        // Roots that name no trust domain: only the path can be checked.
        assert!(check_control_id(&id("spiffe://any.example/mesh-control"), &[]).is_ok());
        assert!(check_control_id(&id("spiffe://any.example/payments"), &[]).is_err());
    }
}
