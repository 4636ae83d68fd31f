//! `ca issue`: workload certificates. The leaf names the workload by one URI SAN
//! (`spiffe://<domain>/<service>`, no common name), allows `digitalSignature` and both TLS
//! client and server authentication, and has a random serial. It may also name DNS names and
//! IP addresses (`ca issue --dns/--ip`), for clients that check those instead.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};

use super::files::{self, PRIVATE, PUBLIC};
use super::names::dns_name;
use super::Ca;
use crate::cert::{format_utc, CertInfo};
use crate::error::IdentityError;
use crate::reload::IdentityPaths;
use crate::spiffe::SpiffeId;
use crate::tls::provider;

/// How far back a leaf's validity starts, for peers whose clock lags behind the CA's.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// A certificate's validity period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Start.
    pub not_before: SystemTime,
    /// End.
    pub not_after: SystemTime,
}

impl Validity {
    /// From five minutes ago (clock skew) to `ttl` from now.
    pub fn ttl(ttl: Duration) -> Validity {
        let now = SystemTime::now();
        Validity {
            not_before: now - BACKDATE,
            not_after: now + ttl,
        }
    }
}

/// What a leaf allows and names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafOptions {
    /// The validity period.
    pub validity: Validity,
    /// Extended key usage `serverAuth` (the inbound side of a sidecar).
    pub server_auth: bool,
    /// Extended key usage `clientAuth` (the outbound side).
    pub client_auth: bool,
    /// DNS names beside the SPIFFE ID (see [`dns_name`](super::dns_name)), for clients that
    /// check the host name they dialled; the mesh itself ignores them.
    pub dns_names: Vec<String>,
    /// IP addresses beside the SPIFFE ID, for clients that dial an address.
    pub ip_addresses: Vec<IpAddr>,
}

impl LeafOptions {
    /// A sidecar's certificate: both usages, valid for `ttl` (see [`Validity::ttl`]).
    pub fn ttl(ttl: Duration) -> LeafOptions {
        LeafOptions {
            validity: Validity::ttl(ttl),
            server_auth: true,
            client_auth: true,
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
        }
    }
}

/// A signed certificate with what a workload needs next to it.
#[derive(Debug, Clone)]
pub struct SignedCert {
    /// The leaf then the intermediate, if any: `cert.pem`.
    pub cert_pem: String,
    /// The roots to trust: `bundle.pem`.
    pub bundle_pem: String,
    /// The leaf's serial, validity and names.
    pub info: CertInfo,
}

/// A certificate issued with a new key pair.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert: SignedCert,
    /// The new private key (PKCS#8 PEM): `key.pem`.
    pub key_pem: String,
}

impl Issued {
    /// Writes `cert.pem`, `key.pem` (mode 0600) and `bundle.pem` into `dir` (created if
    /// missing), each replaced atomically; the bundle first, then the key, then the
    /// certificate, so that a watching proxy that reads between two writes finds the new
    /// bundle already in place and, at worst, a key that does not match yet (which it
    /// refuses until the certificate follows).
    pub fn write_to(&self, dir: &Path) -> Result<IdentityPaths, IdentityError> {
        files::create_dir(dir, false)?;
        let paths = IdentityPaths::in_dir(dir);
        files::write(&paths.bundle, self.cert.bundle_pem.as_bytes(), PUBLIC)?;
        files::write(&paths.key, self.key_pem.as_bytes(), PRIVATE)?;
        files::write(&paths.cert, self.cert.cert_pem.as_bytes(), PUBLIC)?;
        Ok(paths)
    }
}

impl Ca {
    /// Issues a sidecar certificate for `id`, valid for `ttl`, with a new ECDSA P-256 key.
    pub fn issue(&self, id: &SpiffeId, ttl: Duration) -> Result<Issued, IdentityError> {
        self.issue_with(id, &LeafOptions::ttl(ttl))
    }

    /// Issues a certificate for `id` with explicit validity and usages (tests use it for
    /// expired, not-yet-valid and server-only certificates).
    pub fn issue_with(
        &self,
        id: &SpiffeId,
        options: &LeafOptions,
    ) -> Result<Issued, IdentityError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = self.sign_leaf(id, options, &key)?;
        Ok(Issued {
            cert,
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a leaf for `id` over `public_key`.
    pub(super) fn sign_leaf(
        &self,
        id: &SpiffeId,
        options: &LeafOptions,
        public_key: &impl PublicKeyData,
    ) -> Result<SignedCert, IdentityError> {
        if let Some(domain) = &self.trust_domain {
            if id.trust_domain() != domain {
                return Err(IdentityError::IssueRefused(format!(
                    "{id} is outside this CA's trust domain {domain}"
                )));
            }
        }
        let Validity {
            not_before,
            not_after,
        } = options.validity;
        if not_after <= not_before {
            return Err(IdentityError::IssueRefused(
                "the validity period ends before it starts".into(),
            ));
        }
        let signer = self.signer();
        if not_after > signer.info.not_after {
            return Err(IdentityError::IssueRefused(format!(
                "the certificate would outlive its CA (valid until {}); use a shorter TTL",
                format_utc(signer.info.not_after)
            )));
        }
        if !options.server_auth && !options.client_auth {
            return Err(IdentityError::IssueRefused(
                "a workload certificate needs serverAuth or clientAuth".into(),
            ));
        }

        let mut params = CertificateParams::default();
        // No subject: the identity is the URI SAN alone (rcgen then marks the SAN critical,
        // as RFC 5280 requires for an empty subject). Host names and addresses follow it,
        // each once, in the order given.
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(
            id.to_string().try_into().map_err(IdentityError::Generate)?,
        )];
        for name in &options.dns_names {
            let san = SanType::DnsName(dns_name(name)?.try_into()?);
            if !params.subject_alt_names.contains(&san) {
                params.subject_alt_names.push(san);
            }
        }
        for ip in &options.ip_addresses {
            let san = SanType::IpAddress(*ip);
            if !params.subject_alt_names.contains(&san) {
                params.subject_alt_names.push(san);
            }
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if options.server_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if options.client_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;

        let issuer = Issuer::from_ca_cert_der(&signer.der, &signer.key)?;
        let leaf = params.signed_by(public_key, &issuer)?;
        let mut cert_pem = leaf.pem();
        if !cert_pem.ends_with('\n') {
            cert_pem.push('\n');
        }
        cert_pem.push_str(self.chain_pem());
        Ok(SignedCert {
            cert_pem,
            bundle_pem: self.bundle_pem(),
            info: CertInfo::parse(leaf.der())?,
        })
    }
}

/// 16 random bytes (128 bits, above the CA/Browser Forum's 64) from the system's secure
/// generator, positive and with a non-zero first byte so that it encodes in 16 bytes.
pub(super) fn random_serial() -> Result<SerialNumber, IdentityError> {
    let mut bytes = [0u8; 16];
    provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| IdentityError::IssueRefused("the system's random generator failed".into()))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}
