//! The syntax tree: declarations made of clauses whose values are not yet typed.
//!
//! Clauses are kept generic (`keyword arg arg ... { block }`) so the checker can say
//! precisely what a value should have been, and the formatter can print any clause the
//! same way. Structural words (`prefix`, `to`, `sample`, `from`, ...) stay in `args` as
//! [`Value::Word`]s, in source order.

use crate::source::{Ident, Loc, Spanned};

/// The kind of a top-level declaration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeclKind {
    /// `mesh "name" { ... }`
    Mesh,
    /// `service name { ... }`
    Service,
    /// `route name on service { ... }`
    Route,
    /// `authorize service { ... }`
    Authorize,
    /// `observe service { ... }`
    Observe,
    /// `filter name { ... }`
    Filter,
}

impl DeclKind {
    /// The declaration's keyword.
    pub fn keyword(self) -> &'static str {
        match self {
            DeclKind::Mesh => "mesh",
            DeclKind::Service => "service",
            DeclKind::Route => "route",
            DeclKind::Authorize => "authorize",
            DeclKind::Observe => "observe",
            DeclKind::Filter => "filter",
        }
    }
}

/// One top-level declaration.
#[derive(Debug, Clone, PartialEq)]
pub struct Decl {
    /// What it declares.
    pub kind: DeclKind,
    /// The keyword's location.
    pub keyword: Loc,
    /// The declared name (for `mesh`, the string's contents; for `authorize` and
    /// `observe`, the service it is about).
    pub name: Ident,
    /// For routes: the service after `on`.
    pub on: Option<Ident>,
    /// The body.
    pub body: Block,
    /// The whole declaration.
    pub loc: Loc,
}

/// A `{ ... }` block of clauses.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// The clauses, in source order.
    pub clauses: Vec<Clause>,
    /// From `{` to `}`.
    pub loc: Loc,
}

/// One clause: `keyword args... [{ block }]`, plus the condition groups of an
/// authorization rule (`to ...`, `when ...`).
#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    /// The leading keyword (or, in a `split` block, the service name).
    pub keyword: Ident,
    /// Values after the keyword, structural words included.
    pub args: Vec<Spanned<Value>>,
    /// A nested block (`health { ... }`, `match { ... }`, `split { ... }`).
    pub block: Option<Block>,
    /// Condition groups of `allow`/`deny` rules: `to` then `when`.
    pub groups: Vec<ClauseGroup>,
    /// Whether the parser did not recognise the keyword here (a misspelling).
    pub unknown: bool,
    /// The whole clause.
    pub loc: Loc,
}

/// `to cond...` or `when cond...` in an authorization rule.
#[derive(Debug, Clone, PartialEq)]
pub struct ClauseGroup {
    /// `to` or `when`.
    pub connector: Ident,
    /// The conditions (`path`, `method`, `header` clauses).
    pub clauses: Vec<Clause>,
}

/// An untyped value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string literal, escapes resolved.
    Str(String),
    /// A number with an optional unit, as written: `3`, `250ms`, `0.5%`, `5xx`, `100/s`.
    Quantity {
        /// The digits (and decimal point).
        number: String,
        /// The unit after them (`""` for none).
        unit: String,
    },
    /// A bare word: a name, a keyword-like value (`least_request`), `true`, `GET`.
    Word(String),
    /// `[a, b]`.
    List(Vec<Spanned<Value>>),
    /// `{ key: value, ... }` (filter config only).
    Object(Vec<(Ident, Spanned<Value>)>),
}

impl Value {
    /// A short name of the value's syntactic kind, for "found ..." messages.
    pub fn describe(&self) -> String {
        match self {
            Value::Str(_) => "a string".into(),
            Value::Quantity { unit, .. } if unit.is_empty() => "an integer".into(),
            Value::Quantity { unit, .. } => format!("a quantity in `{unit}`"),
            Value::Word(w) if w == "true" || w == "false" => "a bool".into(),
            Value::Word(_) => "a name".into(),
            Value::List(_) => "a list".into(),
            Value::Object(_) => "an object".into(),
        }
    }
}

/// A comment, kept for the formatter.
#[derive(Debug, Clone, PartialEq)]
pub struct Comment {
    /// The comment with its `//` or `/* */`.
    pub loc: Loc,
}

/// One parsed file.
#[derive(Debug, Clone)]
pub struct ParsedFile {
    /// The declarations that parsed.
    pub decls: Vec<Decl>,
    /// Every comment, in source order.
    pub comments: Vec<Comment>,
}
