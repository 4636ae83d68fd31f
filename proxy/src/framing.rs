//! HTTP/1.1 request framing and head limits, checked on both listeners before a request is routed.
//!
//! hyper's parser refuses most ambiguous framing itself (it answers 400, 431 or 414 and
//! closes, without an `x-mesh-error`): a `Transfer-Encoding` whose last coding is not
//! `chunked`, `Transfer-Encoding` in HTTP/1.0, a `Content-Length` that is not one number
//! (lists such as `5, 6`, signs, spaces), repeated `Content-Length`s that disagree, obs-fold,
//! control characters, a chunk size that overflows. What it lets through is checked here:
//! more than one `Host`, and a `Transfer-Encoding` other than exactly one `chunked` (hyper
//! accepts `gzip, chunked`, which no hop after this one could decode the same way).
//! `Content-Length` together with `Transfer-Encoding` never reaches the handler as such: hyper
//! drops the `Content-Length`, reads the body as chunked and closes the connection after
//! the response (RFC 9112 §6.1), so what is forwarded has exactly one framing.

use std::time::Duration;

use http::{header, HeaderMap, Request, Version};

use crate::errors::ProxyError;

/// The limits on a request head, from `[limits]` (the same on every listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// The request head (request line and headers) in bytes; beyond it hyper answers 431.
    pub header_bytes: usize,
    /// Header lines per request; beyond it hyper answers 431.
    pub headers: usize,
    /// The request target in bytes; beyond it 414 (`uri-too-long`).
    pub uri_bytes: usize,
    /// The whole request head must arrive within this, else the connection is closed.
    pub head_timeout: Duration,
}

impl Default for HeadLimits {
    fn default() -> HeadLimits {
        HeadLimits {
            header_bytes: 60 * 1024,
            headers: 100,
            uri_bytes: 16 * 1024,
            head_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a request's framing or head was refused, as an `x-mesh-error` reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// More than one `Host` line: which one names the service is ambiguous.
    DuplicateHost,
    /// `Transfer-Encoding` other than exactly one `chunked`.
    TransferEncoding,
    /// Both `Content-Length` and `Transfer-Encoding` are present.
    AmbiguousLength,
    /// `Content-Length` values that are not one number or disagree.
    ContentLength,
}

impl Refusal {
    /// The `x-mesh-error` reason.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::DuplicateHost => "duplicate-host",
            Refusal::TransferEncoding => "bad-transfer-encoding",
            Refusal::AmbiguousLength => "ambiguous-length",
            Refusal::ContentLength => "bad-content-length",
        }
    }
}

/// Checks a request's head against `limits` and its framing; an error is the answer.
pub fn check<B>(request: &Request<B>, limits: &HeadLimits) -> Result<(), ProxyError> {
    if target_len(request) > limits.uri_bytes {
        return Err(ProxyError::UriTooLong);
    }
    framing(request.headers()).map_err(ProxyError::Framing)
}

/// A target in absolute form (or HTTP/2's `:authority`) names the host: a `Host` that
/// disagrees is replaced by it (RFC 9112 §3.2.2), so the route, the authorization and the
/// application all see one host. Call after [`check`] (which refused a repeated `Host`).
pub fn normalize_host<B>(request: &mut Request<B>) {
    let Some(authority) = request.uri().authority() else {
        return;
    };
    let Some(host) = request.headers().get(header::HOST) else {
        return;
    };
    if host.as_bytes() == authority.as_str().as_bytes() {
        return;
    }
    if let Ok(value) = http::HeaderValue::from_str(authority.as_str()) {
        request.headers_mut().insert(header::HOST, value);
    }
}

/// Whether the connection must close after the answer: an HTTP/1 connection whose framing
/// is in doubt cannot be trusted to tell where the next request starts.
pub fn closes_connection(version: Version) -> bool {
    matches!(version, Version::HTTP_10 | Version::HTTP_11)
}

