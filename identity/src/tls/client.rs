//! The outbound side: a client config that accepts only the service it meant to reach.
//!
//! webpki checks the chain against the bundle (and the `serverAuth` usage); the server name
//! is ignored, since SPIFFE certificates carry a URI SAN and not DNS names. Then the leaf's
//! SPIFFE ID must be exactly the expected one: an address that answers with a valid mesh
//! certificate of another service is refused (`wrong-identity`).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, Resumption};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::bundle::TrustBundle;
use crate::error::IdentityError;
use crate::identity::Identity;
use crate::refusal::{Refusal, RefusalReason};
use crate::revoked::RevokedSerials;
use crate::spiffe::SpiffeId;
use crate::tls::source::{fixed, CurrentCert, Source};
use crate::tls::{provider, verify, Alpn};

/// A client config presenting `identity`, trusting `bundle`, that completes a handshake only
/// with a server whose SPIFFE ID is `expected`, offering `alpn`. TLS 1.3 only; no SNI.
///
/// For credentials that rotate, use [`Credentials::client_config`](crate::Credentials::client_config).
pub fn client_config(
    identity: &Identity,
    bundle: &TrustBundle,
    expected: &SpiffeId,
    alpn: Alpn,
) -> Result<Arc<ClientConfig>, IdentityError> {
    build(
        fixed(identity, bundle)?,
        expected.clone(),
        alpn,
        Arc::default(),
    )
}

/// The client config over a (possibly changing) source.
pub(crate) fn build(
    source: Source,
    expected: SpiffeId,
    alpn: Alpn,
    revoked: Arc<RevokedSerials>,
) -> Result<Arc<ClientConfig>, IdentityError> {
    let verifier = Arc::new(MeshServerVerifier {
        source: Arc::clone(&source),
        expected,
        revoked,
    });
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(CurrentCert(source)));
    config.alpn_protocols = vec![alpn.id().to_vec()];
    // No resumption: a resumed session would skip the server certificate's verification.
    config.resumption = Resumption::disabled();
    // The server does not choose a certificate by name, and SNI would name the service in
    // clear text.
    config.enable_sni = false;
    Ok(Arc::new(config))
}

/// The name to pass to `TlsConnector::connect`. Not sent (no SNI) and not verified (the
/// SPIFFE ID is); it is the expected trust domain, for rustls' and tokio-rustls' logs.
pub fn server_name(expected: &SpiffeId) -> ServerName<'static> {
    ServerName::try_from(expected.trust_domain().as_str().to_owned()).unwrap_or(
        ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into()),
    )
}

/// Chain verification against the current bundle, then the expected SPIFFE ID.
#[derive(Debug)]
struct MeshServerVerifier {
    source: Source,
    expected: SpiffeId,
    revoked: Arc<RevokedSerials>,
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let current = self.source.load();
        let info = verify::leaf(end_entity)?;
        self.revoked.check(&info)?;
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            current.bundle.roots(),
            intermediates,
            now,
            provider().signature_verification_algorithms.all,
        )?;
        let found = verify::identity_in(&info, self.expected.trust_domain())
            .map_err(Refusal::into_rustls)?;
        if found != self.expected {
            return Err(Refusal::new(
                RefusalReason::WrongIdentity,
                format!("the server is {found}, not {}", self.expected),
            )
            .into_rustls());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify::tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify::tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        verify::schemes()
    }
}
