//! The compiled rule table: plain serde data, its checksummed binary codec and its validation.
//!
//! This crate is the contract between `meshc` (which writes tables), the proxies (which
//! load them) and the control plane (which ships them). Everything here is plain data so
//! the three can evolve separately as long as the format version agrees.

mod codec;
pub mod frames;
mod model;
pub mod precedence;
pub mod slice;
pub use slice::slice;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod validate;

pub use codec::{
    checksum, checksum_hex, decode, decode_payload, encode, DecodeError, FORMAT_VERSION,
    HEADER_LEN, MAGIC,
};
pub use model::*;
pub use validate::{validate, ValidationError, MAX_REGEX_COMPILED, MAX_REGEX_LEN};
