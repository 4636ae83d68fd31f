//! Unicode: bidi controls anywhere, and confusable or invisible characters in names and strings.
//!
//! What is checked, and why:
//! - Bidirectional controls (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F, U+061C) are
//!   found in the raw text of every file, strings and comments included: they reorder how a
//!   line is displayed, so the code can read differently than it runs (CVE-2021-42574,
//!   "Trojan Source"). Comments are the classic hiding place, so they are not exempt.
//!   An escape such as `\u202E` in a string is visible and is not reported.
//! - Names (declared names, `on`, split targets, principals, every bare word) are ASCII DNS
//!   labels. A non-ASCII character that looks like an ASCII one (`а` U+0430), an invisible
//!   one, or a mix of scripts is a confusable; with the ASCII skeleton matching a declared
//!   name, the message names it ("looks like the service `payments`"). A name that is
//!   non-ASCII without being confusable (`café`) is simply not a DNS label (invalid-name).
//! - Strings, and words and keys inside a filter's `config` (data for the filter), may hold
//!   any text, so only what deceives is reported: invisible characters (zero-width space,
//!   word joiner, BOM; ZWJ/ZWNJ only where no non-ASCII letter surrounds them, since they
//!   are required inside Persian or Indic words and emoji sequences), and words that mix
//!   Latin with another script's lookalikes (`pаyments`). Non-Latin text is never reported.

use std::collections::HashMap;
use std::sync::Arc;

use unicode_security::mixed_script::AugmentedScriptSet;
use unicode_security::{skeleton, MixedScript};

use super::{sub_loc, Ctx};
use crate::diag::{Code, Diagnostic};
use crate::source::{Ident, Loc, SourceFile, Spanned};
use crate::syntax::ast::{Block, Clause, Decl, DeclKind, ParsedFile, Value};

/// At most this many characters are labelled in one diagnostic.
const MAX_LABELS: usize = 8;

/// Runs the unicode checks over the raw files and the syntax trees.
pub(super) fn check(ctx: &mut Ctx<'_>, parsed: &[ParsedFile]) {
    bidi(ctx, parsed);
    let mut walker = Walker {
        found: Vec::new(),
        lookalikes: None,
        parsed,
    };
    for decl in parsed.iter().flat_map(|p| &p.decls) {
        walker.decl(decl);
    }
    for d in walker.found {
        ctx.push(d);
    }
}

/// Whether `c` is a bidirectional control character.
fn is_bidi(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Whether `c` is an invisible character that can hide inside text.
fn is_zero_width(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}')
}

/// Reports bidi controls, one diagnostic per line, each character labelled.
fn bidi(ctx: &mut Ctx<'_>, parsed: &[ParsedFile]) {
    let files = ctx.files.to_vec();
    if files.iter().all(|f| f.text.is_ascii()) {
        return;
    }
    let comments: Vec<&Loc> = parsed
        .iter()
        .flat_map(|p| &p.comments)
        .map(|c| &c.loc)
        .collect();
    let strings = string_spans(parsed);
    for file in &files {
        if file.text.is_ascii() {
            continue;
        }
        // Grouped by line: one diagnostic per line, every character on it labelled.
        let mut line: Vec<(usize, char)> = Vec::new();
        let (mut line_no, mut group_line) = (0usize, 0usize);
        for (at, c) in file.text.char_indices() {
            if c == '\n' {
                line_no += 1;
            }
            if !is_bidi(c) {
                continue;
            }
            if group_line != line_no && !line.is_empty() {
                push_bidi(ctx, file, &line, &comments, &strings);
                line.clear();
            }
            group_line = line_no;
            line.push((at, c));
        }
        push_bidi(ctx, file, &line, &comments, &strings);
    }
}

