//! An access-log line: the fields known at the response head, written as JSON once the
//! body ended.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Uri};

use super::TraceIdText;

/// An access-log line's fields known at the response head.
pub(super) struct Line {
    pub(super) time: String,
    pub(super) trace_id: Option<TraceIdText>,
    pub(super) direction: &'static str,
    pub(super) service: Option<Arc<str>>,
    pub(super) route: Option<Arc<str>>,
    pub(super) target: Option<Arc<str>>,
    pub(super) endpoint: Option<SocketAddr>,
    pub(super) method: Method,
    pub(super) uri: Uri,
    pub(super) status: u16,
    pub(super) peer: Option<String>,
    pub(super) rule: Option<String>,
    pub(super) retries: u32,
    pub(super) error: Option<String>,
}

/// The line as written: one JSON object, fields in this order.
#[derive(serde::Serialize)]
struct LineJson<'a> {
    time: &'a str,
    trace_id: Option<&'a str>,
    direction: &'a str,
    service: Option<&'a str>,
    route: Option<&'a str>,
    target: Option<&'a str>,
    endpoint: Option<SocketAddr>,
    method: &'a str,
    path: &'a str,
    status: u16,
    peer: Option<&'a str>,
    rule: Option<&'a str>,
    retries: u32,
    error: Option<&'a str>,
    duration_ms: f64,
    bytes_in: u64,
    bytes_out: u64,
}

impl Line {
    /// The JSON text, with what is known once the body ended.
    pub(super) fn render(&self, duration_ms: f64, bytes_in: u64, bytes_out: u64) -> String {
        let json = LineJson {
            time: &self.time,
            trace_id: self
                .trace_id
                .as_ref()
                .and_then(|id| std::str::from_utf8(id).ok()),
            direction: self.direction,
            service: self.service.as_deref(),
            route: self.route.as_deref(),
            target: self.target.as_deref(),
            endpoint: self.endpoint,
            method: self.method.as_str(),
            path: self.uri.path(),
            status: self.status,
            peer: self.peer.as_deref(),
            rule: self.rule.as_deref(),
            retries: self.retries,
            error: self.error.as_deref(),
            duration_ms,
            bytes_in,
            bytes_out,
        };
        let mut out = Vec::with_capacity(384);
        // Serializing plain fields into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, &json);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Now as RFC 3339 UTC with milliseconds.
pub(super) fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{:03}Z",
        now.subsec_millis()
    )
}
