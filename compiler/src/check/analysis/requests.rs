//! Reasoning about request matchers shared by the analyses: coverage, overlap and witnesses.
//!
//! Two kinds of answers are needed and they err in opposite directions. "Does B match every
//! request A matches?" (unreachable routes, dead rules) must only say yes when certain, so it
//! uses exact string reasoning and a regex's literal prefix. "Can A and B match the same
//! request?" (ambiguous routes) must also only say yes when certain, so it looks for a
//! concrete witness and confirms it with the regex engine. Unsure means "no" in both cases:
//! a diagnostic on a correct policy is worse than a missed one.

use std::collections::HashMap;

use mesh_table::precedence::prefix_matches;
use mesh_table::{HeaderMatch, HeaderValueMatch, Method, PathMatch};
use regex::Regex;

/// At most this many sample strings are generated per regex (keeps witness search cheap).
const MAX_SAMPLES: usize = 16;

/// Compiled regexes by pattern, anchored like the proxy's (`^(?:p)$`), compiled at most once.
#[derive(Default)]
pub(super) struct Regexes {
    compiled: HashMap<String, Option<Regex>>,
}

impl Regexes {
    /// Whether `pattern` matches the whole of `text`; `None` when it does not compile (it was
    /// reported by the checker; callers then claim nothing).
    pub(super) fn is_match(&mut self, pattern: &str, text: &str) -> Option<bool> {
        if !self.compiled.contains_key(pattern) {
            let re = Regex::new(&format!("^(?:{pattern})$")).ok();
            self.compiled.insert(pattern.to_string(), re);
        }
        self.compiled
            .get(pattern)
            .and_then(Option::as_ref)
            .map(|re| re.is_match(text))
    }

    /// Whether `pattern` certainly matches the whole of `text`.
    pub(super) fn matches(&mut self, pattern: &str, text: &str) -> bool {
        self.is_match(pattern, text) == Some(true)
    }
}

/// A path matcher with "no path" spelled out as `prefix "/"`, which is what it means.
pub(super) fn path_or_root(path: Option<&PathMatch>) -> PathRef<'_> {
    match path {
        None => PathRef::Prefix("/"),
        Some(PathMatch::Prefix(p)) => PathRef::Prefix(p),
        Some(PathMatch::Exact(e)) => PathRef::Exact(e),
        Some(PathMatch::Regex(r)) => PathRef::Regex(r),
    }
}

