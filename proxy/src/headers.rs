//! Header handling common to both directions: hop-by-hop headers (RFC 9110 §7.6.1),
//! `x-forwarded-for`, the request id, route header edits, the engine's view of headers, and
//! what gRPC says in headers (is it a gRPC call, its deadline).

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, PROXY_AUTHENTICATE, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use mesh_table::HeaderEdit;

mod values;

use values::Inline;
pub use values::{parsed_header, repeated_value, shared_value};

/// The request id header; set when the caller sent none.
pub const REQUEST_ID: &str = "x-request-id";

/// Headers that describe one connection and never travel further (static names: removing
/// by a `HeaderName` skips parsing a string on every request).
static HOP_BY_HOP: [HeaderName; 8] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// `x-forwarded-for`.
static FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// [`REQUEST_ID`] as a static name: inserting by `&str` would copy the name to the heap,
/// and every try's copy of the headers would then share it through another allocation.
static REQUEST_ID_NAME: HeaderName = HeaderName::from_static(REQUEST_ID);

/// The engine reads request headers through this view of a `HeaderMap`: every value of a
/// name, in order, as bytes (the engine joins repeated ones, `mesh_engine::header_value`).
pub struct EngineHeaders<'a>(pub &'a HeaderMap);

impl mesh_engine::RequestHeaders for EngineHeaders<'_> {
    type Values<'v>
        = std::iter::Map<http::header::ValueIter<'v, HeaderValue>, fn(&HeaderValue) -> &[u8]>
    where
        Self: 'v;

    fn values<'v>(&'v self, name: &'v str) -> Self::Values<'v> {
        self.0.get_all(name).iter().map(HeaderValue::as_bytes)
    }
}

/// Makes the request's path the normalized one the rules decided on
/// (`mesh_engine::normalize_path`), so the application receives exactly the path that was
/// routed and authorized (as Envoy forwards with `normalize_path`); the query is kept as
/// sent. Does nothing for a path that is already normal, which is the common case.
pub fn forward_normalized<B>(request: &mut http::Request<B>) -> Result<(), mesh_engine::PathError> {
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let std::borrow::Cow::Owned(path) = mesh_engine::normalize_path(target)? else {
        return Ok(());
    };
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut parts = request.uri().clone().into_parts();
    // A normalized path holds only bytes of the original target, so it always parses.
    parts.path_and_query = Some(
        http::uri::PathAndQuery::try_from(path_and_query)
            .map_err(|_| mesh_engine::PathError::InvalidCharacter)?,
    );
    *request.uri_mut() =
        http::Uri::from_parts(parts).map_err(|_| mesh_engine::PathError::InvalidCharacter)?;
    Ok(())
}

/// Whether a request is a gRPC call: `content-type: application/grpc`, alone or followed by
/// `+codec` or parameters (as Envoy decides; gRPC-Web, `application/grpc-web`, is not).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.as_bytes().strip_prefix(b"application/grpc"))
        .is_some_and(|rest| rest.is_empty() || rest[0] == b'+' || rest[0] == b';')
}

