//! Request path normalization: one rule, applied before any route or authorization rule sees
//! a path, the same in the proxy (both directions), `meshc why`/`meshc test` and `/explain`
//! (docs/language.md, "Paths"). The path the application receives is the normalized one.
//!
//! The rule, in order:
//!
//! 1. The query and fragment are cut off; the path must start with `/`.
//! 2. Refused (400), because stacks disagree on what they mean, so no single reading can hold
//!    for every application: a `;` (path parameters, which Tomcat, Jetty and Spring strip from
//!    a segment, so `/secret;x/y` is their `/secret/y` and `..;` their `..`), raw or encoded;
//!    an encoded `/` or `\` (`%2F`, `%5C`); a raw `\` or space; a control character (`%00`
//!    to `%1F`, `%7F`), raw or encoded; a `%` not followed by two hex digits; an encoded `%`
//!    that encodes again (`%252e`: a second decoding would change the path); percent-encoded
//!    bytes that are not UTF-8 (overlong `%C0%AE` is a dot to some decoders); a segment that
//!    ends in a space (`/secret%20`, which Windows stacks trim).
//! 3. Percent-encoded unreserved characters (letters, digits, `-`, `.`, `_`, `~`) are
//!    decoded; every other encoding is kept, with upper-case hex (`%e2` → `%E2`, `%20`).
//! 4. Repeated slashes are merged and dot segments removed (RFC 3986 §5.2.4), after decoding,
//!    so `%2e%2e` is `..`; a path that climbs above the root is refused.
//!
//! Matching is case-sensitive: `/Secret` is not `/secret`.

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
    /// A `;` (path parameters), raw or as `%3B`.
    PathParameter,
    /// A control character (0x00 to 0x1F, 0x7F), raw or percent-encoded.
    ControlCharacter,
    /// A raw `\` or space.
    InvalidCharacter,
    /// `%25` followed by two hex digits: a percent-encoding encoded again.
    DoubleEncoding,
    /// Percent-encoded bytes that do not decode to UTF-8.
    InvalidUtf8,
    /// A segment that ends in a space (`%20`).
    TrailingSpace,
}