/// A borrowed path matcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PathRef<'a> {
    /// `exact`.
    Exact(&'a str),
    /// `prefix` (also "no path", as `/`).
    Prefix(&'a str),
    /// `regex`.
    Regex(&'a str),
}

/// Whether every path `inner` matches is also matched by `outer` (certain answers only).
pub(super) fn path_covers(outer: PathRef<'_>, inner: PathRef<'_>, regexes: &mut Regexes) -> bool {
    // Normalized request paths always start with `/`, so `prefix "/"` takes every one of them.
    if outer == PathRef::Prefix("/") {
        return true;
    }
    // A regex without metacharacters matches one path: treat it as that exact path.
    let inner = match inner {
        PathRef::Regex(r) => match literal_prefix(r) {
            (literal, true) => Literal::Exact(literal),
            (literal, false) => Literal::Starts(literal, r),
        },
        PathRef::Exact(e) => Literal::Exact(e.to_string()),
        PathRef::Prefix(p) => Literal::Prefix(p),
    };
    match (outer, &inner) {
        (PathRef::Prefix(o), Literal::Exact(e)) => prefix_matches(o, e),
        (PathRef::Prefix(o), Literal::Prefix(p)) => prefix_matches(o, p),
        // Every match starts with `literal`; it is under `o` only if what follows `o` in it
        // starts a new segment (or `o` itself ends with `/`).
        (PathRef::Prefix(o), Literal::Starts(literal, _)) => literal
            .strip_prefix(o)
            .is_some_and(|rest| o.ends_with('/') || rest.starts_with('/')),
        (PathRef::Exact(o), Literal::Exact(e)) => o == e,
        (PathRef::Regex(o), Literal::Exact(e)) => regexes.matches(o, e),
        (PathRef::Regex(o), Literal::Starts(_, r)) => o == *r,
        (PathRef::Exact(_), _) | (PathRef::Regex(_), Literal::Prefix(_)) => false,
    }
}

/// What is known for certain about the paths an inner matcher admits.
enum Literal<'a> {
    /// Exactly this path.
    Exact(String),
    /// This whole-segment prefix.
    Prefix(&'a str),
    /// Paths starting with this literal (the regex's literal prefix), and the regex.
    Starts(String, &'a str),
}

/// A path both matchers match, if one can be found cheaply; `None` means none was found, not
/// that none exists; an empty string means they certainly overlap but no example was found.
/// Only called for matchers of the same precedence class.
pub(super) fn shared_path(a: PathRef<'_>, b: PathRef<'_>, regexes: &mut Regexes) -> Option<String> {
    match (a, b) {
        (PathRef::Exact(x), PathRef::Exact(y)) | (PathRef::Prefix(x), PathRef::Prefix(y)) => {
            (x == y).then(|| x.to_string())
        }
        (PathRef::Regex(x), PathRef::Regex(y)) => {
            if x == y {
                // Any string the regex matches will do as the example; the engine confirms it.
                // Empty when none was found: the overlap is certain, only the example is not.
                let sample = candidates(x).into_iter().find(|c| regexes.matches(x, c));
                return Some(sample.unwrap_or_default());
            }
            let mut pool = candidates(x);
            pool.extend(candidates(y));
            pool.into_iter()
                .find(|c| regexes.matches(x, c) && regexes.matches(y, c))
        }
        _ => None,
    }
}

/// Strings to try as witnesses for `pattern`: generated samples and its literal prefix.
fn candidates(pattern: &str) -> Vec<String> {
    let mut out = samples(pattern);
    let (literal, _) = literal_prefix(pattern);
    for suffix in ["", "/", "x", "/x", "0"] {
        out.push(format!("{literal}{suffix}"));
    }
    out
}

/// A method both method lists admit (empty means every method), for examples.
pub(super) fn shared_method(a: &[Method], b: &[Method]) -> Option<Method> {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Some(Method::Get),
        (true, false) => b.first().copied(),
        (false, true) => a.first().copied(),
        (false, false) => a.iter().copied().find(|m| b.contains(m)),
    }
}

/// Whether `outer` admits every method `inner` admits (empty means every method).
pub(super) fn methods_cover(outer: &[Method], inner: &[Method]) -> bool {
    if outer.is_empty() {
        return true;
    }
    if inner.is_empty() {
        return Method::ALL.iter().all(|m| outer.contains(m));
    }
    inner.iter().all(|m| outer.contains(m))
}

/// Whether the conditions `have` (all of which hold) imply every condition in `need`.
pub(super) fn headers_imply(
    have: &[HeaderMatch],
    need: &[HeaderMatch],
    regexes: &mut Regexes,
) -> bool {
    need.iter().all(|n| {
        have.iter()
            .filter(|h| h.name == n.name)
            .any(|h| value_implies(&h.value, &n.value, regexes))
    })
}

fn value_implies(have: &HeaderValueMatch, need: &HeaderValueMatch, regexes: &mut Regexes) -> bool {
    use HeaderValueMatch::{Exact, Prefix, Present, Regex};
    match (have, need) {
        // Every condition requires the header to be there.
        (_, Present) => true,
        (Exact(v), Exact(w)) => v == w,
        (Exact(v), Prefix(p)) | (Prefix(v), Prefix(p)) => v.starts_with(p.as_str()),
        (Exact(v), Regex(r)) => regexes.matches(r, v),
        (Regex(a), Regex(b)) => a == b,
        _ => false,
    }
}

/// The first header whose conditions certainly contradict each other (no value satisfies
/// all of them), with the two conditions that clash.
pub(super) fn contradiction<'h>(
    headers: &'h [HeaderMatch],
    regexes: &mut Regexes,
) -> Option<(&'h HeaderMatch, &'h HeaderMatch)> {
    for (i, a) in headers.iter().enumerate() {
        for b in headers.iter().skip(i + 1).filter(|b| b.name == a.name) {
            if values_clash(&a.value, &b.value, regexes) {
                return Some((a, b));
            }
        }
    }
    None
}

/// Whether no single value can satisfy both (certain answers only).
fn values_clash(a: &HeaderValueMatch, b: &HeaderValueMatch, regexes: &mut Regexes) -> bool {
    use HeaderValueMatch::{Exact, Prefix, Regex};
    match (a, b) {
        (Exact(x), Exact(y)) => x != y,
        (Exact(v), Prefix(p)) | (Prefix(p), Exact(v)) => !v.starts_with(p.as_str()),
        (Prefix(p), Prefix(q)) => !p.starts_with(q.as_str()) && !q.starts_with(p.as_str()),
        (Exact(v), Regex(r)) | (Regex(r), Exact(v)) => regexes.is_match(r, v) == Some(false),
        _ => false,
    }
}

/// Whether one request can certainly satisfy the header conditions of both matchers: for
/// every header named by either, a value satisfying all conditions on it is found.
pub(super) fn headers_compatible(
    a: &[HeaderMatch],
    b: &[HeaderMatch],
    regexes: &mut Regexes,
) -> bool {
    let all: Vec<&HeaderMatch> = a.iter().chain(b).collect();
    let mut names: Vec<&str> = all.iter().map(|h| h.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names.into_iter().all(|name| {
        let conditions: Vec<&HeaderValueMatch> = all
            .iter()
            .filter(|h| h.name == name)
            .map(|h| &h.value)
            .collect();
        header_value_witness(&conditions, regexes).is_some()
    })
}

/// A header value satisfying every condition, if one is found.
fn header_value_witness(conditions: &[&HeaderValueMatch], regexes: &mut Regexes) -> Option<String> {
    let mut pool: Vec<String> = Vec::new();
    for c in conditions {
        match c {
            HeaderValueMatch::Exact(v) | HeaderValueMatch::Prefix(v) => pool.push(v.clone()),
            HeaderValueMatch::Regex(r) => pool.extend(candidates(r)),
            HeaderValueMatch::Present => {}
        }
    }
    // A prefix may need extending to satisfy a regex: try each prefix followed by samples.
    let prefixes: Vec<&String> = conditions
        .iter()
        .filter_map(|c| match c {
            HeaderValueMatch::Prefix(p) => Some(p),
            _ => None,
        })
        .collect();
    let extensions: Vec<String> = pool.clone();
    for p in prefixes {
        pool.extend(extensions.iter().map(|e| format!("{p}{e}")));
    }
    pool.push(String::new());
    pool.push("x".into());
    pool.into_iter().find(|v| {
        conditions.iter().all(|c| match c {
            HeaderValueMatch::Exact(e) => e == v,
            HeaderValueMatch::Prefix(p) => v.starts_with(p.as_str()),
            HeaderValueMatch::Regex(r) => regexes.matches(r, v),
            HeaderValueMatch::Present => true,
        })
    })
}

/// The literal text every match of `pattern` starts with, and whether the pattern is that
/// literal alone (no metacharacter at all). Conservative: any construct it does not fully
/// understand ends the literal, and a `|` anywhere gives up (an alternation may reach the top
/// level, where the alternatives need not share a prefix).
pub(super) fn literal_prefix(pattern: &str) -> (String, bool) {
    if pattern.contains('|') {
        return (String::new(), false);
    }
    let mut literal = String::new();
    let mut chars = pattern.chars().peekable();
    // The pattern is matched whole (`^(?:p)$`), so a leading `^` changes nothing.
    if chars.peek() == Some(&'^') {
        chars.next();
    }
    while let Some(c) = chars.next() {
        let ch = match c {
            '\\' => match chars.next() {
                Some(e) if is_escaped_literal(e) => e,
                _ => return (literal, false),
            },
            '$' if chars.peek().is_none() => return (literal, true),
            '.' | '[' | ']' | '(' | ')' | '{' | '}' | '^' | '$' | '*' | '+' | '?' => {
                return (literal, false);
            }
            other => other,
        };
        // A quantifier after the character makes it optional or repeated: it is not part
        // of the certain prefix.
        if matches!(chars.peek(), Some('*' | '+' | '?' | '{')) {
            return (literal, false);
        }
        literal.push(ch);
    }
    (literal, true)
}

/// Whether `\e` stands for the character `e` itself. Only the metacharacters and a few
/// common punctuation marks: other escapes (`\<` is a word boundary) mean something else.
fn is_escaped_literal(e: char) -> bool {
    ".+*?()|[]{}^$#&-~\\/\"'!%,:;=@_`".contains(e)
}

/// A few strings `pattern` probably matches, generated from a subset of RE2 syntax (literals,
/// escapes, classes, `.`, groups, alternation, repetition). Every use confirms a sample with
/// the real engine, so a wrong guess only costs a missed witness. Empty when the syntax is
/// beyond the subset.
pub(super) fn samples(pattern: &str) -> Vec<String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut parser = SampleParser {
        chars: &chars,
        pos: 0,
    };
    match parser.alternation() {
        Some(mut out) if parser.pos == chars.len() => {
            out.truncate(MAX_SAMPLES);
            out
        }
        _ => Vec::new(),
    }
}

/// A recursive-descent walk over a regex that yields sample strings instead of a tree.
struct SampleParser<'p> {
    chars: &'p [char],
    pos: usize,
}

