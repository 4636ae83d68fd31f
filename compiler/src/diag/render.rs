//! Rendering diagnostics for people (miette) and for tools (JSON, SARIF, GitHub annotations).

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceCode};
use serde::Serialize;
use serde_json::{json, Value};

use super::{Code, Diagnostic, Label, Severity};
use crate::source::{FileText, Loc, SourceFile};

/// The diagnostics reference; SARIF rule descriptions are taken from it so they never drift
/// from what `meshc explain` prints.
const REFERENCE: &str = include_str!("../../../docs/diagnostics.md");

/// The version of the `--format json` document; bumped only on incompatible changes.
const JSON_FORMAT_VERSION: u32 = 1;

/// An output format of `meshc check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// rustc-like reports with source snippets.
    Human,
    /// One JSON document.
    Json,
    /// SARIF 2.1.0.
    Sarif,
    /// GitHub Actions workflow commands.
    Github,
}

/// Renders all diagnostics in `format`, in the order given (the caller sorts them).
///
/// `Human` is rendered without colour; use [`render_human`] to choose.
pub fn render(diagnostics: &[Diagnostic], format: Format) -> String {
    match format {
        Format::Human => render_human(diagnostics, false),
        Format::Json => render_json(diagnostics),
        Format::Sarif => render_sarif(diagnostics),
        Format::Github => render_github(diagnostics),
    }
}

/// Renders rustc-like reports with source snippets, then a summary line (nothing at all when
/// there is no diagnostic). `color` adds ANSI colours, for a terminal.
pub fn render_human(diagnostics: &[Diagnostic], color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_show_related_as_nested(true);
    let mut out = String::new();
    for diagnostic in diagnostics {
        let report = Report::from_diagnostic(diagnostic);
        // Lines too long to draw are shortened first (`elide`); should miette still fail or
        // panic on some input, the finding is printed as a plain line rather than lost (the
        // fuzz targets abort on the panic itself, so it would not go unnoticed).
        let mut rendered = String::new();
        let drawn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handler.render_report(&mut rendered, &report)
        }));
        match drawn {
            Ok(Ok(())) => out.push_str(&rendered),
            Ok(Err(_)) | Err(_) => out.push_str(&plain_line(diagnostic)),
        }
        for note in report.notes() {
            out.push_str(&note);
            out.push('\n');
        }
        out.push('\n');
    }
    if let Some(summary) = summary(diagnostics, color) {
        out.push_str(&summary);
        out.push('\n');
    }
    out
}

