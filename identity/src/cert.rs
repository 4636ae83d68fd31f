//! What the mesh reads out of an X.509 certificate: SPIFFE ID, serial, validity and usages.
//!
//! The one place that parses certificates with `x509-parser` (webpki verifies chains but
//! exposes neither URI SANs nor key usages).

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::extensions::GeneralName;

use crate::error::IdentityError;
use crate::refusal::{Refusal, RefusalReason};
use crate::spiffe::{SpiffeId, TrustDomain};

/// The fields of a certificate the mesh looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The serial number in lowercase hex, without leading zero bytes.
    pub serial: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// The URI subject alternative names, in order.
    pub uris: Vec<String>,
    /// The DNS name subject alternative names, in order (not part of the mesh identity).
    pub dns_names: Vec<String>,
    /// The IP address subject alternative names, in order (not part of the mesh identity).
    pub ip_addresses: Vec<IpAddr>,
    /// Basic constraints say this is a CA.
    pub is_ca: bool,
    /// The key usage extension, when present: whether it allows `digitalSignature`.
    pub digital_signature: Option<bool>,
    /// The extended key usage extension, when present: (`serverAuth`, `clientAuth`).
    pub extended_key_usage: Option<(bool, bool)>,
}

impl CertInfo {
    /// Parses a DER certificate.
    pub fn parse(der: &[u8]) -> Result<CertInfo, IdentityError> {
        let bad = |what: &str, err: &dyn std::fmt::Display| {
            IdentityError::Certificate(format!("{what}: {err}"))
        };
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| bad("not X.509 DER", &e))?;
        let (mut uris, mut dns_names, mut ip_addresses) = (Vec::new(), Vec::new(), Vec::new());
        if let Some(san) = cert
            .subject_alternative_name()
            .map_err(|e| bad("subject alternative names", &e))?
        {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(uri) => uris.push((*uri).to_owned()),
                    GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                    GeneralName::IPAddress(bytes) => {
                        if let Some(ip) = ip_address(bytes) {
                            ip_addresses.push(ip);
                        }
                    }
                    _ => {}
                }
            }
        }
        let is_ca = cert
            .basic_constraints()
            .map_err(|e| bad("basic constraints", &e))?
            .is_some_and(|bc| bc.value.ca);
        let digital_signature = cert
            .key_usage()
            .map_err(|e| bad("key usage", &e))?
            .map(|ku| ku.value.digital_signature());
        let extended_key_usage = cert
            .extended_key_usage()
            .map_err(|e| bad("extended key usage", &e))?
            .map(|eku| {
                (
                    eku.value.any || eku.value.server_auth,
                    eku.value.any || eku.value.client_auth,
                )
            });
        let validity = cert.validity();
        Ok(CertInfo {
            serial: serial_hex(cert.raw_serial()),
            not_before: system_time(validity.not_before.timestamp()),
            not_after: system_time(validity.not_after.timestamp()),
            uris,
            dns_names,
            ip_addresses,
            is_ca,
            digital_signature,
            extended_key_usage,
        })
    }

    /// The certificate's SPIFFE ID: its one URI SAN (an X509-SVID has exactly one), which must
    /// be a valid workload SPIFFE ID. Refused with [`RefusalReason::Other`] otherwise.
    pub fn spiffe_id(&self) -> Result<SpiffeId, Refusal> {
        match self.uris.as_slice() {
            [] => Err(Refusal::new(
                RefusalReason::Other,
                "the certificate carries no SPIFFE ID (no URI subject alternative name)",
            )),
            [uri] => SpiffeId::parse(uri).map_err(|err| Refusal::new(RefusalReason::Other, err.to_string())),
            many => Err(Refusal::new(
                RefusalReason::Other,
                format!(
                    "the certificate carries {} URI names ({}); a SPIFFE certificate has exactly one",
                    many.len(),
                    many.join(", ")
                ),
            )),
        }
    }

    /// For a CA certificate: the trust domain it names, when its one URI SAN is a trust
    /// domain's SPIFFE ID (`spiffe://shop.example`), as `ca init --trust-domain` writes it.
    pub fn ca_trust_domain(&self) -> Option<TrustDomain> {
        match self.uris.as_slice() {
            [uri] => TrustDomain::from_id(uri).ok(),
            _ => None,
        }
    }

    /// Refuses a certificate that may not authenticate a TLS peer: a CA certificate, or a key
    /// usage extension without `digitalSignature`. (The extended key usage is webpki's job.)
    pub fn check_leaf_usage(&self) -> Result<(), Refusal> {
        if self.is_ca {
            return Err(Refusal::new(
                RefusalReason::BadKeyUsage,
                "a CA certificate cannot be a workload's certificate",
            ));
        }
        if self.digital_signature == Some(false) {
            return Err(Refusal::new(
                RefusalReason::BadKeyUsage,
                "the certificate's key usage does not allow digitalSignature",
            ));
        }
        Ok(())
    }
}

/// The SPIFFE ID of a DER certificate (see [`CertInfo::spiffe_id`]).
pub fn spiffe_id_of(der: &[u8]) -> Result<SpiffeId, Refusal> {
    CertInfo::parse(der)
        .map_err(|err| Refusal::new(RefusalReason::Other, err.to_string()))?
        .spiffe_id()
}

/// The subject public key (the bit string's bytes) of a DER certificate.
pub(crate) fn public_key_bits(der: &[u8]) -> Result<Vec<u8>, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| IdentityError::Certificate(format!("not X.509 DER: {e}")))?;
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

/// Whether the DER certificate `der` carries a valid signature by `issuer_der`'s key.
pub(crate) fn is_signed_by(der: &[u8], issuer_der: &[u8]) -> bool {
    let (Ok((_, cert)), Ok((_, issuer))) = (
        x509_parser::parse_x509_certificate(der),
        x509_parser::parse_x509_certificate(issuer_der),
    ) else {
        return false;
    };
    cert.verify_signature(Some(issuer.public_key())).is_ok()
}

/// A time as RFC 3339 UTC to the second, `2026-05-01T12:00:00Z`, for logs and command output.
pub fn format_utc(time: SystemTime) -> String {
    let t = time::OffsetDateTime::from(time);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// An IP address SAN's 4 or 16 bytes (anything else is not an address).
fn ip_address(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn serial_hex(raw: &[u8]) -> String {
    let start = raw
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    raw[start..].iter().map(|b| format!("{b:02x}")).collect()
}

fn system_time(unix: i64) -> SystemTime {
    match u64::try_from(unix) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_print_without_leading_zeros() {
        assert_eq!(serial_hex(&[0, 0x1f, 0xa0]), "1fa0");
        assert_eq!(serial_hex(&[0]), "00");
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(
            format_utc(UNIX_EPOCH + Duration::from_secs(86_400 + 61)),
            "1970-01-02T00:01:01Z"
        );
    }

    #[test]
    fn times_before_the_epoch_convert() {
        assert_eq!(system_time(-10), UNIX_EPOCH - Duration::from_secs(10));
        assert_eq!(system_time(10), UNIX_EPOCH + Duration::from_secs(10));
    }
}
