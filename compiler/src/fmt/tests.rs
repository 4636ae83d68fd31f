//! Formatter tests: idempotence, meaning and comments preserved, and broken files left alone.

mod props;

use std::fmt::Write as _;

use super::format_source;
use crate::diag::Code;
use crate::source::SourceFile;
use crate::syntax::ast::{Block, Clause, ParsedFile, Value};
use crate::syntax::parse_file;

fn format(text: &str) -> String {
    match format_source(&SourceFile::new("test.mesh", text)) {
        Ok(out) => out,
        Err(d) => panic!("does not format: {d:#?}\n{text}"),
    }
}

fn parse_clean(text: &str) -> ParsedFile {
    let (parsed, diagnostics) = parse_file(&SourceFile::new("test.mesh", text));
    assert!(diagnostics.is_empty(), "{diagnostics:#?}\n{text}");
    parsed
}

/// The syntax tree without locations, one clause a line.
pub(super) fn shape(parsed: &ParsedFile) -> String {
    let mut out = String::new();
    for decl in &parsed.decls {
        let on = decl.on.as_ref().map(|o| &o.node);
        let _ = writeln!(
            out,
            "{:?} {:?} on {on:?} {:?}",
            decl.kind,
            decl.name.node,
            decl.name.loc.text()
        );
        shape_block(&mut out, &decl.body, 1);
    }
    out
}

fn shape_block(out: &mut String, block: &Block, depth: usize) {
    for clause in &block.clauses {
        shape_clause(out, clause, depth);
    }
}

fn shape_clause(out: &mut String, clause: &Clause, depth: usize) {
    let args: Vec<String> = clause.args.iter().map(|a| shape_value(&a.node)).collect();
    let _ = writeln!(
        out,
        "{}{} unknown={} {args:?}",
        "  ".repeat(depth),
        clause.keyword.node,
        clause.unknown
    );
    for group in &clause.groups {
        let _ = writeln!(
            out,
            "{}group {}",
            "  ".repeat(depth + 1),
            group.connector.node
        );
        for condition in &group.clauses {
            shape_clause(out, condition, depth + 2);
        }
    }
    if let Some(block) = &clause.block {
        let _ = writeln!(out, "{}{{", "  ".repeat(depth + 1));
        shape_block(out, block, depth + 2);
    }
}

