//! Method and header conditions compiled for the hot path: a method bitmask and
//! pre-anchored regexes, so matching allocates nothing.

use mesh_table::{HeaderMatch, HeaderValueMatch, Method, RequestMatch};
use regex::Regex;

use crate::headers::{header_value, RequestHeaders};
use crate::BuildError;

/// The method and header part of a matcher (the path is handled by the index).
#[derive(Debug)]
pub(crate) struct Conditions {
    /// One bit per [`Method`]; 0 means any method.
    methods: u16,
    headers: Box<[HeaderCondition]>,
}

#[derive(Debug)]
struct HeaderCondition {
    name: Box<str>,
    value: ValueCondition,
}

#[derive(Debug)]
enum ValueCondition {
    Exact(Box<str>),
    Prefix(Box<str>),
    Regex(Regex),
    Present,
}

/// The bit of `method` in a method mask.
pub(crate) fn method_bit(method: Method) -> u16 {
    1 << (method as u16)
}

/// The bit of a request method given as text; 0 for a non-standard method, which only
/// matchers without a method condition accept.
pub(crate) fn method_bit_of(method: &str) -> u16 {
    Method::parse(method).map_or(0, method_bit)
}

impl Conditions {
    pub(crate) fn build(m: &RequestMatch) -> Result<Conditions, BuildError> {
        let methods = m
            .methods
            .iter()
            .fold(0, |mask, &method| mask | method_bit(method));
        let headers = m
            .headers
            .iter()
            .map(header_condition)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Conditions {
            methods,
            headers: headers.into_boxed_slice(),
        })
    }

    /// Whether a request with method bit `method` and `headers` satisfies these conditions.
    #[inline]
    pub(crate) fn matches<H: RequestHeaders + ?Sized>(&self, method: u16, headers: &H) -> bool {
        (self.methods == 0 || self.methods & method != 0)
            && self.headers.iter().all(|h| {
                // Repeated headers are read joined (`header_value`), never by their first.
                let value = header_value(headers, &h.name);
                match (&h.value, value.as_deref()) {
                    (ValueCondition::Present, v) => v.is_some(),
                    (_, None) => false,
                    (ValueCondition::Exact(e), Some(v)) => **e == *v,
                    (ValueCondition::Prefix(p), Some(v)) => v.starts_with(&**p),
                    (ValueCondition::Regex(r), Some(v)) => r.is_match(v),
                }
            })
    }
}

fn header_condition(h: &HeaderMatch) -> Result<HeaderCondition, BuildError> {
    let value = match &h.value {
        HeaderValueMatch::Exact(e) => ValueCondition::Exact(e.as_str().into()),
        HeaderValueMatch::Prefix(p) => ValueCondition::Prefix(p.as_str().into()),
        HeaderValueMatch::Regex(r) => ValueCondition::Regex(anchored(r)?),
        HeaderValueMatch::Present => ValueCondition::Present,
    };
    Ok(HeaderCondition {
        name: h.name.to_ascii_lowercase().into_boxed_str(),
        value,
    })
}

/// A regex that must match the whole value, as the language reference (docs/language.md) says.
pub(crate) fn anchored(pattern: &str) -> Result<Regex, BuildError> {
    Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| BuildError(format!("regex `{pattern}`: {e}")))
}