impl SampleParser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += 1;
        c
    }

    /// `a|b|c`: the samples of every alternative.
    fn alternation(&mut self) -> Option<Vec<String>> {
        let mut out = self.sequence()?;
        while self.peek() == Some('|') {
            self.pos += 1;
            out.extend(self.sequence()?);
        }
        out.truncate(MAX_SAMPLES);
        Some(out)
    }

    /// A concatenation: the (bounded) product of its atoms' samples.
    fn sequence(&mut self) -> Option<Vec<String>> {
        let mut out = vec![String::new()];
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom()?;
            let atom = self.repetition(atom)?;
            let mut next = Vec::new();
            for prefix in &out {
                for piece in &atom {
                    if next.len() < MAX_SAMPLES {
                        next.push(format!("{prefix}{piece}"));
                    }
                }
            }
            out = next;
        }
        Some(out)
    }

    fn atom(&mut self) -> Option<Vec<String>> {
        let c = self.bump()?;
        Some(match c {
            '\\' => self.escape()?.into_iter().map(String::from).collect(),
            '.' => vec!["a".into(), "0".into()],
            '^' | '$' => vec![String::new()],
            '[' => self.class()?.into_iter().map(String::from).collect(),
            '(' => {
                if self.peek() == Some('?') {
                    self.pos += 1;
                    // Flags `(?i)`, `(?i:...)`, `(?:...)` and named groups `(?P<n>...)`.
                    if matches!(self.peek(), Some('P' | '<')) {
                        while self.bump()? != '>' {}
                    } else {
                        loop {
                            match self.bump()? {
                                ':' => break,
                                ')' => return Some(vec![String::new()]),
                                f if f.is_ascii_alphabetic() || f == '-' => {}
                                _ => return None,
                            }
                        }
                    }
                }
                let inner = self.alternation()?;
                if self.bump()? != ')' {
                    return None;
                }
                inner
            }
            '*' | '+' | '?' | '{' | ')' | ']' | '}' => return None,
            other => vec![other.to_string()],
        })
    }

    /// The characters an escape stands for (a couple of representatives for classes).
    fn escape(&mut self) -> Option<Vec<char>> {
        let e = self.bump()?;
        Some(match e {
            'd' => vec!['0', '1'],
            'w' => vec!['a', '0'],
            's' => vec![' '],
            'D' | 'S' => vec!['a'],
            'W' => vec!['-'],
            'n' => vec!['\n'],
            't' => vec!['\t'],
            e if is_escaped_literal(e) => vec![e],
            _ => return None,
        })
    }

    /// `[...]`: up to two members (or, negated, two characters it excludes).
    fn class(&mut self) -> Option<Vec<char>> {
        let negated = self.peek() == Some('^');
        if negated {
            self.pos += 1;
        }
        let mut ranges: Vec<(char, char)> = Vec::new();
        let mut first = true;
        loop {
            let c = self.bump()?;
            if c == ']' && !first {
                break;
            }
            first = false;
            let start = match c {
                '\\' => {
                    let wide: &[(char, char)] = match self.peek() {
                        Some('d') => &[('0', '9')],
                        Some('w') => &[('a', 'z'), ('A', 'Z'), ('0', '9'), ('_', '_')],
                        Some('s') => &[(' ', ' '), ('\t', '\t')],
                        Some('D' | 'W' | 'S' | 'p' | 'P') => return None,
                        _ => &[],
                    };
                    if !wide.is_empty() {
                        self.pos += 1;
                        ranges.extend_from_slice(wide);
                        continue;
                    }
                    *self.escape()?.first()?
                }
                '[' => return None, // POSIX classes and nesting: beyond the subset
                other => other,
            };
            if self.peek() == Some('-') && self.chars.get(self.pos + 1).is_some_and(|&n| n != ']') {
                self.pos += 1;
                let end = match self.bump()? {
                    '\\' => *self.escape()?.first()?,
                    other => other,
                };
                ranges.push((start, end));
            } else {
                ranges.push((start, start));
            }
        }
        let inside = |c: char| ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
        let picks: Vec<char> = if negated {
            ['a', 'x', '0', '-', '_', '~', 'Z']
                .into_iter()
                .filter(|&c| !inside(c))
                .take(2)
                .collect()
        } else {
            ranges.iter().map(|&(lo, _)| lo).take(2).collect()
        };
        (!picks.is_empty()).then_some(picks)
    }

    /// Applies `*`, `+`, `?` or `{n,m}` after an atom: the fewest repetitions and one more.
    fn repetition(&mut self, atom: Vec<String>) -> Option<Vec<String>> {
        let (min, max) = match self.peek() {
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('?') => (0, Some(1)),
            Some('{') => {
                let close = self.chars.get(self.pos..)?.iter().position(|&c| c == '}')?;
                let body: String = self
                    .chars
                    .get(self.pos + 1..self.pos + close)?
                    .iter()
                    .collect();
                let (lo, hi) = match body.split_once(',') {
                    Some((lo, "")) => (lo.parse().ok()?, None),
                    Some((lo, hi)) => (lo.parse().ok()?, Some(hi.parse().ok()?)),
                    None => {
                        let n = body.parse().ok()?;
                        (n, Some(n))
                    }
                };
                self.pos += close;
                (lo, hi)
            }
            _ => return Some(atom),
        };
        self.pos += 1;
        if self.peek() == Some('?') {
            self.pos += 1; // lazy: the same strings match
        }
        let min: usize = min;
        if min > 64 {
            return None;
        }
        let mut counts = vec![min];
        if max.is_none_or(|m: usize| m > min) {
            counts.push(min + 1);
        }
        let mut out = Vec::new();
        for count in counts {
            for piece in &atom {
                out.push(piece.repeat(count));
            }
        }
        out.truncate(MAX_SAMPLES);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::{literal_prefix, path_covers, samples, shared_path, PathRef, Regexes};

    #[test]
    fn literal_prefixes_are_certain() {
        assert_eq!(
            literal_prefix("/v1/users/[0-9]+"),
            ("/v1/users/".into(), false)
        );
        assert_eq!(literal_prefix("/health"), ("/health".into(), true));
        assert_eq!(literal_prefix("^/a\\.b$"), ("/a.b".into(), true));
        assert_eq!(literal_prefix("/v1/ab*"), ("/v1/a".into(), false));
        assert_eq!(literal_prefix("/a|/b"), (String::new(), false));
        assert_eq!(literal_prefix("(?i)/admin"), (String::new(), false));
        assert_eq!(literal_prefix("/x\\d"), ("/x".into(), false));
    }

    #[test]
    fn samples_match_their_regex() {
        let mut regexes = Regexes::default();
        for pattern in [
            "/v1/users/[0-9]+",
            "/a(b|c)?/.*",
            "/x{2,3}/[^/]+",
            "/(?:api|v[12])/\\w+",
            "/\\d{3}",
        ] {
            let s = samples(pattern);
            assert!(!s.is_empty(), "{pattern}");
            assert!(
                s.iter().any(|c| regexes.matches(pattern, c)),
                "{pattern}: {s:?}"
            );
        }
    }

    #[test]
    fn coverage_and_overlap() {
        let mut r = Regexes::default();
        assert!(path_covers(
            PathRef::Prefix("/v1/users"),
            PathRef::Regex("/v1/users/[0-9]+"),
            &mut r
        ));
        assert!(!path_covers(
            PathRef::Prefix("/v1/user"),
            PathRef::Regex("/v1/users/[0-9]+"),
            &mut r
        ));
        assert!(!path_covers(
            PathRef::Prefix("/v1/users"),
            PathRef::Regex("/v1/users[0-9]+"),
            &mut r
        ));
        assert!(path_covers(
            PathRef::Exact("/health"),
            PathRef::Regex("/health"),
            &mut r
        ));
        assert!(path_covers(
            PathRef::Prefix("/"),
            PathRef::Regex(".*"),
            &mut r
        ));
        assert!(!path_covers(
            PathRef::Prefix("/v1/"),
            PathRef::Prefix("/v1"),
            &mut r
        ));
        assert!(path_covers(
            PathRef::Prefix("/v1"),
            PathRef::Prefix("/v1/"),
            &mut r
        ));
        assert_eq!(
            shared_path(
                PathRef::Regex("/v1/[a-z]+"),
                PathRef::Regex("/v1/.*"),
                &mut r
            )
            .as_deref(),
            Some("/v1/a")
        );
        assert_eq!(
            shared_path(
                PathRef::Regex("/v1/[a-z]+"),
                PathRef::Regex("/v2/.*"),
                &mut r
            ),
            None
        );
    }
}
