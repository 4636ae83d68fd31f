//! What the `table_decode` and `table_payload` fuzz targets run, shared with their corpus
//! replay (`table/tests/fuzz_corpus.rs`).
#![allow(dead_code)] // Each target uses one of these.

/// Whole encoded tables: header checks, checksum, postcard payload and validation. Whatever
/// decodes re-encodes to the same bytes and is valid.
pub(crate) fn table_decode(data: &[u8]) {
    if let Ok(table) = mesh_table::decode(data) {
        assert_eq!(mesh_table::encode(&table), data);
        assert!(mesh_table::validate(&table).is_ok());
    }
}

/// Bare postcard payloads (no header, no checksum): a decoded table is valid, its payload
/// is canonical (re-encodes to the same bytes) and it survives the full codec.
pub(crate) fn table_payload(data: &[u8]) {
    if let Ok(table) = mesh_table::decode_payload(data) {
        assert!(mesh_table::validate(&table).is_ok());
        let encoded = mesh_table::encode(&table);
        assert_eq!(&encoded[mesh_table::HEADER_LEN..], data);
        assert_eq!(mesh_table::decode(&encoded).as_ref(), Ok(&table));
    }
}