fn push_bidi(
    ctx: &mut Ctx<'_>,
    file: &Arc<SourceFile>,
    found: &[(usize, char)],
    comments: &[&Loc],
    strings: &[Loc],
) {
    let Some(&(first, c)) = found.first() else {
        return;
    };
    let at = Loc::new(file, first..first + c.len_utf8());
    let inside = |l: &Loc| Arc::ptr_eq(&l.file, file) && l.span.contains(&first);
    let (place, extra) = if comments.iter().any(|l| inside(l)) {
        ("a comment", "")
    } else if strings.iter().any(inside) {
        (
            "a string",
            "; if the value needs it, write it as an escape such as `\\u202E`",
        )
    } else {
        ("the code", "")
    };
    let mut d = Diagnostic::new(
        Code::Bidi,
        &at,
        format!(
            "a bidirectional control character, {}, in {place}",
            describe(c)
        ),
    )
    .label(format!("invisible {}", code_point(c)));
    for &(offset, c) in found.iter().skip(1).take(MAX_LABELS) {
        d = d.with_label(
            &Loc::new(file, offset..offset + c.len_utf8()),
            format!("invisible {}", code_point(c)),
        );
    }
    ctx.push(d.help(format!(
        "remove it: bidi controls can make the code read differently than it runs (CVE-2021-42574){extra}"
    )));
}

/// Every string literal's location (bidi controls there get a hint about escapes).
fn string_spans(parsed: &[ParsedFile]) -> Vec<Loc> {
    fn value(v: &Spanned<Value>, out: &mut Vec<Loc>) {
        match &v.node {
            Value::Str(_) => out.push(v.loc.clone()),
            Value::List(items) => items.iter().for_each(|i| value(i, out)),
            Value::Object(entries) => entries.iter().for_each(|(k, v)| {
                out.push(k.loc.clone());
                value(v, out);
            }),
            _ => {}
        }
    }
    fn clause(c: &Clause, out: &mut Vec<Loc>) {
        c.args.iter().for_each(|a| value(a, out));
        c.block
            .iter()
            .flat_map(|b| &b.clauses)
            .for_each(|c| clause(c, out));
        c.groups
            .iter()
            .flat_map(|g| &g.clauses)
            .for_each(|c| clause(c, out));
    }
    let mut out = Vec::new();
    for decl in parsed.iter().flat_map(|p| &p.decls) {
        out.push(decl.name.loc.clone());
        decl.body.clauses.iter().for_each(|c| clause(c, &mut out));
    }
    out
}

/// Walks the syntax trees, collecting confusable diagnostics.
struct Walker<'p> {
    found: Vec<Diagnostic>,
    /// ASCII skeleton of each declared ASCII name → what it names and where, built on the
    /// first non-ASCII name (most policies have none).
    lookalikes: Option<HashMap<String, (&'static str, String, Loc)>>,
    parsed: &'p [ParsedFile],
}

