//! One safe wrapper per raw import: pointers in, owned values and [`HostError`] out.
//! The public API (headers, streams, logging, ...) is built on these.

// Each wrapper passes pointers to live Rust values (or out-parameters on its own stack)
// to the host, which is what the ABI is.
#![allow(unsafe_code)]

use std::ptr::null_mut;

use crate::abi;
use crate::codec;
use crate::memory;
use crate::HostError;

/// `proxy_log`.
pub(crate) fn log(level: u32, message: &str) -> Result<(), HostError> {
    // SAFETY: the message is a live byte slice.
    HostError::check(unsafe { abi::proxy_log(level, message.as_ptr(), message.len()) })
}

/// `proxy_get_log_level`.
pub(crate) fn log_level() -> Result<u32, HostError> {
    let mut level = 0;
    // SAFETY: `level` is a live out-parameter.
    HostError::check(unsafe { abi::proxy_get_log_level(&mut level) })?;
    Ok(level)
}

/// `proxy_get_current_time_nanoseconds`.
pub(crate) fn now_nanos() -> Result<u64, HostError> {
    let mut nanos = 0;
    // SAFETY: `nanos` is a live out-parameter.
    HostError::check(unsafe { abi::proxy_get_current_time_nanoseconds(&mut nanos) })?;
    Ok(nanos)
}

/// `proxy_set_tick_period_milliseconds`.
pub(crate) fn set_tick_period(millis: u32) -> Result<(), HostError> {
    // SAFETY: no pointers.
    HostError::check(unsafe { abi::proxy_set_tick_period_milliseconds(millis) })
}

/// `proxy_get_buffer_bytes`: `max` bytes of a buffer from `start`.
pub(crate) fn buffer(kind: u32, start: usize, max: usize) -> Result<Vec<u8>, HostError> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: out-parameters are live; the host allocates the returned bytes.
    let code = unsafe { abi::proxy_get_buffer_bytes(kind, start, max, &mut data, &mut size) };
    let bytes = memory::take(data, size);
    match HostError::check(code) {
        Err(HostError::NotFound) => Ok(Vec::new()),
        other => other.map(|()| bytes),
    }
}

/// `proxy_set_buffer_bytes`: replaces `size` bytes from `start` with `bytes`.
pub(crate) fn set_buffer(
    kind: u32,
    start: usize,
    size: usize,
    bytes: &[u8],
) -> Result<(), HostError> {
    // SAFETY: `bytes` is a live slice.
    HostError::check(unsafe {
        abi::proxy_set_buffer_bytes(kind, start, size, bytes.as_ptr(), bytes.len())
    })
}

/// `proxy_get_header_map_pairs`.
pub(crate) fn map(kind: u32) -> Result<Vec<(String, String)>, HostError> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: out-parameters are live; the host allocates the returned bytes.
    let code = unsafe { abi::proxy_get_header_map_pairs(kind, &mut data, &mut size) };
    let bytes = memory::take(data, size);
    HostError::check(code)?;
    codec::decode_map(&bytes).ok_or(HostError::SerializationFailure)
}

/// `proxy_set_header_map_pairs`.
pub(crate) fn set_map<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    kind: u32,
    pairs: &[(K, V)],
) -> Result<(), HostError> {
    let bytes = codec::encode_map(pairs);
    // SAFETY: `bytes` is a live buffer.
    HostError::check(unsafe { abi::proxy_set_header_map_pairs(kind, bytes.as_ptr(), bytes.len()) })
}

