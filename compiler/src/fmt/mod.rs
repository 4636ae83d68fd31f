//! `meshc fmt`: prints a policy's syntax tree in its one canonical layout, keeping every comment.
//!
//! The layout has a single rule per construct so that it is unique (and formatting is
//! idempotent): one declaration per paragraph, one clause per line, every non-empty block
//! multi-line, values on one line. Comments are not in the tree, so they are woven back in
//! by source position: each is printed before the first line whose source it precedes, or
//! at the end of the previous line when it sat on that line in the source.

use std::ops::Range;
use std::sync::Arc;

use crate::diag::Diagnostic;
use crate::source::{SourceFile, Spanned};
use crate::syntax::ast::{Block, Clause, Decl, DeclKind, Value};
use crate::syntax::parse_file;

/// One level of indentation.
const INDENT: &str = "  ";

/// Formats `file` canonically, keeping every comment.
///
/// A file that does not parse is never reformatted, since the parts that failed to parse
/// are not in the tree and would be lost: the parser's diagnostics are returned instead.
pub fn format_source(file: &Arc<SourceFile>) -> Result<String, Vec<Diagnostic>> {
    let (parsed, diagnostics) = parse_file(file);
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Err(diagnostics);
    }
    let comments = parsed.comments.iter().map(|c| c.loc.span.clone()).collect();
    let mut printer = Printer::new(&file.text, comments);
    for (n, decl) in parsed.decls.iter().enumerate() {
        printer.decl(decl, n == 0);
    }
    Ok(printer.finish())
}

/// What a printed line is, for the blank lines around it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Line {
    /// A clause or declaration on one line.
    Item,
    /// `head {`: no blank line may follow.
    Open,
    /// `}`: no blank line may precede.
    Close,
}

/// Builds the output line by line, placing comments as it passes their source positions.
struct Printer<'a> {
    /// The source text, for comments and the blank lines around them.
    text: &'a str,
    /// Byte ranges of every comment, in source order.
    comments: Vec<Range<usize>>,
    /// The first comment not printed yet.
    next: usize,
    /// The output so far, without newlines (a multi-line block comment is one entry).
    lines: Vec<String>,
    /// Source offset just past what the last line printed (its item or comment).
    last_end: Option<usize>,
    /// Whether the last line opens a block (no blank line may follow it).
    after_opener: bool,
    /// Whether the last line is a comment on its own line.
    after_comment: bool,
}

