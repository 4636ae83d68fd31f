//! Printing results: cargo-test-like lines with explained failures, or a JSON array.

use std::collections::BTreeMap;

use meshc::explain::{
    action_name, render_snippet, Caller, Policy, RuleRef, SnippetLabel, Summary, Tone, Verdict,
};
use serde::Serialize;

use super::run::{describe_decision, CaseResult, Failure};
use super::spec::{Case, TestFile};

/// The results of one test file.
pub(crate) struct FileResults<'a> {
    /// The file.
    pub(crate) file: &'a TestFile,
    /// Its cases' results, in order.
    pub(crate) results: Vec<CaseResult<'a>>,
}

/// The human report: a line per case, then each failure explained, then the totals.
pub(crate) fn human(policy: &Policy, files: &[FileResults<'_>], color: bool) -> String {
    let mut out = String::new();
    for file in files {
        let n = file.results.len();
        out.push_str(&format!(
            "\nrunning {n} test{} from {}\n",
            if n == 1 { "" } else { "s" },
            file.file.source.name
        ));
        for result in &file.results {
            let status = if result.passed() { "ok" } else { "FAILED" };
            out.push_str(&format!("test {} ... {status}\n", result.case.name));
        }
    }
    let failed: Vec<&CaseResult<'_>> = files
        .iter()
        .flat_map(|f| &f.results)
        .filter(|r| !r.passed())
        .collect();
    let passed = files.iter().map(|f| f.results.len()).sum::<usize>() - failed.len();
    if !failed.is_empty() {
        out.push_str("\nfailures:\n");
        for result in &failed {
            out.push('\n');
            out.push_str(&explain_failure(policy, result, color));
        }
        out.push_str("\nfailures:\n");
        for result in &failed {
            out.push_str(&format!("    {}\n", result.case.name));
        }
    }
    let verdict = if failed.is_empty() { "ok" } else { "FAILED" };
    out.push_str(&format!(
        "\ntest result: {verdict}. {passed} passed; {} failed\n\n{passed} passed, {} failed\n",
        failed.len(),
        failed.len()
    ));
    out
}

/// One failed case: the request, each expectation against the decision, and the source of
/// the route and the rule that decided.
fn explain_failure(policy: &Policy, result: &CaseResult<'_>, color: bool) -> String {
    let case = result.case;
    let (line, _) = case.loc.line_col();
    let mut out = format!(
        "---- {} ({}:{line}) ----\nrequest: {}\n",
        case.name,
        case.loc.file.name,
        describe_request(policy, case)
    );
    let mut snippets = String::new();
    for failure in &result.failures {
        match failure {
            Failure::Reference { message, loc } => {
                snippets.push_str(&render_snippet(
                    message,
                    &[SnippetLabel::new(loc, "not in the policy")],
                    Tone::Error,
                    color,
                ));
            }
            Failure::Mismatch {
                what,
                expected,
                actual,
                note,
            } => {
                out.push_str(&format!(
                    "{:<9} expected {expected}\n{:<9}  decided {actual}\n",
                    format!("{what}:"),
                    ""
                ));
                if let Some(note) = note {
                    out.push_str(&format!("{:<9}     note {note}\n", ""));
                }
            }
        }
    }
    if let Some(verdict) = &result.verdict {
        if !result.failures.iter().any(|f| {
            matches!(
                f,
                Failure::Mismatch {
                    what: "decision",
                    ..
                }
            )
        }) {
            out.push_str(&format!(
                "decision: {}\n",
                describe_decision(policy, verdict)
            ));
        }
        snippets.push_str(&sources(policy, verdict, color));
    }
    out.push_str(&snippets);
    out
}

/// `POST payments/v1/charge from frontend (spiffe://shop.example/frontend), x-canary: 1`.
pub(crate) fn describe_request(policy: &Policy, case: &Case) -> String {
    let mut text = format!(
        "{} {}{} from {}",
        case.method,
        case.to,
        case.path,
        describe_caller(policy, &case.caller)
    );
    for (name, value) in &case.headers {
        text.push_str(&format!(", {name}: {value}"));
    }
    text
}

/// `frontend (spiffe://shop.example/frontend)`, a SPIFFE ID, or "a plaintext caller".
pub(crate) fn describe_caller(policy: &Policy, caller: &Caller) -> String {
    match (caller, policy.identity(caller)) {
        (Caller::Service(name), Some(id)) => format!("{name} ({id})"),
        (_, Some(id)) => id,
        (_, None) => "a plaintext caller".to_owned(),
    }
}

/// Snippets of the chosen route and of what decided each authorization (one per place).
pub(crate) fn sources(policy: &Policy, verdict: &Verdict, color: bool) -> String {
    let mut out = String::new();
    if let Some(index) = verdict.route() {
        let (name, matcher) = policy.route_locs(index);
        let mut labels = Vec::new();
        if let Some(loc) = name {
            labels.push(SnippetLabel::new(loc, "chosen route"));
        }
        if let Some(loc) = matcher {
            labels.push(SnippetLabel::new(loc, "matched the request"));
        }
        if !labels.is_empty() {
            let title = format!("route `{}` was chosen", policy.route_name(index));
            out.push_str(&render_snippet(&title, &labels, Tone::Note, color));
        }
    }
    let mut shown = Vec::new();
    let deciding = verdict.deciding();
    for decision in deciding.into_iter().chain(
        verdict
            .authorizations
            .iter()
            .filter(|d| Some(d.action) != deciding.map(|x| x.action)),
    ) {
        let Some(loc) = policy.decider_loc(decision) else {
            continue;
        };
        if shown.contains(&loc) {
            continue;
        }
        shown.push(loc);
        let title = format!(
            "{} at `{}`: {}",
            action_name(decision.action),
            policy.service_name(decision.service),
            policy.describe_decider(decision)
        );
        let label = SnippetLabel::new(loc, policy.decider_label(decision));
        out.push_str(&render_snippet(&title, &[label], Tone::Note, color));
    }
    out
}

/// One case in the JSON report.
#[derive(Serialize)]
struct JsonCase<'a> {
    file: &'a str,
    line: u32,
    name: &'a str,
    passed: bool,
    request: JsonRequest<'a>,
    result: Option<JsonResult>,
    failures: Vec<JsonFailure<'a>>,
}

