//! The mesh certificate authority: a directory holding a root (and optionally an
//! intermediate) that issues workload certificates.
//!
//! ```text
//! DIR/root.pem  DIR/root.key (0600)                    the root, self-signed
//! DIR/intermediate.pem  DIR/intermediate.key (0600)    optional, signed by the root
//! ```
//!
//! Leaves are signed by the intermediate when there is one, else by the root. The files
//! are the interface: the control plane will load the same directory.

mod csr;
pub(crate) mod files;
mod init;
mod issue;
mod names;

use std::fmt;
use std::path::{Path, PathBuf};

use rcgen::KeyPair;
use rustls::pki_types::CertificateDer;

use crate::cert::{is_signed_by, public_key_bits, CertInfo};
use crate::error::IdentityError;
use crate::identity::{certificates, read};
use crate::spiffe::TrustDomain;

pub use init::InitOptions;
pub use issue::{Issued, LeafOptions, SignedCert, Validity};
pub use names::dns_name;

/// The root's certificate file in a CA directory.
pub const ROOT_CERT: &str = "root.pem";
/// The root's private key file.
pub const ROOT_KEY: &str = "root.key";
/// The intermediate's certificate file (optional).
pub const INTERMEDIATE_CERT: &str = "intermediate.pem";
/// The intermediate's private key file.
pub const INTERMEDIATE_KEY: &str = "intermediate.key";

/// A loaded CA directory.
pub struct Ca {
    dir: PathBuf,
    root: Authority,
    intermediate: Option<Authority>,
    trust_domain: Option<TrustDomain>,
}

/// One CA certificate with its key.
struct Authority {
    /// The PEM text, ending with a newline.
    pem: String,
    der: CertificateDer<'static>,
    key: KeyPair,
    info: CertInfo,
}

impl Ca {
    /// Loads and checks a CA directory: each key matches its certificate, both are CAs, the
    /// intermediate is signed by the root, and they name the same trust domain (if any).
    pub fn load(dir: &Path) -> Result<Ca, IdentityError> {
        std::fs::read_dir(dir).map_err(|source| IdentityError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let invalid = |problem: String| IdentityError::CaInvalid {
            dir: dir.to_owned(),
            problem,
        };
        let root = Authority::load(dir, ROOT_CERT, ROOT_KEY)?;
        let intermediate = match (
            dir.join(INTERMEDIATE_CERT).exists(),
            dir.join(INTERMEDIATE_KEY).exists(),
        ) {
            (false, false) => None,
            (true, true) => Some(Authority::load(dir, INTERMEDIATE_CERT, INTERMEDIATE_KEY)?),
            (true, false) => {
                return Err(invalid(format!(
                    "{INTERMEDIATE_CERT} has no {INTERMEDIATE_KEY}"
                )))
            }
            (false, true) => {
                return Err(invalid(format!(
                    "{INTERMEDIATE_KEY} has no {INTERMEDIATE_CERT}"
                )))
            }
        };
        let trust_domain = root.info.ca_trust_domain();
        if let Some(intermediate) = &intermediate {
            if !is_signed_by(&intermediate.der, &root.der) {
                return Err(invalid(format!(
                    "{INTERMEDIATE_CERT} is not signed by {ROOT_CERT}"
                )));
            }
            if intermediate.info.ca_trust_domain() != trust_domain {
                return Err(invalid(format!(
                    "{INTERMEDIATE_CERT} and {ROOT_CERT} name different trust domains"
                )));
            }
        }
        Ok(Ca {
            dir: dir.to_owned(),
            root,
            intermediate,
            trust_domain,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The trust domain the CA was created for (`ca init --trust-domain`), if any: it then
    /// issues only within it.
    pub fn trust_domain(&self) -> Option<&TrustDomain> {
        self.trust_domain.as_ref()
    }

    /// Whether leaves are signed by an intermediate.
    pub fn has_intermediate(&self) -> bool {
        self.intermediate.is_some()
    }

    /// The root certificate's serial, validity and names.
    pub fn root_info(&self) -> &CertInfo {
        &self.root.info
    }

    /// The trust bundle this CA's workloads need: its root, as PEM.
    pub fn bundle_pem(&self) -> String {
        self.root.pem.clone()
    }

    /// The authority that signs leaves.
    fn signer(&self) -> &Authority {
        self.intermediate.as_ref().unwrap_or(&self.root)
    }

    /// The certificates to send after a leaf (the intermediate, if any), as PEM.
    fn chain_pem(&self) -> &str {
        self.intermediate.as_ref().map_or("", |i| i.pem.as_str())
    }
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("dir", &self.dir)
            .field("root", &self.root.info.serial)
            .field(
                "intermediate",
                &self.intermediate.as_ref().map(|i| &i.info.serial),
            )
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl Authority {
    fn load(dir: &Path, cert_file: &str, key_file: &str) -> Result<Authority, IdentityError> {
        let cert_path = dir.join(cert_file);
        let key_path = dir.join(key_file);
        let pem = String::from_utf8(read(&cert_path)?)
            .map_err(|_| IdentityError::Pem("not UTF-8 text".into()).in_file(&cert_path))?;
        let key_pem = String::from_utf8(read(&key_path)?)
            .map_err(|_| IdentityError::Pem("not UTF-8 text".into()).in_file(&key_path))?;
        let der = match certificates(pem.as_bytes())
            .map_err(|e| e.in_file(&cert_path))?
            .as_slice()
        {
            [one] => one.clone(),
            many => {
                return Err(IdentityError::Pem(format!(
                    "expected one certificate, found {}",
                    many.len()
                ))
                .in_file(&cert_path))
            }
        };
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|err| IdentityError::Key(err.to_string()).in_file(&key_path))?;
        let info = CertInfo::parse(&der).map_err(|e| e.in_file(&cert_path))?;
        if !info.is_ca {
            return Err(
                IdentityError::Certificate("not a CA certificate".into()).in_file(&cert_path)
            );
        }
        if public_key_bits(&der)? != key.public_key_raw() {
            return Err(IdentityError::KeyMismatch.in_file(&key_path));
        }
        let mut pem = pem;
        if !pem.ends_with('\n') {
            pem.push('\n');
        }
        Ok(Authority {
            pem,
            der,
            key,
            info,
        })
    }
}