/// The rustc-like closing line: `error: could not compile policy: 2 errors, 1 warning emitted`.
fn summary(diagnostics: &[Diagnostic], color: bool) -> Option<String> {
    let (errors, warnings) = counts(diagnostics);
    let paint = |text: &str, ansi: &str| {
        if color {
            format!("\x1b[{ansi}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    };
    if errors > 0 {
        let mut counts = plural(errors, "error");
        if warnings > 0 {
            counts = format!("{counts}, {}", plural(warnings, "warning"));
        }
        Some(format!(
            "{}: could not compile policy: {counts} emitted",
            paint("error", "1;31")
        ))
    } else if warnings > 0 {
        Some(format!(
            "{}: {} emitted",
            paint("warning", "1;33"),
            plural(warnings, "warning")
        ))
    } else {
        None
    }
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Number of errors and of warnings.
fn counts(diagnostics: &[Diagnostic]) -> (usize, usize) {
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    (errors, diagnostics.len() - errors)
}

fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

/// A one-line form, used only if miette cannot render a report.
fn plain_line(diagnostic: &Diagnostic) -> String {
    let place = diagnostic.labels.first().map_or_else(String::new, |label| {
        let p = Position::of(label);
        format!("{}:{}:{}: ", p.file, p.line, p.column)
    });
    format!(
        "{place}{}[{}]: {}\n",
        severity_name(diagnostic.severity),
        diagnostic.code.as_str(),
        diagnostic.message
    )
}

/// A label's file and 1-based start and end (the end is exclusive: the column after the last
/// character, as SARIF and GitHub expect).
struct Position<'a> {
    file: &'a str,
    line: u32,
    column: u32,
    end_line: u32,
    end_column: u32,
}

impl<'a> Position<'a> {
    fn of(label: &'a Label) -> Position<'a> {
        let loc = &label.loc;
        let span = shown_span(loc);
        let (line, column) = loc.file.line_col(span.start);
        let (end_line, end_column) = loc.file.line_col(span.end);
        Position {
            file: &loc.file.name,
            line,
            column,
            end_line,
            end_column,
        }
    }
}

/// The span a label shows: clamped to the text, and without trailing whitespace. A grammar
/// rule can take in the whitespace after it (a clause's span running to the next line's
/// indentation); a label should end at its last character, in every format alike.
fn shown_span(loc: &Loc) -> Range<usize> {
    let text = &loc.file.text;
    let start = loc.span.start.min(text.len());
    let end = loc.span.end.clamp(start, text.len());
    match text.get(start..end).map(str::trim_end) {
        Some(trimmed) if !trimmed.is_empty() => start..start + trimmed.len(),
        _ => start..end,
    }
}

// ---------------------------------------------------------------------------------------------
// Human: miette

/// Our diagnostic in miette's terms: one report per file involved, the ones for other files
/// than the primary label's hanging off it as `related` (miette draws snippets of one source
/// per report).
#[derive(Debug)]
struct Report {
    code: Option<&'static str>,
    severity: miette::Severity,
    message: String,
    help: Option<String>,
    source: Option<Source>,
    labels: Vec<LabeledSpan>,
    related: Vec<Report>,
    /// Which lines of the source were shortened (`elide`): 1-based number, length in characters.
    shortened: Vec<(usize, usize)>,
}

/// A report's source: the file, or the file with its very long lines shortened.
#[derive(Debug)]
enum Source {
    Whole(NamedSource<FileText>),
    Elided(NamedSource<elide::Elided>),
}

impl SourceCode for Source {
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        match self {
            Source::Whole(source) => {
                source.read_span(span, context_lines_before, context_lines_after)
            }
            Source::Elided(source) => {
                source.read_span(span, context_lines_before, context_lines_after)
            }
        }
    }
}

/// A report's source and labels, the long lines shortened if the file has any.
fn snippet(
    file: &Arc<SourceFile>,
    labels: &[&Label],
    primary: bool,
) -> (Source, Vec<LabeledSpan>, Vec<(usize, usize)>) {
    let spans: Vec<Range<usize>> = labels.iter().map(|l| label_range(l)).collect();
    let labeled = |map: &dyn Fn(usize) -> usize| -> Vec<LabeledSpan> {
        labels
            .iter()
            .zip(&spans)
            .enumerate()
            .map(|(i, (label, span))| {
                let text = (!label.message.is_empty()).then(|| label.message.clone());
                let span = map(span.start)..map(span.end);
                if primary && i == 0 {
                    LabeledSpan::new_primary_with_span(text, span)
                } else {
                    LabeledSpan::new_with_span(text, span)
                }
            })
            .collect()
    };
    if !elide::has_long_line(&file.text) {
        let source = named(file, FileText(Arc::clone(file)));
        return (Source::Whole(source), labeled(&|offset| offset), Vec::new());
    }
    let points: Vec<usize> = spans.iter().flat_map(|s| [s.start, s.end]).collect();
    let elided = elide::Elided::new(file, &points);
    let labels = labeled(&|offset| elided.to_shortened(offset));
    // Only the shortened lines the snippet shows are worth a note: those of the labels.
    let label_lines: Vec<usize> = spans
        .iter()
        .flat_map(|s| [s.start, s.end])
        .map(|offset| file.line_col(offset).0 as usize)
        .collect();
    let shortened = elided
        .shortened
        .iter()
        .copied()
        .filter(|(line, _)| label_lines.iter().any(|l| l.abs_diff(*line) <= 1))
        .collect();
    (Source::Elided(named(file, elided)), labels, shortened)
}

impl Report {
    fn from_diagnostic(diagnostic: &Diagnostic) -> Report {
        let severity = match diagnostic.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        };
        // Group the labels by file, in order of first appearance; the primary file first.
        let mut groups: Vec<(&Arc<SourceFile>, Vec<&Label>)> = Vec::new();
        for label in &diagnostic.labels {
            match groups
                .iter_mut()
                .find(|(file, _)| Arc::ptr_eq(file, &label.loc.file))
            {
                Some((_, labels)) => labels.push(label),
                None => groups.push((&label.loc.file, vec![label])),
            }
        }
        let mut groups = groups.into_iter();
        let primary = groups.next();
        let related = groups
            .map(|(file, labels)| {
                let (source, labels, shortened) = snippet(file, &labels, false);
                Report {
                    code: None,
                    severity: miette::Severity::Advice,
                    message: format!("see also {}", file.name),
                    help: None,
                    source: Some(source),
                    labels,
                    related: Vec::new(),
                    shortened,
                }
            })
            .collect();
        let (source, labels, shortened) = match primary {
            Some((file, labels)) => {
                let (source, labels, shortened) = snippet(file, &labels, true);
                (Some(source), labels, shortened)
            }
            None => (None, Vec::new(), Vec::new()),
        };
        Report {
            code: Some(diagnostic.code.as_str()),
            severity,
            message: diagnostic.message.clone(),
            help: diagnostic.help.clone(),
            source,
            labels,
            related,
            shortened,
        }
    }

    /// One line per shortened source line of this report and its related ones.
    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let mut add = |report: &Report| {
            let name = match &report.source {
                Some(Source::Elided(source)) => source.name(),
                _ => return,
            };
            for (line, chars) in &report.shortened {
                notes.push(format!(
                    "  = note: line {line} of {name} is {chars} characters long: the snippet \
                     shows only the parts around the labels (`…` marks what is left out)"
                ));
            }
        };
        add(self);
        self.related.iter().for_each(&mut add);
        notes
    }
}

fn named<S: SourceCode + 'static>(file: &SourceFile, source: S) -> NamedSource<S> {
    NamedSource::new(&file.name, source).with_language("mesh")
}