#[derive(Serialize)]
struct JsonRequest<'a> {
    from: Option<String>,
    to: &'a str,
    method: &'a str,
    path: &'a str,
    /// A value, or the list of values of a repeated header.
    headers: BTreeMap<&'a str, serde_json::Value>,
}

#[derive(Serialize)]
struct JsonResult {
    #[serde(flatten)]
    summary: Summary,
    authorizations: Vec<JsonAuthz>,
}

#[derive(Serialize)]
struct JsonAuthz {
    target: String,
    decision: &'static str,
    rule: RuleRef,
}

#[derive(Serialize)]
#[serde(untagged)]
enum JsonFailure<'a> {
    Mismatch {
        expectation: &'static str,
        expected: &'a str,
        actual: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<&'a str>,
    },
    Reference {
        error: &'a str,
        line: u32,
    },
}

/// The headers of a case: name → value, or → the list of values of a repeated header.
fn json_headers(headers: &[(String, String)]) -> BTreeMap<&str, serde_json::Value> {
    let mut out: BTreeMap<&str, serde_json::Value> = BTreeMap::new();
    for (name, value) in headers {
        let value = serde_json::Value::String(value.clone());
        match out.get_mut(name.as_str()) {
            None => {
                out.insert(name, value);
            }
            Some(serde_json::Value::Array(values)) => values.push(value),
            Some(first) => *first = serde_json::Value::Array(vec![first.take(), value]),
        }
    }
    out
}

/// The JSON report: an array with one object per case, in order.
pub(crate) fn json(policy: &Policy, files: &[FileResults<'_>]) -> serde_json::Result<String> {
    let mut cases = Vec::new();
    for file in files {
        for result in &file.results {
            let case = result.case;
            let caller = match &case.caller {
                Caller::Plaintext => None,
                Caller::Service(s) | Caller::Identity(s) => Some(s.clone()),
            };
            cases.push(JsonCase {
                file: &file.file.source.name,
                line: case.loc.line_col().0,
                name: &case.name,
                passed: result.passed(),
                request: JsonRequest {
                    from: caller,
                    to: &case.to,
                    method: &case.method,
                    path: &case.path,
                    headers: json_headers(&case.headers),
                },
                result: result.verdict.as_ref().map(|v| JsonResult {
                    summary: v.summary(policy),
                    authorizations: v
                        .authorizations
                        .iter()
                        .map(|d| JsonAuthz {
                            target: policy.service_name(d.service).to_owned(),
                            decision: action_name(d.action),
                            rule: policy.rule_ref(d.by),
                        })
                        .collect(),
                }),
                failures: result
                    .failures
                    .iter()
                    .map(|f| match f {
                        Failure::Mismatch {
                            what,
                            expected,
                            actual,
                            note,
                        } => JsonFailure::Mismatch {
                            expectation: what,
                            expected,
                            actual,
                            note: note.as_deref(),
                        },
                        Failure::Reference { message, loc } => JsonFailure::Reference {
                            error: message,
                            line: loc.line_col().0,
                        },
                    })
                    .collect(),
            });
        }
    }
    let mut text = serde_json::to_string_pretty(&cases)?;
    text.push('\n');
    Ok(text)
}
