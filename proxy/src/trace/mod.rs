//! Distributed tracing: W3C `traceparent`/`tracestate` propagation and the spans of each
//! hop. A proxy continues the trace of an incoming `traceparent` (honouring its sampled
//! flag), or starts one, sampled at the `observe { trace sample P }` rate of the service
//! the request is for (outbound: the route's target; inbound: this sidecar's service; no
//! `observe`: not sampled). Either way the next hop gets a `traceparent` whose parent is
//! this proxy's span, so every hop agrees on the trace and the decision. Sampled spans are
//! handed to the exporter (`export`), which never makes a request wait.

pub mod export;

use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName};

pub use export::{Exporter, SpanRecord};

/// The W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";
/// The vendor trace state, passed on as it came.
pub const TRACESTATE: &str = "tracestate";

/// [`TRACEPARENT`] as a static name (inserting by `&str` copies the name to the heap).
static TRACEPARENT_NAME: HeaderName = HeaderName::from_static(TRACEPARENT);
/// [`TRACESTATE`] as a static name.
static TRACESTATE_NAME: HeaderName = HeaderName::from_static(TRACESTATE);

/// The length of a version-00 `traceparent`.
const TRACEPARENT_LEN: usize = 55;

/// A parsed `traceparent` (version 00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace id (not all zero).
    pub trace_id: [u8; 16],
    /// The caller's span id (not all zero).
    pub parent_id: [u8; 8],
    /// The sampled flag.
    pub sampled: bool,
}

impl TraceParent {
    /// Parses `00-<32 hex>-<16 hex>-<2 hex>`; anything else (another version, upper-case
    /// hex, all-zero ids) is `None`, and a new trace starts.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let mut parts = value.trim().split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let parent = parts.next()?;
        let flags = parts.next()?;
        if version != "00" || parts.next().is_some() || flags.len() != 2 {
            return None;
        }
        let trace_id: [u8; 16] = hex_decode(trace)?;
        let parent_id: [u8; 8] = hex_decode(parent)?;
        let [flags]: [u8; 1] = hex_decode(flags)?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            parent_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The header value.
    pub fn format(&self) -> String {
        String::from_utf8(self.encode().to_vec()).unwrap_or_default()
    }

    /// The header value, on the stack.
    fn encode(&self) -> [u8; TRACEPARENT_LEN] {
        let mut out = [b'-'; TRACEPARENT_LEN];
        out[..2].copy_from_slice(b"00");
        hex_into(&self.trace_id, &mut out[3..35]);
        hex_into(&self.parent_id, &mut out[36..52]);
        out[53..].copy_from_slice(if self.sampled { b"01" } else { b"00" });
        out
    }
}

/// This hop's place in a trace.
#[derive(Debug, Clone)]
pub struct SpanContext {
    /// The trace.
    pub trace_id: [u8; 16],
    /// This proxy's span for the request.
    pub span_id: [u8; 8],
    /// The caller's span, when a `traceparent` came in.
    pub parent_id: Option<[u8; 8]>,
    /// Whether the trace is sampled (spans are exported).
    pub sampled: bool,
    /// The incoming `tracestate`, kept as it came.
    pub tracestate: Option<String>,
    /// When the request arrived, in nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
}

impl SpanContext {
    /// Continues the trace of `headers`' `traceparent`, or starts one sampled at `ppm`
    /// (parts per million); then sets the `traceparent` the next hop gets (this span as its
    /// parent) in `headers`. `tracestate` stays as it is.
    pub fn propagate(headers: &mut HeaderMap, ppm: u32, start_unix_nanos: u64) -> SpanContext {
        let (context, next) = SpanContext::decide(headers, ppm, start_unix_nanos);
        if let Ok(value) = crate::headers::shared_value(&next) {
            headers.insert(TRACEPARENT_NAME.clone(), value);
        }
        context
    }

