//! `meshc ca issue SERVICE --ca DIR [--trust-domain D] [--ttl 24h] [--dns NAME]... [--ip ADDR]... --out OUTDIR`

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use mesh_identity::ca::{dns_name, LeafOptions};
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
    /// Also name this DNS host in the certificate (repeatable), for clients that check the
    /// host name they dialled (`curl --cacert bundle.pem https://NAME:PORT/`).
    #[arg(long = "dns", value_name = "NAME", value_parser = dns_name)]
    dns: Vec<String>,
    /// Also name this IP address in the certificate (repeatable), for clients that dial an
    /// address (`curl --cacert bundle.pem https://127.0.0.1:PORT/`).
    #[arg(long = "ip", value_name = "ADDR")]
    ip: Vec<IpAddr>,
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
    let options = LeafOptions {
        dns_names: args.dns.clone(),
        ip_addresses: args.ip.clone(),
        ..LeafOptions::ttl(args.ttl)
    };
    let mut issued = match ca.issue_with(&id, &options) {
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
    let hosts: Vec<String> = info
        .dns_names
        .iter()
        .map(|n| format!("DNS:{n}"))
        .chain(info.ip_addresses.iter().map(|ip| format!("IP:{ip}")))
        .collect();
    let hosts = if hosts.is_empty() {
        String::new()
    } else {
        format!("\n  also for {}", hosts.join(", "))
    };
    let text = format!(
        "issued {id} (serial {}, valid until {}){hosts}\n  {}\n  {}\n  {}\n",
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
