//! `meshc ca init DIR [--intermediate] [--trust-domain D] [--force]`

use std::path::PathBuf;

use mesh_identity::ca::{InitOptions, INTERMEDIATE_CERT, INTERMEDIATE_KEY, ROOT_CERT, ROOT_KEY};
use mesh_identity::{format_utc, Ca, TrustDomain};

use super::fail;
use crate::cli::{write_stdout, Outcome};

/// `meshc ca init`
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The directory to create the CA in (created if missing, mode 0700).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Also create an intermediate CA that signs the workload certificates, so the root key
    /// can be kept offline.
    #[arg(long)]
    intermediate: bool,
    /// Bind the CA to a trust domain: it then refuses to issue outside it, and `ca issue`
    /// needs no --trust-domain.
    #[arg(long, value_name = "DOMAIN", value_parser = TrustDomain::new)]
    trust_domain: Option<TrustDomain>,
    /// Replace a CA already in DIR (every certificate it issued stops being trusted).
    #[arg(long)]
    force: bool,
}

/// Runs `meshc ca init`.
pub(crate) fn run(args: &Args) -> Outcome {
    let options = InitOptions {
        intermediate: args.intermediate,
        trust_domain: args.trust_domain.clone(),
        force: args.force,
        ..InitOptions::default()
    };
    let ca = match Ca::init(&args.dir, &options) {
        Ok(ca) => ca,
        Err(err) => return fail(&err),
    };
    let mut files = vec![ROOT_CERT, ROOT_KEY];
    if ca.has_intermediate() {
        files.extend([INTERMEDIATE_CERT, INTERMEDIATE_KEY]);
    }
    let domain = ca
        .trust_domain()
        .map_or_else(String::new, |d| format!(" for trust domain {d}"));
    let text = format!(
        "created a CA{domain} in {}: {} (root valid until {})\n",
        args.dir.display(),
        files.join(", "),
        format_utc(ca.root_info().not_after)
    );
    match write_stdout(&text) {
        Ok(()) => Outcome::Success,
        Err(outcome) => outcome,
    }
}
