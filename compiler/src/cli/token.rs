//! `meshc token`: join tokens, with which a service's proxies bootstrap their certificates
//! from the control plane. `create` prints a new one; `revoke` makes one unusable.

use serde_json::json;

use super::api::{Api, ControlArg};
use super::{error, write_stdout, Outcome};

/// `meshc token SUBCOMMAND`
#[derive(Debug, clap::Args)]
#[command(arg_required_else_help = true)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create a join token for SERVICE's proxies and print it.
    Create {
        /// The service whose proxies the token admits.
        service: String,
        #[command(flatten)]
        control: ControlArg,
    },
    /// Revoke TOKEN: proxies can no longer bootstrap with it, the certificates it produced
    /// can no longer be renewed, and their streams to the control plane end.
    Revoke {
        /// The token, as `token create` printed it.
        token: String,
        #[command(flatten)]
        control: ControlArg,
    },
}

/// Runs `meshc token`.
pub(crate) fn run(args: &Args) -> Outcome {
    let result = match &args.command {
        Command::Create { service, control } => create(service, control),
        Command::Revoke { token, control } => revoke(token, control),
    };
    result.unwrap_or_else(|outcome| outcome)
}

fn create(service: &str, control: &ControlArg) -> Result<Outcome, Outcome> {
    let api = Api::from_args(control)?;
    let answer = api.call(
        http::Method::POST,
        "/v1/tokens",
        Some(&json!({ "service": service })),
    )?;
    match answer.json.get("token").and_then(|t| t.as_str()) {
        Some(token) if (200..300).contains(&answer.status) => {
            write_stdout(&format!("{token}\n"))?;
            Ok(Outcome::Success)
        }
        _ => {
            error(format!(
                "cannot create a token for `{service}`: {}",
                answer.error()
            ));
            Ok(Outcome::Failure)
        }
    }
}

fn revoke(token: &str, control: &ControlArg) -> Result<Outcome, Outcome> {
    if token.is_empty() || token.contains(['/', '?', '#', ' ']) {
        error(format!("`{token}` is not a join token"));
        return Err(Outcome::CouldNotRun);
    }
    let api = Api::from_args(control)?;
    let answer = api.call(http::Method::DELETE, &format!("/v1/tokens/{token}"), None)?;
    if (200..300).contains(&answer.status) {
        Ok(Outcome::Success)
    } else {
        error(format!("cannot revoke the token: {}", answer.error()));
        Ok(Outcome::Failure)
    }
}
