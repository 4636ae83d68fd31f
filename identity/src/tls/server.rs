//! The inbound side: a server config that requires a client certificate from the trust
//! bundle, in this workload's trust domain, and the peer's SPIFFE ID after the handshake.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::NoServerSessionStorage;
use rustls::{
    DigitallySignedStruct, DistinguishedName, ServerConfig, ServerConnection, SignatureScheme,
};

use crate::bundle::TrustBundle;
use crate::error::IdentityError;
use crate::identity::Identity;
use crate::refusal::{Refusal, RefusalReason};
use crate::revoked::RevokedSerials;
use crate::spiffe::{SpiffeId, TrustDomain};
use crate::tls::source::{fixed, CurrentCert, Source};
use crate::tls::{provider, verify, ALPN_H2, ALPN_HTTP1};

/// A server config presenting `identity` and requiring a client certificate that chains to
/// `bundle` and carries a SPIFFE ID in `identity`'s trust domain. TLS 1.3 only; ALPN `h2`
/// and `http/1.1` (the proxy serves the connection by `alpn_protocol()`).
///
/// For credentials that rotate, use [`Credentials::server_config`](crate::Credentials::server_config).
pub fn server_config(
    identity: &Identity,
    bundle: &TrustBundle,
) -> Result<Arc<ServerConfig>, IdentityError> {
    build(fixed(identity, bundle)?, Arc::default())
}

/// The server config over a (possibly changing) source.
pub(crate) fn build(
    source: Source,
    revoked: Arc<RevokedSerials>,
) -> Result<Arc<ServerConfig>, IdentityError> {
    let verifier = Arc::new(MeshClientVerifier {
        source: Arc::clone(&source),
        revoked,
    });
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(CurrentCert(source)));
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    // No resumption: a resumed session would skip the client certificate's verification.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The SPIFFE ID the client proved, after the handshake. The verifier already refused any
/// other case; this re-checks, so that a misconfigured acceptor cannot pass an
/// unauthenticated peer as an identity.
pub fn peer_identity(
    conn: &ServerConnection,
    trust_domain: &TrustDomain,
) -> Result<SpiffeId, Refusal> {
    let leaf = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or_else(|| {
            Refusal::new(
                RefusalReason::NoCertificate,
                "the client presented no certificate",
            )
        })?;
    let info = crate::cert::CertInfo::parse(leaf)
        .map_err(|err| Refusal::new(RefusalReason::Other, err.to_string()))?;
    verify::identity_in(&info, trust_domain)
}

/// webpki's client verification over the current bundle, then the trust domain.
#[derive(Debug)]
struct MeshClientVerifier {
    source: Source,
    revoked: Arc<RevokedSerials>,
}

impl ClientCertVerifier for MeshClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No hints: the client has one certificate and always sends it.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let current = self.source.load();
        let info = verify::leaf(end_entity)?;
        self.revoked.check(&info)?;
        current
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)?;
        verify::identity_in(&info, current.identity.spiffe_id().trust_domain())
            .map_err(Refusal::into_rustls)?;
        Ok(ClientCertVerified::assertion())
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
