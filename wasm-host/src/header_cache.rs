//! Header names and values a filter sets again and again (a constant header, a label),
//! kept per instance: setting one again clones it instead of building it. Their bytes are
//! kept for the process (`interned`), so the clone, the proxy's later copies of the head
//! (a retry's) and the drops touch no reference count.

use std::hash::{BuildHasher, BuildHasherDefault};

use http::header::{HeaderName, HeaderValue};
use rustc_hash::FxHasher;

/// Entries kept of each kind; a filter sets few distinct constant headers.
const ENTRIES: usize = 16;

#[derive(Default)]
pub(crate) struct HeaderCache {
    /// Names, lower case (as `HeaderName` keeps them).
    names: Ring<HeaderName>,
    values: Ring<HeaderValue>,
    /// Hashes of values seen once: a value is kept from its second time on, so that a value
    /// new on every request (an id) costs no more than it did without the cache.
    seen: Ring<u64>,
}

impl HeaderCache {
    /// The header name `key` (any case), or `None` if it is not a valid name.
    pub(crate) fn name(&mut self, key: &[u8]) -> Option<HeaderName> {
        // A filter passes its names the same way every time, usually in lower case: the
        // same bytes are found by a plain compare (the length rules most entries out), and
        // only a name in another case takes the case-blind look.
        let cached = self
            .names
            .find(|n| n.as_str().as_bytes() == key)
            .or_else(|| {
                self.names
                    .find(|n| n.as_str().as_bytes().eq_ignore_ascii_case(key))
            });
        if let Some(n) = cached {
            return Some(n.clone());
        }
        let name = crate::interned::name(HeaderName::from_bytes(key).ok()?);
        self.names.push(name.clone());
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
        let value = crate::interned::value(bytes)?;
        self.values.push(value.clone());
        Some(value)
    }
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
