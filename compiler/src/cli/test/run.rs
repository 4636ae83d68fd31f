//! Running a case: the request through the engine, then each expectation against the result.

use mesh_table::Action;
use meshc::diag::did_you_mean;
use meshc::explain::{action_name, Policy, Request, Routed, Verdict};
use meshc::Loc;

use super::spec::Case;

/// A case and how it went.
#[derive(Debug)]
pub(crate) struct CaseResult<'a> {
    /// The case.
    pub(crate) case: &'a Case,
    /// What the proxies decided, when the case could be decided.
    pub(crate) verdict: Option<Verdict>,
    /// Every expectation that did not hold; empty when the case passed.
    pub(crate) failures: Vec<Failure>,
}

/// Something wrong with a case's outcome.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The case names something the policy does not have.
    Reference {
        /// What is wrong.
        message: String,
        /// Where in the test file.
        loc: Loc,
    },
    /// An expectation that did not hold.
    Mismatch {
        /// What was expected of: `route`, `targets`, `status`, `decision` or `rule`.
        what: &'static str,
        /// As written.
        expected: String,
        /// What was decided.
        actual: String,
        /// A note on the expectation itself (a route name the service does not have).
        note: Option<String>,
    },
}

impl CaseResult<'_> {
    /// Whether every expectation held.
    pub(crate) fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs one case against the policy.
pub(crate) fn run<'a>(policy: &Policy, case: &'a Case) -> CaseResult<'a> {
    let fail = |failure| CaseResult {
        case,
        verdict: None,
        failures: vec![failure],
    };
    if let Err(unknown) = policy.check_caller(&case.caller) {
        return fail(Failure::Reference {
            message: format!("`from`: {unknown}"),
            loc: case.from_loc.clone().unwrap_or_else(|| case.loc.clone()),
        });
    }
    let request = Request {
        caller: case.caller.clone(),
        authority: case.to.clone(),
        method: case.method.clone(),
        path: case.path.clone(),
        headers: case.headers.clone(),
    };
    let verdict = match policy.decide(&request) {
        Ok(verdict) => verdict,
        Err(unknown) => {
            return fail(Failure::Reference {
                message: format!("`to`: {unknown}"),
                loc: case.to_loc.clone(),
            })
        }
    };
    let failures = check(policy, case, &verdict);
    CaseResult {
        case,
        verdict: Some(verdict),
        failures,
    }
}

fn check(policy: &Policy, case: &Case, verdict: &Verdict) -> Vec<Failure> {
    let expect = &case.expect;
    let mut failures = Vec::new();
    let mut mismatch = |what, expected: String, actual: String, note: Option<String>| {
        failures.push(Failure::Mismatch {
            what,
            expected,
            actual,
            note,
        });
    };
    if let Some((want, _)) = &expect.route {
        let got = verdict.route().map(|i| policy.route_name(i).to_owned());
        if *want != got {
            let note = want
                .as_deref()
                .and_then(|name| route_note(policy, verdict, name));
            mismatch(
                "route",
                want.as_ref()
                    .map_or_else(|| "no route".to_owned(), |n| format!("`{n}`")),
                describe_route(policy, verdict),
                note,
            );
        }
    }
    if let Some((want, _)) = &expect.targets {
        let mut want_sorted = want.clone();
        want_sorted.sort();
        let got: Vec<String> = verdict
            .targets
            .iter()
            .map(|&t| policy.service_name(t).to_owned())
            .collect();
        let mut got_sorted = got.clone();
        got_sorted.sort();
        if want_sorted != got_sorted {
            mismatch("targets", list(want), list(&got), None);
        }
    }
    if let Some(want) = expect.status {
        if Some(want) != verdict.status() {
            mismatch("status", want.to_string(), describe_status(verdict), None);
        }
    }
    if let Some(want) = expect.decision {
        if Some(want) != verdict.decision() {
            mismatch(
                "decision",
                action_name(want).to_owned(),
                describe_decision(policy, verdict),
                None,
            );
        }
    }
    if let Some((want, _)) = &expect.rule {
        let decision = verdict.decision();
        // With a split, any target that reached the request's decision may be named.
        let held = verdict
            .authorizations
            .iter()
            .filter(|d| Some(d.action) == decision)
            .any(|d| policy.rule_matches(want, d));
        if !held {
            let actual = match verdict.deciding() {
                Some(d) => format!("{} ({})", policy.rule_ref(d.by), policy.describe_decider(d)),
                None => format!("no rule: {}", describe_status(verdict)),
            };
            mismatch("rule", want.clone(), actual, None);
        }
    }
    failures
}

/// Says so when the service has no route of that name, with the nearest one.
fn route_note(policy: &Policy, verdict: &Verdict, name: &str) -> Option<String> {
    let table = policy.table();
    let names: Vec<&str> = table
        .routes
        .iter()
        .filter(|r| r.service == verdict.service)
        .map(|r| r.name.as_str())
        .collect();
    if names.contains(&name) {
        return None;
    }
    let service = policy.service_name(verdict.service);
    Some(match did_you_mean(name, names.iter().copied()) {
        Some(near) => format!("`{service}` has no route `{name}`; did you mean `{near}`?"),
        None if names.is_empty() => format!("`{service}` has no routes at all"),
        None => format!(
            "`{service}` has no route `{name}`; its routes are {}",
            list(&names)
        ),
    })
}

/// `["a", "b"]`.
fn list(items: &[impl AsRef<str>]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("`{}`", s.as_ref())).collect();
    format!("[{}]", quoted.join(", "))
}

/// What routing did, in words.
pub(crate) fn describe_route(policy: &Policy, verdict: &Verdict) -> String {
    let service = policy.service_name(verdict.service);
    match verdict.routed {
        Routed::Route(i) => format!("`{}`", policy.route_name(i)),
        Routed::NoRoute => format!("no route: none of `{service}`'s routes matched (404)"),
        Routed::ToService => {
            format!("no route: `{service}` has no routes, the request goes straight to it")
        }
        Routed::BadPath(err) => format!("no route: the path was refused (400: {err})"),
    }
}

/// The proxy's own answer, in words.
pub(crate) fn describe_status(verdict: &Verdict) -> String {
    match (verdict.status(), verdict.routed) {
        (Some(400), Routed::BadPath(err)) => format!("400 ({err})"),
        (Some(404), _) => "404 (no route matched)".to_owned(),
        (Some(403), _) => "403 (denied)".to_owned(),
        (Some(status), _) => status.to_string(),
        (None, _) => "none: the request reaches the application".to_owned(),
    }
}

/// The authorization decision, in words, per target when a split's targets disagree.
pub(crate) fn describe_decision(policy: &Policy, verdict: &Verdict) -> String {
    let Some(deciding) = verdict.deciding() else {
        return format!("no authorization took place: {}", describe_status(verdict));
    };
    let mut text = format!(
        "{} at `{}` by {}",
        action_name(deciding.action),
        policy.service_name(deciding.service),
        policy.describe_decider(deciding)
    );
    let others: Vec<String> = verdict
        .authorizations
        .iter()
        .filter(|d| d.action != deciding.action)
        .map(|d| format!("`{}` allows", policy.service_name(d.service)))
        .collect();
    if !others.is_empty() && deciding.action == Action::Deny {
        text.push_str(&format!(" (split: {})", others.join(", ")));
    }
    text
}
