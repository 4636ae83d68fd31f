//! The checksummed binary format of a [`Table`]: a fixed 48-byte header, then a postcard payload.
//!
//! Layout (all integers little-endian):
//!
//! | offset | size | field                                   |
//! |-------:|-----:|-----------------------------------------|
//! |      0 |    8 | [`MAGIC`] (`b"MESHTBL\0"`)              |
//! |      8 |    4 | format version ([`FORMAT_VERSION`])     |
//! |     12 |    4 | payload length in bytes                 |
//! |     16 |   32 | SHA-256 of the payload                  |
//! |     48 |    … | payload: the table, postcard-serialized |

use sha2::{Digest, Sha256};

use crate::model::Table;
use crate::validate::{validate, ValidationError};

/// The first eight bytes of every encoded table.
pub const MAGIC: [u8; 8] = *b"MESHTBL\0";

/// The format version this build writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 2;

/// Length of the header that precedes the payload: magic, version, length and checksum.
pub const HEADER_LEN: usize = 48;

/// Why a byte string could not be decoded into a [`Table`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than a header.
    #[error("table is too short: {found} bytes, but the header alone is {HEADER_LEN} bytes")]
    TooShort {
        /// How many bytes there were.
        found: usize,
    },
    /// The bytes do not start with [`MAGIC`].
    #[error("bad magic: not a mesh rule table")]
    BadMagic,
    /// The header names a format version this build cannot read.
    #[error("unsupported table format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version in the header.
        found: u32,
        /// The version this build reads ([`FORMAT_VERSION`]).
        supported: u32,
    },
    /// Fewer payload bytes than the header announces.
    #[error("table is truncated: header says {expected} payload bytes, found {found}")]
    Truncated {
        /// The payload length in the header.
        expected: u32,
        /// The number of bytes after the header.
        found: usize,
    },
    /// More payload bytes than the header announces.
    #[error("table has trailing bytes: header says {expected} payload bytes, found {found}")]
    TrailingBytes {
        /// The payload length in the header.
        expected: u32,
        /// The number of bytes after the header.
        found: usize,
    },
    /// The payload does not hash to the checksum in the header.
    #[error(
        "checksum mismatch: header says {}, payload hashes to {}",
        to_hex(.expected),
        to_hex(.found)
    )]
    ChecksumMismatch {
        /// The SHA-256 in the header.
        expected: [u8; 32],
        /// The SHA-256 of the payload.
        found: [u8; 32],
    },
    /// The payload is not a postcard-serialized [`Table`].
    #[error("malformed payload: {0}")]
    Malformed(postcard::Error),
    /// The payload holds a whole table followed by more bytes.
    #[error("malformed payload: {extra} bytes left over after the table")]
    PayloadTrailing {
        /// How many bytes were left over.
        extra: usize,
    },
    /// The payload decodes, but not from the bytes [`encode`] writes for that table (an
    /// over-long integer, say), so its checksum would not identify the table.
    #[error("malformed payload: non-canonical encoding from byte {offset}")]
    NonCanonical {
        /// Offset in the payload of the first byte that differs from the canonical encoding.
        offset: usize,
    },
    /// The table decoded but breaks an invariant (an index out of range, a bad weight, ...).
    #[error("invalid table: {0}")]
    Invalid(#[from] ValidationError),
}

/// Encodes a table: header, then the postcard payload.
///
/// The output is deterministic: equal tables give byte-identical encodings (the model has no
/// hash maps or floats), so the checksum doubles as a content hash of the policy.
///
/// The table is not validated here; [`decode`] validates, so run [`validate`] first when the
/// table does not come from a trusted compiler.
///
/// # Panics
///
/// Only if the payload is 4 GiB or larger, which its `u32` length field cannot describe.
pub fn encode(table: &Table) -> Vec<u8> {
    let mut out = vec![0; HEADER_LEN];
    // Serializing into a `Vec` cannot fail for these types: postcard only errors on a full
    // fixed-size buffer, on sequences of unknown length (derived `Serialize` for `Vec` and
    // `String` always gives the length) and on custom errors from hand-written `Serialize`
    // impls (the model has none). `testing::sample_table` holds every variant of every enum
    // and the codec tests round-trip it.
    out = match postcard::to_extend(table, out) {
        Ok(out) => out,
        Err(err) => unreachable!("postcard cannot fail to serialize a Table: {err}"),
    };
    let payload_len = u32::try_from(out.len() - HEADER_LEN)
        .expect("a rule table payload must be smaller than 4 GiB");
    let sum: [u8; 32] = Sha256::digest(&out[HEADER_LEN..]).into();
    let header = &mut out[..HEADER_LEN];
    header[0..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&payload_len.to_le_bytes());
    header[16..48].copy_from_slice(&sum);
    out
}

