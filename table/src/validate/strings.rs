//! String-level checks: names, header names and values, paths, regexes, addresses, JSON.
//!
//! Each returns the problem without the place; the caller adds where it was found.

use std::net::Ipv6Addr;

use super::Check;

/// Longest accepted regex, in characters: the language's bound (docs/language.md), shared
/// with the compiler.
pub const MAX_REGEX_LEN: usize = 1024;

/// Largest compiled regex, in bytes: bounds the proxies' memory and match time. The
/// compiler rejects larger ones with the same limit.
pub const MAX_REGEX_COMPILED: usize = 256 * 1024;

/// Longest DNS label.
const MAX_LABEL_LEN: usize = 63;

/// Longest host name (RFC 1035).
const MAX_HOST_LEN: usize = 253;

/// Longest trust domain (SPIFFE).
const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Longest file name.
const MAX_FILE_NAME_LEN: usize = 4096;

/// Quotes a string from the table for a message: backticks, control characters escaped, long
/// strings cut.
pub(super) fn quote(s: &str) -> String {
    const MAX_CHARS: usize = 64;
    let mut out = String::from("`");
    for (i, c) in s.chars().enumerate() {
        if i == MAX_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out.push('`');
    out
}

/// A DNS label as the policy language spells names: `[a-z][a-z0-9-]*`, at most 63 bytes.
pub(super) fn dns_label(name: &str) -> Check {
    let q = quote(name);
    let Some(first) = name.chars().next() else {
        return Err("empty name".to_owned());
    };
    if name.len() > MAX_LABEL_LEN {
        return Err(format!(
            "{q} is {} bytes long, more than a DNS label's {MAX_LABEL_LEN}",
            name.len()
        ));
    }
    if !first.is_ascii_lowercase() {
        return Err(format!("{q} does not start with a lower-case letter"));
    }
    if let Some(bad) = name
        .chars()
        .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
    {
        return Err(format!(
            "{q} is not a DNS label: {} is not one of a-z, 0-9, '-'",
            char_name(bad)
        ));
    }
    Ok(())
}

/// The mesh's name: a free-form string (`mesh "Shop (prod)"`), non-empty, no control characters.
pub(super) fn mesh_name(name: &str) -> Check {
    if name.is_empty() {
        return Err("empty name".to_owned());
    }
    no_control("name", name)
}

/// A SPIFFE trust domain: lower-case letters, digits, `.`, `-` and `_`.
pub(super) fn trust_domain(domain: &str) -> Check {
    if domain.is_empty() {
        return Err("empty".to_owned());
    }
    if domain.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(format!(
            "{} bytes long, more than {MAX_TRUST_DOMAIN_LEN}",
            domain.len()
        ));
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
    match domain.chars().find(|&c| !allowed(c)) {
        Some(bad) => Err(format!(
            "{}: {} is not allowed (only a-z, 0-9, '.', '-', '_')",
            quote(domain),
            char_name(bad)
        )),
        None => Ok(()),
    }
}

/// A file name: non-empty, no control characters.
pub(super) fn file_name(name: &str) -> Check {
    if name.is_empty() {
        return Err("empty file name".to_owned());
    }
    if name.len() > MAX_FILE_NAME_LEN {
        return Err(format!(
            "file name is {} bytes long, more than {MAX_FILE_NAME_LEN}",
            name.len()
        ));
    }
    no_control("file name", name)
}

/// Checks that `name` sorts strictly after the previous item's `prev` (sorted and unique).
pub(super) fn sorted_after(kind: &str, prev: &str, name: &str) -> Check {
    match prev.cmp(name) {
        std::cmp::Ordering::Less => Ok(()),
        std::cmp::Ordering::Equal => Err(format!("duplicate {kind} name {}", quote(name))),
        std::cmp::Ordering::Greater => Err(format!(
            "{kind}s are not sorted by name: {} comes after {}",
            quote(name),
            quote(prev)
        )),
    }
}

/// An HTTP field name: a non-empty RFC 9110 token, lower case.
pub(super) fn header_name(name: &str) -> Check {
    let q = quote(name);
    if name.is_empty() {
        return Err("empty header name".to_owned());
    }
    if let Some(bad) = name.chars().find(|&c| !is_tchar(c)) {
        return Err(format!(
            "header name {q} is not an HTTP token: {} is not allowed",
            char_name(bad)
        ));
    }
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("header name {q} is not lower case"));
    }
    Ok(())
}

/// RFC 9110 `tchar`.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// An HTTP field value: no CR, LF or NUL (which would split or end the header).
pub(super) fn header_value(value: &str) -> Check {
    match value.chars().find(|&c| matches!(c, '\r' | '\n' | '\0')) {
        Some(bad) => Err(format!(
            "header value {} contains {}",
            quote(value),
            char_name(bad)
        )),
        None => Ok(()),
    }
}