impl Walker<'_> {
    fn decl(&mut self, decl: &Decl) {
        match decl.kind {
            // The mesh's name is a string (quotes included in its location).
            DeclKind::Mesh => self.string(&decl.name.loc),
            DeclKind::Service | DeclKind::Route | DeclKind::Filter => {
                self.name(&decl.name, Some(decl.kind))
            }
            DeclKind::Authorize | DeclKind::Observe => self.name(&decl.name, None),
        }
        if let Some(on) = &decl.on {
            self.name(on, None);
        }
        self.block(&decl.body);
    }

    fn block(&mut self, block: &Block) {
        for clause in &block.clauses {
            self.clause(clause);
        }
    }

    fn clause(&mut self, clause: &Clause) {
        // Known keywords are ASCII by the grammar; this catches split targets and misspelt
        // (unknown) keywords.
        self.name(&clause.keyword, None);
        for arg in &clause.args {
            self.value(arg, false);
        }
        if let Some(block) = &clause.block {
            self.block(block);
        }
        for group in &clause.groups {
            for c in &group.clauses {
                self.clause(c);
            }
        }
    }

    fn value(&mut self, value: &Spanned<Value>, in_config: bool) {
        match &value.node {
            Value::Str(_) => self.string(&value.loc),
            Value::Word(_) if in_config => self.string(&value.loc),
            // Most words are ASCII: skip them before building an identifier to check.
            Value::Word(w) if w.is_ascii() => {}
            Value::Word(w) => self.name(
                &Spanned {
                    node: w.clone(),
                    loc: value.loc.clone(),
                },
                None,
            ),
            Value::List(items) => items.iter().for_each(|i| self.value(i, in_config)),
            Value::Object(entries) => {
                // A config object is data for the filter, keys included: string rules.
                for (key, v) in entries {
                    self.string(&key.loc);
                    self.value(v, true);
                }
            }
            Value::Quantity { .. } => {}
        }
    }

    /// A name (declared when `declared` is its kind, else a reference or keyword).
    fn name(&mut self, ident: &Ident, declared: Option<DeclKind>) {
        let name = ident.node.as_str();
        // Names have no escapes, so the written text is the name byte for byte (checked, so
        // that character offsets below are exact).
        if name.is_ascii() || ident.loc.text() != name {
            return;
        }
        // (offset, character, what it is, its label)
        let mut suspects: Vec<(usize, char, String, String)> = Vec::new();
        let mut plain_non_ascii = false;
        for (at, c) in name.char_indices().filter(|(_, c)| !c.is_ascii()) {
            if is_zero_width(c) || is_bidi(c) {
                suspects.push((
                    at,
                    c,
                    format!("{}, an invisible character", describe(c)),
                    format!("invisible {}", code_point(c)),
                ));
            } else if let Some(ascii) = ascii_lookalike(c) {
                suspects.push((
                    at,
                    c,
                    format!("{}, which looks like `{ascii}`", describe(c)),
                    format!("{} looks like `{ascii}`", code_point(c)),
                ));
            } else {
                plain_non_ascii = true;
            }
        }
        let mixed = !name.is_single_script();
        if suspects.is_empty() && !mixed {
            if let (true, Some(kind)) = (plain_non_ascii, declared) {
                self.not_a_dns_label(ident, kind);
            }
            return;
        }
        if suspects.is_empty() {
            // Mixed scripts without an ASCII lookalike: point at every non-ASCII character.
            suspects = name
                .char_indices()
                .filter(|(_, c)| !c.is_ascii())
                .map(|(at, c)| {
                    (
                        at,
                        c,
                        format!("{}, a {} character", describe(c), script_name(c)),
                        format!("{} is {}", code_point(c), script_name(c)),
                    )
                })
                .collect();
        }
        let skeleton_text: String = skeleton(name).collect();
        let lookalike = self.lookalikes().get(&skeleton_text).cloned();
        let details: Vec<&str> = suspects
            .iter()
            .map(|(_, _, what, _)| what.as_str())
            .collect();
        let mut message = format!("`{name}` contains {}", details.join(", and "));
        if let Some((kind, other, _)) = &lookalike {
            message.push_str(&format!("; it looks like the {kind} `{other}`"));
        } else if mixed {
            message.push_str("; it mixes scripts");
        }
        let mut labels = suspects
            .iter()
            .map(|(at, c, _, label)| (sub_loc(&ident.loc, *at, at + c.len_utf8()), label.clone()));
        let Some((first_loc, first_label)) = labels.next() else {
            return;
        };
        let mut d = Diagnostic::new(Code::Confusable, &first_loc, message).label(first_label);
        for (loc, label) in labels.take(MAX_LABELS) {
            d = d.with_label(&loc, label);
        }
        let help = match &lookalike {
            Some((kind, other, loc)) => {
                d = d.with_label(loc, format!("the {kind} `{other}` is declared here"));
                format!("if you mean the {kind} `{other}`, retype the name in ASCII: `{other}`")
            }
            None => match dns_spelling(name) {
                Some(ascii) => format!("names are ASCII DNS labels: retype it as `{ascii}`"),
                None => "names are ASCII DNS labels: `[a-z][a-z0-9-]*`".into(),
            },
        };
        self.found.push(d.help(help));
    }

    /// A declared name that is non-ASCII but not confusable: simply not a DNS label.
    fn not_a_dns_label(&mut self, ident: &Ident, kind: DeclKind) {
        let name = &ident.node;
        let help = match dns_spelling(name) {
            Some(ascii) => format!("a name is a DNS label, such as `{ascii}`"),
            None => "a name is a DNS label: `[a-z][a-z0-9-]*`, at most 63 characters".into(),
        };
        self.found.push(
            Diagnostic::new(
                Code::InvalidName,
                &ident.loc,
                format!(
                    "the {} name `{name}` may hold only ASCII lower-case letters, digits and `-`",
                    kind.keyword()
                ),
            )
            .label("not a valid name")
            .help(help),
        );
    }

    /// A string (or config data), by its raw text: invisible characters and mixed-script words.
    fn string(&mut self, loc: &Loc) {
        let text = loc.text();
        if text.is_ascii() {
            return;
        }
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let mut hidden: Vec<(usize, char)> = Vec::new();
        for (n, &(at, c)) in chars.iter().enumerate() {
            let joiner = matches!(c, '\u{200C}' | '\u{200D}');
            let letter_around = |i: Option<usize>| {
                i.and_then(|i| chars.get(i))
                    .is_some_and(|&(_, c)| !c.is_ascii() && !is_zero_width(c))
            };
            // Joiners belong inside non-Latin words and emoji sequences; elsewhere they hide.
            if is_zero_width(c)
                && !(joiner && letter_around(n.checked_sub(1)) && letter_around(Some(n + 1)))
            {
                hidden.push((at, c));
            }
        }
        if let Some(&(first, c)) = hidden.first() {
            let mut d = Diagnostic::new(
                Code::Confusable,
                &sub_loc(loc, first, first + c.len_utf8()),
                format!(
                    "this string contains {}, an invisible character",
                    describe(c)
                ),
            )
            .label(format!("invisible {}", code_point(c)));
            for &(at, c) in hidden.iter().skip(1).take(MAX_LABELS) {
                d = d.with_label(
                    &sub_loc(loc, at, at + c.len_utf8()),
                    format!("invisible {}", code_point(c)),
                );
            }
            self.found.push(d.help(
                "remove it, or write it as an escape (such as `\\u200B`) if the value needs it",
            ));
        }
        self.mixed_words(loc, text);
    }

    /// Words (runs of letters and digits) that mix Latin with another script's lookalikes.
    fn mixed_words(&mut self, loc: &Loc, text: &str) {
        let mut start = None;
        let mut words: Vec<(usize, usize)> = Vec::new();
        for (at, c) in text
            .char_indices()
            .chain(std::iter::once((text.len(), ' ')))
        {
            match (c.is_alphanumeric() || is_mark(c), start) {
                (true, None) => start = Some(at),
                (false, Some(s)) => {
                    words.push((s, at));
                    start = None;
                }
                _ => {}
            }
        }
        for (s, e) in words {
            let Some(word) = text.get(s..e) else { continue };
            if word.is_ascii() || word.is_single_script() {
                continue;
            }
            let latin = AugmentedScriptSet::for_char('a');
            // Characters common to all scripts (digits, punctuation) are no script's.
            let is_latin = |c: char| {
                let mut set = AugmentedScriptSet::for_char(c);
                if set.is_all() {
                    return false;
                }
                set.intersect_with(latin);
                !set.is_empty()
            };
            let letters: Vec<(usize, char)> = word
                .char_indices()
                .filter(|(_, c)| c.is_alphabetic())
                .collect();
            let latin_count = letters.iter().filter(|(_, c)| is_latin(*c)).count();
            let other: Vec<(usize, char)> = letters
                .iter()
                .copied()
                .filter(|(_, c)| !is_latin(*c))
                .collect();
            let lookalikes: Vec<(usize, char)> = other
                .iter()
                .copied()
                .filter(|(_, c)| ascii_lookalike(*c).is_some())
                .collect();
            // Without a character that imitates ASCII, mixing is legitimate ("iPhone版").
            if lookalikes.is_empty() || latin_count == 0 {
                continue;
            }
            // The odd ones out are the minority: Cyrillic in a Latin word, or Latin in a
            // Cyrillic one.
            let odd: Vec<(usize, char)> = if latin_count >= other.len() {
                lookalikes
            } else {
                letters
                    .iter()
                    .copied()
                    .filter(|(_, c)| is_latin(*c))
                    .collect()
            };
            let Some(&(first, c)) = odd.first() else {
                continue;
            };
            let at = s + first;
            let what = match ascii_lookalike(c) {
                Some(ascii) if !c.is_ascii() => {
                    format!("{}, which looks like `{ascii}`", describe(c))
                }
                _ => format!(
                    "{} among {} letters",
                    describe(c),
                    script_name(other.first().map_or(c, |o| o.1))
                ),
            };
            let mut d = Diagnostic::new(
                Code::Confusable,
                &sub_loc(loc, at, at + c.len_utf8()),
                format!("the word `{word}` in this string mixes scripts: it contains {what}"),
            )
            .label(format!("{} ({})", code_point(c), script_name(c)));
            for &(offset, c) in odd.iter().skip(1).take(MAX_LABELS) {
                d = d.with_label(
                    &sub_loc(loc, s + offset, s + offset + c.len_utf8()),
                    format!("{} ({})", code_point(c), script_name(c)),
                );
            }
            let help = match ascii_respelling(word) {
                Some(ascii) if latin_count >= other.len() => {
                    format!("retype it in one script: `{ascii}`")
                }
                _ => "retype the word in one script".into(),
            };
            self.found.push(d.help(help));
        }
    }

    fn lookalikes(&mut self) -> &HashMap<String, (&'static str, String, Loc)> {
        let parsed = self.parsed;
        self.lookalikes.get_or_insert_with(|| {
            let mut map = HashMap::new();
            for decl in parsed.iter().flat_map(|p| &p.decls) {
                let kind = match decl.kind {
                    DeclKind::Service => "service",
                    DeclKind::Route => "route",
                    DeclKind::Filter => "filter",
                    _ => continue,
                };
                let name = &decl.name.node;
                if name.is_ascii() {
                    map.entry(skeleton(name).collect::<String>()).or_insert((
                        kind,
                        name.clone(),
                        decl.name.loc.clone(),
                    ));
                }
            }
            map
        })
    }
}

