//! `meshc why`: how the proxies decide one request, route by route and rule by rule.
//!
//! The decision comes from the engine (as in `meshc test`); the per-route account beside it
//! (which clause failed, why a matching route ranked lower) is worked out with the reference
//! matcher and the shared precedence order. Exit status: 0 explained, 1 the policy has
//! errors, 2 a usage error (an unknown service, a malformed header) or an unreadable policy.
//!
//! `--format json` prints one object: `status` (400, 403, 404, or null when the request
//! reaches the application), `route` (name or null), `targets`, `decision` (`"allow"`,
//! `"deny"`, or null when no authorization took place: 400 and 404), and `rule`
//! (`{"file", "line"}`, `"default"`, `"mtls"` for a refused handshake, or null).

use std::path::PathBuf;

use mesh_table::{Ppm, RequestMatch};
use meshc::explain::{
    action_name, describe_header, describe_path, explain_routes, By, Caller, Policy, Request,
    RouteOutcome, Routed, Verdict,
};

use super::test::{describe_caller, describe_decision, load_policy, sources};
use super::{error, write_stdout, ColorArg, Outcome, ReportFormat};

/// `meshc why POLICY --to AUTHORITY METHOD PATH`
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The policy: a `.mesh` file, or a directory of them.
    #[arg(value_name = "POLICY")]
    policy: PathBuf,
    /// The request's method.
    #[arg(value_name = "METHOD")]
    method: String,
    /// The request target (path and query), as sent.
    #[arg(value_name = "PATH")]
    path: String,
    /// The caller: a service, `plaintext` (the default) or a `spiffe://` ID.
    #[arg(long, value_name = "SERVICE")]
    from: Option<String>,
    /// The authority (`Host`): the service called, with or without a port.
    #[arg(long, value_name = "AUTHORITY")]
    to: String,
    /// A request header, `name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Another directory to search for filter modules, after the policy file's own (repeatable).
    #[arg(long = "module-path", value_name = "DIR")]
    module_paths: Vec<PathBuf>,
    /// How to report: human, or json (one object: status, route, targets, decision, rule).
    #[arg(long, value_enum, default_value_t = ReportFormat::Human)]
    format: ReportFormat,
    #[command(flatten)]
    color: ColorArg,
}

/// Runs `meshc why`.
pub(crate) fn run(args: &Args) -> Outcome {
    let mut headers = Vec::new();
    for header in &args.headers {
        match header.split_once(':') {
            Some((name, value)) if !name.trim().is_empty() => {
                headers.push((name.trim().to_owned(), value.trim().to_owned()));
            }
            _ => {
                error(format_args!(
                    "`-H {header}`: a header is written `name: value`"
                ));
                return Outcome::CouldNotRun;
            }
        }
    }
    let policy = match load_policy(&args.policy, &args.module_paths, args.color) {
        Ok(policy) => policy,
        Err(outcome) => return outcome,
    };
    let caller = args
        .from
        .as_deref()
        .map_or(Caller::Plaintext, Caller::parse);
    if let Err(unknown) = policy.check_caller(&caller) {
        error(format_args!("--from: {unknown}"));
        return Outcome::CouldNotRun;
    }
    let request = Request {
        caller,
        authority: args.to.clone(),
        method: args.method.clone(),
        path: args.path.clone(),
        headers,
    };
    let verdict = match policy.decide(&request) {
        Ok(verdict) => verdict,
        Err(unknown) => {
            error(format_args!("--to: {unknown}"));
            return Outcome::CouldNotRun;
        }
    };
    let text = match args.format {
        ReportFormat::Human => human(&policy, &request, &verdict, args.color.stdout()),
        ReportFormat::Json => match serde_json::to_string_pretty(&verdict.summary(&policy)) {
            Ok(text) => text + "\n",
            Err(err) => {
                error(format_args!("internal: cannot write JSON: {err}"));
                return Outcome::CouldNotRun;
            }
        },
    };
    match write_stdout(&text) {
        Ok(()) => Outcome::Success,
        Err(outcome) => outcome,
    }
}

/// The account for people: the request, every route of the service, the authorization,
/// and the source of what decided.
fn human(policy: &Policy, request: &Request, verdict: &Verdict, color: bool) -> String {
    let service = policy.service_name(verdict.service);
    let mut out = format!(
        "request: {} {}{} from {}\n",
        request.method,
        request.authority,
        request.path,
        describe_caller(policy, &request.caller)
    );
    for (name, value) in &request.headers {
        out.push_str(&format!("  header {name}: {value}\n"));
    }
    // A repeated header is read as its values joined, as the proxies read it.
    let mut repeated: Vec<String> = Vec::new();
    for (name, _) in &request.headers {
        let name = name.to_ascii_lowercase();
        let count = request
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(&name))
            .count();
        if count > 1 && !repeated.contains(&name) {
            if let Some(joined) = mesh_engine::header_value(request.headers.as_slice(), &name) {
                out.push_str(&format!(
                    "  header {name} is repeated: matchers read it as `{joined}`\n"
                ));
            }
            repeated.push(name);
        }
    }
    let normalized = match mesh_engine::normalize_path(&request.path) {
        Ok(path) => path.into_owned(),
        Err(err) => {
            out.push_str(&format!(
                "\nresult: 400 ({}): {err}; the proxy refuses the request before any route or rule sees it\n",
                err.reason()
            ));
            return out;
        }
    };
    let bare = request.path.split(['?', '#']).next().unwrap_or_default();
    if normalized != bare {
        out.push_str(&format!("  path normalized to {normalized}\n"));
    }

    let mut sections = vec![out];
    sections.push(if verdict.routed == Routed::ToService {
        format!("`{service}` has no routes: the request goes straight to the service\n")
    } else {
        format!(
            "routes of `{service}`, in the order the proxy tries them:\n{}",
            route_lines(policy, request, verdict, &normalized)
        )
    });
    let mut decided = String::new();
    if let Some(index) = verdict.route() {
        let targets: Vec<String> = policy
            .table()
            .routes
            .get(index)
            .map(|r| {
                r.targets
                    .iter()
                    .map(|t| format!("{} {}", policy.service_name(t.service), percent(t.weight)))
                    .collect()
            })
            .unwrap_or_default();
        decided.push_str(&format!(
            "route: `{}` → {}\n",
            policy.route_name(index),
            targets.join(", ")
        ));
    }
    for decision in &verdict.authorizations {
        decided.push_str(&format!(
            "authorization at `{}`: {} by {}\n",
            policy.service_name(decision.service),
            action_name(decision.action),
            policy.describe_decider(decision)
        ));
    }
    if let Some(note) = strict_note(policy, request, verdict) {
        decided.push_str(&note);
    }
    sections.push(decided);
    sections.push(sources(policy, verdict, color));
    sections.push(format!("result: {}\n", result_line(policy, verdict)));
    sections.retain(|s| !s.is_empty());
    sections.join("\n")
}