/// The request target's length as it was on the wire: HTTP/1's origin or absolute form;
/// HTTP/2's `:path` (hyper builds an absolute URI from `:scheme` and `:authority` too, which
/// would make the same request longer behind a sidecar than in front of it).
fn target_len<B>(request: &Request<B>) -> usize {
    let uri = request.uri();
    let path = uri.path_and_query().map_or(0, |p| p.as_str().len());
    if request.version() == Version::HTTP_2 {
        return path;
    }
    let scheme = uri.scheme_str().map_or(0, |s| s.len() + 3);
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    scheme + authority + path
}

fn framing(headers: &HeaderMap) -> Result<(), Refusal> {
    if headers.get_all(header::HOST).iter().count() > 1 {
        return Err(Refusal::DuplicateHost);
    }
    let mut encodings = headers.get_all(header::TRANSFER_ENCODING).iter();
    let has_te = match (encodings.next(), encodings.next()) {
        (None, _) => false,
        (Some(only), None) if only.as_bytes().eq_ignore_ascii_case(b"chunked") => true,
        _ => return Err(Refusal::TransferEncoding),
    };
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        if has_te {
            return Err(Refusal::AmbiguousLength);
        }
        // hyper keeps one line of agreeing repeats; anything else here is not one number.
        if lengths.next().is_some() || !first.as_bytes().iter().all(u8::is_ascii_digit) {
            return Err(Refusal::ContentLength);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{check, framing, HeadLimits, Refusal};
    use http::{HeaderMap, HeaderValue, Request};

    type Lines = &'static [(&'static str, &'static str)];

    fn headers(lines: Lines) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn one_framing_passes_and_every_ambiguity_is_named() {
        let cases: [(Lines, Result<(), Refusal>); 10] = [
            (&[("host", "a")], Ok(())),
            (&[("host", "a"), ("content-length", "5")], Ok(())),
            (&[("host", "a"), ("transfer-encoding", "Chunked")], Ok(())),
            (&[("host", "a"), ("host", "b")], Err(Refusal::DuplicateHost)),
            (&[("host", "a"), ("host", "a")], Err(Refusal::DuplicateHost)),
            (
                &[("transfer-encoding", "gzip, chunked")],
                Err(Refusal::TransferEncoding),
            ),
            (
                &[
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked"),
                ],
                Err(Refusal::TransferEncoding),
            ),
            (
                &[("transfer-encoding", "chunked"), ("content-length", "3")],
                Err(Refusal::AmbiguousLength),
            ),
            (
                &[("content-length", "3"), ("content-length", "4")],
                Err(Refusal::ContentLength),
            ),
            (&[("content-length", "3, 4")], Err(Refusal::ContentLength)),
        ];
        for (lines, expected) in cases {
            assert_eq!(framing(&headers(lines)), expected, "{lines:?}");
        }
    }

    #[test]
    fn an_absolute_target_overrides_a_disagreeing_host() {
        let mut request = Request::get("http://web/x")
            .header("host", "client")
            .body(())
            .expect("request");
        super::normalize_host(&mut request);
        assert_eq!(request.headers()["host"], "web");
        let mut origin = Request::get("/x")
            .header("host", "client")
            .body(())
            .expect("request");
        super::normalize_host(&mut origin);
        assert_eq!(origin.headers()["host"], "client");
    }

    #[test]
    fn a_long_target_is_refused_with_414() {
        let limits = HeadLimits {
            uri_bytes: 10,
            ..HeadLimits::default()
        };
        let ok = Request::get("/123456789").body(()).expect("request");
        assert!(check(&ok, &limits).is_ok());
        let h2 = Request::get("http://web/123456789")
            .version(http::Version::HTTP_2)
            .body(())
            .expect("request");
        assert!(check(&h2, &limits).is_ok(), "HTTP/2 counts `:path` only");
        let long = Request::get("/1234567890").body(()).expect("request");
        let error = check(&long, &limits).expect_err("too long");
        assert_eq!(error.status(), 414);
        assert_eq!(error.reason(), "uri-too-long");
    }
}
