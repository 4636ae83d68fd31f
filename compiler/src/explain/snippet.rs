//! Source snippets with labels ("this rule decided"), drawn by miette like diagnostics are.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceCode};

use crate::source::{FileText, Loc, SourceFile};

/// A span to show, and what to say about it.
#[derive(Debug, Clone)]
pub struct SnippetLabel {
    /// Where.
    pub loc: Loc,
    /// The label's text.
    pub message: String,
}

impl SnippetLabel {
    /// A label at `loc`.
    pub fn new(loc: &Loc, message: impl Into<String>) -> SnippetLabel {
        SnippetLabel {
            loc: loc.clone(),
            message: message.into(),
        }
    }
}

/// How the snippet's heading is marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// A problem (`×`), such as an invalid test file.
    Error,
    /// Information (`☞`), such as the rule that decided.
    Note,
}

/// Renders `title` and the labelled source, one snippet per file (in order of first
/// appearance). `color` adds ANSI colours.
pub fn render_snippet(title: &str, labels: &[SnippetLabel], tone: Tone, color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme);
    let mut groups: Vec<(&Arc<SourceFile>, Vec<&SnippetLabel>)> = Vec::new();
    for label in labels {
        match groups
            .iter_mut()
            .find(|(file, _)| Arc::ptr_eq(file, &label.loc.file))
        {
            Some((_, group)) => group.push(label),
            None => groups.push((&label.loc.file, vec![label])),
        }
    }
    let severity = match tone {
        Tone::Error => miette::Severity::Error,
        Tone::Note => miette::Severity::Advice,
    };
    let mut out = String::new();
    if groups.is_empty() {
        out.push_str(title);
        out.push('\n');
    }
    for (i, (file, group)) in groups.iter().enumerate() {
        let snippet = Snippet {
            title: if i == 0 {
                title.to_owned()
            } else {
                format!("(continued in {})", file.name)
            },
            severity,
            source: NamedSource::new(&file.name, FileText(Arc::clone(file))).with_language("mesh"),
            labels: group
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let span = shown_span(&l.loc);
                    let text = (!l.message.is_empty()).then(|| l.message.clone());
                    if i == 0 {
                        LabeledSpan::new_primary_with_span(text, span)
                    } else {
                        LabeledSpan::new_with_span(text, span)
                    }
                })
                .collect(),
        };
        if handler.render_report(&mut out, &snippet).is_err() {
            out.push_str(&plain(title, group));
        }
    }
    out
}

/// A fallback without snippets: `title` and `file:line:col: label` lines.
fn plain(title: &str, labels: &[&SnippetLabel]) -> String {
    let mut out = format!("{title}\n");
    for label in labels {
        let (line, column) = label.loc.line_col();
        out.push_str(&format!(
            "  --> {}:{line}:{column}: {}\n",
            label.loc.file.name, label.message
        ));
    }
    out
}

/// The span shown: clamped to the text, trailing whitespace dropped, and never past the last
/// line (miette draws nothing for a span after the final newline).
fn shown_span(loc: &Loc) -> Range<usize> {
    let text = &loc.file.text;
    let start = loc.span.start.min(text.len());
    let end = loc.span.end.clamp(start, text.len());
    let trimmed = text.get(start..end).map_or(0, |s| s.trim_end().len());
    let end = if trimmed == 0 { end } else { start + trimmed };
    if start == text.len() && text.ends_with('\n') {
        let last = text.len() - 1;
        return last..last;
    }
    start..end
}

#[derive(Debug)]
struct Snippet {
    title: String,
    severity: miette::Severity,
    source: NamedSource<FileText>,
    labels: Vec<LabeledSpan>,
}

impl fmt::Display for Snippet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.title)
    }
}

impl std::error::Error for Snippet {}

impl miette::Diagnostic for Snippet {
    fn severity(&self) -> Option<miette::Severity> {
        Some(self.severity)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(&self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(self.labels.iter().cloned()))
    }
}

#[cfg(test)]
mod tests {
    use super::{render_snippet, SnippetLabel, Tone};
    use crate::source::{Loc, SourceFile};

    #[test]
    fn a_snippet_shows_file_line_source_and_label() {
        let file = SourceFile::new(
            "shop.mesh",
            "authorize a {\n  deny from any to path prefix \"/x\"\n}\n",
        );
        let loc = Loc::new(&file, 16..47);
        let out = render_snippet(
            "decided by the rule at shop.mesh:2",
            &[SnippetLabel::new(&loc, "this rule decided")],
            Tone::Note,
            false,
        );
        assert!(out.contains("decided by the rule at shop.mesh:2"), "{out}");
        assert!(out.contains("shop.mesh:2:3"), "{out}");
        assert!(out.contains("deny from any to path prefix \"/x\""), "{out}");
        assert!(out.contains("this rule decided"), "{out}");
    }
}
