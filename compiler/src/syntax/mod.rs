//! The parser: `.mesh` text to a syntax tree, with one syntax error per bad declaration.

pub mod ast;
mod build;
mod lex;

use std::sync::Arc;

use pest::Parser as _;

use crate::diag::{did_you_mean, Code, Diagnostic};
use crate::source::{Loc, SourceFile};
use ast::{Comment, ParsedFile};

mod grammar {
    //! The pest parser generated from `grammar.pest`.
    #![allow(missing_docs, unreachable_pub)]
    #[derive(pest_derive::Parser)]
    #[grammar = "syntax/grammar.pest"]
    pub(crate) struct MeshParser;
}
use grammar::{MeshParser, Rule};

/// The declaration keywords, for "did you mean".
const DECLARATION_KEYWORDS: [&str; 6] =
    ["mesh", "service", "route", "authorize", "observe", "filter"];

/// Parses one file. Declarations that parse are returned even when others do not; every
/// syntax error is in the diagnostics.
pub fn parse_file(file: &Arc<SourceFile>) -> (ParsedFile, Vec<Diagnostic>) {
    let scan = lex::scan(&file.text);
    let mut diagnostics = Vec::new();
    let mut decls = Vec::new();
    if let Some(start) = scan.unterminated_comment {
        let loc = Loc::new(file, start..start + 2);
        diagnostics.push(
            Diagnostic::new(Code::Syntax, &loc, "this block comment is never closed")
                .label("`/*` without `*/`: the rest of the file is a comment")
                .help("close the comment with `*/`"),
        );
    }
    for chunk in &scan.chunks {
        let text = &file.text[chunk.clone()];
        match MeshParser::parse(Rule::single_declaration, text) {
            Ok(mut pairs) => {
                let builder = build::Builder {
                    file,
                    offset: chunk.start,
                    diagnostics: &mut diagnostics,
                };
                if let Some(decl) = pairs.next().and_then(|p| builder.declaration(p)) {
                    decls.push(decl);
                }
            }
            Err(error) => diagnostics.push(syntax_error(file, chunk.start, text, &error)),
        }
    }
    let comments = scan
        .comments
        .into_iter()
        .map(|span| Comment {
            loc: Loc::new(file, span),
        })
        .collect();
    (ParsedFile { decls, comments }, diagnostics)
}

fn syntax_error(
    file: &Arc<SourceFile>,
    offset: usize,
    text: &str,
    error: &pest::error::Error<Rule>,
) -> Diagnostic {
    let at = match error.location {
        pest::error::InputLocation::Pos(p) => p,
        pest::error::InputLocation::Span((s, _)) => s,
    };
    let found = token_at(text, at);
    let expected = match &error.variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } => expected_list(positives),
        pest::error::ErrorVariant::CustomError { message } => message.clone(),
    };
    let start = offset + at;
    let end = start + found.len().max(usize::from(start < file.text.len()));
    let loc = Loc::new(file, start..end.min(file.text.len()));
    let at_chunk_end = found.is_empty();
    let next_declaration_follows = at_chunk_end && offset + text.len() < file.text.len();
    let found_text = if next_declaration_follows {
        "the next declaration".to_string()
    } else if at_chunk_end {
        "the end of the file".to_string()
    } else {
        format!("`{found}`")
    };
    let diagnostic = Diagnostic::new(
        Code::Syntax,
        &loc,
        format!("expected {expected}, found {found_text}"),
    )
    .label(format!("expected {expected}"));
    let help = if at == 0 || expected == describe(Rule::EOI) {
        did_you_mean(found, DECLARATION_KEYWORDS).map_or_else(
            || "a policy is made of `mesh`, `service`, `route`, `authorize`, `observe` and `filter` declarations".to_string(),
            |near| format!("did you mean `{near}`?"),
        )
    } else if at_chunk_end && expected.contains("`}`") {
        "close the block with `}`".to_string()
    } else if found == "}" && expected.contains("value") || at_chunk_end {
        "a clause is a keyword followed by its value, as in `timeout 2s`".to_string()
    } else if found.starts_with('"') && !found.ends_with('"') || found == "\"" {
        "strings are closed by `\"` on the same line".to_string()
    } else if found.chars().count() == 1 && !found.chars().all(char::is_alphanumeric) {
        format!("remove `{found}`: it has no meaning here")
    } else {
        "see docs/language.md for the clauses each declaration takes".to_string()
    };
    diagnostic.help(help)
}

/// The token at `at`: a word, a string, a number, or one character.
fn token_at(text: &str, at: usize) -> &str {
    let rest = text.get(at..).unwrap_or("");
    let mut chars = rest.char_indices();
    let Some((_, first)) = chars.next() else {
        return "";
    };
    let end = if first.is_alphanumeric() || first == '_' {
        rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-' || c == '.' || c == '%'))
            .unwrap_or(rest.len())
    } else if first == '"' {
        rest[1..].find(['"', '\n']).map_or(rest.len(), |n| {
            let end = n + 1;
            if rest.as_bytes().get(end) == Some(&b'"') {
                end + 1
            } else {
                end
            }
        })
    } else {
        first.len_utf8()
    };
    &rest[..end]
}

fn expected_list(rules: &[Rule]) -> String {
    let mut names: Vec<&str> = rules.iter().map(|r| describe(*r)).collect();
    names.sort_unstable();
    names.dedup();
    // Inside a block, the words a clause may start with are all "a clause".
    if names.contains(&CLAUSE) {
        names.retain(|n| !matches!(*n, "a name" | "`header`" | "`path`" | "`method`"));
    }
    match names.as_slice() {
        [] => "something else".to_string(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// A human name for a grammar rule in "expected ..." messages.
fn describe(rule: Rule) -> &'static str {
    match rule {
        Rule::value | Rule::list | Rule::object | Rule::string | Rule::quantity => "a value",
        Rule::word => "a name",
        Rule::entry => "a `key: value` entry",
        Rule::split_entry => "a `service weight%` entry",
        Rule::block | Rule::split_block => "`{`",
        Rule::match_op => "`exact`, `prefix` or `regex`",
        Rule::kw_present => "`present`",
        Rule::kw_to => "`to`",
        Rule::kw_when => "`when`",
        Rule::kw_from => "`from`",
        Rule::kw_sample => "`sample`",
        Rule::kw_header | Rule::header_clause => "`header`",
        Rule::kw_path | Rule::path_clause => "`path`",
        Rule::kw_method | Rule::method_clause => "`method`",
        Rule::kw_on => "`on`",
        Rule::EOI => "the end of the declaration",
        Rule::mesh_decl
        | Rule::service_decl
        | Rule::route_decl
        | Rule::authorize_decl
        | Rule::observe_decl
        | Rule::filter_decl
        | Rule::kw_mesh
        | Rule::kw_service
        | Rule::kw_route
        | Rule::kw_authorize
        | Rule::kw_observe
        | Rule::kw_filter
        | Rule::single_declaration => {
            "a declaration (`mesh`, `service`, `route`, `authorize`, `observe` or `filter`)"
        }
        _ => CLAUSE,
    }
}

/// What a block expects next.
const CLAUSE: &str = "a clause or `}`";

#[cfg(test)]
mod tests;
