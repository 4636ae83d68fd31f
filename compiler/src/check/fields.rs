//! The clauses each block may hold: unknown, misplaced, duplicate and missing clauses.

use super::Ctx;
use crate::diag::{did_you_mean, Code, Diagnostic};
use crate::source::{Loc, Spanned};
use crate::syntax::ast::{Block, Clause, Value};

/// Every kind of block and the clause keywords it takes.
const BLOCKS: &[(&str, &[&str])] = &[
    ("mesh", &["trust_domain"]),
    (
        "service",
        &[
            "port",
            "protocol",
            "endpoints",
            "discovery",
            "balance",
            "health",
            "outlier",
            "mtls",
            "filters",
            "limits",
        ],
    ),
    (
        "route",
        &[
            "match",
            "to",
            "split",
            "timeout",
            "idle_timeout",
            "stream_timeout",
            "retry",
            "request_headers",
            "response_headers",
            "filters",
        ],
    ),
    ("authorize", &["allow", "deny", "default"]),
    ("observe", &["access_log", "trace", "latency_buckets"]),
    (
        "filter",
        &["module", "config", "failure", "memory", "time_limit"],
    ),
    (
        "health",
        &[
            "path",
            "interval",
            "timeout",
            "unhealthy_after",
            "healthy_after",
        ],
    ),
    ("outlier", &["consecutive_5xx", "eject_for", "max_ejected"]),
    ("limits", &["max_requests", "max_pending"]),
    ("match", &["path", "method", "header"]),
    (
        "retry",
        &[
            "attempts",
            "per_try_timeout",
            "on",
            "backoff",
            "budget",
            "non_idempotent",
        ],
    ),
    ("request_headers", &["set", "add", "remove"]),
    ("response_headers", &["set", "add", "remove"]),
];

/// The known clauses of one block, by keyword; repeatable ones keep every occurrence.
pub(super) struct Fields<'b> {
    clauses: Vec<&'b Clause>,
}

impl<'b> Fields<'b> {
    /// The one clause with `keyword`, if present.
    pub(super) fn get(&self, keyword: &str) -> Option<&'b Clause> {
        self.clauses
            .iter()
            .copied()
            .find(|c| c.keyword.node == keyword)
    }

    /// Every clause, in source order (for repeatable clauses).
    pub(super) fn all(&self) -> impl Iterator<Item = &'b Clause> + '_ {
        self.clauses.iter().copied()
    }
}

impl Ctx<'_> {
    /// Sorts a block's clauses into known ones, reporting unknown and misplaced keywords
    /// and duplicates of the non-repeatable ones (`repeatable` lists those that may recur).
    pub(super) fn fields<'b>(
        &mut self,
        block: &'b Block,
        kind: &str,
        repeatable: &[&str],
    ) -> Fields<'b> {
        let allowed = allowed(kind);
        let mut clauses: Vec<&'b Clause> = Vec::new();
        for clause in &block.clauses {
            let keyword = clause.keyword.node.as_str();
            if !allowed.contains(&keyword) {
                self.unknown_field(clause, kind, allowed);
                continue;
            }
            if !repeatable.contains(&keyword) {
                if let Some(first) = clauses.iter().find(|c| c.keyword.node == keyword) {
                    self.push(
                        Diagnostic::new(
                            Code::DuplicateField,
                            &clause.keyword.loc,
                            format!("`{keyword}` is given twice in this {kind}"),
                        )
                        .label("given again here")
                        .with_label(&first.keyword.loc, "first given here")
                        .help(format!("keep one `{keyword}` clause")),
                    );
                    continue;
                }
            }
            clauses.push(clause);
        }
        Fields { clauses }
    }

    fn unknown_field(&mut self, clause: &Clause, kind: &str, allowed: &[&str]) {
        let keyword = clause.keyword.node.as_str();
        let home: Vec<&str> = BLOCKS
            .iter()
            .filter(|(_, keywords)| keywords.contains(&keyword))
            .map(|(block, _)| *block)
            .collect();
        let help = if let Some(near) = did_you_mean(keyword, allowed.iter().copied()) {
            format!("did you mean `{near}`?")
        } else if !home.is_empty() {
            format!(
                "`{keyword}` belongs in {}; a {kind} takes: {}",
                home.iter()
                    .map(|b| format!("`{b}`"))
                    .collect::<Vec<_>>()
                    .join(" or "),
                allowed.join(", ")
            )
        } else {
            format!("a {kind} takes: {}", allowed.join(", "))
        };
        self.push(
            Diagnostic::new(
                Code::UnknownField,
                &clause.keyword.loc,
                format!("unknown field `{keyword}` in a {kind}"),
            )
            .label("not a field here")
            .help(help),
        );
    }

    /// Reports a missing required clause at `at` (the declaration's name or the block).
    pub(super) fn missing(&mut self, at: &Loc, kind: &str, keyword: &str, example: &str) {
        self.push(
            Diagnostic::new(
                Code::MissingField,
                at,
                format!("this {kind} has no `{keyword}`"),
            )
            .label(format!("`{keyword}` is required"))
            .help(format!("add `{example}`")),
        );
    }

    /// The clause's `index`-th argument, if the clause has it (the grammar guarantees the
    /// arity of known clauses; this guards clauses that were misplaced).
    pub(super) fn arg<'c>(
        &mut self,
        clause: &'c Clause,
        index: usize,
    ) -> Option<&'c Spanned<Value>> {
        let arg = clause.args.get(index);
        if arg.is_none() {
            self.push(
                Diagnostic::new(
                    Code::Syntax,
                    &clause.loc,
                    format!("`{}` is missing a value here", clause.keyword.node),
                )
                .label("incomplete clause"),
            );
        }
        arg
    }
}

/// The keywords a block of `kind` takes.
fn allowed(kind: &str) -> &'static [&'static str] {
    BLOCKS
        .iter()
        .find(|(block, _)| *block == kind)
        .map_or(&[], |(_, keywords)| keywords)
}
