//! How the engine reads request headers, so any header map (hyper's, a test's slice) fits,
//! and the one rule for a header that a request repeats ([`header_value`]).

use std::borrow::Cow;

/// Request headers as the engine sees them: every value of a name, in the order received.
pub trait RequestHeaders {
    /// The values of one header, in order.
    type Values<'a>: Iterator<Item = &'a [u8]>
    where
        Self: 'a;

    /// Every value of the header `name` (given in lower case), compared without regard to
    /// case, in the order the request carries them; empty when absent.
    fn values<'a>(&'a self, name: &'a str) -> Self::Values<'a>;
}

/// The value header matchers see for `name`: the request's values joined in order with
/// `", "` (RFC 9110 §5.3, as Envoy matches), or `"; "` for `cookie` (RFC 9113 §8.2.3 and
/// RFC 9114 §4.2.1 split and rejoin cookies that way). `None` when the request carries no
/// such header. Bytes that are not UTF-8 read as U+FFFD, so such a value is present and
/// matches no text it does not hold. A single value is borrowed; only a repeated header
/// costs an allocation.
///
/// The proxy, `meshc why`/`meshc test` and `/explain` all decide through this function, so a
/// request that repeats a header is decided exactly as the one with the joined value:
/// `x-h: 0` + `x-h: 1` is `x-h: 0, 1` everywhere.
pub fn header_value<'a, H: RequestHeaders + ?Sized>(
    headers: &'a H,
    name: &'a str,
) -> Option<Cow<'a, str>> {
    let mut values = headers.values(name);
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(String::from_utf8_lossy(first));
    };
    let separator = if name.eq_ignore_ascii_case("cookie") {
        "; "
    } else {
        ", "
    };
    let mut joined = String::from_utf8_lossy(first).into_owned();
    for value in std::iter::once(second).chain(values) {
        joined.push_str(separator);
        joined.push_str(&String::from_utf8_lossy(value));
    }
    Some(Cow::Owned(joined))
}

/// The values of one name in a list of `(name, value)` pairs.
#[derive(Debug, Clone)]
pub struct PairValues<'a, N, V> {
    pairs: std::slice::Iter<'a, (N, V)>,
    name: &'a str,
}

impl<'a, N: AsRef<str>, V: AsRef<[u8]>> Iterator for PairValues<'a, N, V> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let name = self.name;
        self.pairs
            .find(|(n, _)| n.as_ref().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }
}

/// `RequestHeaders` for lists of pairs (concrete types, so `&[]` needs no annotation).
macro_rules! pairs {
    ($($lt:lifetime)?; $n:ty, $v:ty) => {
        impl<$($lt)?> RequestHeaders for [($n, $v)] {
            type Values<'a>
                = PairValues<'a, $n, $v>
            where
                Self: 'a;

            fn values<'a>(&'a self, name: &'a str) -> Self::Values<'a> {
                PairValues {
                    pairs: self.iter(),
                    name,
                }
            }
        }

        impl<$($lt)?> RequestHeaders for Vec<($n, $v)> {
            type Values<'a>
                = PairValues<'a, $n, $v>
            where
                Self: 'a;

            fn values<'a>(&'a self, name: &'a str) -> Self::Values<'a> {
                self.as_slice().values(name)
            }
        }
    };
}

pairs!('s; &'s str, &'s str);
pairs!('s; &'s str, &'s [u8]);
pairs!(; String, String);

impl<'s, const K: usize> RequestHeaders for [(&'s str, &'s str); K] {
    type Values<'a>
        = PairValues<'a, &'s str, &'s str>
    where
        Self: 'a;

    fn values<'a>(&'a self, name: &'a str) -> Self::Values<'a> {
        self.as_slice().values(name)
    }
}

/// No headers at all.
impl RequestHeaders for () {
    type Values<'a> = std::iter::Empty<&'a [u8]>;

    fn values<'a>(&'a self, _name: &'a str) -> Self::Values<'a> {
        std::iter::empty()
    }
}

#[cfg(test)]
mod tests {
    use super::header_value;

    fn value<'a>(headers: &'a [(&'a str, &'a str)], name: &'a str) -> Option<String> {
        header_value(headers, name).map(|v| v.into_owned())
    }

    #[test]
    fn repeated_headers_are_joined_in_order() {
        let h = [("x-h", "0"), ("X-H", "1"), ("x-other", "z")];
        assert_eq!(value(&h, "x-h").as_deref(), Some("0, 1"));
        let h = [("x-h", "1"), ("x-h", "0")];
        assert_eq!(value(&h, "x-h").as_deref(), Some("1, 0"));
        let h = [("x-h", "0, 1")];
        assert_eq!(value(&h, "x-h").as_deref(), Some("0, 1"));
        let h = [("x-h", ""), ("x-h", "")];
        assert_eq!(value(&h, "x-h").as_deref(), Some(", "));
        assert_eq!(value(&h, "x-absent"), None);
    }

    #[test]
    fn cookies_join_with_semicolons_and_set_cookie_like_any_header() {
        let h = [("cookie", "a=1"), ("Cookie", "b=2")];
        assert_eq!(value(&h, "cookie").as_deref(), Some("a=1; b=2"));
        let h = [("set-cookie", "a=1"), ("set-cookie", "b=2")];
        assert_eq!(value(&h, "set-cookie").as_deref(), Some("a=1, b=2"));
    }

    #[test]
    fn a_single_value_is_borrowed_and_bytes_that_are_not_utf8_are_replaced() {
        let h = [("x-h", "v")];
        assert!(matches!(
            header_value(&h, "x-h"),
            Some(std::borrow::Cow::Borrowed("v"))
        ));
        let h: [(&str, &[u8]); 2] = [("x-h", b"a\xff"), ("x-h", b"b")];
        assert_eq!(
            header_value(h.as_slice(), "x-h").as_deref(),
            Some("a\u{fffd}, b")
        );
    }
}
