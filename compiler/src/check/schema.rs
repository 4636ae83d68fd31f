//! A filter's `config` checked against the JSON Schema its module declares in the
//! `mesh.config_schema` custom section (the SDK's `config_schema!` writes it), so a
//! misspelt or mistyped setting fails `meshc check` instead of the filter at rollout.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::LocationSegment;

use super::Ctx;
use crate::diag::{did_you_mean, Code, Diagnostic};
use crate::source::{Loc, Spanned};
use crate::syntax::ast::Value;

/// The custom section that carries a module's config schema (JSON, draft 2020-12 unless
/// the schema says otherwise).
pub const SCHEMA_SECTION: &str = "mesh.config_schema";

/// At most this many schema errors are reported per filter: the first few say what is wrong.
const MAX_ERRORS: usize = 8;

/// The schema section's bytes, if the module has one.
pub fn declared_schema(module: &[u8]) -> Option<&[u8]> {
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        match payload {
            Ok(wasmparser::Payload::CustomSection(section)) if section.name() == SCHEMA_SECTION => {
                return Some(section.data());
            }
            Ok(_) => {}
            // The module was validated before this runs; a parse error ends the search.
            Err(_) => return None,
        }
    }
    None
}

/// Where the config is, for labels: the `config` value, or the `module` value when the
/// filter has no `config` clause.
pub(super) struct ConfigSite<'a> {
    pub config: Option<&'a Spanned<Value>>,
    pub module: &'a Spanned<Value>,
    pub module_name: &'a str,
    pub filter: &'a str,
}

impl Ctx<'_> {
    /// Checks `config` against the schema in `module` (if it declares one).
    pub(super) fn check_config_schema(
        &mut self,
        site: &ConfigSite<'_>,
        module: &[u8],
        config: &serde_json::Value,
    ) {
        let Some(section) = declared_schema(module) else {
            return;
        };
        let validator = match serde_json::from_slice::<serde_json::Value>(section)
            .map_err(|e| e.to_string())
            .and_then(|schema| jsonschema::validator_for(&schema).map_err(|e| e.to_string()))
        {
            Ok(v) => v,
            Err(why) => {
                self.push(
                    Diagnostic::new(
                        Code::InvalidModule,
                        &site.module.loc,
                        format!(
                            "`{}` declares a config schema that is not valid JSON Schema: {why}",
                            site.module_name
                        ),
                    )
                    .label("module with an invalid config schema")
                    .help(
                        "fix the schema in the filter's source (`config_schema!`) and rebuild it",
                    ),
                );
                return;
            }
        };
        let section_schema: serde_json::Value =
            serde_json::from_slice(section).unwrap_or(serde_json::Value::Null);
        let errors: Vec<_> = validator.iter_errors(config).take(MAX_ERRORS).collect();
        // A misspelt key also leaves the key it meant missing: report the misspelling only.
        let misspelt: Vec<(String, String)> = errors
            .iter()
            .filter_map(|e| match e.kind() {
                ValidationErrorKind::AdditionalProperties { unexpected } => {
                    let at = locate(site, e.instance_path().iter()).1;
                    let known = known_properties(&section_schema, &at);
                    let meant = unexpected
                        .iter()
                        .filter_map(|k| did_you_mean(k, known.iter().map(String::as_str)))
                        .map(|m| (at.clone(), m.to_string()))
                        .collect::<Vec<_>>();
                    Some(meant)
                }
                _ => None,
            })
            .flatten()
            .collect();
        for error in errors {
            if let ValidationErrorKind::Required { property } = error.kind() {
                let at = locate(site, error.instance_path().iter()).1;
                let name = property.as_str().unwrap_or_default();
                if misspelt.iter().any(|(a, m)| *a == at && m == name) {
                    continue;
                }
            }
            let (mut loc, at) = locate(site, error.instance_path().iter());
            // An unknown key is pointed at itself, not at the whole object around it.
            if let ValidationErrorKind::AdditionalProperties { unexpected } = error.kind() {
                if let Some(key) = unexpected.first().and_then(|k| key_loc(site, &at, k)) {
                    loc = key;
                }
            }
            let (what, help) = explain(error.kind(), &at, &section_schema, site.module_name);
            let what = what.unwrap_or_else(|| error.to_string());
            self.push(
                Diagnostic::new(
                    Code::FilterConfig,
                    &loc,
                    format!(
                        "config of filter `{}` does not match its module's schema: {what}",
                        site.filter
                    ),
                )
                .label(format!("rejected by `{}`'s schema", site.module_name))
                .help(help),
            );
        }
    }
}

