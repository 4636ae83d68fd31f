//! `meshc fmt`: rewrite policy files in their canonical layout, or list those that differ.

use std::path::PathBuf;
use std::sync::Arc;

use meshc::diag::{render_human, Diagnostic};
use meshc::fmt::format_source;
use meshc::{load, SourceFile};

use super::{error, write_atomic, write_stderr, write_stdout, ColorArg, Outcome};

/// `meshc fmt PATH... [--check]`
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Policy files, or directories of `.mesh` files.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Write nothing: list the files that are not formatted, and exit 1 if there are any.
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    color: ColorArg,
}

/// Runs `meshc fmt`. Every file is formatted before any is written, so a syntax error in one
/// file leaves all of them untouched.
pub(crate) fn run(args: &Args) -> Outcome {
    let files = match load::load(&args.paths) {
        Ok(files) => files,
        Err(err) => {
            error(err);
            return Outcome::CouldNotRun;
        }
    };
    let mut changed: Vec<(Arc<SourceFile>, String)> = Vec::new();
    let mut diagnostics: Vec<Diagnostic> = Vec::new();
    for file in files {
        match format_source(&file) {
            Ok(text) if text != file.text => changed.push((file, text)),
            Ok(_) => {}
            Err(found) => diagnostics.extend(found),
        }
    }
    if !diagnostics.is_empty() {
        write_stderr(&render_human(&diagnostics, args.color.stderr()));
        return Outcome::Failure;
    }

    if args.check {
        let list: String = changed
            .iter()
            .map(|(file, _)| format!("{}\n", display_name(file)))
            .collect();
        if let Err(outcome) = write_stdout(&list) {
            return outcome;
        }
        return if changed.is_empty() {
            Outcome::Success
        } else {
            Outcome::Failure
        };
    }

    for (file, text) in &changed {
        // Files from `load` always have a path; one without could not be written back.
        let Some(path) = &file.path else {
            error(format_args!(
                "cannot write `{}` back: it has no path",
                file.name
            ));
            return Outcome::CouldNotRun;
        };
        if let Err(err) = write_atomic(path, text.as_bytes()) {
            error(format_args!("cannot write `{}`: {err}", path.display()));
            return Outcome::CouldNotRun;
        }
        write_stderr(&format!("formatted {}\n", path.display()));
    }
    Outcome::Success
}

/// The file's path as given on the command line (a directory's files under it), so the
/// list can be fed back to other commands; diagnostics use the shorter policy-relative name.
fn display_name(file: &SourceFile) -> String {
    file.path
        .as_ref()
        .map_or_else(|| file.name.clone(), |p| p.display().to_string())
}