/// The deadline a gRPC caller gave its call: `grpc-timeout`, 1 to 8 digits and a unit (`H`,
/// `M`, `S`, `m`, `u`, `n`; gRPC over HTTP/2). `None` when absent or malformed.
pub fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.as_bytes();
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Whether a request asks for an HTTP/1.1 upgrade (WebSocket and the like).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop headers and those the `Connection` header names. `te: trailers` is
/// kept (gRPC needs it end to end); `keep_upgrade` keeps `Connection: upgrade` and
/// `Upgrade` for a request being tunnelled.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most requests carry none of these: one pass over the names decides.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    remove_connection_named(headers, keep_upgrade);
    let trailers_te = headers.get_all(TE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    for name in &HOP_BY_HOP {
        if keep_upgrade && (name == CONNECTION || name == UPGRADE) {
            continue;
        }
        headers.remove(name);
    }
    if trailers_te {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Removes the headers the `Connection` header names (`upgrade` kept when `keep_upgrade`).
/// Its values are copied to the stack first, as the map changes while they are read; only a
/// list longer than the buffer takes the heap.
fn remove_connection_named(headers: &mut HeaderMap, keep_upgrade: bool) {
    let mut buffer = [0u8; 256];
    let mut len = 0;
    let mut spilled: Option<Vec<u8>> = None;
    let values = headers.get_all(CONNECTION).iter();
    for value in values.filter_map(|v| v.to_str().ok()).map(str::as_bytes) {
        if let Some(list) = &mut spilled {
            list.push(b',');
            list.extend_from_slice(value);
        } else if len + 1 + value.len() <= buffer.len() {
            buffer[len] = b',';
            buffer[len + 1..len + 1 + value.len()].copy_from_slice(value);
            len += 1 + value.len();
        } else {
            let mut list = buffer[..len].to_vec();
            list.push(b',');
            list.extend_from_slice(value);
            spilled = Some(list);
        }
    }
    let list = spilled.as_deref().unwrap_or(&buffer[..len]);
    let Ok(list) = std::str::from_utf8(list) else {
        return;
    };
    for token in list.split(',').map(str::trim) {
        if !(keep_upgrade && token.eq_ignore_ascii_case("upgrade")) {
            // By `&str`: the name is parsed on the stack, never copied.
            headers.remove(token);
        }
    }
}

/// Writes `x-forwarded-for` with the peer appended into `out`; its length, or `None` when it
/// does not fit.
fn forwarded_for_into(headers: &HeaderMap, peer: IpAddr, out: &mut [u8]) -> Option<usize> {
    use std::io::Write as _;
    let mut cursor = std::io::Cursor::new(out);
    let written = match headers.get(&FORWARDED_FOR).map(HeaderValue::as_bytes) {
        Some(existing) if !existing.is_empty() => cursor
            .write_all(existing)
            .and_then(|()| write!(cursor, ", {peer}")),
        _ => write!(cursor, "{peer}"),
    };
    written.ok()?;
    usize::try_from(cursor.position()).ok()
}

/// Appends the peer's address to `x-forwarded-for`.
pub fn append_forwarded_for(headers: &mut HeaderMap, peer: IpAddr) {
    // Formatted on the stack: an address and a long chain fit; longer chains take the heap.
    let mut buffer = [0u8; 256];
    let value = match forwarded_for_into(headers, peer, &mut buffer) {
        // A caller's chain is the same on each of its requests: parsed once per thread.
        Some(len) => repeated_value(&buffer[..len]),
        None => {
            let existing = headers
                .get(&FORWARDED_FOR)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            HeaderValue::from_str(&format!("{existing}, {peer}"))
        }
    };
    if let Ok(value) = value {
        headers.insert(FORWARDED_FOR.clone(), value);
    }
}

/// A new request id: 32 lower-case hex digits.
fn new_request_id() -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    let random = fastrand::u128(..);
    for (i, digit) in id.iter_mut().enumerate() {
        *digit = HEX[((random >> (4 * (31 - i))) & 0xf) as usize];
    }
    id
}

/// Sets `x-request-id` when absent; returns the request's id.
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(&REQUEST_ID_NAME) {
        return id.clone();
    }
    let value = shared_value(&new_request_id()).unwrap_or_else(|_| HeaderValue::from_static("0"));
    headers.insert(REQUEST_ID_NAME.clone(), value.clone());
    value
}

/// Sets `name` to `text`, and an `x-request-id` when the request has none, both values in
/// one allocation (the trace context and the id are set together on every request).
pub fn insert_with_request_id(headers: &mut HeaderMap, name: &HeaderName, text: &[u8]) {
    const ID: usize = 32;
    let mut owner = Inline {
        bytes: [0; 128],
        len: ID + text.len(),
    };
    if headers.contains_key(&REQUEST_ID_NAME) || owner.len > owner.bytes.len() {
        if let Ok(value) = shared_value(text) {
            headers.insert(name.clone(), value);
        }
        return;
    }
    owner.bytes[..ID].copy_from_slice(&new_request_id());
    owner.bytes[ID..owner.len].copy_from_slice(text);
    let shared = Bytes::from_owner(owner);
    if let Ok(value) = HeaderValue::from_maybe_shared(shared.slice(ID..)) {
        headers.insert(name.clone(), value);
    }
    let id = HeaderValue::from_maybe_shared(shared.slice(..ID))
        .unwrap_or_else(|_| HeaderValue::from_static("0"));
    headers.insert(REQUEST_ID_NAME.clone(), id);
}

/// What every forwarded request gets: the peer appended to `x-forwarded-for`, and an
/// `x-request-id` when it has none (most have one by now: `trace` sets it with the trace
/// context, in the same allocation).
pub fn add_forwarding_headers(headers: &mut HeaderMap, peer: IpAddr) {
    append_forwarded_for(headers, peer);
    ensure_request_id(headers);
}

