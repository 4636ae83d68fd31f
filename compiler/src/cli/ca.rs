//! `meshc ca`: the mesh certificate authority. `init` creates one in a directory, `issue`
//! writes a workload's `cert.pem`, `key.pem` and `bundle.pem` (see `docs/identity.md`).
//!
//! Exit status: 0 done; 1 refused on the merits (a CA already there, a CA directory whose
//! files are inconsistent, a certificate the CA will not issue); 2 could not run (bad
//! arguments, unreadable CA directory, unwritable output).

mod init;
mod issue;

use mesh_identity::IdentityError;

use super::{error, Outcome};

/// `meshc ca SUBCOMMAND`
#[derive(Debug, clap::Args)]
#[command(arg_required_else_help = true)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create a CA: a root (ECDSA P-256, 10 years) and optionally an intermediate.
    Init(init::Args),
    /// Issue a workload certificate: OUTDIR/cert.pem (leaf + chain), key.pem, bundle.pem.
    Issue(issue::Args),
}

/// Runs `meshc ca`.
pub(crate) fn run(args: &Args) -> Outcome {
    match &args.command {
        Command::Init(args) => init::run(args),
        Command::Issue(args) => issue::run(args),
    }
}

/// Reports `err`; status 2 when files could not be reached at all, 1 otherwise.
fn fail(err: &IdentityError) -> Outcome {
    error(err);
    if err.is_io() {
        Outcome::CouldNotRun
    } else {
        Outcome::Failure
    }
}