fn shape_value(value: &Value) -> String {
    match value {
        Value::Str(s) => format!("str {s:?}"),
        Value::Quantity { number, unit } => format!("quantity {number} {unit}"),
        Value::Word(w) => format!("word {w}"),
        Value::List(items) => {
            let items: Vec<String> = items.iter().map(|i| shape_value(&i.node)).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(entries) => {
            let entries: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{:?}: {}", k.node, shape_value(&v.node)))
                .collect();
            format!("{{{}}}", entries.join(", "))
        }
    }
}

/// Every comment's text, trailing whitespace of each line aside, sorted.
pub(super) fn comment_texts(text: &str) -> Vec<String> {
    let mut comments: Vec<String> = parse_clean(text)
        .comments
        .iter()
        .map(|c| {
            c.loc
                .text()
                .split('\n')
                .map(str::trim_end)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    comments.sort();
    comments
}

/// Formats `text` and checks every property of the result; returns it.
pub(super) fn check_all(text: &str) -> String {
    let once = format(text);
    let twice = format(&once);
    assert_eq!(
        once, twice,
        "not idempotent; input:\n{text}\nfirst:\n{once}"
    );
    assert_eq!(
        shape(&parse_clean(text)),
        shape(&parse_clean(&once)),
        "meaning changed:\n{once}"
    );
    assert_eq!(
        comment_texts(text),
        comment_texts(&once),
        "comments changed:\n{once}"
    );
    assert!(
        once.is_empty() || once.ends_with('\n') && !once.ends_with("\n\n"),
        "{once:?}"
    );
    for line in once.lines() {
        assert_eq!(line, line.trim_end(), "trailing whitespace in:\n{once}");
    }
    assert!(!once.contains('\r') && !once.contains('\t'), "{once:?}");
    once
}

fn example_policy(name: &str) -> String {
    let path = format!("{}/../examples/policies/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).expect("example policy")
}

#[test]
fn the_example_policies_format_stably() {
    for name in ["hello.mesh", "shop.mesh"] {
        check_all(&example_policy(name));
    }
}

#[test]
fn shop_formats_to_the_fixture() {
    let formatted = check_all(&example_policy("shop.mesh"));
    assert_eq!(formatted, include_str!("fixtures/shop.mesh"));
}

#[test]
fn messy_layout_becomes_canonical() {
    let messy = "service   a{port 1   protocol\n\n http1 endpoints[\"x:1\",\"y:2\",]\nhealth{}outlier{consecutive_5xx 5}}\
                 route r on a{match{path   prefix \"/a\\u00e9\" method[GET ,POST]}to a}";
    let expected = "\
service a {
  port 1
  protocol http1
  endpoints [\"x:1\", \"y:2\"]
  health {}
  outlier {
    consecutive_5xx 5
  }
}

route r on a {
  match {
    path prefix \"/a\\u00e9\"
    method [GET, POST]
  }
  to a
}
";
    assert_eq!(check_all(messy), expected);
}

#[test]
fn rules_and_objects_print_on_one_line() {
    let text = "authorize p {\n  deny  from any       to path prefix \"/internal\"\n  allow from ops to path prefix \"/admin\"\n    when header \"x-oncall\" exact \"true\" header \"y\" present\n  default deny }\n\
                filter f { config {a:1,\"b c\" : [1,2], d:{}, e: { f: true }} }";
    let expected = "\
authorize p {
  deny from any to path prefix \"/internal\"
  allow from ops to path prefix \"/admin\" when header \"x-oncall\" exact \"true\" header \"y\" present
  default deny
}

filter f {
  config { a: 1, \"b c\": [1, 2], d: {}, e: { f: true } }
}
";
    assert_eq!(check_all(text), expected);
}

#[test]
fn comments_are_kept_in_place() {
    let text = "// head\n\n// about a\nservice a { // opener\n  port 1 /* one */ /* two */\n\n  // before protocol\n  protocol /* inside */ http1\n  health {\n    // only a comment\n  }\n  // last in a\n} // after a\n/* between */\nservice b {} // end\n\n// the very end\n";
    let expected = "\
// head

// about a
service a {  // opener
  port 1  /* one */  /* two */

  // before protocol
  /* inside */
  protocol http1
  health {
    // only a comment
  }
  // last in a
}  // after a

/* between */
service b {}  // end

// the very end
";
    assert_eq!(check_all(text), expected);
}

#[test]
fn block_comments_are_printed_verbatim() {
    let text = "service a {\n    /* a block\n       comment */ port 1\n}\n";
    let expected = "service a {\n  /* a block\n       comment */\n  port 1\n}\n";
    assert_eq!(check_all(text), expected);
}

#[test]
fn messy_inputs_keep_their_meaning_and_comments() {
    let inputs = [
        "mesh \"m\" { trust_domain \"m\" } service a { port 1 } route r on a { match { path prefix \"/\" } split { a 90% /* x */ b 10% } retry { attempts 3 on [reset,\n// mid-list\n503] backoff 25ms\nto 250ms } }",
        "observe a{access_log json sample 10% trace sample 1%//t\nlatency_buckets[5ms,1s]}",
        "service a {\r\n  port 1 // crlf   \r\n  balance ring_hash header \"x\"\r\n}\r\n",
        "route r on a { tiemout 3s wat \"x\" [1] { port 1 } to a }",
        "// only\n/* comments */\n",
        "",
        "filter f { module \"f\\\"q.wasm\" /* c1 */ config /* c2 */ { k /* c3 */ : 1 } }",
        "authorize a { allow /* c */ from b to // c2\n method [GET] }",
    ];
    for input in inputs {
        check_all(input);
    }
}

#[test]
fn an_empty_file_formats_to_nothing() {
    assert_eq!(check_all(""), "");
    assert_eq!(check_all(" \n\n"), "");
    assert_eq!(check_all("// c"), "// c\n");
}

#[test]
fn files_with_syntax_errors_are_not_formatted() {
    for (text, code) in [
        ("service a {\n  port\n}\n", Code::Syntax),
        (
            "service a { port 1 }\nservice b { port = 2 }\n",
            Code::Syntax,
        ),
        ("service a { port 1", Code::Syntax),
        ("mesh \"a\\qb\" { trust_domain \"x\" }", Code::InvalidEscape),
    ] {
        let Err(diagnostics) = format_source(&SourceFile::new("bad.mesh", text)) else {
            panic!("formatted a broken file: {text}");
        };
        assert!(
            diagnostics.iter().any(|d| d.code == code),
            "{diagnostics:#?}"
        );
    }
}

#[test]
fn blank_lines_around_comments_are_kept_but_not_inside_braces() {
    let text =
        "service a {\n\n  // first\n\n  port 1\n\n\n  timeout 1s\n  // last\n\n}\n\n\n\n// tail\n";
    let expected = "service a {\n  // first\n\n  port 1\n  timeout 1s\n  // last\n}\n\n// tail\n";
    assert_eq!(check_all(text), expected);
}

#[test]
fn comments_in_empty_blocks_and_values_stay() {
    let text = "service a { outlier { /* none */ } health {\n// later\n} endpoints [ // first\n\"x:1\" ] }";
    let expected = "\
service a {
  outlier {  /* none */
  }
  health {
    // later
  }  // first
  endpoints [\"x:1\"]
}
";
    assert_eq!(check_all(text), expected);
}
