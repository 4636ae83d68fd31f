//! Whole encoded tables: header checks, checksum, postcard payload and validation.
//!
//! Seed `corpus/table_decode` with `cargo test -p mesh-table -- --ignored fuzz_seeds` so the
//! fuzzer starts past the magic and checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(table) = mesh_table::decode(data) {
        // Whatever decodes re-encodes to the same bytes and is valid.
        assert_eq!(mesh_table::encode(&table), data);
        assert!(mesh_table::validate(&table).is_ok());
    }
});