    /// [`SpanContext::propagate`], and the request's `x-request-id` when it has none, made
    /// together so that both values take one allocation.
    pub fn propagate_with_request_id(
        headers: &mut HeaderMap,
        ppm: u32,
        start_unix_nanos: u64,
    ) -> SpanContext {
        let (context, next) = SpanContext::decide(headers, ppm, start_unix_nanos);
        crate::headers::insert_with_request_id(headers, &TRACEPARENT_NAME, &next);
        context
    }

    /// This hop's context, and the `traceparent` the next hop gets.
    fn decide(
        headers: &mut HeaderMap,
        ppm: u32,
        start_unix_nanos: u64,
    ) -> (SpanContext, [u8; TRACEPARENT_LEN]) {
        let incoming = headers
            .get(&TRACEPARENT_NAME)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceParent::parse);
        let tracestate = incoming.and_then(|_| {
            headers
                .get(&TRACESTATE_NAME)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        });
        if incoming.is_none() {
            // A tracestate without its traceparent belongs to no trace.
            headers.remove(&TRACESTATE_NAME);
        }
        let context = SpanContext {
            trace_id: incoming.map_or_else(new_trace_id, |p| p.trace_id),
            span_id: new_span_id(),
            parent_id: incoming.map(|p| p.parent_id),
            sampled: incoming.map_or_else(|| crate::access_log::sampled(ppm), |p| p.sampled),
            tracestate,
            start_unix_nanos,
        };
        let next = TraceParent {
            trace_id: context.trace_id,
            parent_id: context.span_id,
            sampled: context.sampled,
        };
        (context, next.encode())
    }
}

/// Now, in nanoseconds since the Unix epoch.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn new_trace_id() -> [u8; 16] {
    loop {
        let id = fastrand::u128(..).to_be_bytes();
        if id != [0; 16] {
            return id;
        }
    }
}

fn new_span_id() -> [u8; 8] {
    loop {
        let id = fastrand::u64(..).to_be_bytes();
        if id != [0; 8] {
            return id;
        }
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0; bytes.len() * 2];
    hex_into(bytes, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Lower-case hex of `bytes` into `out` (twice as long).
pub fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
}

/// Lower-case hex of exactly `N` bytes (W3C: upper case is invalid).
fn hex_decode<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != N * 2 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn traceparent_round_trips_and_refuses_bad_values() {
        let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let p = TraceParent::parse(v).expect("valid");
        assert!(p.sampled);
        assert_eq!(p.format(), v);
        let unsampled =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert_eq!(unsampled.map(|p| p.sampled), Some(false));
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn propagation_honours_the_incoming_flag_and_sets_this_span_as_parent() {
        let mut headers = HeaderMap::new();
        headers.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
        );
        headers.insert(TRACESTATE, HeaderValue::from_static("k=v"));
        let c = SpanContext::propagate(&mut headers, 1_000_000, 1);
        assert!(!c.sampled, "an unsampled caller stays unsampled at 100%");
        assert_eq!(hex(&c.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            c.parent_id.map(|p| hex(&p)).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_eq!(c.tracestate.as_deref(), Some("k=v"));
        let next =
            TraceParent::parse(headers[TRACEPARENT].to_str().expect("ascii")).expect("valid");
        assert_eq!(next.parent_id, c.span_id);
        assert!(!next.sampled);

        let mut fresh = HeaderMap::new();
        let c = SpanContext::propagate_with_request_id(&mut fresh, 1_000_000, 1);
        assert!(c.sampled && c.parent_id.is_none());
        let next = TraceParent::parse(fresh[TRACEPARENT].to_str().expect("ascii"));
        assert_eq!(next.map(|p| p.parent_id), Some(c.span_id));
        assert_eq!(fresh[crate::headers::REQUEST_ID].len(), 32);
        let mut fresh = HeaderMap::new();
        fresh.insert(TRACEPARENT, HeaderValue::from_static("garbage"));
        let c = SpanContext::propagate(&mut fresh, 0, 1);
        assert!(!c.sampled && c.parent_id.is_none());
        assert!(fresh[TRACEPARENT].to_str().expect("ascii").ends_with("-00"));
    }
}
