//! Whole encoded tables: header checks, checksum, postcard payload and validation (fuzz/harness/table.rs).
//!
//! Seed `corpus/table_decode` with `cargo test -p mesh-table -- --ignored fuzz_seeds` so the
//! fuzzer starts past the magic and checksum.
#![no_main]

#[path = "../harness/table.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::table_decode(data);
});
