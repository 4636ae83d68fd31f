//! The raw proxy-wasm ABI 0.2.1 imports (module `env`), as the host provides them on
//! `wasm32`; on other targets the same functions are the mock host of [`crate::testing`].
//!
//! Signatures are those of the `proxy-wasm` crate 0.2.5 (`src/hostcalls.rs`), with the
//! ABI's enums (`Status`, `MapType`, `BufferType`, ...) as plain `u32`: the same bits on
//! the wire, and a status the host adds later cannot be an invalid enum value here.
//! Nothing outside this crate calls these; the safe wrappers are in the other modules.

// The imports are `unsafe` by nature (raw pointers into linear memory).
#![allow(unsafe_code)]

/// `Status` values the host returns.
pub(crate) mod status {
    pub(crate) const OK: u32 = 0;
    pub(crate) const NOT_FOUND: u32 = 1;
    pub(crate) const BAD_ARGUMENT: u32 = 2;
    pub(crate) const SERIALIZATION_FAILURE: u32 = 3;
    pub(crate) const PARSE_FAILURE: u32 = 4;
    pub(crate) const EMPTY: u32 = 7;
    pub(crate) const CAS_MISMATCH: u32 = 8;
    pub(crate) const INTERNAL_FAILURE: u32 = 10;
    pub(crate) const UNIMPLEMENTED: u32 = 12;
}

/// `MapType`: which header map a call is about.
pub(crate) mod map {
    pub(crate) const REQUEST_HEADERS: u32 = 0;
    pub(crate) const REQUEST_TRAILERS: u32 = 1;
    pub(crate) const RESPONSE_HEADERS: u32 = 2;
    pub(crate) const RESPONSE_TRAILERS: u32 = 3;
    pub(crate) const HTTP_CALL_RESPONSE_HEADERS: u32 = 6;
}

/// `BufferType`: which byte buffer a call is about.
pub(crate) mod buffer {
    pub(crate) const REQUEST_BODY: u32 = 0;
    pub(crate) const RESPONSE_BODY: u32 = 1;
    pub(crate) const HTTP_CALL_RESPONSE_BODY: u32 = 4;
    pub(crate) const PLUGIN_CONFIGURATION: u32 = 7;
}

/// `StreamType`, for `proxy_continue_stream` / `proxy_close_stream`.
pub(crate) mod stream {
    pub(crate) const REQUEST: u32 = 0;
    pub(crate) const RESPONSE: u32 = 1;
}

/// The mesh host's foreign function `mesh_unused_hooks`: a u32 (little-endian) of the
/// hooks this filter leaves at their default, which the host may then skip.
pub(crate) mod unused_hooks {
    pub(crate) const FUNCTION: &str = "mesh_unused_hooks";
    pub(crate) const REQUEST_HEADERS: u32 = 1;
    pub(crate) const REQUEST_BODY: u32 = 1 << 1;
    pub(crate) const REQUEST_TRAILERS: u32 = 1 << 2;
    pub(crate) const RESPONSE_HEADERS: u32 = 1 << 3;
    pub(crate) const RESPONSE_BODY: u32 = 1 << 4;
    pub(crate) const RESPONSE_TRAILERS: u32 = 1 << 5;
    /// `on_done` (the host's `proxy_on_log` and `proxy_on_done`).
    pub(crate) const DONE: u32 = 1 << 6;
    /// `proxy_on_context_create` for requests: the filter makes a request's context at its
    /// first callback for it.
    pub(crate) const CONTEXT_CREATE: u32 = 1 << 7;
    /// `proxy_on_delete` after a last callback: the filter forgets a request when its
    /// response headers callback, flagged [`LAST_CALLBACK`], continues with no call in
    /// flight.
    pub(crate) const FORGETS_AFTER_LAST: u32 = 1 << 8;
    /// Bit 2 of `proxy_on_response_headers`' `end_of_stream`, from a host that knows
    /// [`FORGETS_AFTER_LAST`]: nothing follows for this request unless the filter pauses,
    /// answers or makes a call.
    pub(crate) const LAST_CALLBACK: u32 = 2;
}

/// `MetricType`.
pub(crate) mod metric {
    pub(crate) const COUNTER: u32 = 0;
    pub(crate) const GAUGE: u32 = 1;
    pub(crate) const HISTOGRAM: u32 = 2;
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use crate::testing::host::abi::*;

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "env")]
extern "C" {
    pub(crate) fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    pub(crate) fn proxy_get_log_level(return_level: *mut u32) -> u32;
    pub(crate) fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    pub(crate) fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    pub(crate) fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    pub(crate) fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        buffer_data: *const u8,
        buffer_size: usize,
    ) -> u32;
    pub(crate) fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    pub(crate) fn proxy_set_header_map_pairs(
        map_type: u32,
        map_data: *const u8,
        map_size: usize,
    ) -> u32;
    pub(crate) fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    pub(crate) fn proxy_remove_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
    ) -> u32;
    pub(crate) fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    pub(crate) fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    pub(crate) fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    pub(crate) fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    pub(crate) fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    pub(crate) fn proxy_continue_stream(stream_type: u32) -> u32;
    pub(crate) fn proxy_close_stream(stream_type: u32) -> u32;
    pub(crate) fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    pub(crate) fn proxy_http_call(
        upstream_data: *const u8,
        upstream_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        body_data: *const u8,
        body_size: usize,
        trailers_data: *const u8,
        trailers_size: usize,
        timeout: u32,
        return_token: *mut u32,
    ) -> u32;
    pub(crate) fn proxy_set_effective_context(context_id: u32) -> u32;
    pub(crate) fn proxy_call_foreign_function(
        function_name_data: *const u8,
        function_name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        results_data: *mut *mut u8,
        results_size: *mut usize,
    ) -> u32;
    pub(crate) fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    pub(crate) fn proxy_get_metric(metric_id: u32, return_value: *mut u64) -> u32;
    pub(crate) fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    pub(crate) fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
}
