//! Route precedence: the specificity order shared by `meshc`'s analyses and the proxy's router.
//!
//! The order follows the Gateway API, never the order in the file: an exact path beats any
//! prefix; a longer prefix beats a shorter one; a prefix beats a regex; then the route that
//! names methods beats one that does not; then the route with more header matchers wins.
//! Keeping it here, next to the data, means the compiler's "ambiguous" and "never chosen"
//! verdicts are computed with the very ordering the proxy applies.

use crate::model::{PathMatch, RequestMatch};

/// How a path is matched, least specific first (so the derived order is the precedence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathClass {
    /// A regex path: below every prefix.
    Regex,
    /// A whole-segment prefix (a route with no path counts as `prefix "/"`).
    Prefix,
    /// An exact path: above every prefix.
    Exact,
}

/// The precedence of a matcher; a greater rank wins. Equal ranks that can match the same
/// request are ambiguous (the compiler rejects them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rank {
    /// The path's kind.
    pub class: PathClass,
    /// The prefix's length in bytes; 0 for exact and regex paths, whose length does not
    /// take part (two exact paths never compete unless equal; regexes are not ordered by size).
    pub path_len: usize,
    /// Whether the matcher names methods.
    pub names_methods: bool,
    /// How many header conditions it has.
    pub headers: usize,
}

/// The rank of `m`; a matcher without a path ranks as `prefix "/"`.
pub fn rank(m: &RequestMatch) -> Rank {
    let (class, path_len) = match &m.path {
        None => (PathClass::Prefix, 1),
        Some(PathMatch::Prefix(p)) => (PathClass::Prefix, p.len()),
        Some(PathMatch::Exact(_)) => (PathClass::Exact, 0),
        Some(PathMatch::Regex(_)) => (PathClass::Regex, 0),
    };
    Rank {
        class,
        path_len,
        names_methods: !m.methods.is_empty(),
        headers: m.headers.len(),
    }
}

/// Whether the whole-segment `prefix` matches the (normalized) `path`: `/v1/charge` matches
/// `/v1/charge` and `/v1/charge/42` but not `/v1/chargeback`; a prefix ending in `/` matches
/// whatever starts with it, so `/` matches every path.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix.ends_with('/') {
        return path.starts_with(prefix);
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::{prefix_matches, rank, PathClass};
    use crate::model::{HeaderMatch, HeaderValueMatch, Method, PathMatch, RequestMatch};

    fn path(p: Option<PathMatch>) -> RequestMatch {
        RequestMatch {
            path: p,
            ..RequestMatch::default()
        }
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix_matches("/v1/charge", "/v1/charge"));
        assert!(prefix_matches("/v1/charge", "/v1/charge/42"));
        assert!(!prefix_matches("/v1/charge", "/v1/chargeback"));
        assert!(!prefix_matches("/v1/charge", "/v1"));
        assert!(prefix_matches("/v1/", "/v1/x"));
        assert!(prefix_matches("/v1/", "/v1/"));
        assert!(!prefix_matches("/v1/", "/v1"));
        assert!(prefix_matches("/", "/"));
        assert!(prefix_matches("/", "/anything/at/all"));
    }

    #[test]
    fn exact_beats_prefix_beats_regex() {
        let exact = rank(&path(Some(PathMatch::Exact("/a".into()))));
        let long = rank(&path(Some(PathMatch::Prefix("/v1/charge".into()))));
        let short = rank(&path(Some(PathMatch::Prefix("/v1".into()))));
        let none = rank(&path(None));
        let root = rank(&path(Some(PathMatch::Prefix("/".into()))));
        let regex = rank(&path(Some(PathMatch::Regex("/v1/.*/charge/[0-9]+".into()))));
        assert_eq!(exact.class, PathClass::Exact);
        assert!(exact > long && long > short && short > none && none > regex);
        assert_eq!(none, root, "no path ranks as prefix \"/\"");
        // Neither exact nor regex paths are ordered by length.
        assert_eq!(regex, rank(&path(Some(PathMatch::Regex("/x".into())))));
        assert_eq!(
            exact,
            rank(&path(Some(PathMatch::Exact("/a/much/longer/path".into()))))
        );
    }

    #[test]
    fn methods_then_headers_break_ties() {
        let plain = path(Some(PathMatch::Prefix("/v1".into())));
        let with_method = RequestMatch {
            methods: vec![Method::Post],
            ..plain.clone()
        };
        let header = HeaderMatch {
            name: "x-canary".into(),
            value: HeaderValueMatch::Present,
        };
        let with_header = RequestMatch {
            headers: vec![header.clone()],
            ..plain.clone()
        };
        let with_both = RequestMatch {
            headers: vec![header],
            ..with_method.clone()
        };
        assert!(rank(&with_method) > rank(&plain));
        assert!(rank(&with_header) > rank(&plain));
        assert!(
            rank(&with_method) > rank(&with_header),
            "methods weigh more than headers"
        );
        assert!(rank(&with_both) > rank(&with_method));
        // A longer prefix outranks any number of methods and headers.
        let longer = path(Some(PathMatch::Prefix("/v1/x".into())));
        assert!(rank(&longer) > rank(&with_both));
    }
}
