use std::sync::LazyLock;

use proptest::prelude::*;
use sha2::{Digest, Sha256};

use super::*;
use crate::model::Ppm;
use crate::testing::{minimal_table, sample_table};

static SAMPLE: LazyLock<Vec<u8>> = LazyLock::new(|| encode(&sample_table()));

/// Wraps a payload in a correct header (right magic, version, length and checksum).
fn with_header(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    let len = u32::try_from(payload.len()).expect("test payloads are small");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&Sha256::digest(payload));
    out.extend_from_slice(payload);
    out
}

#[test]
fn sample_tables_are_valid() {
    validate(&sample_table()).expect("sample table validates");
    validate(&minimal_table()).expect("minimal table validates");
}

#[test]
fn encode_is_deterministic() {
    let table = sample_table();
    let first = encode(&table);
    assert_eq!(first, encode(&table));
    assert_eq!(first, encode(&table.clone()));
    assert_eq!(first, *SAMPLE);
}

#[test]
fn round_trip() {
    for table in [sample_table(), minimal_table()] {
        let bytes = encode(&table);
        assert_eq!(decode(&bytes), Ok(table));
    }
}

#[test]
fn header_layout() {
    let table = sample_table();
    let bytes = encode(&table);
    let payload = postcard::to_allocvec(&table).expect("serializes");
    assert_eq!(bytes.len(), HEADER_LEN + payload.len());
    assert_eq!(bytes[..8], *b"MESHTBL\0");
    assert_eq!(bytes[8..12], [2, 0, 0, 0]);
    let len = u32::try_from(payload.len()).expect("small");
    assert_eq!(bytes[12..16], len.to_le_bytes());
    assert_eq!(bytes[16..48], Sha256::digest(&payload)[..]);
    assert_eq!(bytes[48..], payload[..]);
    assert_eq!(bytes, with_header(&payload));
}

