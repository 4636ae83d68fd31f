//! `ca init`: a new root (ECDSA P-256, long-lived) and optionally an intermediate under it.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};

use super::files::{self, PRIVATE, PUBLIC};
use super::issue::random_serial;
use super::{Ca, INTERMEDIATE_CERT, INTERMEDIATE_KEY, ROOT_CERT, ROOT_KEY};
use crate::error::IdentityError;
use crate::spiffe::TrustDomain;

/// A year, for validity defaults.
const YEAR: Duration = Duration::from_secs(365 * 86_400);
/// How far back a CA's validity starts, for clocks that lag behind the CA's.
const BACKDATE: Duration = Duration::from_secs(3_600);

/// What `ca init` creates.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Also create an intermediate, signed by the root, that signs the leaves (the root key
    /// can then stay offline).
    pub intermediate: bool,
    /// Record the trust domain in the CA certificates (URI SAN `spiffe://<domain>`, as SPIFFE
    /// allows for signing certificates); the CA then refuses to issue outside it.
    pub trust_domain: Option<TrustDomain>,
    /// Replace a CA already in the directory.
    pub force: bool,
    /// The root's lifetime (default 10 years; the intermediate gets half).
    pub validity: Duration,
}

impl Default for InitOptions {
    fn default() -> InitOptions {
        InitOptions {
            intermediate: false,
            trust_domain: None,
            force: false,
            validity: 10 * YEAR,
        }
    }
}

impl Ca {
    /// Creates a CA in `dir` (created if missing, mode 0700): `root.pem`, `root.key`, and with
    /// `intermediate` also `intermediate.pem`/`.key`. Refuses a directory that already holds
    /// CA files unless `force`.
    pub fn init(dir: &Path, options: &InitOptions) -> Result<Ca, IdentityError> {
        let names = [ROOT_CERT, ROOT_KEY, INTERMEDIATE_CERT, INTERMEDIATE_KEY];
        if !options.force && names.iter().any(|name| dir.join(name).exists()) {
            return Err(IdentityError::CaExists(dir.to_owned()));
        }
        files::create_dir(dir, true)?;

        let now = SystemTime::now();
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let root_params = ca_params(
            "mesh root CA",
            IsCa::Ca(BasicConstraints::Unconstrained),
            options,
            now,
            options.validity,
        )?;
        let root = root_params.self_signed(&root_key)?;
        let intermediate = if options.intermediate {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
            let mut params = ca_params(
                "mesh intermediate CA",
                IsCa::Ca(BasicConstraints::Constrained(0)),
                options,
                now,
                options.validity / 2,
            )?;
            params.use_authority_key_identifier_extension = true;
            let cert = params.signed_by(&key, &Issuer::from_params(&root_params, &root_key))?;
            Some((cert, key))
        } else {
            None
        };

        // Keys first: a reader that finds a certificate finds its key.
        files::write(
            &dir.join(ROOT_KEY),
            root_key.serialize_pem().as_bytes(),
            PRIVATE,
        )?;
        files::write(&dir.join(ROOT_CERT), root.pem().as_bytes(), PUBLIC)?;
        match &intermediate {
            Some((cert, key)) => {
                files::write(
                    &dir.join(INTERMEDIATE_KEY),
                    key.serialize_pem().as_bytes(),
                    PRIVATE,
                )?;
                files::write(&dir.join(INTERMEDIATE_CERT), cert.pem().as_bytes(), PUBLIC)?;
            }
            // A replaced CA must not leave an intermediate of the old root behind.
            None => {
                files::remove(&dir.join(INTERMEDIATE_CERT))?;
                files::remove(&dir.join(INTERMEDIATE_KEY))?;
            }
        }
        Ca::load(dir)
    }
}

/// The parameters of a CA certificate. The common name ends with part of the (random)
/// serial, so that the old and the new root of a rotation have different subjects.
fn ca_params(
    name: &str,
    is_ca: IsCa,
    options: &InitOptions,
    now: SystemTime,
    validity: Duration,
) -> Result<CertificateParams, IdentityError> {
    let serial = random_serial()?;
    let tag: String = serial
        .to_bytes()
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("{name} {tag}"));
    if let Some(domain) = &options.trust_domain {
        dn.push(DnType::OrganizationName, domain.as_str());
        params.subject_alt_names = vec![SanType::URI(
            domain
                .id_uri()
                .try_into()
                .map_err(|err: rcgen::Error| IdentityError::Generate(err))?,
        )];
    }
    params.distinguished_name = dn;
    params.is_ca = is_ca;
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(serial);
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + validity).into();
    Ok(params)
}
