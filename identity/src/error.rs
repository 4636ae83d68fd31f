//! `IdentityError`: everything that can go wrong reading, writing, issuing or loading credentials.

use std::io;
use std::path::PathBuf;

use crate::refusal::Refusal;

/// An error of this crate. Peer refusals (a handshake's certificate check) are
/// [`IdentityError::Refused`], which carries a [`RefusalReason`](crate::RefusalReason).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A file could not be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file or directory could not be written.
    #[error("cannot write `{}`: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file was read but its content is wrong.
    #[error("`{}`: {source}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: Box<IdentityError>,
    },
    /// PEM text that holds no usable section of the kind wanted.
    #[error("{0}")]
    Pem(String),
    /// A certificate that does not parse or lacks what the mesh needs.
    #[error("invalid certificate: {0}")]
    Certificate(String),
    /// A private key that does not parse or is of an unsupported kind.
    #[error("invalid private key: {0}")]
    Key(String),
    /// The private key is not the one of the certificate.
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    /// Not a valid SPIFFE ID.
    #[error("`{input}` is not a valid SPIFFE ID: {problem}")]
    SpiffeId {
        /// What was given.
        input: String,
        /// The rule it breaks.
        problem: &'static str,
    },
    /// Not a valid trust domain name.
    #[error("`{input}` is not a valid trust domain: {problem}")]
    TrustDomain {
        /// What was given.
        input: String,
        /// The rule it breaks.
        problem: &'static str,
    },
    /// Not a valid DNS name for a certificate.
    #[error("`{input}` is not a valid DNS name: {problem}")]
    DnsName {
        /// What was given.
        input: String,
        /// The rule it breaks.
        problem: &'static str,
    },
    /// Not a valid time-to-live (`24h`, `30m`, `7d`).
    #[error("`{input}` is not a valid TTL: {problem}")]
    Ttl {
        /// What was given.
        input: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// `ca init` on a directory that already holds a CA, without `force`.
    #[error("`{}` already holds a CA; pass --force to replace it (every certificate it issued stops being trusted)", .0.display())]
    CaExists(PathBuf),
    /// A CA directory that is missing files or holds inconsistent ones.
    #[error("the CA in `{}` is unusable: {problem}", dir.display())]
    CaInvalid {
        /// The CA directory.
        dir: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The CA refuses to issue this certificate (foreign trust domain, outliving the CA...).
    #[error("the CA refuses to issue: {0}")]
    IssueRefused(String),
    /// A certificate signing request that is malformed or asks for the wrong identity.
    #[error("certificate signing request refused: {0}")]
    Csr(String),
    /// Certificate generation or signing failed.
    #[error("cannot generate the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A peer's certificate was refused.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// rustls refused a configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

impl IdentityError {
    /// Attaches the file whose content this error is about.
    pub(crate) fn in_file(self, path: impl Into<PathBuf>) -> IdentityError {
        IdentityError::InFile {
            path: path.into(),
            source: Box::new(self),
        }
    }

    /// Whether the error is about reaching files at all (unreadable, unwritable) rather than
    /// about what they hold: the commands exit 2 for these, 1 for the others.
    pub fn is_io(&self) -> bool {
        matches!(
            self,
            IdentityError::Read { .. } | IdentityError::Write { .. }
        )
    }
}
