//! `meshc test`: run TOML test cases against a policy, deciding through the proxies' engine.
//!
//! Each case is a request (caller, authority, method, path, headers) and what is expected of
//! it; the format is described in `test/spec.rs` and shown in `examples/policies/*.test.toml`.
//! Exit status: 0 every case passed, 1 a case failed or the policy has errors, 2 a test file
//! or the policy could not be read or parsed.

mod report;
mod run;
mod spec;

use std::path::{Path, PathBuf};

use meshc::diag::render_human;
use meshc::explain::{check_policy, render_snippet, Policy, PolicyError, Tone};
use meshc::{load, CheckOptions};

use super::{error, write_stderr, write_stdout, ColorArg, Outcome, ReportFormat};
use report::FileResults;
pub(crate) use report::{describe_caller, sources};
pub(crate) use run::describe_decision;

/// `meshc test POLICY TESTS...`
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The policy: a `.mesh` file, or a directory of them.
    #[arg(value_name = "POLICY")]
    policy: PathBuf,
    /// Test files (TOML), or directories whose `.toml` files are test files.
    #[arg(required = true, value_name = "TESTS")]
    tests: Vec<PathBuf>,
    /// Another directory to search for filter modules, after the policy file's own (repeatable).
    #[arg(long = "module-path", value_name = "DIR")]
    module_paths: Vec<PathBuf>,
    /// How to report: human (cargo-test-like) or json (an array of case results).
    #[arg(long, value_enum, default_value_t = ReportFormat::Human)]
    format: ReportFormat,
    #[command(flatten)]
    color: ColorArg,
}

/// Runs `meshc test`.
pub(crate) fn run(args: &Args) -> Outcome {
    let files = match read_tests(&args.tests, args.color.stderr()) {
        Ok(files) => files,
        Err(outcome) => return outcome,
    };
    let policy = match load_policy(&args.policy, &args.module_paths, args.color) {
        Ok(policy) => policy,
        Err(outcome) => return outcome,
    };
    let results: Vec<FileResults<'_>> = files
        .iter()
        .map(|file| FileResults {
            file,
            results: file.cases.iter().map(|c| run::run(&policy, c)).collect(),
        })
        .collect();
    let failed = results.iter().flat_map(|f| &f.results).any(|r| !r.passed());
    let text = match args.format {
        ReportFormat::Human => report::human(&policy, &results, args.color.stdout()),
        ReportFormat::Json => match report::json(&policy, &results) {
            Ok(text) => text,
            Err(err) => {
                error(format_args!(
                    "internal: cannot write the report as JSON: {err}"
                ));
                return Outcome::CouldNotRun;
            }
        },
    };
    if let Err(outcome) = write_stdout(&text) {
        return outcome;
    }
    if failed {
        Outcome::Failure
    } else {
        Outcome::Success
    }
}

/// Reads every test file (a directory's `.toml` files in name order). Every problem of
/// every file is printed before giving up.
fn read_tests(paths: &[PathBuf], color: bool) -> Result<Vec<spec::TestFile>, Outcome> {
    let mut files = Vec::new();
    let mut failed = false;
    for path in expand(paths)? {
        match spec::read(&path) {
            Ok(file) => files.push(file),
            Err(errors) => {
                failed = true;
                for e in errors {
                    if e.labels.is_empty() {
                        error(&e.message);
                    } else {
                        let title = format!("invalid test file: {}", e.message);
                        write_stderr(&render_snippet(&title, &e.labels, Tone::Error, color));
                    }
                }
            }
        }
    }
    if failed {
        Err(Outcome::CouldNotRun)
    } else {
        Ok(files)
    }
}

/// The test files named: files as given, directories as their `.toml` files.
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Outcome> {
    let mut out = Vec::new();
    for path in paths {
        if !path.is_dir() {
            out.push(path.clone());
            continue;
        }
        let entries = std::fs::read_dir(path).map_err(|err| {
            error(format_args!("cannot read `{}`: {err}", path.display()));
            Outcome::CouldNotRun
        })?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
            .collect();
        if found.is_empty() {
            error(format_args!(
                "no `.toml` test files in `{}`",
                path.display()
            ));
            return Err(Outcome::CouldNotRun);
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

/// Loads and checks the policy, printing its diagnostics (warnings too) on stderr; shared
/// with `meshc why`. Status 2 when it cannot be read, 1 when it has errors.
pub(crate) fn load_policy(
    path: &Path,
    module_paths: &[PathBuf],
    color: ColorArg,
) -> Result<Policy, Outcome> {
    let files = load::load(&[path.to_path_buf()]).map_err(|err| {
        error(err);
        Outcome::CouldNotRun
    })?;
    let options = CheckOptions {
        module_paths: module_paths.to_vec(),
    };
    let checked = check_policy(&files, &options);
    if !checked.diagnostics.is_empty() {
        write_stderr(&render_human(&checked.diagnostics, color.stderr()));
    }
    match checked.policy {
        Ok(policy) => Ok(policy),
        // The diagnostics printed above end with the count of errors.
        Err(PolicyError::Errors) => Err(Outcome::Failure),
        Err(PolicyError::Engine(err)) => {
            error(format_args!("internal: {err}"));
            Err(Outcome::CouldNotRun)
        }
    }
}