/// A normalized request path: starts with `/`, no spaces or control characters.
pub(super) fn absolute_path(path: &str) -> Check {
    let q = quote(path);
    if !path.starts_with('/') {
        return Err(format!("path {q} does not start with '/'"));
    }
    match path.chars().find(|&c| c == ' ' || c.is_control()) {
        Some(bad) => Err(format!("path {q} contains {}", char_name(bad))),
        None => Ok(()),
    }
}

/// A regex that the `regex` crate compiles, at most [`MAX_REGEX_LEN`] characters, and whose
/// anchored form `^(?:…)$` (how it is matched against a whole value) compiles within
/// [`MAX_REGEX_COMPILED`] bytes.
pub(super) fn regex(pattern: &str) -> Check {
    let length = pattern.chars().count();
    if length > MAX_REGEX_LEN {
        return Err(format!(
            "regex is {length} characters long, more than {MAX_REGEX_LEN}"
        ));
    }
    let compile = |source: &str| {
        ::regex::RegexBuilder::new(source)
            .size_limit(MAX_REGEX_COMPILED)
            .build()
    };
    // The anchored form bounds the size; the bare pattern must parse on its own, or `a)|(b`
    // would slip through as `^(?:a)|(b)$`.
    match compile(&format!("^(?:{pattern})$")).and_then(|_| compile(pattern)) {
        Ok(_) => Ok(()),
        Err(::regex::Error::CompiledTooBig(limit)) => Err(format!(
            "regex {} compiles to more than {limit} bytes",
            quote(pattern)
        )),
        Err(err) => {
            // Syntax errors render over several lines (pattern, caret, reason): keep the reason.
            let text = err.to_string();
            let reason = text
                .lines()
                .filter_map(|line| line.strip_prefix("error: "))
                .next_back()
                .unwrap_or("invalid syntax");
            Err(format!(
                "regex {} does not compile: {reason}",
                quote(pattern)
            ))
        }
    }
}

/// A host name or IP address literal (IPv6 unbracketed), as resolved or dialled.
pub(super) fn host(host: &str) -> Check {
    if host.is_empty() {
        return Err("empty host".to_owned());
    }
    if host.len() > MAX_HOST_LEN {
        return Err(format!(
            "host is {} bytes long, more than {MAX_HOST_LEN}",
            host.len()
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_".contains(c);
    match host.chars().find(|&c| !allowed(c)) {
        Some(bad) => Err(format!("host {} contains {}", quote(host), char_name(bad))),
        None => Ok(()),
    }
}

/// A `host:port` or `[ipv6]:port` address with a non-zero port.
pub(super) fn host_port(addr: &str) -> Check {
    let q = quote(addr);
    let port = if let Some(rest) = addr.strip_prefix('[') {
        let Some((v6, port)) = rest.split_once("]:") else {
            return Err(format!("{q} is not `[ipv6]:port`"));
        };
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{q}: {} is not an IPv6 address", quote(v6)));
        }
        port
    } else {
        let Some((name, port)) = addr.rsplit_once(':') else {
            return Err(format!("{q} has no port (expected `host:port`)"));
        };
        if name.contains(':') {
            return Err(format!(
                "{q}: an IPv6 address must be bracketed, as in `[::1]:port`"
            ));
        }
        host(name).map_err(|problem| format!("{q}: {problem}"))?;
        port
    };
    match port.parse::<u16>() {
        Ok(0) => Err(format!("{q}: port is 0")),
        Ok(_) if port.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err(format!(
            "{q}: port {} is not a number in 1..=65535",
            quote(port)
        )),
    }
}

/// A JSON document whose top level is an object.
pub(super) fn json_object(json: &str) -> Check {
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(other) => Err(format!("not a JSON object but {}", json_kind(&other))),
        Err(err) => Err(format!("not valid JSON: {err}")),
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Rejects control characters in free text.
fn no_control(what: &str, text: &str) -> Check {
    match text.chars().find(|c| c.is_control()) {
        Some(bad) => Err(format!(
            "{what} {} contains {}",
            quote(text),
            char_name(bad)
        )),
        None => Ok(()),
    }
}

/// Names a character for a message: `'x'`, or `U+000A` (with its usual name) for invisible ones.
fn char_name(c: char) -> String {
    match c {
        '\r' => "CR (U+000D)".to_owned(),
        '\n' => "LF (U+000A)".to_owned(),
        '\0' => "NUL (U+0000)".to_owned(),
        ' ' => "a space".to_owned(),
        c if c.is_control() || c.is_whitespace() => format!("U+{:04X}", u32::from(c)),
        c => format!("{c:?}"),
    }
}
