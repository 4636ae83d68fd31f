//! `meshc apply DIR --control URL`: uploads a policy directory to the control plane, prints
//! its diagnostics as `meshc check` does, then waits until every connected proxy has applied
//! the new tables (ACK), or names those that refused them (NACK) and why.
//!
//! Exit status: 0 every proxy ACKed; 1 the policy has errors, or a proxy NACKed or did not
//! answer in time; 2 the control plane could not be reached (or the command could not run).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use meshc::diag::{render_human, Diagnostic};
use serde_json::{json, Value};

use super::api::{field, Api, ControlArg};
use super::{error, plural, write_stderr, write_stdout, ColorArg, Outcome};

/// How often the proxies' state is polled.
const POLL: Duration = Duration::from_millis(200);

/// `meshc apply DIR --control URL [--timeout 30s]`
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The policy directory (its `.mesh` files are the whole policy).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    #[command(flatten)]
    control: ControlArg,
    /// How long to wait for the proxies' ACKs: a number and a unit (`90s`, `2m`).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    timeout: Duration,
    #[command(flatten)]
    color: ColorArg,
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    mesh_identity::parse_ttl(text).map_err(|e| e.to_string())
}

/// Runs `meshc apply`.
pub(crate) fn run(args: &Args) -> Outcome {
    apply(args).unwrap_or_else(|outcome| outcome)
}

fn apply(args: &Args) -> Result<Outcome, Outcome> {
    let files = meshc::load::load(std::slice::from_ref(&args.dir)).map_err(|err| {
        error(err);
        Outcome::CouldNotRun
    })?;
    let api = Api::from_args(&args.control)?;
    let mut upload = BTreeMap::new();
    for file in &files {
        let name = file
            .path
            .as_deref()
            .and_then(|p| p.file_name())
            .map_or_else(|| file.name.clone(), |n| n.to_string_lossy().into_owned());
        upload.insert(name, file.text.clone());
    }
    // The same checker as the control plane's, locally, for reports with source snippets.
    let options = meshc::CheckOptions {
        module_paths: Vec::new(),
    };
    let local = meshc::check(&files, &options).diagnostics;
    let before = Instant::now();
    let answer = api.call(
        http::Method::PUT,
        "/v1/policy",
        Some(&json!({ "files": upload })),
    )?;
    let accepted = (200..300).contains(&answer.status);
    if !accepted && answer.status != 422 {
        error(format!(
            "the control plane refused the policy: {}",
            answer.error()
        ));
        return Ok(Outcome::Failure);
    }
    print_diagnostics(&local, &answer.json, accepted, args.color.stderr());
    if !accepted {
        error("the policy was refused; the proxies keep their tables");
        return Ok(Outcome::Failure);
    }
    let version = answer.json.get("version").and_then(Value::as_u64);
    write_stdout(&format!(
        "policy accepted{}; waiting for the proxies\n",
        version.map_or_else(String::new, |v| format!(" (version {v})"))
    ))?;
    wait(&api, version, before, args.timeout)
}

/// The local reports when they say what the control plane says; otherwise the control
/// plane's own (it may know more: its module directories).
fn print_diagnostics(local: &[Diagnostic], remote: &Value, accepted: bool, color: bool) {
    let local_errors = local.iter().any(Diagnostic::is_error);
    if local_errors != accepted {
        write_stderr(&render_human(local, color));
        return;
    }
    let remote = remote.get("diagnostics").unwrap_or(remote);
    let list = remote
        .get("diagnostics")
        .and_then(Value::as_array)
        .or_else(|| remote.as_array())
        .cloned()
        .unwrap_or_default();
    let mut out = String::new();
    for d in &list {
        out.push_str(&format!(
            "{}[{}]: {}\n",
            field(d, &["severity"]),
            field(d, &["code"]),
            field(d, &["message"])
        ));
        if let Some(label) = d.get("labels").and_then(|l| l.get(0)) {
            out.push_str(&format!(
                "  --> {}:{}:{}\n",
                field(label, &["file"]),
                field(label, &["line"]),
                field(label, &["column"])
            ));
        }
        if let Some(help) = d.get("help").and_then(Value::as_str) {
            out.push_str(&format!("  help: {help}\n"));
        }
    }
    if list.is_empty() && !accepted {
        out.push_str(&format!("error: {}\n", field(remote, &["error"])));
    }
    write_stderr(&out);
}