/// Decodes and validates an encoded table.
///
/// Checks, in order: the length against the header, the magic, the format version, the
/// payload length, the checksum, the postcard payload (which must be consumed exactly and be
/// in canonical form) and finally [`validate`]. Never panics, whatever the input.
///
/// So `decode(bytes) == Ok(table)` implies `encode(&table) == bytes`.
pub fn decode(bytes: &[u8]) -> Result<Table, DecodeError> {
    let (header, payload) = split_header(bytes)?;
    if header.version != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            found: header.version,
            supported: FORMAT_VERSION,
        });
    }
    let expected = header.payload_len;
    let found = payload.len();
    // On 16-bit targets a length that does not fit `usize` cannot match anyway.
    match usize::try_from(expected) {
        Ok(len) if len == found => {}
        Ok(len) if len < found => return Err(DecodeError::TrailingBytes { expected, found }),
        _ => return Err(DecodeError::Truncated { expected, found }),
    }
    let actual: [u8; 32] = Sha256::digest(payload).into();
    if actual != header.checksum {
        return Err(DecodeError::ChecksumMismatch {
            expected: header.checksum,
            found: actual,
        });
    }
    decode_payload(payload)
}

/// Decodes and validates a bare postcard payload (what follows the header), skipping the
/// header checks. The payload must be exactly what [`encode`] writes for the table it holds.
///
/// [`decode`] ends with this; it is public so the fuzzer can reach the payload decoder and
/// the validator without forging checksums.
pub fn decode_payload(payload: &[u8]) -> Result<Table, DecodeError> {
    let (table, rest) =
        postcard::take_from_bytes::<Table>(payload).map_err(DecodeError::Malformed)?;
    if !rest.is_empty() {
        return Err(DecodeError::PayloadTrailing { extra: rest.len() });
    }
    // postcard accepts over-long varints; insisting on the one encoding keeps "same checksum"
    // equivalent to "same table".
    let canonical = postcard::to_allocvec(&table).map_err(DecodeError::Malformed)?;
    if canonical != payload {
        let offset = canonical
            .iter()
            .zip(payload)
            .position(|(a, b)| a != b)
            .unwrap_or(canonical.len().min(payload.len()));
        return Err(DecodeError::NonCanonical { offset });
    }
    validate(&table)?;
    Ok(table)
}

/// The payload checksum (SHA-256) recorded in an encoded table's header.
///
/// Returns `None` when `encoded` is shorter than a header or does not start with [`MAGIC`].
/// The checksum is read, not verified: use it on bytes that [`decode`] accepted.
pub fn checksum(encoded: &[u8]) -> Option<[u8; 32]> {
    split_header(encoded)
        .ok()
        .map(|(header, _)| header.checksum)
}

/// [`checksum`] as 64 lower-case hex digits, for display (e.g. the proxy's `/config` page).
pub fn checksum_hex(encoded: &[u8]) -> Option<String> {
    checksum(encoded).map(|sum| to_hex(&sum))
}

/// The fixed-size fields of the header, after the magic.
struct Header {
    version: u32,
    payload_len: u32,
    checksum: [u8; 32],
}

/// Checks the length and magic, and splits `bytes` into the header fields and the payload.
fn split_header(bytes: &[u8]) -> Result<(Header, &[u8]), DecodeError> {
    let prefix = bytes.get(..MAGIC.len()).unwrap_or(bytes);
    if !MAGIC.starts_with(prefix) {
        return Err(DecodeError::BadMagic);
    }
    let too_short = DecodeError::TooShort { found: bytes.len() };
    let (_magic, rest) = bytes.split_first_chunk::<8>().ok_or(too_short.clone())?;
    let (version, rest) = rest.split_first_chunk::<4>().ok_or(too_short.clone())?;
    let (payload_len, rest) = rest.split_first_chunk::<4>().ok_or(too_short.clone())?;
    let (checksum, payload) = rest.split_first_chunk::<32>().ok_or(too_short)?;
    let header = Header {
        version: u32::from_le_bytes(*version),
        payload_len: u32::from_le_bytes(*payload_len),
        checksum: *checksum,
    };
    Ok((header, payload))
}

/// Lower-case hex of a byte string.
fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    hex
}

#[cfg(test)]
mod tests;
