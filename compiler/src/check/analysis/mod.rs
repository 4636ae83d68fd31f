//! Policy-wide analyses that need the whole table: route precedence, dead rules, retries,
//! unused filters and unicode confusables.
//!
//! They run after elaboration, also when elaboration reported errors; the table may then be
//! partial (routes on unknown services dropped, invalid values left out or defaulted). So an
//! analysis never trusts a piece whose source already had an error: a route whose `match`
//! block had one, say, may have lost its path and would look like it matches everything.
//! Reporting on such pieces would only pile consequences on top of the real mistake.

mod authz;
mod filters;
mod precedence;
mod requests;
mod retry;
mod unicode;

use std::sync::Arc;

use super::{Ctx, Sources};
use crate::diag::Diagnostic;
use crate::source::Loc;
use crate::syntax::ast::ParsedFile;

/// Runs every analysis, adding its findings to `ctx`.
pub(super) fn run(
    ctx: &mut Ctx<'_>,
    table: &mesh_table::Table,
    sources: &Sources,
    parsed: &[ParsedFile],
) {
    let errors = ErrorSpans::new(&ctx.diagnostics);
    let mut regexes = requests::Regexes::default();
    precedence::check(ctx, table, sources, &errors, &mut regexes);
    authz::check(ctx, table, sources, &errors, &mut regexes);
    retry::check(ctx, table, sources, &errors);
    filters::check(ctx, table, sources, parsed);
    unicode::check(ctx, parsed);
}

/// Where the errors reported before the analyses start, to skip the pieces they affect.
struct ErrorSpans {
    /// (file identity, byte offset) of each error's primary label, sorted.
    starts: Vec<(usize, usize)>,
}

impl ErrorSpans {
    fn new(diagnostics: &[Diagnostic]) -> ErrorSpans {
        let mut starts: Vec<(usize, usize)> = diagnostics
            .iter()
            .filter(|d| d.is_error())
            .filter_map(Diagnostic::primary)
            .map(|loc| (file_key(loc), loc.span.start))
            .collect();
        starts.sort_unstable();
        ErrorSpans { starts }
    }

    /// Whether an error was reported inside `loc`.
    fn within(&self, loc: &Loc) -> bool {
        let key = file_key(loc);
        let first = self.starts.partition_point(|&s| s < (key, loc.span.start));
        self.starts.get(first).is_some_and(|&(file, start)| {
            file == key && start < loc.span.end.max(loc.span.start + 1)
        })
    }

    /// Whether an error was reported inside any of `locs`.
    fn within_any<'l>(&self, locs: impl IntoIterator<Item = Option<&'l Loc>>) -> bool {
        locs.into_iter().flatten().any(|loc| self.within(loc))
    }
}

/// A file's identity for comparing locations (the same `Arc` means the same file).
fn file_key(loc: &Loc) -> usize {
    Arc::as_ptr(&loc.file) as usize
}

/// The part of `loc` from byte `start` to byte `end` of its text.
fn sub_loc(loc: &Loc, start: usize, end: usize) -> Loc {
    let begin = (loc.span.start + start).min(loc.span.end);
    Loc::new(
        &loc.file,
        begin..(loc.span.start + end).clamp(begin, loc.span.end),
    )
}

/// A duration for messages, in the largest unit that keeps it whole: `1.5s` is `1500ms`.
fn format_ms(ms: u64) -> String {
    match ms {
        0 => "0ms".into(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

#[cfg(test)]
mod test_support {
    //! Helpers for the analyses' tests: check a policy, pick diagnostics by code.

    use crate::check::{check, CheckOptions, Checked};
    use crate::diag::{Code, Diagnostic};
    use crate::source::SourceFile;

    /// The `mesh` line every test policy starts with.
    pub(super) const MESH: &str = "mesh \"t\" { trust_domain \"t.local\" }\n";

    /// Checks `text` as the file `t.mesh`.
    pub(super) fn check_text(text: &str) -> Checked {
        check(&[SourceFile::new("t.mesh", text)], &CheckOptions::default())
    }

    /// The diagnostics of `code` for the policy `MESH + text`.
    pub(super) fn diagnostics(text: &str, code: Code) -> Vec<Diagnostic> {
        check_text(&format!("{MESH}{text}"))
            .diagnostics
            .into_iter()
            .filter(|d| d.code == code)
            .collect()
    }

    /// Line and column of each label, primary first.
    pub(super) fn label_positions(d: &Diagnostic) -> Vec<(u32, u32)> {
        d.labels.iter().map(|l| l.loc.line_col()).collect()
    }

    /// Asserts the policy has no diagnostic at all.
    pub(super) fn assert_clean(text: &str) {
        let checked = check_text(&format!("{MESH}{text}"));
        assert!(checked.diagnostics.is_empty(), "{:#?}", checked.diagnostics);
    }
}

#[cfg(test)]
mod tests {
    use super::format_ms;

    #[test]
    fn durations_print_in_their_largest_whole_unit() {
        assert_eq!(format_ms(1_500), "1500ms");
        assert_eq!(format_ms(2_000), "2s");
        assert_eq!(format_ms(120_000), "2m");
        assert_eq!(format_ms(3_600_000), "1h");
        assert_eq!(format_ms(333), "333ms");
    }
}