/// What one proxy has done with the new policy.
#[derive(Debug, Clone, PartialEq)]
enum State {
    Pending,
    Applied,
    Refused(String),
}

/// Polls `GET /v1/proxies` until no proxy is pending, or the time is up.
fn wait(
    api: &Api,
    version: Option<u64>,
    since: Instant,
    timeout: Duration,
) -> Result<Outcome, Outcome> {
    let deadline = Instant::now() + timeout;
    loop {
        let answer = api.call(http::Method::GET, "/v1/proxies", None)?;
        let proxies = proxy_list(&answer.json);
        let states: Vec<(String, State)> = proxies
            .iter()
            .filter_map(|p| Some((describe(p), state(p, version)?)))
            .collect();
        let pending: Vec<&String> = states
            .iter()
            .filter(|(_, s)| *s == State::Pending)
            .map(|(n, _)| n)
            .collect();
        if pending.is_empty() || Instant::now() >= deadline {
            let refused: Vec<(&String, &String)> = states
                .iter()
                .filter_map(|(n, s)| match s {
                    State::Refused(why) => Some((n, why)),
                    _ => None,
                })
                .collect();
            let applied = states.iter().filter(|(_, s)| *s == State::Applied).count();
            for (name, why) in &refused {
                error(format!("{name} refused the new table (NACK): {why}"));
            }
            for name in &pending {
                error(format!(
                    "{name} did not apply the new table within {timeout:?}"
                ));
            }
            write_stdout(&format!(
                "{} applied the new tables (ACK) in {:.1}s{}\n",
                plural(applied, "proxy").replace("proxys", "proxies"),
                since.elapsed().as_secs_f64(),
                if refused.is_empty() && pending.is_empty() {
                    String::new()
                } else {
                    format!(", {} refused, {} pending", refused.len(), pending.len())
                }
            ))?;
            return Ok(if refused.is_empty() && pending.is_empty() {
                Outcome::Success
            } else {
                Outcome::Failure
            });
        }
        std::thread::sleep(POLL);
    }
}

/// The proxies of a `GET /v1/proxies` answer (`{"proxies": [...]}` or a bare array).
pub(crate) fn proxy_list(json: &Value) -> Vec<Value> {
    json.get("proxies")
        .and_then(Value::as_array)
        .or_else(|| json.as_array())
        .cloned()
        .unwrap_or_default()
}

/// `service at address`.
fn describe(proxy: &Value) -> String {
    format!(
        "{} at {}",
        field(proxy, &["service"]),
        field(proxy, &["inbound", "address"])
    )
}

/// Whether `proxy` runs its slice of the current policy: `applied` is `current` (the
/// checksum the control plane wants it to run), or it NACKed `current`. Proxies in their
/// grace period after a disconnect are not waited for.
fn state(proxy: &Value, _version: Option<u64>) -> Option<State> {
    if proxy.get("connected").and_then(Value::as_bool) == Some(false) {
        return None;
    }
    let expected = field(proxy, &["current"]);
    let applied = field(proxy, &["applied"]);
    if expected != "-" && applied == expected {
        return Some(State::Applied);
    }
    if let Some(nack) = proxy.get("last_nack").filter(|n| !n.is_null()) {
        if field(nack, &["checksum"]) == expected {
            return Some(State::Refused(field(nack, &["reason"])));
        }
    }
    Some(State::Pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_states() {
        let p = json!({"connected": true, "current": "a", "applied": "a"});
        assert_eq!(state(&p, None), Some(State::Applied));
        let p = json!({"connected": true, "current": "b", "applied": "a",
            "last_nack": {"checksum": "b", "reason": "no"}});
        assert_eq!(state(&p, None), Some(State::Refused("no".into())));
        let p = json!({"connected": true, "current": "b", "applied": "a",
            "last_nack": {"checksum": "old", "reason": "no"}});
        assert_eq!(state(&p, None), Some(State::Pending));
        assert_eq!(state(&json!({"connected": false}), None), None);
    }

    #[test]
    fn timeouts_parse() {
        assert_eq!(parse_timeout("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_timeout("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_timeout("soon").is_err());
    }
}
