//! Policy source files and locations that carry their source, so every error can render itself.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

/// One policy file's name and text.
#[derive(Debug)]
pub struct SourceFile {
    /// The name shown in diagnostics and recorded in the table (relative to the policy root).
    pub name: String,
    /// The file's text.
    pub text: String,
    /// Where it was read from, when it came from disk (filter modules are looked up beside it).
    pub path: Option<PathBuf>,
    line_starts: Vec<usize>,
}

impl SourceFile {
    /// Wraps a file's text for parsing.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Arc<SourceFile> {
        SourceFile::with_path(name, text, None)
    }

    /// Wraps a file read from `path`.
    pub fn with_path(
        name: impl Into<String>,
        text: impl Into<String>,
        path: Option<PathBuf>,
    ) -> Arc<SourceFile> {
        let text = text.into();
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Arc::new(SourceFile {
            name: name.into(),
            text,
            path,
            line_starts,
        })
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (u32, u32) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset) - 1;
        let start = self.line_starts[line];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (to_u32(line + 1), to_u32(column + 1))
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A span of a source file, carrying the file (cedar's `Loc`).
#[derive(Clone)]
pub struct Loc {
    /// The file.
    pub file: Arc<SourceFile>,
    /// Byte range within the file's text.
    pub span: Range<usize>,
}

impl Loc {
    /// A location in `file`.
    pub fn new(file: &Arc<SourceFile>, span: Range<usize>) -> Loc {
        Loc {
            file: Arc::clone(file),
            span,
        }
    }

    /// The source text under the span.
    pub fn text(&self) -> &str {
        self.file.text.get(self.span.clone()).unwrap_or("")
    }

    /// 1-based line and column of the span's start.
    pub fn line_col(&self) -> (u32, u32) {
        self.file.line_col(self.span.start)
    }

    /// The smallest location covering both (same file assumed; otherwise `self`).
    pub fn to(&self, other: &Loc) -> Loc {
        if !Arc::ptr_eq(&self.file, &other.file) {
            return self.clone();
        }
        Loc::new(
            &self.file,
            self.span.start.min(other.span.start)..self.span.end.max(other.span.end),
        )
    }

    /// The table's form of this location.
    pub fn to_table(&self, file: mesh_table::FileId) -> mesh_table::SourceLoc {
        let (line, column) = self.line_col();
        mesh_table::SourceLoc { file, line, column }
    }
}

impl fmt::Debug for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (line, column) = self.line_col();
        write!(f, "{}:{line}:{column}", self.file.name)
    }
}

impl PartialEq for Loc {
    fn eq(&self, other: &Loc) -> bool {
        Arc::ptr_eq(&self.file, &other.file) && self.span == other.span
    }
}

/// A value with its location.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    /// The value.
    pub node: T,
    /// Where it was written.
    pub loc: Loc,
}

/// A name as written, with its location.
pub type Ident = Spanned<String>;

/// A policy file as miette source code, sharing the text rather than copying it per report.
#[derive(Debug)]
pub(crate) struct FileText(pub(crate) Arc<SourceFile>);

impl miette::SourceCode for FileText {
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        self.0
            .text
            .read_span(span, context_lines_before, context_lines_after)
    }
}