/// The span miette draws for a label, in the original text.
fn label_range(label: &Label) -> Range<usize> {
    let text = &label.loc.file.text;
    let len = text.len();
    let Range { mut start, mut end } = shown_span(&label.loc);
    // miette draws no snippet line for a span after the final newline (an "unexpected end of
    // file"), so point at the end of the last line instead.
    if start == len && text.ends_with('\n') {
        start = len - 1;
        end = start;
    }
    start..end
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Report {}

impl miette::Diagnostic for Report {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.code
            .map(|code| Box::new(code) as Box<dyn fmt::Display + 'a>)
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(self.severity)
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|help| Box::new(help) as Box<dyn fmt::Display + 'a>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.as_ref().map(|s| s as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() {
            None
        } else {
            Some(Box::new(self.labels.iter().cloned()))
        }
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        if self.related.is_empty() {
            None
        } else {
            Some(Box::new(
                self.related.iter().map(|r| r as &dyn miette::Diagnostic),
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// JSON

/// `--format json`: field order is part of the format, hence structs rather than `json!`.
#[derive(Serialize)]
struct JsonDocument<'a> {
    format_version: u32,
    diagnostics: Vec<JsonDiagnostic<'a>>,
    errors: usize,
    warnings: usize,
}

#[derive(Serialize)]
struct JsonDiagnostic<'a> {
    code: &'static str,
    severity: &'static str,
    message: &'a str,
    help: Option<&'a str>,
    labels: Vec<JsonLabel<'a>>,
}

#[derive(Serialize)]
struct JsonLabel<'a> {
    file: &'a str,
    line: u32,
    column: u32,
    end_line: u32,
    end_column: u32,
    message: &'a str,
}

fn render_json(diagnostics: &[Diagnostic]) -> String {
    let (errors, warnings) = counts(diagnostics);
    let document = JsonDocument {
        format_version: JSON_FORMAT_VERSION,
        diagnostics: diagnostics
            .iter()
            .map(|d| JsonDiagnostic {
                code: d.code.as_str(),
                severity: severity_name(d.severity),
                message: &d.message,
                help: d.help.as_deref(),
                labels: d
                    .labels
                    .iter()
                    .map(|label| {
                        let p = Position::of(label);
                        JsonLabel {
                            file: p.file,
                            line: p.line,
                            column: p.column,
                            end_line: p.end_line,
                            end_column: p.end_column,
                            message: &label.message,
                        }
                    })
                    .collect(),
            })
            .collect(),
        errors,
        warnings,
    };
    to_pretty(&document)
}

/// Pretty JSON with a final newline. Serializing these plain structs cannot fail (string
/// keys, no maps with other keys, no custom `Serialize`), so an error would be a bug.
fn to_pretty(value: &impl Serialize) -> String {
    match serde_json::to_string_pretty(value) {
        Ok(mut text) => {
            text.push('\n');
            text
        }
        Err(err) => unreachable!("serializing diagnostics cannot fail: {err}"),
    }
}

// ---------------------------------------------------------------------------------------------
// SARIF

const SARIF_SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

fn render_sarif(diagnostics: &[Diagnostic]) -> String {
    // One rule per code used, in code order, so the output is stable whatever the input order.
    let codes: Vec<Code> = diagnostics
        .iter()
        .map(|d| d.code)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let rules: Vec<Value> = codes
        .iter()
        .map(|&code| {
            json!({
                "id": code.as_str(),
                "shortDescription": { "text": short_description(code) },
                "defaultConfiguration": { "level": severity_name(code.severity()) },
            })
        })
        .collect();
    let results: Vec<Value> = diagnostics
        .iter()
        .map(|d| {
            let mut text = d.message.clone();
            if let Some(help) = &d.help {
                text.push_str("\nhelp: ");
                text.push_str(help);
            }
            let mut result = json!({
                "ruleId": d.code.as_str(),
                "ruleIndex": codes.iter().position(|&c| c == d.code),
                "level": severity_name(d.severity),
                "message": { "text": text },
            });
            let mut labels = d.labels.iter();
            if let Some(primary) = labels.next() {
                result["locations"] = json!([sarif_location(primary, None)]);
            }
            let related: Vec<Value> = labels
                .enumerate()
                .map(|(i, label)| sarif_location(label, Some(i)))
                .collect();
            if !related.is_empty() {
                result["relatedLocations"] = Value::Array(related);
            }
            result
        })
        .collect();
    let document = json!({
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "meshc",
                    "version": env!("CARGO_PKG_VERSION"),
                    "rules": rules,
                }
            },
            // Our columns count characters (code points), not UTF-16 units.
            "columnKind": "unicodeCodePoints",
            "results": results,
        }]
    });
    to_pretty(&document)
}