/// One line per route: chosen, lost (and why), or missed (and which clauses failed).
fn route_lines(policy: &Policy, request: &Request, verdict: &Verdict, path: &str) -> String {
    let table = policy.table();
    let checks = explain_routes(
        table,
        verdict.service,
        verdict.route(),
        &request.method,
        path,
        &request.headers,
    );
    let width = checks
        .iter()
        .map(|c| policy.route_name(c.index).len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for check in &checks {
        let name = policy.route_name(check.index);
        let matcher = table
            .routes
            .get(check.index)
            .map(|r| describe_match(&r.matcher))
            .unwrap_or_default();
        let (mark, what) = match &check.outcome {
            RouteOutcome::Chosen => ("✓", "chosen".to_owned()),
            RouteOutcome::Lost(because) => ("-", format!("matched, lost: {because}")),
            RouteOutcome::Missed(misses) => {
                let clauses: Vec<String> = misses.iter().map(ToString::to_string).collect();
                ("✗", format!("no match: {}", clauses.join("; ")))
            }
        };
        out.push_str(&format!("  {mark} {name:<width$}  {what}\n"));
        out.push_str(&format!("    {:<width$}  ({matcher})\n", ""));
    }
    if verdict.routed == Routed::NoRoute {
        out.push_str("  none matched: the proxy answers 404\n");
    }
    out
}

/// A `match` block on one line: `prefix "/v1", method [POST], header "x" present`.
fn describe_match(m: &RequestMatch) -> String {
    let mut parts = vec![m
        .path
        .as_ref()
        .map_or_else(|| "any path".to_owned(), describe_path)];
    if !m.methods.is_empty() {
        let names: Vec<&str> = m.methods.iter().map(|x| x.as_str()).collect();
        parts.push(format!("method [{}]", names.join(", ")));
    }
    parts.extend(m.headers.iter().map(describe_header));
    parts.join(", ")
}

/// `90%`, `0.5%`.
fn percent(weight: Ppm) -> String {
    let whole = weight.0 / 10_000;
    let rest = weight.0 % 10_000;
    if rest == 0 {
        format!("{whole}%")
    } else {
        let decimals = format!("{rest:04}");
        format!("{whole}.{}%", decimals.trim_end_matches('0'))
    }
}

/// For a plaintext caller of a strict service that a rule or default denied: the handshake
/// would have refused it first.
fn strict_note(policy: &Policy, request: &Request, verdict: &Verdict) -> Option<String> {
    let refused = verdict
        .authorizations
        .iter()
        .any(|d| matches!(d.by, By::Refused(_)));
    if request.caller != Caller::Plaintext || refused {
        return None;
    }
    let strict: Vec<&str> = verdict
        .targets
        .iter()
        .filter(|&&t| {
            policy
                .table()
                .services
                .get(t as usize)
                .is_some_and(|s| s.mtls == mesh_table::MtlsMode::Strict)
        })
        .map(|&t| policy.service_name(t))
        .collect();
    if strict.is_empty() {
        return None;
    }
    Some(format!(
        "  note: `{}` is `mtls strict`: a plaintext caller is refused at the handshake in any case\n",
        strict.join("`, `")
    ))
}

/// The outcome in one line.
fn result_line(policy: &Policy, verdict: &Verdict) -> String {
    let targets: Vec<&str> = verdict
        .targets
        .iter()
        .map(|&t| policy.service_name(t))
        .collect();
    match verdict.status() {
        Some(404) => format!(
            "404: no route of `{}` matched",
            policy.service_name(verdict.service)
        ),
        Some(403) => format!("403: {}", describe_decision(policy, verdict)),
        Some(status) => status.to_string(),
        None => format!("allowed: the request goes on to {}", targets.join(" and ")),
    }
}

#[cfg(test)]
mod tests {
    use super::percent;
    use mesh_table::Ppm;

    #[test]
    fn percents() {
        assert_eq!(percent(Ppm(900_000)), "90%");
        assert_eq!(percent(Ppm(5_000)), "0.5%");
        assert_eq!(percent(Ppm(1_000_000)), "100%");
        assert_eq!(percent(Ppm(125_000)), "12.5%");
    }
}
