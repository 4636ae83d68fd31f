//! Callbacks a filter does nothing in, which the host may skip. A filter says so through
//! the foreign function `mesh_unused_hooks` (our SDK does it for hooks the filter left at
//! their default); a skipped callback would have continued without touching anything, so
//! skipping it cannot be observed, and saves a guest call per request (the body ones also
//! let the proxy keep the body's framing untouched).

use std::sync::atomic::{AtomicU32, Ordering};

/// The foreign function's name.
pub(crate) const FOREIGN_FUNCTION: &[u8] = b"mesh_unused_hooks";

/// One bit per skippable callback, as the foreign function's argument (u32, little-endian).
pub(crate) mod bit {
    pub(crate) const REQUEST_HEADERS: u32 = 1;
    pub(crate) const REQUEST_BODY: u32 = 1 << 1;
    pub(crate) const REQUEST_TRAILERS: u32 = 1 << 2;
    pub(crate) const RESPONSE_HEADERS: u32 = 1 << 3;
    pub(crate) const RESPONSE_BODY: u32 = 1 << 4;
    pub(crate) const RESPONSE_TRAILERS: u32 = 1 << 5;
    /// `proxy_on_log` and `proxy_on_done` (`proxy_on_delete` always runs: it frees the
    /// context in the guest).
    pub(crate) const DONE: u32 = 1 << 6;
    /// `proxy_on_context_create` for request contexts: the filter makes a request's
    /// context at the first callback it gets for it (our SDK does, with one root context).
    pub(crate) const CONTEXT_CREATE: u32 = 1 << 7;
    /// `proxy_on_delete` after a last callback: the filter understands bit 2 of
    /// `proxy_on_response_headers`' `end_of_stream` ("nothing follows unless you pause,
    /// answer or make a call"), and forgets the request when that callback continues with
    /// no call in flight, so the host skips its `proxy_on_delete` (our SDK does).
    pub(crate) const FORGETS_AFTER_LAST: u32 = 1 << 8;

    /// Each bit's callbacks, by export name.
    pub(crate) const EXPORTS: &[(u32, &[&str])] = &[
        (REQUEST_HEADERS, &["proxy_on_request_headers"]),
        (REQUEST_BODY, &["proxy_on_request_body"]),
        (REQUEST_TRAILERS, &["proxy_on_request_trailers"]),
        (RESPONSE_HEADERS, &["proxy_on_response_headers"]),
        (RESPONSE_BODY, &["proxy_on_response_body"]),
        (RESPONSE_TRAILERS, &["proxy_on_response_trailers"]),
        (DONE, &["proxy_on_log", "proxy_on_done"]),
    ];

    /// What may run after the response headers (and read the response head's snapshot).
    pub(crate) const AFTER_RESPONSE_HEADERS: u32 = RESPONSE_BODY | RESPONSE_TRAILERS | DONE;
    /// What may still run after a response head: the rest of the response, the request's
    /// body (a server may answer before it has read it all), `on_log`/`on_done`.
    pub(crate) const MAY_FOLLOW_RESPONSE_HEADERS: u32 =
        AFTER_RESPONSE_HEADERS | BEFORE_RESPONSE_HEADERS;
    /// What may run between the request head and the response head: the rest of the
    /// request.
    pub(crate) const BEFORE_RESPONSE_HEADERS: u32 = REQUEST_BODY | REQUEST_TRAILERS;
    /// What may run after the request headers (and read the request head's snapshot).
    pub(crate) const AFTER_REQUEST_HEADERS: u32 =
        BEFORE_RESPONSE_HEADERS | RESPONSE_HEADERS | AFTER_RESPONSE_HEADERS;
}

/// Bit 2 of `end_of_stream` in `proxy_on_response_headers`, for filters that declared
/// [`bit::FORGETS_AFTER_LAST`] (bit 1 is the ABI's own `end_of_stream`).
pub(crate) const LAST_CALLBACK: i32 = 2;

/// The callbacks a plugin's filter declared unused (only ever grows: it is a property of
/// the module's code).
#[derive(Debug, Default)]
pub(crate) struct UnusedHooks(AtomicU32);

impl UnusedHooks {
    pub(crate) fn add(&self, bits: u32) {
        self.0.fetch_or(bits, Ordering::Relaxed);
    }

    /// Whether every callback in `bits` may be skipped.
    pub(crate) fn skips(&self, bits: u32) -> bool {
        self.0.load(Ordering::Relaxed) & bits == bits
    }
}
