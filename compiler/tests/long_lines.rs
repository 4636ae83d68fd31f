//! `meshc check` never panics, whatever the input, in any output format: diagnostics far
//! along a very long line (a generated policy, one line of 70,000 characters) used to make
//! miette's graphical renderer panic ("Formatting argument out of range", exit 101).

mod support;

use std::fs;

use support::{meshc, root, status};

/// The smallest example policy, then one more line: `prefix` (spaces, tabs, wide characters)
/// and a route on a service that does not exist, so the error sits far along the line.
fn policy(prefix: &str) -> String {
    let hello = fs::read_to_string(root().join("examples/policies/hello.mesh")).expect("hello");
    format!("{hello}{prefix}route r on nosuchservice {{ to greeter }}\n")
}

/// Inputs whose diagnostics sit beyond column 65,535 (as characters, or as columns once
/// tabs and wide characters are drawn), on the line or spanning from it.
fn cases() -> Vec<(&'static str, String)> {
    vec![
        ("spaces", policy(&" ".repeat(70_000))),
        ("tabs", policy(&"\t".repeat(20_000))),
        (
            "wide",
            format!(
                "{}route w on greeter {{ match {{ path prefix \"/{}\" }} to nosuchservice }}\n",
                policy(""),
                "\u{65e5}".repeat(35_000)
            ),
        ),
        (
            "context",
            format!(
                "{}\nservice x {{ port 1 protocl http1 }}\n",
                "//".repeat(40_000)
            ),
        ),
        ("syntax", format!("{}@@@\n", " ".repeat(100_000))),
        (
            "two-labels",
            format!(
                "{}service a {{ port 1 }}{}service a {{ port 2 }}\n",
                " ".repeat(66_000),
                " ".repeat(66_000)
            ),
        ),
    ]
}

#[test]
fn diagnostics_far_along_a_line_render_in_every_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in cases() {
        let path = dir.path().join(format!("{name}.mesh"));
        fs::write(&path, &text).expect("write policy");
        let path = path.to_str().expect("utf-8 path");
        for format in ["human", "json", "sarif", "github"] {
            let output = meshc(&["check", "--format", format, path]);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(
                status(&output),
                1,
                "{name}, --format {format}: an error, reported, not a panic: {stderr:.2000}"
            );
            assert!(!stderr.contains("panicked"), "{name}, --format {format}");
            if format == "human" {
                assert!(
                    stderr.contains("could not compile policy"),
                    "{name}: a report: {stderr:.2000}"
                );
                // Snippets stay readable: no line of the report is as long as the input's.
                let longest = stderr.lines().map(|l| l.chars().count()).max().unwrap_or(0);
                assert!(
                    longest < 2_000,
                    "{name}: a report line of {longest} characters"
                );
            }
        }
    }
}

#[test]
fn an_elided_snippet_says_so_and_keeps_the_true_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("long.mesh");
    fs::write(&path, policy(&" ".repeat(70_000))).expect("write policy");
    let path = path.to_str().expect("utf-8 path");
    let output = meshc(&["check", path]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = policy("").lines().count();
    // The header names the real line and column, as the JSON format does.
    assert!(
        stderr.contains(&format!("long.mesh:{line}:70012]")),
        "{stderr:.3000}"
    );
    assert!(stderr.contains("nosuchservice"), "{stderr:.3000}");
    assert!(
        stderr.contains('…'),
        "the elision is marked: {stderr:.3000}"
    );
    assert!(
        stderr.contains("characters long"),
        "the report says the line was shortened: {stderr:.3000}"
    );
}
