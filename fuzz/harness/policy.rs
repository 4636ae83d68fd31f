//! What the `policy_check` fuzz target runs, shared with its corpus replay
//! (`compiler/tests/fuzz_corpus.rs`): the parser, checker and formatter on arbitrary text,
//! and every diagnostic rendered in every output format. None may panic; a policy that checks
//! clean compiles to a table that passes the decoder's validation; formatting keeps a
//! parseable file parseable and is idempotent.

use meshc::diag::{render, render_human, Format};
use meshc::{check, CheckOptions, SourceFile};

/// One input.
pub(crate) fn policy_check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = SourceFile::new("fuzz.mesh", text);
    let checked = check(&[file.clone()], &CheckOptions::default());
    if let Some(table) = &checked.table {
        let bytes = mesh_table::encode(table);
        assert_eq!(
            mesh_table::decode(&bytes).as_ref(),
            Ok(table),
            "a checked table must decode"
        );
    }
    // Every format, as `meshc check --format` prints it (human with and without colour).
    for format in [Format::Human, Format::Json, Format::Sarif, Format::Github] {
        let out = render(&checked.diagnostics, format);
        match format {
            Format::Json | Format::Sarif => {
                serde_json::from_str::<serde_json::Value>(&out).expect("a JSON document");
            }
            Format::Human | Format::Github => {
                assert_eq!(out.is_empty(), checked.diagnostics.is_empty(), "{format:?}");
            }
        }
    }
    let _ = render_human(&checked.diagnostics, true);
    if let Ok(formatted) = meshc::fmt::format_source(&file) {
        let again = SourceFile::new("fuzz.mesh", formatted.clone());
        let twice = meshc::fmt::format_source(&again).expect("formatted output parses");
        assert_eq!(formatted, twice, "fmt is idempotent");
    }
}
