//! `meshc identity`: revoke the certificates of a service (or one, by serial) before they
//! expire, and list the serials every proxy refuses.

use serde_json::{json, Value};

use super::api::{Api, ControlArg};
use super::{error, write_stderr, write_stdout, Outcome};

/// `meshc identity SUBCOMMAND`
#[derive(Debug, clap::Args)]
#[command(arg_required_else_help = true)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Revoke SERVICE's certificates: every live one the control plane issued, or the one
    /// with --serial. Their renewal fails at once, their streams to the control plane end,
    /// and every connected proxy is sent the list at once: its listeners refuse them from
    /// then on. The service's join tokens stay: revoke them too (`meshc token revoke ID`)
    /// to keep it from enrolling again.
    Revoke {
        /// The service the certificates name.
        service: String,
        /// Only the certificate with this serial (hex, as `openssl x509 -serial` or a
        /// sidecar's admin `/tls` page shows it); it may be one issued with `meshc ca issue`.
        #[arg(long, value_name = "HEX")]
        serial: Option<String>,
        #[command(flatten)]
        control: ControlArg,
    },
    /// List the revoked serials that have not expired (what every proxy refuses).
    Revoked {
        #[command(flatten)]
        control: ControlArg,
    },
}

/// Runs `meshc identity`.
pub(crate) fn run(args: &Args) -> Outcome {
    let result = match &args.command {
        Command::Revoke {
            service,
            serial,
            control,
        } => revoke(service, serial.as_deref(), control),
        Command::Revoked { control } => revoked(control),
    };
    result.unwrap_or_else(|outcome| outcome)
}

fn revoke(service: &str, serial: Option<&str>, control: &ControlArg) -> Result<Outcome, Outcome> {
    // `openssl x509 -serial` prints `serial=0A1B...`; colons come from other tools.
    let serial = serial.map(|s| {
        s.trim()
            .trim_start_matches("serial=")
            .replace(':', "")
            .to_ascii_lowercase()
    });
    let api = Api::from_args(control)?;
    let mut body = json!({ "service": service });
    if let Some(serial) = &serial {
        body["serial"] = json!(serial);
    }
    let answer = api.call(http::Method::POST, "/v1/identities/revoke", Some(&body))?;
    if !(200..300).contains(&answer.status) {
        error(format!(
            "cannot revoke certificates of `{service}`: {}",
            answer.error()
        ));
        return Ok(Outcome::Failure);
    }
    let serials = serials(&answer.json["revoked"]);
    for s in &serials {
        write_stdout(&format!("{s}\n"))?;
    }
    write_stderr(&format!(
        "revoked {} certificate(s) of `{service}`; its join tokens stay valid (`meshc token list`)\n",
        serials.len()
    ));
    Ok(Outcome::Success)
}

fn revoked(control: &ControlArg) -> Result<Outcome, Outcome> {
    let api = Api::from_args(control)?;
    let answer = api.call(http::Method::GET, "/v1/revocations", None)?;
    if !(200..300).contains(&answer.status) {
        error(format!("cannot list the revocations: {}", answer.error()));
        return Ok(Outcome::Failure);
    }
    for s in serials(&answer.json["serials"]) {
        write_stdout(&format!("{s}\n"))?;
    }
    Ok(Outcome::Success)
}

fn serials(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}
