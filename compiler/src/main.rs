//! The `meshc` command: check, compile, inspect, explain and format `.mesh` policies.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run()
}
