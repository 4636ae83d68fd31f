//! The test file format (`*.test.toml`): parsing, with every problem pointed at in the file.
//!
//! ```toml
//! [[case]]
//! name = "frontend can charge"   # optional: defaults to "METHOD to/path from caller"
//! from = "frontend"              # a service, "plaintext", or "spiffe://..."; omitted: plaintext
//! to = "payments"                # the authority (Host)
//! method = "POST"                # optional: GET
//! path = "/v1/charge"
//! headers = { x-canary = "1" }   # optional; a list repeats a header: { x-h = ["0", "1"] }
//! expect.route = "charge"        # the chosen route; false: no route (404, or no routes at all)
//! expect.targets = ["payments", "payments-canary"]   # in any order
//! expect.status = 403            # what the proxy itself answers: 400, 403 or 404
//! expect.allow = true            # or expect.deny = true: every target must agree
//! expect.rule = "shop.mesh:122"  # what decided: a rule's file:line, "default" or "mtls"
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use mesh_table::Action;
use meshc::explain::{Caller, SnippetLabel};
use meshc::{Loc, SourceFile};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// A test file and its cases.
#[derive(Debug)]
pub(crate) struct TestFile {
    /// The file, for snippets.
    pub(crate) source: Arc<SourceFile>,
    /// Its cases, in order.
    pub(crate) cases: Vec<Case>,
}

/// One request and what is expected of it.
#[derive(Debug)]
pub(crate) struct Case {
    /// Its name.
    pub(crate) name: String,
    /// Where it was written (the `[[case]]` table).
    pub(crate) loc: Loc,
    /// Who sends the request.
    pub(crate) caller: Caller,
    /// Where `from` was written.
    pub(crate) from_loc: Option<Loc>,
    /// The authority.
    pub(crate) to: String,
    /// Where `to` was written.
    pub(crate) to_loc: Loc,
    /// The method.
    pub(crate) method: String,
    /// The request target.
    pub(crate) path: String,
    /// The headers, by name.
    pub(crate) headers: Vec<(String, String)>,
    /// What is expected.
    pub(crate) expect: Expect,
}

/// The expectations of a case; each is optional.
#[derive(Debug, Default)]
pub(crate) struct Expect {
    /// The chosen route's name, or `None` for "no route".
    pub(crate) route: Option<(Option<String>, Loc)>,
    /// The targets, in any order.
    pub(crate) targets: Option<(Vec<String>, Loc)>,
    /// The proxy's own answer.
    pub(crate) status: Option<u16>,
    /// Allowed or denied.
    pub(crate) decision: Option<Action>,
    /// What decided: `file:line`, `default` or `mtls`.
    pub(crate) rule: Option<(String, Loc)>,
}

/// A test file that cannot be used: what is wrong, and where.
#[derive(Debug)]
pub(crate) struct SpecError {
    /// One sentence.
    pub(crate) message: String,
    /// Where, when known.
    pub(crate) labels: Vec<SnippetLabel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    case: Vec<Spanned<RawCase>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: Option<Spanned<String>>,
    from: Option<Spanned<String>>,
    to: Spanned<String>,
    method: Option<Spanned<String>>,
    path: Spanned<String>,
    #[serde(default)]
    headers: BTreeMap<String, RawHeader>,
    #[serde(default)]
    expect: RawExpect,
}

/// A header's value, or a list of values for a header the request repeats (matchers read
/// them joined, as the proxies do: `mesh_engine::header_value`).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawHeader {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    route: Option<Spanned<RouteName>>,
    targets: Option<Spanned<Vec<String>>>,
    status: Option<Spanned<i64>>,
    allow: Option<Spanned<bool>>,
    deny: Option<Spanned<bool>>,
    rule: Option<Spanned<String>>,
}

/// `expect.route`: a route's name, or `false` for no route.
struct RouteName(Option<String>);

impl<'de> Deserialize<'de> for RouteName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RouteName, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RouteName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a route's name, or `false` for no route")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RouteName, E> {
                Ok(RouteName(Some(v.to_owned())))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RouteName, E> {
                if v {
                    Err(E::custom(
                        "`route = true` is not an expectation: name the route, or write `false` for no route",
                    ))
                } else {
                    Ok(RouteName(None))
                }
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Reads and checks a test file. `Err` holds every problem found (at least one).
pub(crate) fn read(path: &Path) -> Result<TestFile, Vec<SpecError>> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        vec![SpecError {
            message: format!("cannot read `{}`: {err}", path.display()),
            labels: Vec::new(),
        }]
    })?;
    parse(SourceFile::with_path(
        path.display().to_string(),
        text,
        Some(path.to_path_buf()),
    ))
}

