//! An index from request path to the entries whose path condition it satisfies, visited in
//! precedence order: exact, then prefixes from longest to shortest, then regexes.
//!
//! Prefix lookup hashes only the path's own segment boundaries (`/v1/charge/42` →
//! `/v1/charge/42`, `/v1/charge/`, `/v1/charge`, `/v1/`, `/v1`, `/`), skipping lengths no
//! prefix has, so the cost follows the path's depth, not the number of rules.

use std::ops::ControlFlow;

use mesh_table::PathMatch;
use regex::Regex;
use rustc_hash::FxHashMap;

use crate::matcher::anchored;
use crate::BuildError;

/// Entry ids (indexes into the owner's entry list) by path condition.
#[derive(Debug, Default)]
pub(crate) struct PathIndex {
    exact: FxHashMap<Box<str>, Vec<u32>>,
    prefix: FxHashMap<Box<str>, Vec<u32>>,
    prefix_lengths: LengthSet,
    regex: Vec<(u32, Regex)>,
}

impl PathIndex {
    /// Adds entry `id` under `path` (`None` ranks and matches as `prefix "/"`).
    pub(crate) fn insert(&mut self, path: Option<&PathMatch>, id: u32) -> Result<(), BuildError> {
        match path {
            None => self.insert_prefix("/", id),
            Some(PathMatch::Prefix(p)) => self.insert_prefix(p, id),
            Some(PathMatch::Exact(p)) => self.exact.entry(p.as_str().into()).or_default().push(id),
            Some(PathMatch::Regex(r)) => self.regex.push((id, anchored(r)?)),
        }
        Ok(())
    }

    fn insert_prefix(&mut self, prefix: &str, id: u32) {
        self.prefix_lengths.insert(prefix.len());
        self.prefix.entry(prefix.into()).or_default().push(id);
    }

    /// Orders every bucket by `key` (the owner's precedence within one path condition).
    pub(crate) fn sort_by_key<K: Ord>(&mut self, mut key: impl FnMut(u32) -> K) {
        for bucket in self.exact.values_mut().chain(self.prefix.values_mut()) {
            bucket.sort_by_key(|id| key(*id));
        }
        self.regex.sort_by_key(|(id, _)| key(*id));
    }

    /// Calls `visit` with each entry whose path condition `path` satisfies, in precedence
    /// order, until it breaks.
    pub(crate) fn visit<B>(
        &self,
        path: &str,
        mut visit: impl FnMut(u32) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        if !self.exact.is_empty() {
            if let Some(bucket) = self.exact.get(path) {
                for id in bucket {
                    visit(*id)?;
                }
            }
        }
        if !self.prefix.is_empty() {
            let bytes = path.as_bytes();
            for end in (1..=bytes.len()).rev() {
                let boundary = end == bytes.len() || bytes[end] == b'/' || bytes[end - 1] == b'/';
                if !boundary || !self.prefix_lengths.contains(end) {
                    continue;
                }
                if let Some(bucket) = self.prefix.get(&path[..end]) {
                    for id in bucket {
                        visit(*id)?;
                    }
                }
            }
        }
        for (id, regex) in &self.regex {
            if regex.is_match(path) {
                visit(*id)?;
            }
        }
        ControlFlow::Continue(())
    }

    /// Whether nothing was inserted.
    pub(crate) fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefix.is_empty() && self.regex.is_empty()
    }
}

/// Which prefix lengths occur: a bitset for lengths below 256, and a flag for longer ones.
#[derive(Debug, Default)]
struct LengthSet {
    bits: [u64; 4],
    any_long: bool,
}

impl LengthSet {
    fn insert(&mut self, len: usize) {
        match self.bits.get_mut(len / 64) {
            Some(word) => *word |= 1 << (len % 64),
            None => self.any_long = true,
        }
    }

    #[inline]
    fn contains(&self, len: usize) -> bool {
        self.bits
            .get(len / 64)
            .map_or(self.any_long, |word| word & (1 << (len % 64)) != 0)
    }
}
