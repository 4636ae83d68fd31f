//! Bare postcard payloads (no header, no checksum): the payload decoder and the validator.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(table) = mesh_table::decode_payload(data) {
        // A decoded table is valid, its payload is canonical (re-encodes to the same bytes)
        // and it survives the full codec.
        assert!(mesh_table::validate(&table).is_ok());
        let encoded = mesh_table::encode(&table);
        assert_eq!(&encoded[mesh_table::HEADER_LEN..], data);
        assert_eq!(mesh_table::decode(&encoded).as_ref(), Ok(&table));
    }
});
