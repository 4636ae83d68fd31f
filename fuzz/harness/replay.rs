//! The corpus replay the crates' `tests/fuzz_corpus.rs` share (included with `#[path]`):
//! every file a fuzz target's saved corpus holds, in name order, through that target's
//! function, on stable and without cargo-fuzz.

use std::path::Path;

/// Runs `target` on every input in `fuzz/corpora/<name>/` (relative to the crate at
/// `manifest_dir`); fails when the corpus is missing or empty.
pub(crate) fn replay(manifest_dir: &str, name: &str, mut target: impl FnMut(&[u8])) {
    let dir = Path::new(manifest_dir).join("../fuzz/corpora").join(name);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{} holds no input", dir.display());
    for input in &inputs {
        // Printed first, so a failure names its input.
        println!("{}", input.display());
        let data = std::fs::read(input).expect("a corpus file");
        target(&data);
    }
}
