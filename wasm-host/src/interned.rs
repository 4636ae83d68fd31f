//! Bytes kept for the life of the process: the header names and values filters set again
//! and again. A header built on them is cloned and dropped without touching a reference
//! count, where a shared buffer's count is an atomic operation (and often a cache miss)
//! each time the proxy copies or drops the header: four to eight times per request for a
//! header a filter adds. Bounded: past [`BUDGET`] bytes, nothing more is kept.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};

/// The most bytes kept, over all filters: a filter that sets ever new names (echoing a
/// request's) stops being served from here, and its headers are built as before.
pub(crate) const BUDGET: usize = 64 << 10;

#[derive(Default)]
struct Interned {
    kept: HashSet<&'static [u8]>,
    bytes: usize,
}

static INTERNED: Mutex<Option<Interned>> = Mutex::new(None);

/// `bytes` for the life of the process; `None` once the budget is spent.
fn keep(bytes: &[u8]) -> Option<&'static [u8]> {
    let mut guard = INTERNED.lock().unwrap_or_else(PoisonError::into_inner);
    let interned = guard.get_or_insert_with(Interned::default);
    if let Some(kept) = interned.kept.get(bytes) {
        return Some(kept);
    }
    if interned.bytes + bytes.len() > BUDGET {
        return None;
    }
    let kept: &'static [u8] = Box::leak(bytes.to_vec().into_boxed_slice());
    interned.bytes += kept.len();
    interned.kept.insert(kept);
    Some(kept)
}

/// `name` on kept bytes (as it is, once the budget is spent).
pub(crate) fn name(name: HeaderName) -> HeaderName {
    match keep(name.as_str().as_bytes()).map(std::str::from_utf8) {
        // A valid name's bytes, lower case: `from_static` accepts them.
        Some(Ok(kept)) => HeaderName::from_static(kept),
        _ => name,
    }
}

/// The header value `bytes` on kept bytes (a copy of its own once the budget is spent);
/// `None` if it is not a valid value.
pub(crate) fn value(bytes: &[u8]) -> Option<HeaderValue> {
    let shared = match keep(bytes) {
        Some(kept) => Bytes::from_static(kept),
        None => Bytes::copy_from_slice(bytes),
    };
    HeaderValue::from_maybe_shared(shared).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_bytes_are_shared_and_the_budget_bounds_them() {
        let a = keep(b"x-interned-test").expect("within the budget");
        let b = keep(b"x-interned-test").expect("kept");
        assert!(std::ptr::eq(a, b), "the same bytes are kept once");
        assert_eq!(
            name(HeaderName::from_static("x-interned-test")),
            "x-interned-test"
        );
        assert_eq!(name(HeaderName::from_static("host")), http::header::HOST);
        assert_eq!(value(b"v1").expect("valid"), "v1");
        assert!(value(b"a\nb").is_none());
        // Fill the budget: what does not fit is refused, and headers are still built.
        let big = vec![b'a'; BUDGET / 4];
        let mut refused = 0;
        for i in 0..8u8 {
            let mut bytes = big.clone();
            bytes[0] = b'b' + i;
            if keep(&bytes).is_none() {
                refused += 1;
            }
        }
        assert!(
            refused >= 4,
            "at most the budget is kept ({refused} refused)"
        );
        let past = format!("x-past-{}", "z".repeat(BUDGET / 8));
        assert_eq!(
            name(HeaderName::from_bytes(past.as_bytes()).expect("valid")),
            past.as_str()
        );
        assert_eq!(value(past.as_bytes()).expect("valid"), past.as_str());
    }
}