/// The source location of the value at `path` in the config, and the path as written
/// (`limits.burst`, `tokens[2]`); the deepest value that exists when the path runs out.
fn locate<'a>(
    site: &ConfigSite<'_>,
    path: impl Iterator<Item = LocationSegment<'a>>,
) -> (Loc, String) {
    let Some(mut value) = site.config else {
        return (site.module.loc.clone(), String::new());
    };
    let mut at = String::new();
    for segment in path {
        let next = match (&value.node, &segment) {
            (Value::Object(entries), LocationSegment::Property(key)) => {
                at.push_str(if at.is_empty() { "" } else { "." });
                at.push_str(key);
                entries.iter().find(|(k, _)| k.node == *key).map(|(_, v)| v)
            }
            (Value::List(items), LocationSegment::Index(i)) => {
                at.push_str(&format!("[{i}]"));
                items.get(*i)
            }
            _ => None,
        };
        match next {
            Some(v) => value = v,
            None => break,
        }
    }
    (value.loc.clone(), at)
}

/// The location of `key` in the object at path `at` (dot-separated, as `locate` writes it).
fn key_loc(site: &ConfigSite<'_>, at: &str, key: &str) -> Option<Loc> {
    let mut value = site.config?;
    for segment in at.split('.').filter(|s| !s.is_empty()) {
        let Value::Object(entries) = &value.node else {
            return None;
        };
        value = entries
            .iter()
            .find(|(k, _)| k.node == segment)
            .map(|(_, v)| v)?;
    }
    let Value::Object(entries) = &value.node else {
        return None;
    };
    entries
        .iter()
        .find(|(k, _)| k.node == key)
        .map(|(k, _)| k.loc.clone())
}

/// A message and a help line for the common kinds of schema error; `None` keeps the
/// validator's own message.
fn explain(
    kind: &ValidationErrorKind,
    at: &str,
    schema: &serde_json::Value,
    module: &str,
) -> (Option<String>, String) {
    let subject = if at.is_empty() {
        "the config".to_string()
    } else {
        format!("`{at}`")
    };
    match kind {
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or("?");
            (
                Some(format!("{subject} lacks `{name}`")),
                format!("add `{name}: ...`; `{module}` requires it"),
            )
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let known = known_properties(schema, at);
            let first = unexpected.first().map_or("?", String::as_str);
            let help = match did_you_mean(first, known.iter().map(String::as_str)) {
                Some(near) => format!("did you mean `{near}`?"),
                None if known.is_empty() => format!("`{module}` takes no settings here"),
                None => format!("`{module}` takes: {}", quoted(&known)),
            };
            (
                Some(format!(
                    "{subject} has unknown {} {}",
                    if unexpected.len() == 1 { "key" } else { "keys" },
                    quoted(unexpected)
                )),
                help,
            )
        }
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                TypeKind::Single(t) => article(&t.to_string()),
                TypeKind::Multiple(ts) => {
                    let names: Vec<String> =
                        (*ts).into_iter().map(|t| article(&t.to_string())).collect();
                    names.join(" or ")
                }
            };
            (
                Some(format!("{subject} must be {expected}")),
                format!("write {expected} here"),
            )
        }
        _ => (
            None,
            format!("`{module}` declares what its config may hold; fix the value to match"),
        ),
    }
}

/// The property names the schema declares for the object at `at` (top level, or nested
/// through `properties`), for "did you mean".
fn known_properties(schema: &serde_json::Value, at: &str) -> Vec<String> {
    let mut node = schema;
    if !at.is_empty() {
        for key in at.split('.') {
            match node.get("properties").and_then(|p| p.get(key)) {
                Some(n) => node = n,
                None => return Vec::new(),
            }
        }
    }
    node.get("properties")
        .and_then(serde_json::Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// "an integer", "a string".
fn article(type_name: &str) -> String {
    let vowel = type_name.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {type_name}", if vowel { "an" } else { "a" })
}