/// Combining marks take part in words (`é` may be `e` + U+0301).
fn is_mark(c: char) -> bool {
    matches!(c, '\u{0300}'..='\u{036F}' | '\u{1AB0}'..='\u{1AFF}' | '\u{1DC0}'..='\u{1DFF}' | '\u{20D0}'..='\u{20FF}' | '\u{FE20}'..='\u{FE2F}')
}

/// The ASCII character a non-ASCII one imitates, by the UTS #39 skeleton.
fn ascii_lookalike(c: char) -> Option<String> {
    if c.is_ascii() {
        return None;
    }
    let mut buf = [0; 4];
    let skel: String = skeleton(c.encode_utf8(&mut buf)).collect();
    (!skel.is_empty() && skel.is_ascii() && skel.chars().all(|s| s.is_ascii_graphic()))
        .then_some(skel)
}

/// `text` with each non-ASCII character replaced by the ASCII it imitates (accents dropped,
/// invisible characters removed), when every one has such a replacement.
fn ascii_respelling(text: &str) -> Option<String> {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii() {
            // Not through the skeleton: it maps some ASCII too (`m` to `rn`).
            out.push(c);
        } else if !(is_zero_width(c) || is_bidi(c) || is_mark(c)) {
            let mut buf = [0; 4];
            // The skeleton decomposes first, so `é` gives `e` and a mark, dropped here.
            let skel: String = skeleton(c.encode_utf8(&mut buf))
                .filter(|s| !is_mark(*s))
                .collect();
            if skel.is_empty() || !skel.is_ascii() {
                return None;
            }
            out.push_str(&skel);
        }
    }
    (out != text).then_some(out)
}

