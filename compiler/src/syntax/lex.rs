//! A light scan of the raw text: comments (for the formatter) and where declarations start
//! (so one bad declaration does not hide errors in the next).

use std::ops::Range;

const DECLARATION_KEYWORDS: [&str; 6] =
    ["mesh", "service", "route", "authorize", "observe", "filter"];

/// What the scan found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Byte ranges of comments.
    pub(crate) comments: Vec<Range<usize>>,
    /// Byte ranges of the top-level chunks, each starting at a declaration keyword
    /// (the first may start with stray text).
    pub(crate) chunks: Vec<Range<usize>>,
    /// Where a `/*` that is never closed starts (it would swallow the rest of the file).
    pub(crate) unterminated_comment: Option<usize>,
}

/// Scans `text`. A chunk starts at a declaration keyword at brace depth 0, or at one at
/// the start of a line (which recovers from a missing `}` in the previous declaration).
pub(crate) fn scan(text: &str) -> Scan {
    let bytes = text.as_bytes();
    let mut scan = Scan::default();
    let mut starts = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    let mut line_start = true;
    // Set when a `}` closes a declaration: any word after it starts a new chunk, so a
    // misspelt declaration keyword is reported on its own, not inside the previous one.
    let mut after_declaration = false;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                let end = text[i..].find('\n').map_or(text.len(), |n| i + n);
                scan.comments.push(i..end);
                i = end;
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let end = match text[i + 2..].find("*/") {
                    Some(n) => i + 2 + n + 2,
                    None => {
                        scan.unterminated_comment = Some(i);
                        text.len()
                    }
                };
                scan.comments.push(i..end);
                i = end;
                line_start = false;
                continue;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                line_start = false;
                continue;
            }
            b'{' => depth += 1,
            b'}' => {
                depth = depth.saturating_sub(1);
                after_declaration = depth == 0;
            }
            b'\n' => {
                line_start = true;
                i += 1;
                continue;
            }
            _ if b.is_ascii_alphabetic() => {
                let end = i + text[i..]
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
                    .unwrap_or(text.len() - i);
                let word = &text[i..end];
                let at_line_start = line_start && (i == 0 || bytes[i - 1] == b'\n');
                let preceded_ok = i == 0 || !is_word_byte(bytes[i - 1]);
                let declaration_start =
                    DECLARATION_KEYWORDS.contains(&word) && (depth == 0 || at_line_start);
                if preceded_ok && (declaration_start || depth == 0 && after_declaration) {
                    starts.push(i);
                    depth = 0;
                    after_declaration = false;
                }
                line_start = false;
                i = end.max(i + 1);
                continue;
            }
            b' ' | b'\t' | b'\r' => {
                i += 1;
                continue;
            }
            _ => {}
        }
        line_start = false;
        i += 1;
    }
    let first_start = starts.first().copied().unwrap_or(text.len());
    if !text[..first_start].trim().is_empty() && !only_comments(text, 0..first_start, &scan) {
        scan.chunks.push(0..first_start);
    }
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(text.len());
        scan.chunks.push(start..end);
    }
    scan
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b >= 0x80
}

fn only_comments(text: &str, range: Range<usize>, scan: &Scan) -> bool {
    let mut rest = String::new();
    let mut at = range.start;
    for c in scan
        .comments
        .iter()
        .filter(|c| c.start >= range.start && c.end <= range.end)
    {
        rest.push_str(&text[at..c.start]);
        at = c.end;
    }
    rest.push_str(&text[at..range.end]);
    rest.trim().is_empty()
}

#[cfg(test)]
mod tests {
    use super::scan;

    #[test]
    fn splits_at_declarations_and_finds_comments() {
        let text = "// top\nservice a { port 1 }\n/* x */ route r on a { to a }\n";
        let s = scan(text);
        assert_eq!(s.comments.len(), 2);
        assert_eq!(s.chunks.len(), 2);
        assert!(text[s.chunks[0].clone()].starts_with("service a"));
        assert!(text[s.chunks[1].clone()].starts_with("route r"));
    }

    #[test]
    fn recovers_from_a_missing_brace_at_line_start() {
        let text = "service a { port 1\nservice b { port 2 }\n";
        let s = scan(text);
        assert_eq!(s.chunks.len(), 2);
    }

    #[test]
    fn a_misspelt_keyword_after_a_declaration_starts_its_own_chunk() {
        let text = "mesh \"m\" { trust_domain \"x\" }\nservise a { port 1 }\n";
        let s = scan(text);
        assert_eq!(s.chunks.len(), 2);
        assert!(text[s.chunks[1].clone()].starts_with("servise"));
    }

    #[test]
    fn keywords_inside_strings_and_blocks_do_not_split() {
        let text = "service a { x \"route\" }\nroute r on a { to a }";
        assert_eq!(scan(text).chunks.len(), 2);
        let nested = "service a {\n  route {}\n}";
        assert_eq!(scan(nested).chunks.len(), 1);
    }
}
