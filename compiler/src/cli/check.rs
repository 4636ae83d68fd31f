//! `meshc check`: load and check a policy, print its diagnostics, exit 1 on errors.

use meshc::diag::{render, render_human, Diagnostic};
use meshc::{load, CheckOptions, Checked};

use super::{error, write_stderr, write_stdout, Outcome, OutputFormat, PolicyArgs};

/// `meshc check PATH...`
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    policy: PolicyArgs,
}

/// Runs `meshc check`.
pub(crate) fn run(args: &Args) -> Outcome {
    match check_policy(&args.policy) {
        Ok(report) if report.failed => Outcome::Failure,
        Ok(_) => Outcome::Success,
        Err(outcome) => outcome,
    }
}

/// A checked policy whose diagnostics have been printed.
pub(crate) struct Report {
    /// What the checker produced.
    pub(crate) checked: Checked,
    /// Whether the policy fails: it has errors, or warnings under `--deny-warnings`.
    pub(crate) failed: bool,
}

/// Loads and checks the policy and prints its diagnostics in the chosen format; shared by
/// `check` and `compile`. `Err` when the policy could not be read, or the report not written.
pub(crate) fn check_policy(args: &PolicyArgs) -> Result<Report, Outcome> {
    let files = load::load(&args.paths).map_err(|err| {
        error(err);
        Outcome::CouldNotRun
    })?;
    let options = CheckOptions {
        module_paths: args.module_paths.clone(),
    };
    let checked = meshc::check(&files, &options);
    print_diagnostics(&checked.diagnostics, args)?;

    let has_errors = checked.diagnostics.iter().any(Diagnostic::is_error);
    let has_warnings = checked.diagnostics.iter().any(|d| !d.is_error());
    let denied = !has_errors && has_warnings && args.deny_warnings;
    if denied {
        error("warnings are denied by `--deny-warnings`");
    }
    Ok(Report {
        checked,
        failed: has_errors || denied,
    })
}

/// Human reports go to stderr, like rustc's, so they never mix with a tool's output; the
/// machine formats go to stdout, even when empty, so a tool always gets a document.
fn print_diagnostics(diagnostics: &[Diagnostic], args: &PolicyArgs) -> Result<(), Outcome> {
    match args.format {
        OutputFormat::Human => {
            write_stderr(&render_human(diagnostics, args.color.stderr()));
            Ok(())
        }
        format => write_stdout(&render(diagnostics, format.into())),
    }
}
