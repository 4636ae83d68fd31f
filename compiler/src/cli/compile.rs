//! `meshc compile`: check a policy and, when it has no error, write its rule table.

use std::path::PathBuf;

use super::check::{check_policy, Report};
use super::{error, plural, write_atomic, write_stderr, Outcome, PolicyArgs};

/// `meshc compile PATH... -o FILE`
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    policy: PolicyArgs,
    /// Where to write the rule table (replaced atomically; parent directories are created).
    #[arg(short = 'o', long = "output", value_name = "FILE", required = true)]
    output: PathBuf,
}

/// Runs `meshc compile`. Writes nothing unless the policy compiles.
pub(crate) fn run(args: &Args) -> Outcome {
    let Report { checked, failed } = match check_policy(&args.policy) {
        Ok(report) => report,
        Err(outcome) => return outcome,
    };
    if failed {
        return Outcome::Failure;
    }
    let Some(table) = checked.table else {
        error("internal: the checker reported no error but built no table; nothing was written");
        return Outcome::CouldNotRun;
    };
    // Proxies refuse a table that fails validation; catch a checker bug here rather than
    // ship a table every proxy would reject.
    if let Err(err) = mesh_table::validate(&table) {
        error(format_args!(
            "internal: the compiled table is invalid ({err}); nothing was written"
        ));
        return Outcome::CouldNotRun;
    }
    let bytes = mesh_table::encode(&table);
    if let Err(err) = write_atomic(&args.output, &bytes) {
        error(format_args!(
            "cannot write `{}`: {err}",
            args.output.display()
        ));
        return Outcome::CouldNotRun;
    }
    let rules: usize = table.authorizations.iter().map(|a| a.rules.len()).sum();
    // The payload checksum from the header: the same digest a proxy reports for the table it
    // runs, so the two can be compared.
    let checksum = mesh_table::checksum_hex(&bytes).unwrap_or_default();
    write_stderr(&format!(
        "compiled {}, {}, {}, {} into {} ({}, sha256 {})\n",
        plural(table.services.len(), "service"),
        plural(table.routes.len(), "route"),
        plural(rules, "authorization rule"),
        plural(table.filters.len(), "filter"),
        args.output.display(),
        plural(bytes.len(), "byte"),
        checksum.get(..12).unwrap_or(&checksum),
    ));
    Outcome::Success
}
