//! Signing certificate requests: how the control plane will issue certificates to proxies
//! that keep their private key to themselves.

use std::time::Duration;

use rcgen::{CertificateSigningRequestParams, SanType};

use super::issue::{LeafOptions, SignedCert};
use super::Ca;
use crate::error::IdentityError;
use crate::spiffe::SpiffeId;

impl Ca {
    /// Signs a PEM certificate signing request for `expected`, valid for `ttl`. The request's
    /// signature must verify, and its subject alternative names must be exactly the URI
    /// `expected` (the caller authenticated the requester as that workload); everything else
    /// it asks for (subject, usages, CA flag) is ignored and set as for [`Ca::issue`].
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        expected: &SpiffeId,
        ttl: Duration,
    ) -> Result<SignedCert, IdentityError> {
        let request = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|err| IdentityError::Csr(err.to_string()))?;
        let wanted = expected.to_string();
        match request.params.subject_alt_names.as_slice() {
            [SanType::URI(uri)] if uri.as_str() == wanted => {}
            other => {
                return Err(IdentityError::Csr(format!(
                    "it asks for {}; it must ask for exactly the URI {wanted}",
                    describe(other)
                )))
            }
        }
        self.sign_leaf(expected, &LeafOptions::ttl(ttl), &request.public_key)
    }
}

fn describe(names: &[SanType]) -> String {
    if names.is_empty() {
        return "no subject alternative name".into();
    }
    names
        .iter()
        .map(|name| match name {
            SanType::URI(uri) => format!("URI {}", uri.as_str()),
            SanType::DnsName(dns) => format!("DNS {}", dns.as_str()),
            SanType::Rfc822Name(mail) => format!("email {}", mail.as_str()),
            SanType::IpAddress(ip) => format!("IP {ip}"),
            _ => "another name".into(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