/// `proxy_get_header_map_value`; `None` when the header is absent.
pub(crate) fn map_value(kind: u32, name: &str) -> Result<Option<Vec<u8>>, HostError> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: `name` is live; out-parameters are live.
    let code = unsafe {
        abi::proxy_get_header_map_value(kind, name.as_ptr(), name.len(), &mut data, &mut size)
    };
    let bytes = memory::take(data, size);
    match HostError::check(code) {
        Ok(()) => Ok(Some(bytes)),
        Err(HostError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `proxy_replace_header_map_value` (sets, replacing every value of `name`).
pub(crate) fn replace_map_value(kind: u32, name: &str, value: &[u8]) -> Result<(), HostError> {
    // SAFETY: both slices are live.
    HostError::check(unsafe {
        abi::proxy_replace_header_map_value(
            kind,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// `proxy_add_header_map_value` (appends a value).
pub(crate) fn add_map_value(kind: u32, name: &str, value: &[u8]) -> Result<(), HostError> {
    // SAFETY: both slices are live.
    HostError::check(unsafe {
        abi::proxy_add_header_map_value(
            kind,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// `proxy_remove_header_map_value`.
pub(crate) fn remove_map_value(kind: u32, name: &str) -> Result<(), HostError> {
    // SAFETY: `name` is live.
    HostError::check(unsafe { abi::proxy_remove_header_map_value(kind, name.as_ptr(), name.len()) })
}

/// `proxy_get_property`; `None` when the host has no such property.
pub(crate) fn property(path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
    let encoded = codec::encode_path(path);
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: `encoded` is live; out-parameters are live.
    let code =
        unsafe { abi::proxy_get_property(encoded.as_ptr(), encoded.len(), &mut data, &mut size) };
    let bytes = memory::take(data, size);
    match HostError::check(code) {
        Ok(()) => Ok(Some(bytes)),
        Err(HostError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `proxy_get_shared_data`: the value and its CAS, `None` when the key is absent.
pub(crate) fn shared_data(key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
    let (mut data, mut size, mut cas) = (null_mut(), 0, 0);
    // SAFETY: `key` is live; out-parameters are live.
    let code = unsafe {
        abi::proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas)
    };
    let bytes = memory::take(data, size);
    match HostError::check(code) {
        Ok(()) => Ok(Some((bytes, cas))),
        Err(HostError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `proxy_set_shared_data`; `cas` 0 writes unconditionally.
pub(crate) fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), HostError> {
    // SAFETY: both slices are live.
    HostError::check(unsafe {
        abi::proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    })
}

/// `proxy_continue_stream`.
pub(crate) fn continue_stream(stream: u32) -> Result<(), HostError> {
    // SAFETY: no pointers.
    HostError::check(unsafe { abi::proxy_continue_stream(stream) })
}

/// `proxy_close_stream`.
pub(crate) fn close_stream(stream: u32) -> Result<(), HostError> {
    // SAFETY: no pointers.
    HostError::check(unsafe { abi::proxy_close_stream(stream) })
}

/// `proxy_send_local_response` (no gRPC status: -1).
pub(crate) fn send_local_response(
    status: u32,
    details: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> Result<(), HostError> {
    let headers = codec::encode_map(headers);
    // SAFETY: all slices are live.
    HostError::check(unsafe {
        abi::proxy_send_local_response(
            status,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    })
}

/// `proxy_http_call`: the call's token.
pub(crate) fn http_call(
    upstream: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout_ms: u32,
) -> Result<u32, HostError> {
    let headers = codec::encode_map(headers);
    let trailers = codec::encode_map::<&str, &str>(&[]);
    let mut token = 0;
    // SAFETY: all slices are live; `token` is a live out-parameter.
    HostError::check(unsafe {
        abi::proxy_http_call(
            upstream.as_ptr(),
            upstream.len(),
            headers.as_ptr(),
            headers.len(),
            body.as_ptr(),
            body.len(),
            trailers.as_ptr(),
            trailers.len(),
            timeout_ms,
            &mut token,
        )
    })?;
    Ok(token)
}

/// `proxy_set_effective_context`.
pub(crate) fn set_effective_context(context: u32) -> Result<(), HostError> {
    // SAFETY: no pointers.
    HostError::check(unsafe { abi::proxy_set_effective_context(context) })
}

/// `proxy_call_foreign_function`: the host's answer (hosts without the function answer
/// `NotFound`).
pub(crate) fn call_foreign_function(name: &str, arguments: &[u8]) -> Result<Vec<u8>, HostError> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: name and arguments are live byte slices; out-parameters are live; the host
    // allocates the returned bytes.
    let code = unsafe {
        abi::proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            arguments.as_ptr(),
            arguments.len(),
            &mut data,
            &mut size,
        )
    };
    let bytes = memory::take(data, size);
    HostError::check(code).map(|()| bytes)
}

/// `proxy_define_metric`: the metric's id.
pub(crate) fn define_metric(kind: u32, name: &str) -> Result<u32, HostError> {
    let mut id = 0;
    // SAFETY: `name` is live; `id` is a live out-parameter.
    HostError::check(unsafe {
        abi::proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id)
    })?;
    Ok(id)
}

/// `proxy_get_metric`.
pub(crate) fn metric(id: u32) -> Result<u64, HostError> {
    let mut value = 0;
    // SAFETY: `value` is a live out-parameter.
    HostError::check(unsafe { abi::proxy_get_metric(id, &mut value) })?;
    Ok(value)
}

/// `proxy_record_metric`.
pub(crate) fn record_metric(id: u32, value: u64) -> Result<(), HostError> {
    // SAFETY: no pointers.
    HostError::check(unsafe { abi::proxy_record_metric(id, value) })
}

/// `proxy_increment_metric`.
pub(crate) fn increment_metric(id: u32, offset: i64) -> Result<(), HostError> {
    // SAFETY: no pointers.
    HostError::check(unsafe { abi::proxy_increment_metric(id, offset) })
}