/// Applies a route's header edits in order.
pub fn apply_edits(headers: &mut HeaderMap, edits: &[HeaderEdit]) {
    for edit in edits {
        match edit {
            HeaderEdit::Set(name, value) => {
                if let Some((n, v)) = parsed_header(name, value) {
                    headers.insert(n, v);
                }
            }
            HeaderEdit::Add(name, value) => {
                if let Some((n, v)) = parsed_header(name, value) {
                    headers.append(n, v);
                }
            }
            HeaderEdit::Remove(name) => {
                headers.remove(name.as_str());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: &'static str, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn the_forwarded_path_is_the_normalized_one_with_the_query_as_sent() {
        let cases = [
            ("/a/./b//c?x=/../y", "/a/b/c?x=/../y"),
            ("/hello/%2e%2e/secret", "/secret"),
            ("http://svc:80/%61//b?q", "http://svc:80/a/b?q"),
            ("/plain?q=1", "/plain?q=1"),
        ];
        for (target, want) in cases {
            let mut request = http::Request::get(target).body(()).expect("request");
            forward_normalized(&mut request).expect("normalizes");
            assert_eq!(request.uri().to_string(), want, "{target}");
        }
        let mut request = http::Request::get("/secret;x/y").body(()).expect("request");
        assert_eq!(
            forward_normalized(&mut request),
            Err(mesh_engine::PathError::PathParameter)
        );
    }

    #[test]
    fn grpc_calls_are_told_by_their_content_type() {
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc;charset=utf-8",
        ] {
            assert!(is_grpc(&with("content-type", yes)), "{yes}");
        }
        for no in [
            "application/grpc-web",
            "application/json",
            "application/grpcx",
        ] {
            assert!(!is_grpc(&with("content-type", no)), "{no}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn grpc_timeouts_read_every_unit_and_refuse_malformed_values() {
        let cases = [
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("3S", Some(Duration::from_secs(3))),
            ("1500m", Some(Duration::from_millis(1500))),
            ("999873u", Some(Duration::from_micros(999_873))),
            ("99999999n", Some(Duration::from_nanos(99_999_999))),
            ("0m", Some(Duration::ZERO)),
            ("123456789m", None),
            ("m", None),
            ("10", None),
            ("10s", None),
            ("-1S", None),
            ("1.5S", None),
        ];
        for (value, want) in cases {
            assert_eq!(grpc_timeout(&with("grpc-timeout", value)), want, "{value}");
        }
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_go() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("te", HeaderValue::from_static("trailers, deflate"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert!(
            h.get("x-secret").is_none()
                && h.get("keep-alive").is_none()
                && h.get("connection").is_none()
        );
        assert!(h.get("transfer-encoding").is_none());
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["x-keep"], "1");
    }

    #[test]
    fn upgrades_keep_their_headers_when_tunnelled() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn forwarded_for_appends_and_request_ids_are_kept() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, [10, 0, 0, 1].into());
        append_forwarded_for(&mut h, [127, 0, 0, 1].into());
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        let id = ensure_request_id(&mut h);
        assert_eq!(id.len(), 32);
        assert_eq!(ensure_request_id(&mut h), id);
    }

    #[test]
    fn forwarding_headers_are_those_of_the_two_steps() {
        let mut h = with("x-forwarded-for", "10.0.0.1");
        add_forwarding_headers(&mut h, [127, 0, 0, 1].into());
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert!(h[REQUEST_ID].as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_eq!(h[REQUEST_ID].len(), 32);
        let mut h = with(REQUEST_ID, "mine");
        add_forwarding_headers(&mut h, [127, 0, 0, 1].into());
        assert!(h[REQUEST_ID] == "mine" && h["x-forwarded-for"] == "127.0.0.1");
    }

    #[test]
    fn edits_parse_alike_when_repeated() {
        let edits = [
            HeaderEdit::Set("x-a".into(), "1".into()),
            HeaderEdit::Add("X-B".into(), "2".into()),
            HeaderEdit::Set("x-bad".into(), "\u{7f}".into()),
        ];
        for _ in 0..3 {
            let mut h = HeaderMap::new();
            apply_edits(&mut h, &edits);
            assert!(h["x-a"] == "1" && h["x-b"] == "2" && h.len() == 2);
        }
    }
}