#[test]
fn checksum_reads_the_header() {
    let sum = checksum(&SAMPLE).expect("has a header");
    assert_eq!(sum[..], SAMPLE[16..48]);
    let hex = checksum_hex(&SAMPLE).expect("has a header");
    assert_eq!(hex.len(), 64);
    assert!(hex
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(hex, to_hex(&sum));
    assert_eq!(
        checksum_hex(&with_header(b"")).as_deref(),
        Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    assert_eq!(checksum(&SAMPLE[..HEADER_LEN - 1]), None);
    assert_eq!(
        checksum(b"{\"mesh\": 1}                                            "),
        None
    );
    // A different table has a different checksum.
    assert_ne!(checksum_hex(&encode(&minimal_table())), Some(hex));
}

#[test]
fn decodes_validate() {
    let mut table = sample_table();
    table.routes[0].targets[0].service = 99;
    let err = decode(&encode(&table)).expect_err("index out of range");
    assert!(matches!(err, DecodeError::Invalid(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "invalid table: route #0 (`cart`): target #0: service index 99 out of range \
         (table has 6 services)"
    );
}

#[test]
fn every_truncation_fails() {
    let bytes = &*SAMPLE;
    for len in 0..bytes.len() {
        let err = decode(&bytes[..len]).expect_err("truncated");
        if len < HEADER_LEN {
            assert_eq!(err, DecodeError::TooShort { found: len });
        } else {
            assert_eq!(
                err,
                DecodeError::Truncated {
                    expected: u32::try_from(bytes.len() - HEADER_LEN).expect("small"),
                    found: len - HEADER_LEN,
                }
            );
        }
    }
}

#[test]
fn error_messages_say_what_and_where() {
    let payload_len = SAMPLE.len() - HEADER_LEN;
    let cut = &SAMPLE[..SAMPLE.len() - 10];
    assert_eq!(
        decode(cut).expect_err("truncated").to_string(),
        format!(
            "table is truncated: header says {payload_len} payload bytes, found {}",
            payload_len - 10
        )
    );

    let mut long = SAMPLE.clone();
    long.extend_from_slice(b"xyz");
    assert_eq!(
        decode(&long).expect_err("trailing").to_string(),
        format!(
            "table has trailing bytes: header says {payload_len} payload bytes, found {}",
            payload_len + 3
        )
    );

    let mut v2 = SAMPLE.clone();
    v2[8..12].copy_from_slice(&1_u32.to_le_bytes());
    assert_eq!(
        decode(&v2).expect_err("version").to_string(),
        "unsupported table format version 1 (this build reads version 2)"
    );

    assert_eq!(
        decode(b"{\"services\": []}").expect_err("json").to_string(),
        "bad magic: not a mesh rule table"
    );
    assert_eq!(
        decode(b"").expect_err("empty"),
        DecodeError::TooShort { found: 0 }
    );
    assert_eq!(
        decode(b"MESH").expect_err("short").to_string(),
        "table is too short: 4 bytes, but the header alone is 48 bytes"
    );

    let mut flipped = SAMPLE.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let message = decode(&flipped).expect_err("checksum").to_string();
    assert!(
        message.starts_with("checksum mismatch: header says "),
        "{message}"
    );
    assert!(message.contains(&to_hex(&SAMPLE[16..48])), "{message}");

    let message = decode(&with_header(&[0xff; 8]))
        .expect_err("garbage")
        .to_string();
    assert!(message.starts_with("malformed payload: "), "{message}");

    let mut payload = SAMPLE[HEADER_LEN..].to_vec();
    payload.push(0);
    assert_eq!(
        decode(&with_header(&payload))
            .expect_err("left over")
            .to_string(),
        "malformed payload: 1 bytes left over after the table"
    );
}

#[test]
fn only_the_canonical_encoding_decodes() {
    let table = minimal_table();
    let payload = postcard::to_allocvec(&table).expect("serializes");
    // The payload starts with the mesh name's length, 4 (`tiny`); write it over-long.
    assert_eq!(payload[..5], *b"\x04tiny");
    let mut long = vec![0x84, 0x00];
    long.extend_from_slice(&payload[1..]);
    assert!(postcard::from_bytes::<crate::model::Table>(&long).is_ok());
    assert_eq!(
        decode_payload(&long),
        Err(DecodeError::NonCanonical { offset: 0 })
    );
    let err = decode(&with_header(&long)).expect_err("non-canonical");
    assert_eq!(
        err.to_string(),
        "malformed payload: non-canonical encoding from byte 0"
    );
}

#[test]
fn decode_inverts_encode_exactly() {
    for table in [sample_table(), minimal_table()] {
        let bytes = encode(&table);
        let decoded = decode(&bytes).expect("decodes");
        assert_eq!(encode(&decoded), bytes);
    }
}

#[test]
fn every_single_byte_flip_fails() {
    let bytes = &*SAMPLE;
    for pos in 0..bytes.len() {
        for mask in [0x01, 0x80, 0xff] {
            let mut corrupt = bytes.clone();
            corrupt[pos] ^= mask;
            assert!(decode(&corrupt).is_err(), "flip {mask:#x} at {pos} decoded");
        }
    }
}

#[test]
fn valid_payload_edits_are_caught_by_the_checksum() {
    // A payload that decodes fine on its own is still refused under the old checksum.
    let mut table = sample_table();
    table.routes[2].targets[0].weight = Ppm(800_000);
    table.routes[2].targets[1].weight = Ppm(200_000);
    let forged = encode(&table);
    let mut spliced = SAMPLE[..HEADER_LEN].to_vec();
    spliced.extend_from_slice(&forged[HEADER_LEN..]);
    assert!(matches!(
        decode(&spliced),
        Err(DecodeError::ChecksumMismatch { .. })
    ));
    assert_eq!(decode(&forged), Ok(table));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4_000))]

    #[test]
    fn random_xor_fails(pos in 0..SAMPLE.len(), mask in 1..=255_u8) {
        let mut corrupt = SAMPLE.clone();
        corrupt[pos] ^= mask;
        prop_assert!(decode(&corrupt).is_err());
    }

    #[test]
    fn random_multi_byte_corruption_fails(
        edits in prop::collection::vec((0..SAMPLE.len(), 1..=255_u8), 1..8),
    ) {
        let mut corrupt = SAMPLE.clone();
        for (pos, mask) in edits {
            corrupt[pos] ^= mask;
        }
        // Several masks at one position can cancel out; otherwise the bytes differ.
        prop_assume!(corrupt != *SAMPLE);
        prop_assert!(decode(&corrupt).is_err());
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        prop_assert!(decode(&bytes).is_err());
        let _ = decode_payload(&bytes);
        let _ = decode(&with_header(&bytes));
    }

    #[test]
    fn mutated_payloads_never_panic(
        edits in prop::collection::vec((0..SAMPLE.len() - HEADER_LEN, any::<u8>()), 1..6),
        cut in 0..SAMPLE.len() - HEADER_LEN,
    ) {
        // Past the checksum (re-computed), so postcard and the validator see the damage.
        let mut payload = SAMPLE[HEADER_LEN..].to_vec();
        for (pos, byte) in edits {
            payload[pos] = byte;
        }
        if let Ok(table) = decode(&with_header(&payload)) {
            prop_assert!(validate(&table).is_ok());
        }
        // Any strict prefix of a whole payload runs out of bytes mid-table.
        prop_assert!(decode_payload(&SAMPLE[HEADER_LEN..HEADER_LEN + cut]).is_err());
    }
}

/// Writes seed inputs for the fuzz targets: `cargo test -p mesh-table -- --ignored fuzz_seeds`.
#[test]
#[ignore = "writes files under fuzz/corpus"]
fn fuzz_seeds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut small = sample_table();
    small.routes.truncate(1);
    small.authorizations.truncate(1);
    let tables = [
        ("sample", sample_table()),
        ("minimal", minimal_table()),
        ("small", small),
    ];
    for (target, with_header) in [("table_decode", true), ("table_payload", false)] {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("create corpus dir");
        for (name, table) in &tables {
            let bytes = encode(table);
            let bytes = if with_header {
                &bytes[..]
            } else {
                &bytes[HEADER_LEN..]
            };
            std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
        }
    }
}
