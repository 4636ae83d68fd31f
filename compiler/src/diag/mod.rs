//! Diagnostics: stable codes, severities, labelled spans and help, collected not thrown.

mod codes;
mod render;

pub use codes::Code;
pub use render::{render, render_human, Format};

use crate::source::Loc;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The policy is wrong and does not compile.
    Error,
    /// Probably a mistake; compiles unless `--deny-warnings`.
    Warning,
}

/// A span involved in a diagnostic, with what it shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    /// Where.
    pub loc: Loc,
    /// What this span has to do with the problem.
    pub message: String,
}

/// One finding about a policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// The stable code (`mesh::unknown-service`).
    pub code: Code,
    /// Error or warning.
    pub severity: Severity,
    /// One sentence saying what is wrong.
    pub message: String,
    /// Every span involved; the first is the primary one.
    pub labels: Vec<Label>,
    /// The fix, when there is one.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A diagnostic of `code` at its default severity, pointing at `loc`.
    pub fn new(code: Code, loc: &Loc, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            severity: code.severity(),
            message: message.into(),
            labels: vec![Label {
                loc: loc.clone(),
                message: String::new(),
            }],
            help: None,
        }
    }

    /// Sets the primary label's text.
    pub fn label(mut self, message: impl Into<String>) -> Diagnostic {
        if let Some(first) = self.labels.first_mut() {
            first.message = message.into();
        }
        self
    }

    /// Adds another span involved.
    pub fn with_label(mut self, loc: &Loc, message: impl Into<String>) -> Diagnostic {
        self.labels.push(Label {
            loc: loc.clone(),
            message: message.into(),
        });
        self
    }

    /// Sets the `help:` line.
    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// The primary location.
    pub fn primary(&self) -> Option<&Loc> {
        self.labels.first().map(|l| &l.loc)
    }

    /// Whether it is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// The nearest of `candidates` to `name`, if near enough to suggest ("did you mean").
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let max_distance = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|(d, c)| *d <= max_distance || c.starts_with(name) && name.len() >= 3)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn suggests_the_nearest_name() {
        let names = ["payments", "inventory", "frontend"];
        assert_eq!(did_you_mean("paymnets", names), Some("payments"));
        assert_eq!(did_you_mean("inventroy", names), Some("inventory"));
        assert_eq!(did_you_mean("zzz", names), None);
        assert_eq!(did_you_mean("payments", names), None);
    }
}