/// A SARIF location; related locations carry an `id` (SARIF requires it to be unique).
fn sarif_location(label: &Label, id: Option<usize>) -> Value {
    let p = Position::of(label);
    let mut location = json!({
        "physicalLocation": {
            "artifactLocation": { "uri": uri_reference(p.file) },
            "region": {
                "startLine": p.line,
                "startColumn": p.column,
                "endLine": p.end_line,
                "endColumn": p.end_column,
            }
        }
    });
    if let Some(id) = id {
        location["id"] = json!(id);
    }
    if !label.message.is_empty() {
        location["message"] = json!({ "text": label.message });
    }
    location
}

/// A file name as a URI reference: SARIF wants `artifactLocation.uri` to be one, so bytes
/// outside the unreserved set (and `/`) are percent-encoded.
fn uri_reference(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(char::from(byte));
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// The first sentence of a code's entry in the diagnostics reference (the paragraph after the
/// severity line), or the code itself if the entry is missing.
fn short_description(code: Code) -> String {
    reference_paragraph(REFERENCE, code.as_str())
        .map(|paragraph| first_sentence(&paragraph).to_owned())
        .unwrap_or_else(|| code.as_str().to_owned())
}

/// The first paragraph of `## <code>`'s section that is not the `**Severity:**` line.
fn reference_paragraph(reference: &str, code: &str) -> Option<String> {
    let heading = format!("## {code}");
    let mut lines = reference.lines().skip_while(|l| l.trim_end() != heading);
    lines.next()?;
    let mut paragraph = Vec::new();
    for line in lines {
        let line = line.trim();
        if line.starts_with("## ") || line.starts_with("```") {
            break;
        }
        if line.is_empty() {
            if !paragraph.is_empty() {
                break;
            }
            continue;
        }
        if paragraph.is_empty() && line.starts_with("**Severity") {
            continue;
        }
        paragraph.push(line);
    }
    (!paragraph.is_empty()).then(|| paragraph.join(" "))
}

fn first_sentence(paragraph: &str) -> &str {
    match paragraph.find(". ") {
        Some(end) => &paragraph[..=end],
        None => paragraph,
    }
}

// ---------------------------------------------------------------------------------------------
// GitHub Actions

fn render_github(diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diagnostics {
        let mut properties = Vec::new();
        if let Some(label) = d.labels.first() {
            let p = Position::of(label);
            properties.push(format!("file={}", github_property(p.file)));
            properties.push(format!("line={}", p.line));
            properties.push(format!("col={}", p.column));
            properties.push(format!("endLine={}", p.end_line));
            properties.push(format!("endColumn={}", p.end_column));
        }
        properties.push(format!("title={}", github_property(d.code.as_str())));
        let mut message = d.message.clone();
        if let Some(help) = &d.help {
            message.push_str(&format!(" (help: {help})"));
        }
        out.push_str(&format!(
            "::{} {}::{}\n",
            severity_name(d.severity),
            properties.join(","),
            github_data(&message)
        ));
    }
    out
}

/// Escapes a workflow command's message (GitHub's `escapeData`).
fn github_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a workflow command's property value (GitHub's `escapeProperty`).
fn github_property(text: &str) -> String {
    github_data(text).replace(':', "%3A").replace(',', "%2C")
}

mod elide;

#[cfg(test)]
mod tests;
