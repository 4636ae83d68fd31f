//! Request path normalization, the same for routing and authorization (docs/language.md,
//! "Matching").
//!
//! Dot segments are removed (RFC 3986 §5.2.4), repeated slashes merged, and percent-encoded
//! unreserved characters decoded, so `/a/./b`, `/a//b` and `/%61/b` all reach the rules as
//! `/a/b`. Decoding happens before dot removal so `%2E%2E` cannot sneak past the root. An
//! encoded `/` or `\`, an invalid percent-encoding, or a path that climbs above the root is
//! refused (400): normalizing those would change what the application sees.

use std::borrow::Cow;
use std::fmt;

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The path does not start with `/`.
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    InvalidPercentEncoding,
    /// `%2F` or `%5C`: an encoded separator.
    EncodedSeparator,
    /// More `..` segments than there are segments above them.
    AboveRoot,
}

impl PathError {
    /// A short reason for the `x-mesh-error` header.
    pub fn reason(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "path-not-absolute",
            PathError::InvalidPercentEncoding => "path-invalid-percent-encoding",
            PathError::EncodedSeparator => "path-encoded-separator",
            PathError::AboveRoot => "path-above-root",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotAbsolute => "the path does not start with `/`",
            PathError::InvalidPercentEncoding => "the path has an invalid percent-encoding",
            PathError::EncodedSeparator => "the path has an encoded `/` or `\\`",
            PathError::AboveRoot => "the path climbs above the root",
        })
    }
}

impl std::error::Error for PathError {}

/// The normalized path of a request target (`/a/../b?x=1` → `/b`); the query and fragment
/// are dropped. Borrows when the path is already normal, which is the common case.
pub fn normalize_path(target: &str) -> Result<Cow<'_, str>, PathError> {
    let path = target.find(['?', '#']).map_or(target, |end| &target[..end]);
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    Ok(Cow::Owned(remove_dot_segments(&decoded)?))
}

/// No `%`, no empty segment, no `.` or `..` segment.
fn is_normal(path: &[u8]) -> bool {
    if path.contains(&b'%') {
        return false;
    }
    let mut i = 0;
    while i < path.len() {
        if path[i] == b'/' {
            let rest = &path[i + 1..];
            let segment_end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
            let segment = &rest[..segment_end];
            let is_last = segment_end == rest.len();
            if segment == b"." || segment == b".." || (segment.is_empty() && !is_last) {
                return false;
            }
            i += 1 + segment_end;
        } else {
            i += 1;
        }
    }
    true
}

/// Decodes `%XX` where XX is an unreserved character; other encodings are kept (with
/// upper-case hex, RFC 3986 §6.2.2.1); encoded separators and bad encodings are errors.
fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            let next = path[i..].find('%').map_or(path.len(), |n| i + n);
            out.push_str(&path[i..next]);
            i = next;
            continue;
        }
        let hex = bytes
            .get(i + 1..i + 3)
            .ok_or(PathError::InvalidPercentEncoding)?;
        let value = std::str::from_utf8(hex)
            .ok()
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .filter(|_| hex.iter().all(u8::is_ascii_hexdigit))
            .ok_or(PathError::InvalidPercentEncoding)?;
        match value {
            b'/' | b'\\' => return Err(PathError::EncodedSeparator),
            b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => {
                out.push(char::from(b))
            }
            b => {
                out.push('%');
                out.push_str(&format!("{b:02X}"));
            }
        }
        i += 3;
    }
    Ok(out)
}

/// Merges repeated slashes and removes dot segments; a trailing `/` (or a final `.`/`..`)
/// leaves the result ending in `/`.
fn remove_dot_segments(path: &str) -> Result<String, PathError> {
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = path.split('/').skip(1).peekable();
    let mut trailing_slash = false;
    while let Some(segment) = parts.next() {
        let last = parts.peek().is_none();
        match segment {
            "" => {}
            "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            s => segments.push(s),
        }
        if last {
            trailing_slash = matches!(segment, "" | "." | "..");
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{normalize_path, PathError};

    fn n(p: &str) -> Result<String, PathError> {
        normalize_path(p).map(|c| c.into_owned())
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in ["/", "/a", "/a/b/", "/v1/charge/42", "/a.b/c..d/.e"] {
            assert!(
                matches!(normalize_path(p), Ok(std::borrow::Cow::Borrowed(x)) if x == p),
                "{p}"
            );
        }
    }

    #[test]
    fn dot_segments_slashes_and_encodings_are_normalized() {
        assert_eq!(n("/a/./b").as_deref(), Ok("/a/b"));
        assert_eq!(n("/a//b").as_deref(), Ok("/a/b"));
        assert_eq!(n("//a///b//").as_deref(), Ok("/a/b/"));
        assert_eq!(n("/a/b/../c").as_deref(), Ok("/a/c"));
        assert_eq!(n("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(n("/a/.").as_deref(), Ok("/a/"));
        assert_eq!(n("/%61dmin").as_deref(), Ok("/admin"));
        assert_eq!(n("/a/%2E%2E/b").as_deref(), Ok("/b"));
        assert_eq!(n("/a%20b").as_deref(), Ok("/a%20b"));
        assert_eq!(n("/a%2fb"), Err(PathError::EncodedSeparator));
        assert_eq!(n("/a%5Cb"), Err(PathError::EncodedSeparator));
        assert_eq!(n("/a%zz"), Err(PathError::InvalidPercentEncoding));
        assert_eq!(n("/a%2"), Err(PathError::InvalidPercentEncoding));
        assert_eq!(n("/a%e2"), Ok("/a%E2".into()));
        assert_eq!(n("/.."), Err(PathError::AboveRoot));
        assert_eq!(n("/a/../.."), Err(PathError::AboveRoot));
        assert_eq!(n("/%2e%2e/etc/passwd"), Err(PathError::AboveRoot));
        assert_eq!(n("a/b"), Err(PathError::NotAbsolute));
        assert_eq!(n("/a/b?x=/../..").as_deref(), Ok("/a/b"));
        assert_eq!(n("/a#frag").as_deref(), Ok("/a"));
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        for p in ["/a/./b//c/../d/", "/%41/%2E/x", "//", "/a/%7euser"] {
            let once = n(p).expect("valid");
            assert_eq!(n(&once).as_deref(), Ok(once.as_str()), "{p}");
        }
    }
}