/// Parses a test file's text.
pub(crate) fn parse(source: Arc<SourceFile>) -> Result<TestFile, Vec<SpecError>> {
    let raw: RawFile = toml::from_str(&source.text).map_err(|err| {
        vec![SpecError {
            message: err.message().trim().to_owned(),
            labels: err
                .span()
                .map(|span| SnippetLabel::new(&Loc::new(&source, span), "here"))
                .into_iter()
                .collect(),
        }]
    })?;
    let mut errors = Vec::new();
    let mut cases: Vec<Case> = Vec::new();
    let at = |span: std::ops::Range<usize>| Loc::new(&source, span);
    for raw in raw.case {
        let loc = at(raw.span());
        let raw = raw.into_inner();
        let caller = raw
            .from
            .as_ref()
            .map_or(Caller::Plaintext, |f| Caller::parse(f.get_ref()));
        let method = raw
            .method
            .as_ref()
            .map_or_else(|| "GET".to_owned(), |m| m.get_ref().clone());
        if let Some(m) = &raw.method {
            if m.get_ref().is_empty() || !m.get_ref().bytes().all(|b| b.is_ascii_alphabetic()) {
                errors.push(error(
                    "a method is a word such as `GET` or `POST`",
                    at(m.span()),
                    "not a method",
                ));
            }
        }
        let name = raw.name.as_ref().map_or_else(
            || {
                let from = raw
                    .from
                    .as_ref()
                    .map_or("plaintext", |f| f.get_ref().as_str());
                format!(
                    "{method} {}{} from {from}",
                    raw.to.get_ref(),
                    raw.path.get_ref()
                )
            },
            |n| n.get_ref().clone(),
        );
        if let Some(first) = cases.iter().find(|c| c.name == name) {
            let mut e = error(
                format!("two cases are named `{name}`"),
                loc.clone(),
                "this case",
            );
            e.message.push_str(&format!(
                " (the first is at line {}); names identify cases in reports",
                first.loc.line_col().0
            ));
            errors.push(e);
        }
        let expect = expectations(raw.expect, &at, &mut errors);
        cases.push(Case {
            name,
            loc,
            caller,
            from_loc: raw.from.as_ref().map(|f| at(f.span())),
            to: raw.to.get_ref().clone(),
            to_loc: at(raw.to.span()),
            method,
            path: raw.path.into_inner(),
            headers: raw
                .headers
                .into_iter()
                .flat_map(|(name, value)| {
                    let values = match value {
                        RawHeader::One(v) => vec![v],
                        RawHeader::Many(vs) => vs,
                    };
                    values.into_iter().map(move |v| (name.clone(), v))
                })
                .collect(),
            expect,
        });
    }
    if cases.is_empty() && errors.is_empty() {
        errors.push(SpecError {
            message: format!("`{}` has no test case: add `[[case]]` tables", source.name),
            labels: Vec::new(),
        });
    }
    if errors.is_empty() {
        Ok(TestFile { source, cases })
    } else {
        Err(errors)
    }
}

fn expectations(
    raw: RawExpect,
    at: &impl Fn(std::ops::Range<usize>) -> Loc,
    errors: &mut Vec<SpecError>,
) -> Expect {
    let status = raw.status.and_then(|s| match *s.get_ref() {
        400 => Some(400),
        403 => Some(403),
        404 => Some(404),
        _ => {
            errors.push(error(
                "the proxy itself answers only 400 (bad path), 403 (denied) or 404 (no route); leave `status` out for a request that reaches the application",
                at(s.span()),
                "not 400, 403 or 404",
            ));
            None
        }
    });
    let decision = match (&raw.allow, &raw.deny) {
        (Some(allow), Some(deny)) => {
            errors.push(
                error(
                    "give `expect.allow` or `expect.deny`, not both",
                    at(allow.span()),
                    "one",
                )
                .and(at(deny.span()), "the other"),
            );
            None
        }
        (Some(allow), None) => Some(if *allow.get_ref() {
            Action::Allow
        } else {
            Action::Deny
        }),
        (None, Some(deny)) => Some(if *deny.get_ref() {
            Action::Deny
        } else {
            Action::Allow
        }),
        (None, None) => None,
    };
    Expect {
        route: raw
            .route
            .map(|r| (at(r.span()), r.into_inner().0))
            .map(|(loc, name)| (name, loc)),
        targets: raw
            .targets
            .map(|t| (at(t.span()), t.into_inner()))
            .map(|(loc, t)| (t, loc)),
        status,
        decision,
        rule: raw
            .rule
            .map(|r| (at(r.span()), r.into_inner()))
            .map(|(loc, r)| (r, loc)),
    }
}

