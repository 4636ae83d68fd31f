//! Tests of every output format, on hand-built diagnostics.

use std::sync::Arc;

use serde_json::Value;

use super::{first_sentence, reference_paragraph, render, render_human, Format};
use crate::diag::{Code, Diagnostic};
use crate::source::{Loc, SourceFile};

const POLICY: &str = "mesh \"shop\" { trust_domain \"shop.example\" }\n\
                      \n\
                      route charge on paymnets {\n  to payments\n}\n";

const OTHER: &str = "service payments {\n  port 9000\n}\n";

fn policy() -> Arc<SourceFile> {
    SourceFile::new("policy.mesh", POLICY)
}

/// The location of the first occurrence of `needle` in `file`.
fn at(file: &Arc<SourceFile>, needle: &str) -> Loc {
    let start = file.text.find(needle).expect("needle in fixture");
    Loc::new(file, start..start + needle.len())
}

/// An error with a help line, and a warning whose second label is in another file.
fn sample() -> Vec<Diagnostic> {
    let file = policy();
    let other = SourceFile::new("services.mesh", OTHER);
    vec![
        Diagnostic::new(
            Code::UnknownService,
            &at(&file, "paymnets"),
            "service `paymnets` is not declared",
        )
        .label("no service by this name")
        .help("did you mean `payments`?"),
        Diagnostic::new(
            Code::UnusedFilter,
            &at(&file, "charge"),
            "a warning, with 100% of the text, a comma: and a colon\non two lines",
        )
        .label("here")
        .with_label(&at(&other, "payments"), "declared here"),
    ]
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).expect("valid JSON")
}

#[test]
fn human_shows_code_message_labels_help_and_source() {
    let out = render(&sample(), Format::Human);
    assert!(out.contains("mesh::unknown-service"), "{out}");
    assert!(out.contains("service `paymnets` is not declared"), "{out}");
    assert!(out.contains("no service by this name"), "{out}");
    assert!(out.contains("help: did you mean `payments`?"), "{out}");
    assert!(out.contains("route charge on paymnets {"), "{out}");
    assert!(out.contains("policy.mesh:3:17"), "{out}");
    // The label in another file is drawn with that file's source.
    assert!(out.contains("services.mesh:1:9"), "{out}");
    assert!(out.contains("service payments {"), "{out}");
    assert!(out.contains("declared here"), "{out}");
    assert!(
        out.ends_with("error: could not compile policy: 1 error, 1 warning emitted\n"),
        "{out}"
    );
    assert!(!out.contains('\x1b'), "no colour unless asked: {out}");
}

#[test]
fn human_colour_is_opt_in() {
    let out = render_human(&sample(), true);
    assert!(out.contains('\x1b'), "{out}");
    assert!(out.contains("mesh::unknown-service"), "{out}");
}

#[test]
fn human_summary_lines() {
    assert_eq!(render(&[], Format::Human), "");
    let warnings: Vec<Diagnostic> = sample().into_iter().filter(|d| !d.is_error()).collect();
    let out = render(&warnings, Format::Human);
    assert!(out.ends_with("warning: 1 warning emitted\n"), "{out}");
    let mut two = sample();
    two.extend(sample());
    let out = render(&two, Format::Human);
    assert!(
        out.ends_with("error: could not compile policy: 2 errors, 2 warnings emitted\n"),
        "{out}"
    );
}

#[test]
fn human_renders_a_label_at_the_end_of_the_file() {
    let file = policy();
    let end = file.text.len();
    let d = Diagnostic::new(
        Code::Syntax,
        &Loc::new(&file, end..end),
        "unexpected end of file",
    )
    .label("expected `}`");
    let out = render(&[d], Format::Human);
    assert!(out.contains("mesh::syntax"), "{out}");
    assert!(out.contains("expected `}`"), "{out}");
}

#[test]
fn json_has_the_documented_shape() {
    let doc = parse(&render(&sample(), Format::Json));
    assert_eq!(doc["format_version"], 1);
    assert_eq!(doc["errors"], 1);
    assert_eq!(doc["warnings"], 1);
    let first = &doc["diagnostics"][0];
    assert_eq!(first["code"], "mesh::unknown-service");
    assert_eq!(first["severity"], "error");
    assert_eq!(first["message"], "service `paymnets` is not declared");
    assert_eq!(first["help"], "did you mean `payments`?");
    let label = &first["labels"][0];
    assert_eq!(label["file"], "policy.mesh");
    assert_eq!(label["line"], 3);
    assert_eq!(label["column"], 17);
    assert_eq!(label["end_line"], 3);
    assert_eq!(label["end_column"], 25);
    assert_eq!(label["message"], "no service by this name");
    let second = &doc["diagnostics"][1];
    assert_eq!(second["severity"], "warning");
    assert_eq!(second["help"], Value::Null);
    assert_eq!(second["labels"][1]["file"], "services.mesh");
    assert_eq!(second["labels"][1]["line"], 1);
    assert_eq!(second["labels"][1]["column"], 9);
}

