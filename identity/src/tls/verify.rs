//! The checks both verifiers make besides webpki's chain verification: the leaf's usages
//! before, its SPIFFE ID after.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::CertificateDer;
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::cert::CertInfo;
use crate::refusal::{Refusal, RefusalReason};
use crate::spiffe::{SpiffeId, TrustDomain};
use crate::tls::provider;

/// Parses the leaf and refuses a CA certificate or one without `digitalSignature`. Done
/// before the chain: webpki reports a CA used as a leaf only as an opaque error.
pub(super) fn leaf(end_entity: &CertificateDer<'_>) -> Result<CertInfo, rustls::Error> {
    let info = CertInfo::parse(end_entity)
        .map_err(|err| Refusal::new(RefusalReason::Other, err.to_string()).into_rustls())?;
    info.check_leaf_usage().map_err(Refusal::into_rustls)?;
    Ok(info)
}

/// The leaf's SPIFFE ID, which must be in `trust_domain`.
pub(super) fn identity_in(
    info: &CertInfo,
    trust_domain: &TrustDomain,
) -> Result<SpiffeId, Refusal> {
    let id = info.spiffe_id()?;
    if id.trust_domain() != trust_domain {
        return Err(Refusal::new(
            RefusalReason::ForeignTrustDomain,
            format!("{id} is not in the trust domain {trust_domain}"),
        ));
    }
    Ok(id)
}

/// A TLS 1.2 handshake signature (never used: the configs allow TLS 1.3 only).
pub(super) fn tls12_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    verify_tls12_signature(
        message,
        cert,
        dss,
        &provider().signature_verification_algorithms,
    )
}

/// A TLS 1.3 handshake signature, with the provider's algorithms.
pub(super) fn tls13_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    verify_tls13_signature(
        message,
        cert,
        dss,
        &provider().signature_verification_algorithms,
    )
}

/// The signature schemes the provider verifies.
pub(super) fn schemes() -> Vec<SignatureScheme> {
    provider()
        .signature_verification_algorithms
        .supported_schemes()
}
