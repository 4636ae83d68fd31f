//! Header values the proxy makes: in one allocation their clones share, and parsed once.

use std::cell::RefCell;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, InvalidHeaderValue};

/// The bytes of a header value the proxy makes, owned in place (`Bytes::from_owner`).
pub(super) struct Inline<const N: usize> {
    pub(super) bytes: [u8; N],
    pub(super) len: usize,
}

impl<const N: usize> AsRef<[u8]> for Inline<N> {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// A header value of `text` in one allocation that its clones share. A value copied into a
/// `Bytes` (`HeaderValue::from_bytes`) allocates again when first cloned, and the headers
/// of every try are a clone.
pub fn shared_value(text: &[u8]) -> Result<HeaderValue, InvalidHeaderValue> {
    const INLINE: usize = 64;
    let bytes = if text.len() <= INLINE {
        let mut inline = Inline {
            bytes: [0; INLINE],
            len: text.len(),
        };
        inline.bytes[..text.len()].copy_from_slice(text);
        Bytes::from_owner(inline)
    } else {
        Bytes::from_owner(text.to_vec())
    };
    HeaderValue::from_maybe_shared(bytes)
}

/// How many repeated values each thread keeps.
const REPEATED_VALUES: usize = 8;

thread_local! {
    /// Values that repeat from request to request (a caller's `x-forwarded-for`).
    static REPEATED: RefCell<Vec<HeaderValue>> = const { RefCell::new(Vec::new()) };
}

/// [`shared_value`], or a clone of the same value made before on this thread (the oldest
/// replaced); a miss costs what `shared_value` does, as the kept clone is free.
pub fn repeated_value(text: &[u8]) -> Result<HeaderValue, InvalidHeaderValue> {
    REPEATED.with(|repeated| {
        let mut repeated = repeated.borrow_mut();
        if let Some(hit) = repeated.iter().find(|v| v.as_bytes() == text) {
            return Ok(hit.clone());
        }
        let value = shared_value(text)?;
        if repeated.len() == REPEATED_VALUES {
            repeated.remove(0);
        }
        repeated.push(value.clone());
        Ok(value)
    })
}

/// How many parsed edits each thread keeps.
const PARSED_EDITS: usize = 8;

thread_local! {
    /// Headers the proxy sets, parsed: the same few (the identity header of a caller's
    /// connection, a route's edits, `host`) come with every request, and parsing one copies
    /// its value, and its name unless a standard one, to the heap each time. The oldest is
    /// replaced.
    static PARSED: RefCell<Vec<(HeaderName, HeaderValue)>> = const { RefCell::new(Vec::new()) };
}

/// A header's name and value, parsed as `HeaderName::from_bytes` and `HeaderValue::from_str`
/// would (`None` where either refuses).
pub fn parsed_header(name: &str, value: &str) -> Option<(HeaderName, HeaderValue)> {
    PARSED.with(|parsed| {
        let mut parsed = parsed.borrow_mut();
        let same = |(n, v): &&(HeaderName, HeaderValue)| {
            n.as_str() == name && v.as_bytes() == value.as_bytes()
        };
        if let Some(hit) = parsed.iter().find(same) {
            return Some(hit.clone());
        }
        let parsed_name = HeaderName::from_bytes(name.as_bytes()).ok()?;
        // `HeaderValue::from_str`'s rule: visible ASCII and tabs.
        if !value.bytes().all(|b| b == b'\t' || (32..127).contains(&b)) {
            return None;
        }
        let parsed_value = shared_value(value.as_bytes()).ok()?;
        // A name written in upper case would never be found again: not kept.
        if parsed_name.as_str() == name {
            if parsed.len() == PARSED_EDITS {
                parsed.remove(0);
            }
            parsed.push((parsed_name.clone(), parsed_value.clone()));
        }
        Some((parsed_name, parsed_value))
    })
}
