//! Fuzzes the parser, checker and formatter on arbitrary text: none may panic; a policy
//! that checks clean compiles to a table that passes the decoder's validation; formatting
//! keeps a parseable file parseable and is idempotent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshc::{check, CheckOptions, SourceFile};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let file = SourceFile::new("fuzz.mesh", text);
    let checked = check(&[file.clone()], &CheckOptions::default());
    if let Some(table) = &checked.table {
        let bytes = mesh_table::encode(table);
        assert_eq!(mesh_table::decode(&bytes).as_ref(), Ok(table), "a checked table must decode");
    }
    if let Ok(formatted) = meshc::fmt::format_source(&file) {
        let again = SourceFile::new("fuzz.mesh", formatted.clone());
        let twice = meshc::fmt::format_source(&again).expect("formatted output parses");
        assert_eq!(formatted, twice, "fmt is idempotent");
    }
});
