//! Why a peer's certificate was refused: a small closed set of reasons for logs and metrics.
//!
//! The verifiers of [`crate::tls`] report their own checks (trust domain, identity, key usage)
//! as a [`Refusal`] wrapped in rustls' `CertificateError::Other`; [`Refusal::from_rustls`]
//! unwraps it again, and classifies rustls' and webpki's own errors (unknown issuer, expiry,
//! extended key usage), so that one function gives the reason of any failed handshake.

use std::fmt;
use std::io;
use std::sync::Arc;

use rustls::{AlertDescription, CertificateError, OtherError};

/// Why a handshake refused the peer's certificate. `as_str` is the stable label for metrics
/// (`mesh_tls_refused_total{reason="expired"}`) and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefusalReason {
    /// The chain does not lead to a root of the trust bundle.
    UnknownCa,
    /// The certificate (or one in its chain) is past its `notAfter`.
    Expired,
    /// The certificate (or one in its chain) is before its `notBefore`.
    NotYetValid,
    /// The certificate's SPIFFE ID is in another trust domain.
    ForeignTrustDomain,
    /// The server's SPIFFE ID is not the service the client meant to reach.
    WrongIdentity,
    /// The certificate may not be used this way: missing `clientAuth`/`serverAuth` extended
    /// key usage, no `digitalSignature` key usage, or a CA certificate used as a leaf.
    BadKeyUsage,
    /// The peer presented no certificate.
    NoCertificate,
    /// The control plane revoked the certificate's serial.
    Revoked,
    /// Anything else: a malformed certificate, a bad signature, no SPIFFE ID...
    Other,
}

impl RefusalReason {
    /// Every reason, in declaration order (to pre-register metrics).
    pub const ALL: [RefusalReason; 9] = [
        RefusalReason::UnknownCa,
        RefusalReason::Expired,
        RefusalReason::NotYetValid,
        RefusalReason::ForeignTrustDomain,
        RefusalReason::WrongIdentity,
        RefusalReason::BadKeyUsage,
        RefusalReason::NoCertificate,
        RefusalReason::Revoked,
        RefusalReason::Other,
    ];

    /// The stable, kebab-case label: `unknown-ca`, `expired`, `not-yet-valid`,
    /// `foreign-trust-domain`, `wrong-identity`, `bad-key-usage`, `no-certificate`, `revoked`,
    /// `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::UnknownCa => "unknown-ca",
            RefusalReason::Expired => "expired",
            RefusalReason::NotYetValid => "not-yet-valid",
            RefusalReason::ForeignTrustDomain => "foreign-trust-domain",
            RefusalReason::WrongIdentity => "wrong-identity",
            RefusalReason::BadKeyUsage => "bad-key-usage",
            RefusalReason::NoCertificate => "no-certificate",
            RefusalReason::Revoked => "revoked",
            RefusalReason::Other => "other",
        }
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused certificate: the reason, and a sentence for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The class of the refusal.
    pub reason: RefusalReason,
    /// What exactly was wrong, for people.
    pub detail: String,
}

impl Refusal {
    /// A refusal for `reason`, explained by `detail`.
    pub fn new(reason: RefusalReason, detail: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            detail: detail.into(),
        }
    }

    /// The refusal as rustls' error, so a verifier can return it and [`Refusal::from_rustls`]
    /// can recover it on the other side of the handshake API.
    pub(crate) fn into_rustls(self) -> rustls::Error {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(self))))
    }

    /// Classifies a handshake error. Errors raised by this side's verification give their
    /// exact reason; an alert from the peer gives what the alert says (the peer refused us:
    /// `certificate_expired` covers both expired and not yet valid); anything else is
    /// [`RefusalReason::Other`].
    pub fn from_rustls(error: &rustls::Error) -> Refusal {
        use RefusalReason as R;
        let reason = match error {
            rustls::Error::InvalidCertificate(cert) => match cert {
                CertificateError::Other(OtherError(inner)) => {
                    if let Some(ours) = inner.downcast_ref::<Refusal>() {
                        return ours.clone();
                    }
                    R::Other
                }
                CertificateError::UnknownIssuer => R::UnknownCa,
                CertificateError::Revoked => R::Revoked,
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => R::Expired,
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    R::NotYetValid
                }
                CertificateError::InvalidPurpose
                | CertificateError::InvalidPurposeContext { .. } => R::BadKeyUsage,
                _ => R::Other,
            },
            rustls::Error::NoCertificatesPresented => R::NoCertificate,
            rustls::Error::AlertReceived(alert) => match alert {
                AlertDescription::UnknownCA => R::UnknownCa,
                AlertDescription::CertificateExpired => R::Expired,
                AlertDescription::CertificateRevoked => R::Revoked,
                AlertDescription::CertificateRequired => R::NoCertificate,
                AlertDescription::UnsupportedCertificate => R::BadKeyUsage,
                _ => R::Other,
            },
            _ => R::Other,
        };
        let detail = match error {
            rustls::Error::NoCertificatesPresented => "the peer presented no certificate".into(),
            rustls::Error::AlertReceived(alert) => {
                format!("the peer refused the handshake: {alert:?}")
            }
            other => other.to_string(),
        };
        Refusal { reason, detail }
    }

    /// Classifies an I/O error from a TLS stream (tokio-rustls reports handshake failures as
    /// `io::Error`s wrapping the rustls error); `None` when it is not a TLS error (reset,
    /// timeout...).
    pub fn from_io(error: &io::Error) -> Option<Refusal> {
        let inner = error.get_ref()?;
        let tls = inner.downcast_ref::<rustls::Error>()?;
        Some(Refusal::from_rustls(tls))
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "certificate refused ({}): {}", self.reason, self.detail)
    }
}

impl std::error::Error for Refusal {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_stable_and_distinct() {
        let labels: Vec<_> = RefusalReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            labels,
            [
                "unknown-ca",
                "expired",
                "not-yet-valid",
                "foreign-trust-domain",
                "wrong-identity",
                "bad-key-usage",
                "no-certificate",
                "revoked",
                "other"
            ]
        );
    }

    #[test]
    fn rustls_errors_classify() {
        let of = |e: rustls::Error| Refusal::from_rustls(&e).reason;
        assert_eq!(
            of(CertificateError::UnknownIssuer.into()),
            RefusalReason::UnknownCa
        );
        assert_eq!(of(CertificateError::Expired.into()), RefusalReason::Expired);
        assert_eq!(
            of(CertificateError::NotValidYet.into()),
            RefusalReason::NotYetValid
        );
        assert_eq!(
            of(CertificateError::InvalidPurpose.into()),
            RefusalReason::BadKeyUsage
        );
        assert_eq!(
            of(CertificateError::BadEncoding.into()),
            RefusalReason::Other
        );
        assert_eq!(
            of(rustls::Error::NoCertificatesPresented),
            RefusalReason::NoCertificate
        );
        assert_eq!(
            of(rustls::Error::AlertReceived(
                AlertDescription::CertificateRequired
            )),
            RefusalReason::NoCertificate
        );
    }

    #[test]
    fn our_refusals_survive_the_trip_through_rustls() {
        let ours = Refusal::new(RefusalReason::WrongIdentity, "expected payments");
        let err = ours.clone().into_rustls();
        assert_eq!(Refusal::from_rustls(&err), ours);
        let io = io::Error::new(io::ErrorKind::InvalidData, err);
        assert_eq!(Refusal::from_io(&io), Some(ours));
        assert_eq!(
            Refusal::from_io(&io::Error::from(io::ErrorKind::ConnectionReset)),
            None
        );
    }
}