impl PathError {
    /// A short reason for the `x-mesh-error` header (stable: tests and dashboards match it).
    pub fn reason(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "path-not-absolute",
            PathError::InvalidPercentEncoding => "path-invalid-percent-encoding",
            PathError::EncodedSeparator => "path-encoded-separator",
            PathError::AboveRoot => "path-above-root",
            PathError::PathParameter => "path-parameter",
            PathError::ControlCharacter => "path-control-character",
            PathError::InvalidCharacter => "path-invalid-character",
            PathError::DoubleEncoding => "path-double-encoding",
            PathError::InvalidUtf8 => "path-invalid-utf8",
            PathError::TrailingSpace => "path-trailing-space",
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
            PathError::PathParameter => "the path has a `;` (path parameters)",
            PathError::ControlCharacter => "the path has a control character",
            PathError::InvalidCharacter => "the path has a raw `\\` or space",
            PathError::DoubleEncoding => "the path has a percent-encoding encoded twice (`%25`)",
            PathError::InvalidUtf8 => "the path's percent-encoded bytes are not UTF-8",
            PathError::TrailingSpace => "a segment of the path ends in a space",
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
    if decoded.split('/').any(|segment| segment.ends_with("%20")) {
        return Err(PathError::TrailingSpace);
    }
    Ok(Cow::Owned(remove_dot_segments(&decoded)?))
}

/// Whether a byte may stand in a path as itself without any check of the rule: not `%`,
/// `;`, `\`, a space or a control character.
#[inline]
fn is_plain(b: u8) -> bool {
    b > b' ' && b != 0x7f && b != b'%' && b != b';' && b != b'\\'
}

/// Only plain bytes, no empty segment but the last, no `.` or `..` segment.
fn is_normal(path: &[u8]) -> bool {
    if !path.iter().all(|&b| is_plain(b)) {
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

/// Refuses what step 2 of the rule refuses and decodes `%XX` where XX is an unreserved
/// character; other encodings are kept (with upper-case hex, RFC 3986 §6.2.2.1).
fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    // Every encoded byte above 0x7F, with what surrounds it, must decode to UTF-8.
    let mut high = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            match b {
                b';' => return Err(PathError::PathParameter),
                b' ' | b'\\' => return Err(PathError::InvalidCharacter),
                b if b < b' ' || b == 0x7f => return Err(PathError::ControlCharacter),
                _ => {}
            }
            // Bytes above 0x7F are plain, so this ends on a character boundary.
            let next = bytes[i..]
                .iter()
                .position(|&b| !is_plain(b))
                .map_or(bytes.len(), |n| i + n);
            out.push_str(&path[i..next]);
            i = next;
            continue;
        }
        let value = hex_byte(bytes.get(i + 1..i + 3)).ok_or(PathError::InvalidPercentEncoding)?;
        match value {
            b'/' | b'\\' => return Err(PathError::EncodedSeparator),
            b';' => return Err(PathError::PathParameter),
            b if b < b' ' || b == 0x7f => return Err(PathError::ControlCharacter),
            b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => {
                out.push(char::from(b))
            }
            b => {
                high |= b >= 0x80;
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        i += 3;
    }
    // Checked on the result: decoding `%41` can put a hex digit after a `%25`.
    if out
        .match_indices("%25")
        .any(|(at, _)| hex_byte(out.as_bytes().get(at + 3..at + 5)).is_some())
    {
        return Err(PathError::DoubleEncoding);
    }
    if high && std::str::from_utf8(&percent_decode(out.as_bytes())).is_err() {
        return Err(PathError::InvalidUtf8);
    }
    Ok(out)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The byte two hex digits spell.
fn hex_byte(hex: Option<&[u8]>) -> Option<u8> {
    let hex = hex?;
    if !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

/// Every `%XX` decoded (the input's encodings are already checked).
fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], hex_byte(bytes.get(i + 1..i + 3))) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
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
        assert_eq!(n("/a%e2%82%ac"), Ok("/a%E2%82%AC".into()));
        assert_eq!(n("/a%e2"), Err(PathError::InvalidUtf8));
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

    /// Every form of issue 21 and of Envoy's and Istio's path-normalization advisories
    /// (CVE-2019-9901 `..` traversal, CVE-2021-29492 escaped slashes, `%2e%2e`, path
    /// parameters), with what the rule makes of it: refused, or the path rules see.
    #[test]
    fn every_bypass_form_is_refused_or_normalized() {
        use PathError::*;
        let cases: &[(&str, Result<&str, PathError>)] = &[
            ("/secret;x/y", Err(PathParameter)),
            ("/secret;jsessionid=1", Err(PathParameter)),
            ("/hello/..;/secret/x", Err(PathParameter)),
            ("/hello/.;/secret", Err(PathParameter)),
            ("/hello/%2e%2e;/secret", Err(PathParameter)),
            ("/secret%3Bx/y", Err(PathParameter)),
            ("/secret%3b", Err(PathParameter)),
            ("/secret%00", Err(ControlCharacter)),
            ("/secret%00.html", Err(ControlCharacter)),
            ("/secret%0a", Err(ControlCharacter)),
            ("/secret%0D%0Ax", Err(ControlCharacter)),
            ("/secret%09", Err(ControlCharacter)),
            ("/secret%1f", Err(ControlCharacter)),
            ("/secret%7F", Err(ControlCharacter)),
            ("/secret\0", Err(ControlCharacter)),
            ("/sec\u{1}ret", Err(ControlCharacter)),
            ("/secret\x7f", Err(ControlCharacter)),
            ("/secret%2fx", Err(EncodedSeparator)),
            ("/hello%2F..%2Fsecret", Err(EncodedSeparator)),
            ("/hello%5C..%5Csecret", Err(EncodedSeparator)),
            ("/hello%5c", Err(EncodedSeparator)),
            ("/hello\\..\\secret", Err(InvalidCharacter)),
            ("/secret x", Err(InvalidCharacter)),
            ("/%2e%2e/secret", Err(AboveRoot)),
            ("/../secret", Err(AboveRoot)),
            ("/hello/%2e%2e/secret", Ok("/secret")),
            ("/hello/%2E%2E/secret", Ok("/secret")),
            ("/hello/.%2e/secret", Ok("/secret")),
            ("/hello/%2e./secret/x", Ok("/secret/x")),
            ("/hello/../secret", Ok("/secret")),
            ("/hello/./../secret", Ok("/secret")),
            ("/./secret", Ok("/secret")),
            ("/%2e/secret", Ok("/secret")),
            ("//secret", Ok("/secret")),
            ("///secret//x", Ok("/secret/x")),
            ("/%73ecret", Ok("/secret")),
            ("/%73%65%63%72%65%74/x", Ok("/secret/x")),
            ("/%252e%252e/secret", Err(DoubleEncoding)),
            ("/secret%252F", Err(DoubleEncoding)),
            ("/100%25", Ok("/100%25")),
            ("/%c0%ae%c0%ae/secret", Err(InvalidUtf8)),
            ("/%c0%af", Err(InvalidUtf8)),
            ("/%e2", Err(InvalidUtf8)),
            ("/caf%c3%a9", Ok("/caf%C3%A9")),
            ("/caf\u{e9}", Ok("/caf\u{e9}")),
            ("/secret%20", Err(TrailingSpace)),
            ("/secret%20/x", Err(TrailingSpace)),
            ("/my%20file", Ok("/my%20file")),
            ("/secret%", Err(InvalidPercentEncoding)),
            ("/secret%g0", Err(InvalidPercentEncoding)),
            ("/SECRET", Ok("/SECRET")),
            ("/Secret/x", Ok("/Secret/x")),
            ("/secret?x=;%00/../..", Ok("/secret")),
            ("/secret#/../x", Ok("/secret")),
            ("secret", Err(NotAbsolute)),
            ("*", Err(NotAbsolute)),
        ];
        for (input, want) in cases {
            assert_eq!(n(input).as_deref().map_err(|e| *e), *want, "{input:?}");
        }
    }

    /// Whatever the rule accepts, the result has none of the forms it refuses or removes,
    /// and normalizing it again changes nothing.
    #[test]
    fn accepted_paths_hold_nothing_ambiguous() {
        let pieces = [
            "/", "a", ".", "..", "%2e", "%2E", ";", "%3b", "%2f", "%5c", "\\", "%00", "%20", "%25",
            "%41", "%c3%a9", "%c0", "secret", "//", "?", "#", " ", "\n",
        ];
        // Every sequence of up to three pieces after a leading `/`.
        let mut inputs = vec![String::from("/")];
        let mut last = inputs.clone();
        for _ in 0..3 {
            let mut next = Vec::new();
            for prefix in &last {
                for piece in pieces {
                    next.push(format!("{prefix}{piece}"));
                }
            }
            inputs.extend(next.iter().cloned());
            last = next;
        }
        for input in &inputs {
            let Ok(path) = n(input) else { continue };
            assert!(path.starts_with('/'), "{input} → {path}");
            for bad in [";", "\\", " ", "\n", "//", "?", "#"] {
                assert!(!path.contains(bad), "{input} → {path}");
            }
            let upper = path.to_ascii_uppercase();
            for bad in ["%2F", "%5C", "%3B", "%00", "%2E", "%41", "%C0"] {
                assert!(!upper.contains(bad), "{input} → {path}");
            }
            // `%25` stays only where no two hex digits follow it.
            for (at, _) in upper.match_indices("%25") {
                let next = upper.as_bytes().get(at + 3..at + 5);
                assert!(
                    !next.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)),
                    "{input} → {path}"
                );
            }
            assert!(
                !path.split('/').any(|s| s == "." || s == ".."),
                "{input} → {path}"
            );
            assert_eq!(n(&path).as_deref(), Ok(path.as_str()), "{input}");
        }
    }
}
