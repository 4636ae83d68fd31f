//! The `meshc` command line: argument parsing, exit statuses and what the subcommands share.
//!
//! Exit status, for every subcommand: 0 success, 1 the input has problems (policy errors, a
//! corrupt table, unformatted files under `--check`), 2 the command could not run (usage
//! errors, which clap reports with status 2, unreadable inputs, unwritable outputs).

mod api;
mod apply;
mod ca;
mod check;
mod compile;
mod explain;
mod fmt;
mod identity;
mod inspect;
mod status;
mod test;
mod token;
mod why;

use std::ffi::OsString;
use std::fs;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use meshc::diag::Format;

/// How a run ended: the process exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Nothing wrong: status 0.
    Success,
    /// The input has problems: status 1.
    Failure,
    /// The command could not run: status 2.
    CouldNotRun,
}

impl From<Outcome> for ExitCode {
    fn from(outcome: Outcome) -> ExitCode {
        ExitCode::from(match outcome {
            Outcome::Success => 0,
            Outcome::Failure => 1,
            Outcome::CouldNotRun => 2,
        })
    }
}

/// The `.mesh` policy compiler.
#[derive(Debug, Parser)]
#[command(
    name = "meshc",
    version,
    propagate_version = true,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check policies and report every diagnostic.
    Check(check::Args),
    /// Check policies and compile them into a rule table.
    Compile(compile::Args),
    /// Print a compiled rule table as JSON.
    Inspect(inspect::Args),
    /// Explain a diagnostic code, with an example and its fix.
    Explain(explain::Args),
    /// Format policy files in their canonical layout.
    Fmt(fmt::Args),
    /// Run test cases (TOML files) against a policy, through the proxies' decision engine.
    Test(test::Args),
    /// Explain how the proxies decide one request: the route chosen, and who allowed it.
    Why(why::Args),
    /// The mesh certificate authority: create one, issue workload certificates.
    Ca(ca::Args),
    /// Join tokens for proxies that bootstrap from the control plane: create, revoke.
    Token(token::Args),
    /// Revoke a service's certificates before they expire; list what is revoked.
    Identity(identity::Args),
    /// Upload a policy directory to the control plane and wait for the proxies' ACKs.
    Apply(apply::Args),
    /// The control plane's proxies, their tables, and the traffic summary.
    Status(status::Args),
}

/// Parses the command line and runs the subcommand. Usage errors exit here with status 2
/// (clap's default), `--help` and `--version` with 0.
pub(crate) fn run() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match &cli.command {
        Command::Check(args) => check::run(args),
        Command::Compile(args) => compile::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Explain(args) => explain::run(args),
        Command::Fmt(args) => fmt::run(args),
        Command::Test(args) => test::run(args),
        Command::Why(args) => why::run(args),
        Command::Ca(args) => ca::run(args),
        Command::Token(args) => token::run(args),
        Command::Identity(args) => identity::run(args),
        Command::Apply(args) => apply::run(args),
        Command::Status(args) => status::run(args),
    };
    outcome.into()
}

/// What `check` and `compile` take to read and check a policy.
#[derive(Debug, clap::Args)]
pub(crate) struct PolicyArgs {
    /// Policy files, or directories of `.mesh` files (a directory is one namespace).
    #[arg(required = true, value_name = "PATH")]
    pub(crate) paths: Vec<PathBuf>,
    /// Another directory to search for filter modules, after the policy file's own (repeatable).
    #[arg(long = "module-path", value_name = "DIR")]
    pub(crate) module_paths: Vec<PathBuf>,
    /// How to print diagnostics: human (on stderr) or json, sarif, github (on stdout).
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub(crate) format: OutputFormat,
    /// Fail (exit 1) on warnings too.
    #[arg(long)]
    pub(crate) deny_warnings: bool,
    #[command(flatten)]
    pub(crate) color: ColorArg,
}

/// The `--format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    /// Reports with source snippets, on stderr.
    Human,
    /// One JSON document (`format_version` 1), on stdout.
    Json,
    /// SARIF 2.1.0, on stdout (for code-scanning tools).
    Sarif,
    /// GitHub Actions `::error` annotations, on stdout.
    Github,
}

impl From<OutputFormat> for Format {
    fn from(format: OutputFormat) -> Format {
        match format {
            OutputFormat::Human => Format::Human,
            OutputFormat::Json => Format::Json,
            OutputFormat::Sarif => Format::Sarif,
            OutputFormat::Github => Format::Github,
        }
    }
}

/// The `--format` values of the commands that report decisions (`test`, `why`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ReportFormat {
    /// For people, on stdout, with source snippets.
    Human,
    /// JSON on stdout.
    Json,
}

/// `--color`, for subcommands that print human diagnostics.
#[derive(Debug, Clone, Copy, clap::Args)]
pub(crate) struct ColorArg {
    /// When to colour human diagnostics.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = ColorChoice::Auto)]
    pub(crate) color: ColorChoice,
}

/// The `--color` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ColorChoice {
    /// When stderr is a terminal and `NO_COLOR` is not set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

impl ColorArg {
    /// Whether to colour what goes to stderr.
    pub(crate) fn stderr(self) -> bool {
        self.when(io::stderr().is_terminal())
    }

    /// Whether to colour what goes to stdout.
    pub(crate) fn stdout(self) -> bool {
        self.when(io::stdout().is_terminal())
    }

    fn when(self, terminal: bool) -> bool {
        match self.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            // https://no-color.org: a non-empty NO_COLOR turns colour off.
            ColorChoice::Auto => {
                terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        }
    }
}

/// Writes to stdout. A closed pipe (`meshc inspect t | head`) is not an error; any other
/// failure is reported, since a truncated machine-readable document would mislead.
pub(crate) fn write_stdout(text: &str) -> Result<(), Outcome> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(err) => {
            write_stderr(&format!("error: cannot write to stdout: {err}\n"));
            Err(Outcome::CouldNotRun)
        }
    }
}

/// Writes to stderr; a failure is ignored, as there is nowhere left to report it.
pub(crate) fn write_stderr(text: &str) {
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

/// Prints `error: <message>` on stderr.
pub(crate) fn error(message: impl std::fmt::Display) {
    write_stderr(&format!("error: {message}\n"));
}

/// Replaces `path` with `bytes` atomically: writes `<path>.tmp` beside it, then renames it
/// over, so a proxy or editor never sees half a file. Creates missing parent directories and
/// keeps the permissions of the file it replaces.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    let mut tmp = OsString::from(path.as_os_str());
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        if let Ok(meta) = fs::metadata(path) {
            file.set_permissions(meta.permissions())?;
        }
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `1 service`, `2 services`.
pub(crate) fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn write_atomic_creates_parents_and_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a/b/table.bin");
        write_atomic(&path, b"one").expect("first write");
        write_atomic(&path, b"two").expect("second write");
        assert_eq!(fs::read(&path).expect("read back"), b"two");
        assert!(!dir.path().join("a/b/table.bin.tmp").exists());
    }

    #[test]
    fn write_atomic_leaves_no_temporary_file_on_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A directory cannot be replaced by a file.
        let path = dir.path().join("taken");
        fs::create_dir(&path).expect("mkdir");
        assert!(write_atomic(&path, b"x").is_err());
        assert!(!dir.path().join("taken.tmp").exists());
    }

    #[test]
    fn plurals() {
        assert_eq!(plural(1, "route"), "1 route");
        assert_eq!(plural(0, "route"), "0 routes");
        assert_eq!(plural(2, "filter"), "2 filters");
    }
}
