//! `meshc token`: join tokens, with which a service's proxies bootstrap their certificates
//! from the control plane. `create` prints a new one (the secret, once: the control plane
//! keeps only its hash); `list` shows them by id; `revoke ID` makes one unusable.

use serde_json::{json, Value};

use super::api::{field, table, Api, ControlArg};
use super::{error, write_stderr, write_stdout, Outcome};

/// `meshc token SUBCOMMAND`
#[derive(Debug, clap::Args)]
#[command(arg_required_else_help = true)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

/// How `create` and `list` print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// `create`: the secret alone on stdout (the id and limits on stderr); `list`: a table.
    Text,
    /// The API's JSON document.
    Json,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create a join token for SERVICE's proxies and print it. The secret is printed once:
    /// the control plane keeps only its SHA-256. By default it never expires and admits any
    /// number of bootstraps (an autoscaling group's replicas all use it); revoke it by id.
    Create {
        /// The service whose proxies the token admits.
        service: String,
        /// The token admits no bootstrap after this long (90s, 30m, 24h, 7d); default: never.
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
        /// The token admits at most N bootstraps; default: no limit.
        #[arg(long = "max-uses", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        max_uses: Option<u64>,
        /// `text` prints the secret alone on stdout; `json` the whole answer.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        control: ControlArg,
    },
    /// List the join tokens: id, service, created, last used, uses, expires, max uses
    /// (never the secrets, which the control plane does not keep).
    List {
        /// `text` (a table) or `json`.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        #[command(flatten)]
        control: ControlArg,
    },
    /// Revoke the token ID (as `token list` and `token create` show it): proxies can no
    /// longer bootstrap with it, the certificates it produced can no longer be renewed, and
    /// their streams to the control plane end.
    Revoke {
        /// The token's id (not its secret).
        id: String,
        #[command(flatten)]
        control: ControlArg,
    },
}

/// Runs `meshc token`.
pub(crate) fn run(args: &Args) -> Outcome {
    let result = match &args.command {
        Command::Create {
            service,
            ttl,
            max_uses,
            format,
            control,
        } => create(service, ttl.as_deref(), *max_uses, *format, control),
        Command::List { format, control } => list(*format, control),
        Command::Revoke { id, control } => revoke(id, control),
    };
    result.unwrap_or_else(|outcome| outcome)
}

fn create(
    service: &str,
    ttl: Option<&str>,
    max_uses: Option<u64>,
    format: Format,
    control: &ControlArg,
) -> Result<Outcome, Outcome> {
    if let Some(ttl) = ttl {
        if let Err(e) = mesh_identity::parse_ttl(ttl) {
            error(format!("--ttl `{ttl}`: {e}"));
            return Err(Outcome::CouldNotRun);
        }
    }
    let api = Api::from_args(control)?;
    let mut body = json!({ "service": service });
    if let Some(ttl) = ttl {
        body["ttl"] = json!(ttl);
    }
    if let Some(n) = max_uses {
        body["max_uses"] = json!(n);
    }
    let answer = api.call(http::Method::POST, "/v1/tokens", Some(&body))?;
    match answer.json.get("token").and_then(|t| t.as_str()) {
        Some(token) if (200..300).contains(&answer.status) => {
            match format {
                Format::Json => write_stdout(&format!("{:#}\n", answer.json))?,
                Format::Text => {
                    write_stdout(&format!("{token}\n"))?;
                    write_stderr(&format!(
                        "token {} for `{service}`: expires {}, max uses {}; the secret above is shown once (revoke with `meshc token revoke {}`)\n",
                        field(&answer.json, &["id"]),
                        when(&answer.json["expires_at"], "never"),
                        field(&answer.json, &["max_uses"]).replace('-', "unlimited"),
                        field(&answer.json, &["id"]),
                    ));
                }
            }
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

/// A time in seconds since the epoch, as UTC; `none` when it is null.
fn when(value: &Value, none: &str) -> String {
    value.as_u64().map_or_else(
        || none.to_string(),
        |secs| {
            mesh_identity::format_utc(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        },
    )
}

fn list(format: Format, control: &ControlArg) -> Result<Outcome, Outcome> {
    let api = Api::from_args(control)?;
    let answer = api.call(http::Method::GET, "/v1/tokens", None)?;
    if !(200..300).contains(&answer.status) {
        error(format!("cannot list the tokens: {}", answer.error()));
        return Ok(Outcome::Failure);
    }
    if format == Format::Json {
        write_stdout(&format!("{:#}\n", answer.json))?;
        return Ok(Outcome::Success);
    }
    let tokens = answer
        .json
        .get("tokens")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                field(t, &["id"]),
                field(t, &["service"]),
                when(&t["created_at"], "-"),
                when(&t["last_used_at"], "never"),
                field(t, &["uses"]),
                when(&t["expires_at"], "never"),
                field(t, &["max_uses"]).replace('-', "unlimited"),
            ]
        })
        .collect();
    write_stdout(&table(
        &[
            "ID",
            "SERVICE",
            "CREATED",
            "LAST USED",
            "USES",
            "EXPIRES",
            "MAX USES",
        ],
        &rows,
    ))?;
    Ok(Outcome::Success)
}

fn revoke(id: &str, control: &ControlArg) -> Result<Outcome, Outcome> {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        error("this is a token's secret, not its id: revoke by the id `meshc token list` shows (and do not put secrets on command lines)");
        return Err(Outcome::CouldNotRun);
    }
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        error(format!("`{}` is not a token id", id.escape_debug()));
        return Err(Outcome::CouldNotRun);
    }
    let api = Api::from_args(control)?;
    let answer = api.call(http::Method::DELETE, &format!("/v1/tokens/{id}"), None)?;
    if (200..300).contains(&answer.status) {
        Ok(Outcome::Success)
    } else {
        error(format!("cannot revoke the token {id}: {}", answer.error()));
        Ok(Outcome::Failure)
    }
}