impl<'a> Printer<'a> {
    fn new(text: &'a str, comments: Vec<Range<usize>>) -> Printer<'a> {
        Printer {
            text,
            comments,
            next: 0,
            lines: Vec::new(),
            last_end: None,
            after_opener: false,
            after_comment: false,
        }
    }

    fn decl(&mut self, decl: &Decl, first: bool) {
        let start = decl.keyword.span.start;
        if !first {
            // Comments on the line of the previous `}` stay there, before the separating blank.
            self.trailing(decl.body.loc.span.start + 1);
            self.blank();
        }
        // The mesh name is a string: reprinted as written so its escapes are kept.
        let name = match decl.kind {
            DeclKind::Mesh => decl.name.loc.text(),
            _ => decl.name.node.as_str(),
        };
        let mut head = format!("{} {name}", decl.kind.keyword());
        if let Some(on) = &decl.on {
            head.push_str(" on ");
            head.push_str(&on.node);
        }
        self.block(0, &head, start, &decl.body);
    }

    /// Prints `head {`, the block's clauses one level deeper, and `}`; or `head {}`.
    fn block(&mut self, depth: usize, head: &str, start: usize, block: &Block) {
        let Range { start: open, end } = block.loc.span.clone();
        let has_comments = self.comments[self.next..]
            .iter()
            .take_while(|c| c.start < end)
            .any(|c| c.start > open);
        if block.clauses.is_empty() && !has_comments {
            self.line(depth, format!("{head} {{}}"), start, end, Line::Item);
            return;
        }
        self.line(depth, format!("{head} {{"), start, open + 1, Line::Open);
        for clause in &block.clauses {
            self.clause(depth + 1, clause);
        }
        // Comments after the last clause stay inside the block.
        self.comments_before(end - 1, depth + 1);
        self.line(depth, "}".to_string(), end - 1, end, Line::Close);
    }

    fn clause(&mut self, depth: usize, clause: &Clause) {
        let start = clause.keyword.loc.span.start;
        let head = inline_clause(clause);
        match &clause.block {
            Some(block) => self.block(depth, &head, start, block),
            None => self.line(depth, head, start, content_end(clause), Line::Item),
        }
    }

    /// Prints one line for the source `start..end`, after the comments that come before its end
    /// (including any written inside it, between its tokens).
    fn line(&mut self, depth: usize, text: String, start: usize, end: usize, kind: Line) {
        self.comments_before(end, depth);
        // A blank line kept between a comment and the item it introduces; never before `}`.
        if kind != Line::Close
            && self.after_comment
            && self
                .last_end
                .is_some_and(|e| e <= start && self.blank_between(e, start))
        {
            self.blank();
        }
        self.lines.push(format!("{}{text}", INDENT.repeat(depth)));
        self.last_end = Some(end);
        self.after_opener = kind == Line::Open;
        self.after_comment = false;
    }

    /// Prints the comments that start before `before`: at the end of the last line when they
    /// were on its source line, else on their own lines at `depth`.
    fn comments_before(&mut self, before: usize, depth: usize) {
        loop {
            self.trailing(before);
            let Some(comment) = self
                .comments
                .get(self.next)
                .filter(|c| c.start < before)
                .cloned()
            else {
                return;
            };
            self.next += 1;
            if !self.after_opener
                && self
                    .last_end
                    .is_some_and(|e| self.blank_between(e, comment.start))
            {
                self.blank();
            }
            let text = self.comment_text(&comment);
            self.lines.push(format!("{}{text}", INDENT.repeat(depth)));
            self.last_end = Some(comment.end);
            self.after_opener = false;
            self.after_comment = true;
        }
    }

    /// Appends to the last line the comments before `before` that were on its source line.
    fn trailing(&mut self, before: usize) {
        while let Some(comment) = self
            .comments
            .get(self.next)
            .filter(|c| c.start < before)
            .cloned()
        {
            let same_line = self
                .last_end
                .and_then(|e| self.text.get(e..comment.start))
                .is_some_and(|between| !between.contains('\n'));
            let text = self.comment_text(&comment);
            let Some(last) = self.lines.last_mut().filter(|_| same_line) else {
                return;
            };
            last.push_str(INDENT);
            last.push_str(&text);
            self.next += 1;
            self.last_end = Some(comment.end);
        }
    }

    /// A comment as written, minus trailing whitespace on each of its lines (and any `\r`).
    fn comment_text(&self, comment: &Range<usize>) -> String {
        let text = self.text.get(comment.clone()).unwrap_or("");
        text.split('\n')
            .map(str::trim_end)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Whether the source has an empty line between `from` and `to`.
    fn blank_between(&self, from: usize, to: usize) -> bool {
        let Some(between) = self.text.get(from..to) else {
            return false;
        };
        let parts: Vec<&str> = between.split('\n').collect();
        parts.len() > 2
            && parts[1..parts.len() - 1]
                .iter()
                .any(|p| p.trim().is_empty())
    }

    /// An empty line, unless at the start or after another.
    fn blank(&mut self) {
        if self.lines.last().is_some_and(|l| !l.is_empty()) {
            self.lines.push(String::new());
        }
    }

    fn finish(mut self) -> String {
        self.comments_before(usize::MAX, 0);
        let mut out = self.lines.join("\n");
        if !out.is_empty() {
            out.push('\n');
        }
        out
    }
}

/// A clause without its block on one line: keyword, values, then `to`/`when` groups.
fn inline_clause(clause: &Clause) -> String {
    let mut out = clause.keyword.node.clone();
    for arg in &clause.args {
        out.push(' ');
        push_value(&mut out, arg);
    }
    for group in &clause.groups {
        out.push(' ');
        out.push_str(&group.connector.node);
        for condition in &group.clauses {
            out.push(' ');
            out.push_str(&inline_clause(condition));
        }
    }
    out
}

fn push_value(out: &mut String, value: &Spanned<Value>) {
    match &value.node {
        // As written, so escapes stay as the author chose them.
        Value::Str(_) => out.push_str(value.loc.text()),
        Value::Quantity { number, unit } => {
            out.push_str(number);
            out.push_str(unit);
        }
        Value::Word(word) => out.push_str(word),
        Value::List(items) => {
            out.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push_str(", ");
                }
                push_value(out, item);
            }
            out.push(']');
        }
        Value::Object(entries) if entries.is_empty() => out.push_str("{}"),
        Value::Object(entries) => {
            out.push_str("{ ");
            for (n, (key, item)) in entries.iter().enumerate() {
                if n > 0 {
                    out.push_str(", ");
                }
                out.push_str(key.loc.text());
                out.push_str(": ");
                push_value(out, item);
            }
            out.push_str(" }");
        }
    }
}

/// Where a clause's last token ends. The clause's own span can run on over whitespace and
/// comments after it (pest skips them before trying an optional part that is absent), so
/// it is computed from the parts.
fn content_end(clause: &Clause) -> usize {
    let args = clause.args.iter().map(|a| a.loc.span.end);
    let groups = clause.groups.iter().flat_map(|g| {
        std::iter::once(g.connector.loc.span.end).chain(g.clauses.iter().map(content_end))
    });
    let block = clause.block.iter().map(|b| b.loc.span.end);
    args.chain(groups)
        .chain(block)
        .fold(clause.keyword.loc.span.end, usize::max)
}

#[cfg(test)]
mod tests;
