//! Parser tests: the example policies parse, and syntax errors say what was expected where.

use super::ast::{DeclKind, Value};
use super::parse_file;
use crate::source::SourceFile;

fn parse(text: &str) -> (super::ast::ParsedFile, Vec<crate::diag::Diagnostic>) {
    parse_file(&SourceFile::new("test.mesh", text))
}

#[test]
fn the_example_policies_parse_without_errors() {
    for name in ["hello.mesh", "shop.mesh"] {
        let path = format!("{}/../examples/policies/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect("example policy");
        let (parsed, diagnostics) = parse(&text);
        assert!(diagnostics.is_empty(), "{name}: {diagnostics:#?}");
        assert!(parsed.decls.len() >= 5, "{name}");
    }
}

#[test]
fn clauses_keep_their_structural_words() {
    let (parsed, d) = parse(
        "route r on s { match { path prefix \"/a\" header \"x\" exact \"1\" } retry { backoff 25ms to 1s } }",
    );
    assert!(d.is_empty(), "{d:#?}");
    let route = &parsed.decls[0];
    assert_eq!(route.kind, DeclKind::Route);
    assert_eq!(route.on.as_ref().map(|o| o.node.as_str()), Some("s"));
    let matcher = route.body.clauses[0].block.as_ref().expect("match block");
    assert_eq!(matcher.clauses[0].keyword.node, "path");
    assert_eq!(
        matcher.clauses[0].args[0].node,
        Value::Word("prefix".into())
    );
    assert_eq!(matcher.clauses[0].args[1].node, Value::Str("/a".into()));
    assert_eq!(matcher.clauses[1].args.len(), 3);
    let retry = route.body.clauses[1].block.as_ref().expect("retry block");
    assert_eq!(
        retry.clauses[0].args[0].node,
        Value::Quantity {
            number: "25".into(),
            unit: "ms".into()
        }
    );
}

#[test]
fn rules_have_to_and_when_groups() {
    let (parsed, d) = parse(
        "authorize p { allow from ops to path prefix \"/admin\" method [GET] when header \"x\" exact \"1\" default deny }",
    );
    assert!(d.is_empty(), "{d:#?}");
    let rule = &parsed.decls[0].body.clauses[0];
    assert_eq!(rule.keyword.node, "allow");
    assert_eq!(rule.groups.len(), 2);
    assert_eq!(rule.groups[0].clauses.len(), 2);
    assert_eq!(rule.groups[1].connector.node, "when");
    assert_eq!(parsed.decls[0].body.clauses[1].keyword.node, "default");
}

#[test]
fn a_syntax_error_names_what_was_expected_and_where() {
    let (_, d) = parse("service a {\n  port\n}\n");
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(
        d[0].message.contains("expected a value"),
        "{}",
        d[0].message
    );
    assert_eq!(d[0].primary().map(|l| l.line_col()), Some((3, 1)));
}

#[test]
fn errors_in_two_declarations_are_both_reported() {
    let (parsed, d) = parse("service a { port = 1 }\nservice b { port 2 }\nroute r on b { to }\n");
    assert_eq!(d.len(), 2, "{d:#?}");
    assert_eq!(parsed.decls.len(), 1);
    assert_eq!(d[0].primary().map(|l| l.line_col().0), Some(1));
    assert_eq!(d[1].primary().map(|l| l.line_col().0), Some(3));
}

#[test]
fn a_misspelt_declaration_keyword_gets_a_suggestion() {
    let (_, d) = parse("servce a { port 1 }\n");
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(d[0].help.as_deref(), Some("did you mean `service`?"));
}

#[test]
fn unknown_clauses_parse_for_the_checker() {
    let (parsed, d) = parse("route r on s { timout 2s to s }");
    assert!(d.is_empty(), "{d:#?}");
    let clause = &parsed.decls[0].body.clauses[0];
    assert!(clause.unknown);
    assert_eq!(clause.keyword.node, "timout");
}

#[test]
fn bad_escapes_are_reported_at_the_escape() {
    let (_, d) = parse("mesh \"a\\qb\" { trust_domain \"x\" }");
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(d[0].code, crate::diag::Code::InvalidEscape);
    assert_eq!(
        d[0].primary().map(|l| l.text().to_string()),
        Some("\\q".into())
    );
}

#[test]
fn values_of_every_kind_parse() {
    let (parsed, d) = parse(
        "filter f { module \"f.wasm\" config { a: 1, b: \"x\", c: [1, 2], d: { e: true }, f: 2.5s } memory 16MiB }",
    );
    assert!(d.is_empty(), "{d:#?}");
    let config = &parsed.decls[0].body.clauses[1];
    assert!(matches!(&config.args[0].node, Value::Object(entries) if entries.len() == 5));
}

#[test]
fn an_unclosed_block_comment_is_an_error() {
    let (parsed, d) = parse("/* never closed\nservice a { port 1 }\n");
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(d[0].primary().map(|l| l.line_col()), Some((1, 1)));
    assert!(parsed.decls.is_empty());
}
