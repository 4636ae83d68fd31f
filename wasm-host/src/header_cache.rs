//! Header names and values a filter sets again and again (a constant header, a label),
//! kept per instance: setting one again clones it, a reference count, instead of building
//! it; and the proxy's later copies of the head (a retry's) share it too.

use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use http::header::{HeaderName, HeaderValue};
use rustc_hash::FxHasher;

/// Entries kept of each kind; a filter sets few distinct constant headers.
const ENTRIES: usize = 16;

#[derive(Default)]
pub(crate) struct HeaderCache {
    /// Names with the hash of their (lower-case) bytes beside them: a lookup compares the
    /// hashes, in one buffer, and touches a name's own bytes only when its hash matches.
    names: Ring<(u64, HeaderName)>,
    values: Ring<HeaderValue>,
    /// Hashes of values seen once: a value is kept from its second time on, so that a value
    /// new on every request (an id) costs no more than it did without the cache.
    seen: Ring<u64>,
}

impl HeaderCache {
    /// The header name `key` (any case), or `None` if it is not a valid name.
    pub(crate) fn name(&mut self, key: &[u8]) -> Option<HeaderName> {
        // A filter passes its names the same way every time: the same bytes are found
        // without hashing (a length compare rules most entries out).
        if let Some((_, n)) = self.names.find(|(_, n)| n.as_str().as_bytes() == key) {
            return Some(n.clone());
        }
        // Names are usually lower case already: then equal bytes are a plain compare.
        let lower = !has_uppercase(key);
        let hash = lowercase_hash(key, lower);
        let same = |n: &HeaderName| {
            let n = n.as_str().as_bytes();
            if lower {
                n == key
            } else {
                n.eq_ignore_ascii_case(key)
            }
        };
        if let Some((_, n)) = self.names.find(|(h, n)| *h == hash && same(n)) {
            return Some(n.clone());
        }
        let name = HeaderName::from_bytes(key).ok()?;
        // The first clone of a name built from bytes moves it to a shared buffer, once.
        self.names.push((hash, name.clone()));
        Some(name)
    }

    /// The header value `bytes`, or `None` if it is not a valid value.
    pub(crate) fn value(&mut self, bytes: &[u8]) -> Option<HeaderValue> {
        if let Some(v) = self.values.find(|v| v.as_bytes() == bytes) {
            return Some(v.clone());
        }
        let hash = BuildHasherDefault::<FxHasher>::default().hash_one(bytes);
        if self.seen.find(|&h| h == hash).is_none() {
            self.seen.push(hash);
            return HeaderValue::from_bytes(bytes).ok();
        }
        let value = HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(bytes)).ok()?;
        self.values.push(value.clone());
        Some(value)
    }
}

/// Whether `key` has an ASCII upper-case letter; eight bytes at a time (a byte at a time
/// was a third of finding a cached name).
fn has_uppercase(key: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = ONES * 0x80;
    let mut words = key.chunks_exact(8);
    for word in &mut words {
        let w = word.try_into().map_or(0, u64::from_le_bytes);
        // Per byte, with its high bit cleared so no sum carries into the next byte: the
        // high bit of `b + (0x80 - 'A')` says b >= 'A', that of `b + (0x7f - 'Z')` b > 'Z';
        // bytes with the high bit set (not ASCII) are left out.
        let low = w & !HIGH;
        let at_least_a = low + ONES * u64::from(0x80 - b'A');
        let past_z = low + ONES * u64::from(0x7f - b'Z');
        if at_least_a & !past_z & !w & HIGH != 0 {
            return true;
        }
    }
    words.remainder().iter().any(u8::is_ascii_uppercase)
}

/// The hash of `key` in lower case (`lower`: it is already): a word at a time (a byte at a
/// time was a visible part of setting a header).
fn lowercase_hash(key: &[u8], lower: bool) -> u64 {
    let mut hasher = FxHasher::default();
    if lower {
        hasher.write(key);
    } else if key.len() <= 64 {
        let mut lower = [0u8; 64];
        lower[..key.len()].copy_from_slice(key);
        lower[..key.len()].make_ascii_lowercase();
        hasher.write(&lower[..key.len()]);
    } else {
        hasher.write(&key.to_ascii_lowercase());
    }
    hasher.finish()
}

/// A fixed number of entries, the oldest replaced first.
struct Ring<T> {
    entries: Vec<T>,
    next: usize,
}

impl<T> Default for Ring<T> {
    fn default() -> Self {
        Ring {
            entries: Vec::new(),
            next: 0,
        }
    }
}

impl<T> Ring<T> {
    fn find(&self, mut matches: impl FnMut(&T) -> bool) -> Option<&T> {
        self.entries.iter().find(|e| matches(e))
    }

    fn push(&mut self, entry: T) {
        if self.entries.len() < ENTRIES {
            self.entries.push(entry);
        } else {
            self.entries[self.next] = entry;
            self.next = (self.next + 1) % ENTRIES;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_in_any_case_and_bad_input_is_refused() {
        let mut cache = HeaderCache::default();
        assert_eq!(cache.name(b"X-Added").expect("valid"), "x-added");
        assert_eq!(cache.name(b"x-ADDED").expect("cached"), "x-added");
        assert_eq!(cache.name(b"x-added").expect("cached"), "x-added");
        assert_eq!(cache.names.entries.len(), 1, "one entry for every case");
        let long = format!("X-{}", "a".repeat(80));
        let lower = long.to_lowercase();
        assert_eq!(cache.name(long.as_bytes()).expect("valid"), lower.as_str());
        assert_eq!(
            cache.name(lower.as_bytes()).expect("cached"),
            lower.as_str()
        );
        assert_eq!(cache.names.entries.len(), 2);
        assert!(cache.name(b"bad name").is_none());
        assert!(cache.value(b"a\nb").is_none());
        assert!(
            cache.value(b"a\nb").is_none(),
            "a bad value seen twice is still bad"
        );
    }

    #[test]
    fn upper_case_letters_are_found_in_every_byte_of_a_word_and_nothing_else_counts() {
        for len in 0..20 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut key = vec![b'a'; len];
                    key[at] = b;
                    assert_eq!(
                        has_uppercase(&key),
                        b.is_ascii_uppercase(),
                        "byte {b:#x} at {at} of {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_value_is_kept_from_its_second_time_and_the_oldest_goes_first() {
        let mut cache = HeaderCache::default();
        assert_eq!(cache.value(b"1").expect("valid"), "1");
        assert!(cache.values.entries.is_empty(), "seen once: not kept");
        assert_eq!(cache.value(b"1").expect("valid"), "1");
        assert_eq!(cache.values.entries.len(), 1);
        for i in 0..2 * ENTRIES {
            let v = format!("v{i}");
            cache.value(v.as_bytes());
            cache.value(v.as_bytes());
        }
        assert_eq!(cache.values.entries.len(), ENTRIES);
        assert!(cache.values.find(|v| v == "1").is_none(), "replaced");
        assert!(cache.values.find(|v| v == "v31").is_some());
        assert_eq!(cache.value(b"v31").expect("cached"), "v31");
    }
}
