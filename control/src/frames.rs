//! The control stream's frames: the codec shared with the proxies.

pub use mesh_table::frames::*;

/// A whole frame in one buffer.
pub fn frame(kind: u8, payload: &[u8]) -> bytes::Bytes {
    encode(kind, payload)
}