#[test]
fn json_of_nothing_is_still_a_document() {
    let doc = parse(&render(&[], Format::Json));
    assert_eq!(doc["format_version"], 1);
    assert_eq!(doc["diagnostics"], Value::Array(Vec::new()));
    assert_eq!(doc["errors"], 0);
}

#[test]
fn sarif_has_rules_results_and_regions() {
    let doc = parse(&render(&sample(), Format::Sarif));
    assert_eq!(doc["version"], "2.1.0");
    assert!(doc["$schema"].as_str().is_some_and(|s| s.contains("sarif")));
    let run = &doc["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "meshc");
    let rules = run["tool"]["driver"]["rules"]
        .as_array()
        .expect("rules array");
    let ids: Vec<&str> = rules.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, ["mesh::unknown-service", "mesh::unused-filter"]);
    assert!(rules[0]["shortDescription"]["text"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));

    let first = &run["results"][0];
    assert_eq!(first["ruleId"], "mesh::unknown-service");
    assert_eq!(first["ruleIndex"], 0);
    assert_eq!(first["level"], "error");
    assert_eq!(
        first["message"]["text"],
        "service `paymnets` is not declared\nhelp: did you mean `payments`?"
    );
    let location = &first["locations"][0]["physicalLocation"];
    assert_eq!(location["artifactLocation"]["uri"], "policy.mesh");
    assert_eq!(location["region"]["startLine"], 3);
    assert_eq!(location["region"]["startColumn"], 17);
    assert_eq!(location["region"]["endLine"], 3);
    assert_eq!(location["region"]["endColumn"], 25);
    assert!(first.get("relatedLocations").is_none());

    let second = &run["results"][1];
    assert_eq!(second["level"], "warning");
    assert_eq!(second["ruleIndex"], 1);
    let related = &second["relatedLocations"][0];
    assert_eq!(
        related["physicalLocation"]["artifactLocation"]["uri"],
        "services.mesh"
    );
    assert_eq!(related["physicalLocation"]["region"]["startLine"], 1);
    assert_eq!(related["message"]["text"], "declared here");
}

#[test]
fn sarif_uris_are_percent_encoded() {
    let file = SourceFile::new("my policies/a,b.mesh", "service x {}\n");
    let d = Diagnostic::new(Code::Syntax, &at(&file, "x"), "m");
    let doc = parse(&render(&[d], Format::Sarif));
    assert_eq!(
        doc["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "my%20policies/a%2Cb.mesh"
    );
}

#[test]
fn github_lines_are_escaped_workflow_commands() {
    let out = render(&sample(), Format::Github);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(
        lines[0],
        "::error file=policy.mesh,line=3,col=17,endLine=3,endColumn=25,\
         title=mesh%3A%3Aunknown-service::service `paymnets` is not declared \
         (help: did you mean `payments`?)"
    );
    assert_eq!(
        lines[1],
        "::warning file=policy.mesh,line=3,col=7,endLine=3,endColumn=13,\
         title=mesh%3A%3Aunused-filter::a warning, with 100%25 of the text, a comma: \
         and a colon%0Aon two lines"
    );
    assert_eq!(render(&[], Format::Github), "");
}

#[test]
fn github_escapes_property_values() {
    let file = SourceFile::new("a:b,c%.mesh", "service x {}\n");
    let d = Diagnostic::new(Code::Syntax, &at(&file, "x"), "m");
    let out = render(&[d], Format::Github);
    assert!(out.starts_with("::error file=a%3Ab%2Cc%25.mesh,"), "{out}");
}

#[test]
fn short_descriptions_come_from_the_reference() {
    let reference = "# x\n\n## mesh::a\n\n**Severity:** error\n\nFirst sentence. Second\n\
                     line.\n\n```mesh\n```\n\n## mesh::b\n\n**Severity:** warning\n\n";
    assert_eq!(
        reference_paragraph(reference, "mesh::a").as_deref(),
        Some("First sentence. Second line.")
    );
    assert_eq!(reference_paragraph(reference, "mesh::b"), None);
    assert_eq!(reference_paragraph(reference, "mesh::c"), None);
    assert_eq!(
        first_sentence("First sentence. Second line."),
        "First sentence."
    );
    assert_eq!(first_sentence("Only one."), "Only one.");
}

#[test]
fn labels_end_at_their_last_character_not_at_trailing_whitespace() {
    let file = SourceFile::new(
        "a.mesh",
        "authorize x {\n  allow from y\n  default deny\n}\n",
    );
    let start = file.text.find("allow").expect("allow");
    let end = file.text.find("default").expect("default");
    let d = Diagnostic::new(Code::DeadAllow, &Loc::new(&file, start..end), "m").label("rule");
    let doc = parse(&render(std::slice::from_ref(&d), Format::Json));
    let label = &doc["diagnostics"][0]["labels"][0];
    assert_eq!(
        (label["line"].clone(), label["column"].clone()),
        (2.into(), 3.into())
    );
    assert_eq!(
        (label["end_line"].clone(), label["end_column"].clone()),
        (2.into(), 15.into())
    );
    let human = render(&[d], Format::Human);
    assert!(!human.contains("╭─▶"), "drawn as a one-line span: {human}");
}
