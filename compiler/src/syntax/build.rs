//! Turns pest's parse tree into the syntax tree, resolving string escapes on the way.

use std::sync::Arc;

use pest::iterators::Pair;

use super::ast::{Block, Clause, ClauseGroup, Decl, DeclKind, Value};
use super::Rule;
use crate::diag::{Code, Diagnostic};
use crate::source::{Ident, Loc, SourceFile, Spanned};

/// Builds syntax-tree nodes for one declaration chunk starting at `offset` in `file`.
pub(super) struct Builder<'a> {
    pub(super) file: &'a Arc<SourceFile>,
    pub(super) offset: usize,
    pub(super) diagnostics: &'a mut Vec<Diagnostic>,
}

impl Builder<'_> {
    fn loc(&self, pair: &Pair<'_, Rule>) -> Loc {
        let span = pair.as_span();
        Loc::new(
            self.file,
            self.offset + span.start()..self.offset + span.end(),
        )
    }

    fn ident(&self, pair: &Pair<'_, Rule>) -> Ident {
        Spanned {
            node: pair.as_str().to_string(),
            loc: self.loc(pair),
        }
    }

    /// Builds the declaration inside a `single_declaration` pair.
    pub(super) fn declaration(mut self, pair: Pair<'_, Rule>) -> Option<Decl> {
        let decl = pair.into_inner().next()?;
        let kind = match decl.as_rule() {
            Rule::mesh_decl => DeclKind::Mesh,
            Rule::service_decl => DeclKind::Service,
            Rule::route_decl => DeclKind::Route,
            Rule::authorize_decl => DeclKind::Authorize,
            Rule::observe_decl => DeclKind::Observe,
            Rule::filter_decl => DeclKind::Filter,
            _ => return None,
        };
        let loc = self.loc(&decl);
        let mut inner = decl.into_inner();
        let keyword = self.loc(&inner.next()?);
        let name_pair = inner.next()?;
        let name = if kind == DeclKind::Mesh {
            let value = self.value(name_pair);
            match value.node {
                Value::Str(s) | Value::Word(s) => Spanned {
                    node: s,
                    loc: value.loc,
                },
                other => {
                    self.diagnostics.push(
                        Diagnostic::new(
                            Code::TypeMismatch,
                            &value.loc,
                            format!(
                                "expected the mesh's name as a string, found {}",
                                other.describe()
                            ),
                        )
                        .help("write it as `mesh \"shop\" { ... }`"),
                    );
                    Spanned {
                        // The text as written, so the reported error is not followed by "empty name".
                        node: value.loc.text().to_string(),
                        loc: value.loc,
                    }
                }
            }
        } else {
            self.ident(&name_pair)
        };
        let mut on = None;
        let mut body = None;
        for pair in inner {
            match pair.as_rule() {
                Rule::kw_on => {}
                Rule::word => on = Some(self.ident(&pair)),
                Rule::block => body = Some(self.block(pair)),
                _ => {}
            }
        }
        Some(Decl {
            kind,
            keyword,
            name,
            on,
            body: body?,
            loc,
        })
    }

    fn block(&mut self, pair: Pair<'_, Rule>) -> Block {
        let loc = self.loc(&pair);
        let clauses = pair.into_inner().map(|p| self.clause(p)).collect();
        Block { clauses, loc }
    }

    fn clause(&mut self, pair: Pair<'_, Rule>) -> Clause {
        let loc = self.loc(&pair);
        let unknown = pair.as_rule() == Rule::unknown_clause;
        let mut inner = pair.into_inner();
        let keyword = inner.next().map_or_else(
            || Spanned {
                node: String::new(),
                loc: loc.clone(),
            },
            |k| self.ident(&k),
        );
        let mut clause = Clause {
            keyword,
            args: Vec::new(),
            block: None,
            groups: Vec::new(),
            unknown,
            loc,
        };
        for part in inner {
            match part.as_rule() {
                Rule::block => clause.block = Some(self.block(part)),
                Rule::split_block => {
                    let loc = self.loc(&part);
                    let clauses = part.into_inner().map(|p| self.clause(p)).collect();
                    clause.block = Some(Block { clauses, loc });
                }
                Rule::to_group | Rule::when_group => {
                    let mut parts = part.into_inner();
                    let Some(connector) = parts.next() else {
                        continue;
                    };
                    let connector = self.ident(&connector);
                    let clauses = parts.map(|p| self.clause(p)).collect();
                    clause.groups.push(ClauseGroup { connector, clauses });
                }
                Rule::value | Rule::string | Rule::quantity | Rule::list | Rule::object => {
                    let value = self.value(part);
                    clause.args.push(value);
                }
                // Structural words: match_op, kw_present, kw_to, kw_sample, kw_header, kw_from, word.
                _ => {
                    let word = self.ident(&part);
                    clause.args.push(Spanned {
                        node: Value::Word(word.node),
                        loc: word.loc,
                    });
                }
            }
        }
        clause
    }

    fn value(&mut self, pair: Pair<'_, Rule>) -> Spanned<Value> {
        let pair = if pair.as_rule() == Rule::value {
            match pair.into_inner().next() {
                Some(inner) => inner,
                None => unreachable!("the grammar gives every value one inner pair"),
            }
        } else {
            pair
        };
        let loc = self.loc(&pair);
        let node = match pair.as_rule() {
            Rule::string => Value::Str(self.unescape(&pair)),
            Rule::quantity => {
                let text = pair.as_str();
                let split = text
                    .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                    .unwrap_or(text.len());
                Value::Quantity {
                    number: text[..split].to_string(),
                    unit: text[split..].to_string(),
                }
            }
            Rule::list => Value::List(pair.into_inner().map(|p| self.value(p)).collect()),
            Rule::object => Value::Object(
                pair.into_inner()
                    .filter_map(|entry| {
                        let mut parts = entry.into_inner();
                        let key = parts.next()?;
                        let key = if key.as_rule() == Rule::string {
                            Spanned {
                                node: self.unescape(&key),
                                loc: self.loc(&key),
                            }
                        } else {
                            self.ident(&key)
                        };
                        let value = self.value(parts.next()?);
                        Some((key, value))
                    })
                    .collect(),
            ),
            _ => Value::Word(pair.as_str().to_string()),
        };
        Spanned { node, loc }
    }

    /// Resolves JSON-style escapes; a bad one is reported at its own location.
    fn unescape(&mut self, pair: &Pair<'_, Rule>) -> String {
        let raw = pair.as_str();
        let start = self.offset + pair.as_span().start();
        let body = &raw[1..raw.len() - 1];
        let mut out = String::with_capacity(body.len());
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            let Some((_, e)) = chars.next() else { break };
            let simple = match e {
                '"' => Some('"'),
                '\\' => Some('\\'),
                '/' => Some('/'),
                'b' => Some('\u{8}'),
                'f' => Some('\u{c}'),
                'n' => Some('\n'),
                'r' => Some('\r'),
                't' => Some('\t'),
                _ => None,
            };
            if let Some(s) = simple {
                out.push(s);
                continue;
            }
            let escape_start = start + 1 + i;
            if e == 'u' {
                let hex: String = chars.clone().take(4).map(|(_, h)| h).collect();
                if let Some(ch) = (hex.len() == 4)
                    .then(|| u32::from_str_radix(&hex, 16).ok())
                    .flatten()
                    .and_then(char::from_u32)
                {
                    out.push(ch);
                    for _ in 0..4 {
                        chars.next();
                    }
                    continue;
                }
                let loc = Loc::new(self.file, escape_start..escape_start + 2 + hex.len());
                self.diagnostics.push(
                    Diagnostic::new(Code::InvalidEscape, &loc, "invalid unicode escape")
                        .label("not a valid `\\uXXXX` escape")
                        .help(
                            "write four hex digits naming a Unicode scalar value, as in `\\u00e9`",
                        ),
                );
                continue;
            }
            let loc = Loc::new(self.file, escape_start..escape_start + 1 + e.len_utf8());
            self.diagnostics.push(
                Diagnostic::new(Code::InvalidEscape, &loc, format!("invalid escape `\\{e}` in a string"))
                    .label("unknown escape")
                    .help("the escapes are \\\" \\\\ \\/ \\b \\f \\n \\r \\t and \\uXXXX; write `\\\\` for a backslash"),
            );
        }
        out
    }
}
