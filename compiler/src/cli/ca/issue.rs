//! `meshc ca issue SERVICE --ca DIR [--trust-domain D] [--ttl 24h] --out OUTDIR`

use std::path::PathBuf;
use std::time::Duration;

use mesh_identity::{format_utc, parse_ttl, Ca, IdentityError, TrustBundle, TrustDomain};

use super::fail;
use crate::cli::{error, write_stdout, Outcome};

/// `meshc ca issue`
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The service: the certificate's identity is spiffe://DOMAIN/SERVICE.
    #[arg(value_name = "SERVICE")]
    service: String,
    /// The CA directory (from `meshc ca init`).
    #[arg(long = "ca", value_name = "DIR")]
    ca: PathBuf,
    /// The trust domain (default: the CA's, if it was created with one).
    #[arg(long, value_name = "DOMAIN", value_parser = TrustDomain::new)]
    trust_domain: Option<TrustDomain>,
    /// How long the certificate is valid: `90s`, `30m`, `24h`, `7d`.
    #[arg(long, value_name = "TTL", default_value = "24h", value_parser = parse_ttl)]
    ttl: Duration,
    /// Where to write cert.pem, key.pem (0600) and bundle.pem (created if missing).
    #[arg(long, value_name = "OUTDIR")]
    out: PathBuf,
    /// Also trust the roots in FILE (repeatable): bundle.pem then holds the old and the new
    /// root during a root rotation.
    #[arg(long = "also-trust", value_name = "FILE")]
    also_trust: Vec<PathBuf>,
}

/// Runs `meshc ca issue`.
pub(crate) fn run(args: &Args) -> Outcome {
    let ca = match Ca::load(&args.ca) {
        Ok(ca) => ca,
        Err(err) => return fail(&err),
    };
    let Some(domain) = args.trust_domain.as_ref().or(ca.trust_domain()) else {
        error(format_args!(
            "the CA in `{}` has no trust domain; pass --trust-domain",
            args.ca.display()
        ));
        return Outcome::CouldNotRun;
    };
    let id = match domain.service(&args.service) {
        Ok(id) => id,
        Err(err) => {
            error(format_args!("SERVICE: {err}"));
            return Outcome::CouldNotRun;
        }
    };
    let mut issued = match ca.issue(&id, args.ttl) {
        Ok(issued) => issued,
        Err(err) => return fail(&err),
    };
    if !args.also_trust.is_empty() {
        match bundle_with(&issued.cert.bundle_pem, &args.also_trust) {
            Ok(pem) => issued.cert.bundle_pem = pem,
            Err(err) => return fail(&err),
        }
    }
    let paths = match issued.write_to(&args.out) {
        Ok(paths) => paths,
        Err(err) => return fail(&err),
    };
    let info = &issued.cert.info;
    let text = format!(
        "issued {id} (serial {}, valid until {})\n  {}\n  {}\n  {}\n",
        info.serial,
        format_utc(info.not_after),
        paths.cert.display(),
        paths.key.display(),
        paths.bundle.display(),
    );
    match write_stdout(&text) {
        Ok(()) => Outcome::Success,
        Err(outcome) => outcome,
    }
}

/// The CA's bundle plus the roots of the `--also-trust` files (each checked, none twice).
fn bundle_with(bundle_pem: &str, files: &[PathBuf]) -> Result<String, IdentityError> {
    let mut bundle = TrustBundle::from_pem(bundle_pem.as_bytes())?;
    for file in files {
        bundle = bundle.merge(&TrustBundle::load(file)?)?;
    }
    Ok(bundle.to_pem())
}
