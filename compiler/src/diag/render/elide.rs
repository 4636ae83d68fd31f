//! Very long lines, shortened for miette's snippets.
//!
//! miette draws a label's underline with padding as wide as its column, and Rust's
//! formatting refuses widths above 65,535: a diagnostic beyond that column of a line (one
//! long generated line, thousands of nested braces) made the human format panic. It would
//! also print a line of a megabyte. So before miette sees a file with a line longer than
//! [`LONG_LINE`] bytes, such lines are cut down to the parts around the labels' ends, the
//! rest replaced with `…`; every newline is kept, so line numbers stay true, and the report's
//! header names the real column. The caller says in the output that a line was shortened.

use std::ops::Range;
use std::sync::Arc;

use miette::{MietteError, MietteSpanContents, SourceCode, SourceSpan, SpanContents};

use crate::source::SourceFile;

/// Lines longer than this many bytes are shortened.
pub(super) const LONG_LINE: usize = 512;

/// Characters kept on either side of a label's start and end on a shortened line.
const KEEP: usize = 40;

/// What stands for the text left out.
const ELLIPSIS: &str = "…";

/// Whether any line of `text` is longer than [`LONG_LINE`] bytes.
pub(super) fn has_long_line(text: &str) -> bool {
    text.len() > LONG_LINE && text.split('\n').any(|line| line.len() > LONG_LINE)
}

/// A file with its long lines shortened around `points` (byte offsets in the original).
#[derive(Debug)]
pub(super) struct Elided {
    file: Arc<SourceFile>,
    text: String,
    /// Kept pieces, in order: (offset in the original, offset in `text`, length).
    kept: Vec<(usize, usize, usize)>,
    /// The shortened lines: 1-based number and length in characters.
    pub(super) shortened: Vec<(usize, usize)>,
}

impl Elided {
    pub(super) fn new(file: &Arc<SourceFile>, points: &[usize]) -> Elided {
        let original = file.text.as_str();
        let mut points: Vec<usize> = points
            .iter()
            .map(|&p| floor_boundary(original, p.min(original.len())))
            .collect();
        points.sort_unstable();
        points.dedup();
        let mut text = String::with_capacity(original.len().min(1 << 16));
        let mut kept = Vec::new();
        let mut shortened = Vec::new();
        let mut keep = |text: &mut String, range: Range<usize>| {
            if !range.is_empty() {
                kept.push((range.start, text.len(), range.len()));
                text.push_str(&original[range]);
            }
        };
        let mut line_start = 0;
        for (index, line) in original.split_inclusive('\n').enumerate() {
            let body = line.strip_suffix('\n').unwrap_or(line);
            let line_end = line_start + body.len();
            if body.len() <= LONG_LINE {
                keep(&mut text, line_start..line_start + line.len());
            } else {
                shortened.push((index + 1, body.chars().count()));
                let first = points.partition_point(|&p| p < line_start);
                let last = points.partition_point(|&p| p <= line_end);
                let mut windows: Vec<Range<usize>> = points[first..last]
                    .iter()
                    .map(|&p| around(original, line_start..line_end, p))
                    .collect();
                if windows.is_empty() {
                    windows.push(around(original, line_start..line_end, line_start));
                }
                let mut at = line_start;
                let mut windows = windows.into_iter().peekable();
                while let Some(mut window) = windows.next() {
                    while let Some(next) = windows.peek() {
                        if next.start > window.end {
                            break;
                        }
                        window.end = window.end.max(next.end);
                        windows.next();
                    }
                    if window.start > at {
                        text.push_str(ELLIPSIS);
                    }
                    keep(&mut text, window.clone());
                    at = window.end;
                }
                if at < line_end {
                    text.push_str(ELLIPSIS);
                }
                keep(&mut text, line_end..line_start + line.len());
            }
            line_start += line.len();
        }
        Elided {
            file: Arc::clone(file),
            text,
            kept,
            shortened,
        }
    }

    /// Where an offset of the original is in the shortened text (labels' ends always are;
    /// anything else goes to the nearest kept piece).
    pub(super) fn to_shortened(&self, offset: usize) -> usize {
        let i = self.kept.partition_point(|&(orig, _, _)| orig <= offset);
        match i.checked_sub(1).map(|i| self.kept[i]) {
            Some((orig, new, len)) => new + (offset - orig).min(len),
            None => 0,
        }
    }

    /// Where an offset of the shortened text comes from in the original.
    fn to_original(&self, offset: usize) -> usize {
        let i = self.kept.partition_point(|&(_, new, _)| new <= offset);
        match i.checked_sub(1).map(|i| self.kept[i]) {
            Some((orig, new, len)) if offset - new <= len => orig + (offset - new),
            // In an ellipsis: the text after it.
            _ => self
                .kept
                .get(i)
                .map_or(self.file.text.len(), |&(orig, _, _)| orig),
        }
    }
}

/// `KEEP` characters either side of `point`, within `line`.
fn around(text: &str, line: Range<usize>, point: usize) -> Range<usize> {
    let point = point.clamp(line.start, line.end);
    let start = text[line.start..point]
        .char_indices()
        .rev()
        .nth(KEEP - 1)
        .map_or(line.start, |(i, _)| line.start + i);
    let end = text[point..line.end]
        .char_indices()
        .nth(KEEP)
        .map_or(line.end, |(i, _)| point + i);
    start..end
}

fn floor_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

impl SourceCode for Elided {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let contents = self
            .text
            .read_span(span, context_lines_before, context_lines_after)?;
        // Lines are all there: the line number holds. The column is the original's (miette
        // prints it in the report's header), in characters as in the other formats.
        let (_, column) = self.file.line_col(self.to_original(span.offset()));
        Ok(Box::new(MietteSpanContents::new(
            contents.data(),
            *contents.span(),
            contents.line(),
            (column as usize).saturating_sub(1),
            contents.line_count(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_keep_the_parts_around_the_points() {
        let line = format!("{}needle{}", "a".repeat(1000), "b".repeat(1000));
        let file = SourceFile::new("f.mesh", format!("short\n{line}\nend\n"));
        let start = file.text.find("needle").expect("needle");
        let elided = Elided::new(&file, &[start, start + 6]);
        assert_eq!(elided.shortened, vec![(2, 2006)]);
        let lines: Vec<&str> = elided.text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "short");
        assert_eq!(lines[2], "end");
        assert!(lines[1].starts_with('…') && lines[1].ends_with('…'));
        assert!(lines[1].chars().count() < 2 * KEEP + 10);
        let at = elided.to_shortened(start);
        assert_eq!(&elided.text[at..at + 6], "needle");
        assert_eq!(elided.to_original(at), start);
        assert_eq!(elided.to_shortened(file.text.len()), elided.text.len());
    }
}