/// The name respelt in ASCII, when that gives a DNS label.
fn dns_spelling(name: &str) -> Option<String> {
    let out = ascii_respelling(name)?.to_ascii_lowercase();
    let valid = out.starts_with(|c: char| c.is_ascii_lowercase())
        && out.len() <= 63
        && out
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    valid.then_some(out)
}

/// `U+0430`.
fn code_point(c: char) -> String {
    format!("U+{:04X}", u32::from(c))
}

/// `U+0430 CYRILLIC SMALL LETTER A` for the usual suspects, else `U+XXXX` and its script.
fn describe(c: char) -> String {
    match NAMES.binary_search_by_key(&c, |(k, _)| *k) {
        Ok(i) => NAMES.get(i).map_or_else(
            || code_point(c),
            |(_, name)| format!("{} {name}", code_point(c)),
        ),
        Err(_) => format!("{} (a {} character)", code_point(c), script_name(c)),
    }
}

/// The script a character belongs to, for messages.
fn script_name(c: char) -> String {
    let set = AugmentedScriptSet::for_char(c);
    if set.is_all() {
        "common".into()
    } else {
        set.base
            .iter()
            .next()
            .map_or_else(|| set.to_string(), |s| s.full_name().to_string())
    }
}

/// Names of the characters most often used to deceive, sorted by code point.
const NAMES: &[(char, &str)] = &[
    ('\u{0131}', "LATIN SMALL LETTER DOTLESS I"),
    ('\u{0261}', "LATIN SMALL LETTER SCRIPT G"),
    ('\u{0391}', "GREEK CAPITAL LETTER ALPHA"),
    ('\u{0392}', "GREEK CAPITAL LETTER BETA"),
    ('\u{0395}', "GREEK CAPITAL LETTER EPSILON"),
    ('\u{0397}', "GREEK CAPITAL LETTER ETA"),
    ('\u{0399}', "GREEK CAPITAL LETTER IOTA"),
    ('\u{039A}', "GREEK CAPITAL LETTER KAPPA"),
    ('\u{039C}', "GREEK CAPITAL LETTER MU"),
    ('\u{039D}', "GREEK CAPITAL LETTER NU"),
    ('\u{039F}', "GREEK CAPITAL LETTER OMICRON"),
    ('\u{03A1}', "GREEK CAPITAL LETTER RHO"),
    ('\u{03A4}', "GREEK CAPITAL LETTER TAU"),
    ('\u{03A5}', "GREEK CAPITAL LETTER UPSILON"),
    ('\u{03A7}', "GREEK CAPITAL LETTER CHI"),
    ('\u{03B1}', "GREEK SMALL LETTER ALPHA"),
    ('\u{03B9}', "GREEK SMALL LETTER IOTA"),
    ('\u{03BD}', "GREEK SMALL LETTER NU"),
    ('\u{03BF}', "GREEK SMALL LETTER OMICRON"),
    ('\u{03C1}', "GREEK SMALL LETTER RHO"),
    ('\u{03C5}', "GREEK SMALL LETTER UPSILON"),
    ('\u{0405}', "CYRILLIC CAPITAL LETTER DZE"),
    (
        '\u{0406}',
        "CYRILLIC CAPITAL LETTER BYELORUSSIAN-UKRAINIAN I",
    ),
    ('\u{0408}', "CYRILLIC CAPITAL LETTER JE"),
    ('\u{0410}', "CYRILLIC CAPITAL LETTER A"),
    ('\u{0412}', "CYRILLIC CAPITAL LETTER VE"),
    ('\u{0415}', "CYRILLIC CAPITAL LETTER IE"),
    ('\u{041A}', "CYRILLIC CAPITAL LETTER KA"),
    ('\u{041C}', "CYRILLIC CAPITAL LETTER EM"),
    ('\u{041D}', "CYRILLIC CAPITAL LETTER EN"),
    ('\u{041E}', "CYRILLIC CAPITAL LETTER O"),
    ('\u{0420}', "CYRILLIC CAPITAL LETTER ER"),
    ('\u{0421}', "CYRILLIC CAPITAL LETTER ES"),
    ('\u{0422}', "CYRILLIC CAPITAL LETTER TE"),
    ('\u{0425}', "CYRILLIC CAPITAL LETTER HA"),
    ('\u{0430}', "CYRILLIC SMALL LETTER A"),
    ('\u{0435}', "CYRILLIC SMALL LETTER IE"),
    ('\u{043E}', "CYRILLIC SMALL LETTER O"),
    ('\u{0440}', "CYRILLIC SMALL LETTER ER"),
    ('\u{0441}', "CYRILLIC SMALL LETTER ES"),
    ('\u{0443}', "CYRILLIC SMALL LETTER U"),
    ('\u{0445}', "CYRILLIC SMALL LETTER HA"),
    ('\u{0455}', "CYRILLIC SMALL LETTER DZE"),
    ('\u{0456}', "CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I"),
    ('\u{0458}', "CYRILLIC SMALL LETTER JE"),
    ('\u{04BB}', "CYRILLIC SMALL LETTER SHHA"),
    ('\u{0501}', "CYRILLIC SMALL LETTER KOMI DE"),
    ('\u{051B}', "CYRILLIC SMALL LETTER QA"),
    ('\u{051D}', "CYRILLIC SMALL LETTER WE"),
    ('\u{061C}', "ARABIC LETTER MARK"),
    ('\u{200B}', "ZERO WIDTH SPACE"),
    ('\u{200C}', "ZERO WIDTH NON-JOINER"),
    ('\u{200D}', "ZERO WIDTH JOINER"),
    ('\u{200E}', "LEFT-TO-RIGHT MARK"),
    ('\u{200F}', "RIGHT-TO-LEFT MARK"),
    ('\u{202A}', "LEFT-TO-RIGHT EMBEDDING"),
    ('\u{202B}', "RIGHT-TO-LEFT EMBEDDING"),
    ('\u{202C}', "POP DIRECTIONAL FORMATTING"),
    ('\u{202D}', "LEFT-TO-RIGHT OVERRIDE"),
    ('\u{202E}', "RIGHT-TO-LEFT OVERRIDE"),
    ('\u{2060}', "WORD JOINER"),
    ('\u{2066}', "LEFT-TO-RIGHT ISOLATE"),
    ('\u{2067}', "RIGHT-TO-LEFT ISOLATE"),
    ('\u{2068}', "FIRST STRONG ISOLATE"),
    ('\u{2069}', "POP DIRECTIONAL ISOLATE"),
    ('\u{FEFF}', "ZERO WIDTH NO-BREAK SPACE"),
];