fn error(message: impl Into<String>, loc: Loc, label: &str) -> SpecError {
    SpecError {
        message: message.into(),
        labels: vec![SnippetLabel::new(&loc, label)],
    }
}

impl SpecError {
    /// Adds another span involved.
    fn and(mut self, loc: Loc, label: &str) -> SpecError {
        self.labels.push(SnippetLabel::new(&loc, label));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::parse;
    use mesh_table::Action;
    use meshc::explain::Caller;
    use meshc::SourceFile;

    fn errors(text: &str) -> Vec<String> {
        match parse(SourceFile::new("t.test.toml", text)) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.into_iter().map(|e| e.message).collect(),
        }
    }

    #[test]
    fn a_list_of_values_repeats_a_header_in_order() {
        let text = r#"
[[case]]
to = "payments"
path = "/"
headers = { x-h = ["1", "0"], x-one = "z" }
"#;
        let file = parse(SourceFile::new("t.test.toml", text)).expect("parses");
        let pairs: Vec<(&str, &str)> = file.cases[0]
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(pairs, [("x-h", "1"), ("x-h", "0"), ("x-one", "z")]);
    }

    #[test]
    fn a_full_case_parses() {
        let text = r#"
[[case]]
name = "frontend can charge"
from = "frontend"
to = "payments"
method = "POST"
path = "/v1/charge"
headers = { x-canary = "1" }
expect.route = "canary-pin"
expect.targets = ["payments-canary"]
expect.allow = true
expect.rule = "shop.mesh:122"

[[case]]
to = "payments"
path = "/nowhere"
expect = { route = false, status = 404 }
"#;
        let file = parse(SourceFile::new("t.test.toml", text)).expect("parses");
        assert_eq!(file.cases.len(), 2);
        let first = &file.cases[0];
        assert_eq!(first.caller, Caller::Service("frontend".into()));
        assert_eq!(first.headers, [("x-canary".to_owned(), "1".to_owned())]);
        assert_eq!(first.expect.decision, Some(Action::Allow));
        assert_eq!(first.loc.line_col().0, 2);
        let second = &file.cases[1];
        assert_eq!(second.name, "GET payments/nowhere from plaintext");
        assert_eq!(second.caller, Caller::Plaintext);
        assert_eq!(second.expect.route.as_ref().map(|r| &r.0), Some(&None));
        assert_eq!(second.expect.status, Some(404));
    }

    #[test]
    fn mistakes_are_reported() {
        let unknown = errors("[[case]]\nto = \"a\"\npath = \"/\"\nexpect.rout = \"x\"\n");
        assert!(unknown[0].contains("unknown field `rout`"), "{unknown:?}");
        assert!(errors("[[case]]\nto = \"a\"\n")[0].contains("missing field `path`"));
        assert!(
            errors("[[case]]\nto = \"a\"\npath = \"/\"\nexpect.status = 200\n")[0].contains("400")
        );
        assert!(errors(
            "[[case]]\nto = \"a\"\npath = \"/\"\nexpect = { allow = true, deny = false }\n"
        )[0]
        .contains("not both"));
        assert!(
            errors("[[case]]\nto = \"a\"\npath = \"/\"\nexpect.route = true\n")[0]
                .contains("route = true")
        );
        assert!(errors("")[0].contains("no test case"));
        let twice = "[[case]]\nto = \"a\"\npath = \"/\"\n[[case]]\nto = \"a\"\npath = \"/\"\n";
        assert!(errors(twice)[0].contains("two cases are named"));
    }
}
