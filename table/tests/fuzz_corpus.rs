//! Replays the saved corpora of the `table_decode` and `table_payload` fuzz targets
//! (`fuzz/corpora/<target>/`, minimized with
//! `cargo fuzz cmin`) through the same function the target runs, so CI checks every input
//! the fuzzer kept without nightly or cargo-fuzz (see `fuzz/README.md`).

#[path = "../../fuzz/harness/table.rs"]
mod harness;

#[path = "../../fuzz/harness/replay.rs"]
mod replay;

#[test]
fn table_decode_corpus_replays() {
    replay::replay(env!("CARGO_MANIFEST_DIR"), "table_decode", |data| {
        harness::table_decode(data);
    });
}

#[test]
fn table_payload_corpus_replays() {
    replay::replay(env!("CARGO_MANIFEST_DIR"), "table_payload", |data| {
        harness::table_payload(data);
    });
}