#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_clean, diagnostics, label_positions};
    use super::NAMES;
    use crate::diag::Code;

    const BIDI_HELP: &str =
        "remove it: bidi controls can make the code read differently than it runs (CVE-2021-42574)";

    #[test]
    fn a_cyrillic_letter_in_a_name_is_confusable() {
        let ds = diagnostics(
            "service payments { port 80 }\nservice p\u{0430}yments { port 81 }\nroute r on p\u{0430}yments { to payments }\n",
            Code::Confusable,
        );
        assert_eq!(ds.len(), 2, "{ds:#?}");
        assert_eq!(label_positions(&ds[0]), [(3, 10), (2, 9)]);
        assert_eq!(
            ds[0].message,
            "`p\u{0430}yments` contains U+0430 CYRILLIC SMALL LETTER A, which looks like `a`; it looks like the service `payments`"
        );
        assert_eq!(
            ds[0].help.as_deref(),
            Some("if you mean the service `payments`, retype the name in ASCII: `payments`")
        );
        // The reference after `on` is reported too, at its own character.
        assert_eq!(
            ds[1].primary().map(crate::source::Loc::line_col),
            Some((4, 13))
        );
    }

    #[test]
    fn a_confusable_name_without_a_twin_suggests_its_ascii_spelling() {
        let ds = diagnostics("service \u{0440}\u{0430}y { port 80 }\n", Code::Confusable);
        assert_eq!(ds.len(), 1, "{ds:#?}");
        assert_eq!(label_positions(&ds[0]), [(2, 9), (2, 10)]);
        assert_eq!(
            ds[0].help.as_deref(),
            Some("names are ASCII DNS labels: retype it as `pay`")
        );
    }

    #[test]
    fn a_non_ascii_name_that_deceives_nobody_is_an_invalid_name() {
        let ds = diagnostics("service caf\u{e9} { port 80 }\n", Code::InvalidName);
        assert_eq!(ds.len(), 1, "{ds:#?}");
        assert_eq!(label_positions(&ds[0]), [(2, 9)]);
        assert_eq!(
            ds[0].help.as_deref(),
            Some("a name is a DNS label, such as `cafe`")
        );
        assert!(diagnostics("service caf\u{e9} { port 80 }\n", Code::Confusable).is_empty());
    }

    #[test]
    fn bidi_controls_are_reported_at_the_character() {
        let ds = diagnostics(
            "service a { port 80 } // ok \u{202E} \u{2066}x\n",
            Code::Bidi,
        );
        assert_eq!(ds.len(), 1, "{ds:#?}");
        assert_eq!(label_positions(&ds[0]), [(2, 29), (2, 31)]);
        assert!(
            ds[0]
                .message
                .contains("U+202E RIGHT-TO-LEFT OVERRIDE, in a comment"),
            "{}",
            ds[0].message
        );
        assert_eq!(ds[0].help.as_deref(), Some(BIDI_HELP));
        assert!(ds[0].is_error());
        let in_string = diagnostics(
            "service a { port 80 }\nroute r on a { match { header \"x\" exact \"ab\u{200F}c\" } }\n",
            Code::Bidi,
        );
        assert_eq!(in_string.len(), 1, "{in_string:#?}");
        assert_eq!(label_positions(&in_string[0]), [(3, 44)]);
        assert!(in_string[0]
            .help
            .as_deref()
            .is_some_and(|h| h.starts_with(BIDI_HELP) && h.contains("escape")));
        // Written as an escape, it is visible and fine.
        assert_clean(
            "service a { port 80 }\nroute r on a { match { header \"x\" exact \"ab\\u200Fc\" } }\n",
        );
    }

    #[test]
    fn invisible_characters_in_strings_are_confusable() {
        let ds = diagnostics(
            "service a { port 80 }\nroute r on a { match { path exact \"/ad\u{200B}min\" } }\n",
            Code::Confusable,
        );
        assert_eq!(ds.len(), 1, "{ds:#?}");
        assert_eq!(label_positions(&ds[0]), [(3, 39)]);
        assert!(
            ds[0].message.contains("U+200B ZERO WIDTH SPACE"),
            "{}",
            ds[0].message
        );
    }

    #[test]
    fn mixed_script_words_in_strings_are_confusable() {
        let ds = diagnostics(
            "service a { port 80 }\nroute r on a { match { header \"x-user\" exact \"p\u{0430}ypal admin\" } }\n",
            Code::Confusable,
        );
        assert_eq!(ds.len(), 1, "{ds:#?}");
        assert_eq!(label_positions(&ds[0]), [(3, 48)]);
        assert!(
            ds[0].message.contains("`p\u{0430}ypal`"),
            "{}",
            ds[0].message
        );
        assert_eq!(
            ds[0].help.as_deref(),
            Some("retype it in one script: `paypal`")
        );
        // A Latin letter among Cyrillic ones is the odd one out.
        let ds = diagnostics(
            "service a { port 80 }\nroute r on a { match { header \"x\" exact \"\u{043F}\u{0440}o\u{0434}\u{0443}\u{043A}\u{0442}\" } }\n",
            Code::Confusable,
        );
        assert_eq!(label_positions(&ds[0]), [(3, 44)]);
    }

    #[test]
    fn legitimate_text_in_strings_is_fine() {
        for value in [
            "\u{041F}\u{0440}\u{0438}\u{0432}\u{0435}\u{0442} \u{043C}\u{0438}\u{0440}", // Привет мир
            "\u{65E5}\u{672C}\u{8A9E}\u{30C6}\u{30AD}\u{30B9}\u{30C8}", // 日本語テキスト
            "iPhone\u{7248}",                                           // iPhone版
            "caf\u{e9} M\u{fc}ller",
            "\u{0645}\u{06CC}\u{200C}\u{062E}\u{0648}\u{0627}\u{0647}\u{0645}", // Persian with ZWNJ
            "x-\u{0438}\u{0434}",
            "\u{1F468}\u{200D}\u{1F469}", // an emoji ZWJ sequence
        ] {
            assert_clean(&format!("service a {{ port 80 }}\nroute r on a {{ match {{ header \"x\" exact \"{value}\" }} }}\n"));
        }
    }

    #[test]
    fn the_name_table_is_sorted_for_binary_search() {
        assert!(NAMES.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
