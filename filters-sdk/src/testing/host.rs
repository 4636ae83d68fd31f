//! The mock host: the ABI's functions over thread-local state, so the SDK's safe wrappers
//! (and the filters on top) run natively. [`super::Harness`] sets the state up and reads it.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::abi::status;
use crate::codec;
use crate::memory;

/// A metric a filter defined.
#[derive(Debug, Clone)]
pub(crate) struct MockMetric {
    pub(crate) name: String,
    pub(crate) kind: u32,
    pub(crate) value: i64,
}

/// A `proxy_http_call`.
#[derive(Debug, Clone)]
pub(crate) struct MockCall {
    pub(crate) context: u32,
    pub(crate) token: u32,
    pub(crate) upstream: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) timeout_ms: u32,
}

/// A `proxy_send_local_response`.
#[derive(Debug, Clone)]
pub(crate) struct MockLocalResponse {
    pub(crate) status: u32,
    pub(crate) details: String,
    pub(crate) body: Vec<u8>,
    pub(crate) headers: Vec<(String, String)>,
}

/// Everything the mock host holds.
#[derive(Debug, Default)]
pub(crate) struct MockHost {
    pub(crate) log_level: u32,
    pub(crate) logs: Vec<(u32, String)>,
    pub(crate) now_nanos: u64,
    pub(crate) tick_period_ms: u32,
    /// Header maps by `MapType`.
    pub(crate) maps: HashMap<u32, Vec<(String, String)>>,
    /// Buffers by `BufferType`.
    pub(crate) buffers: HashMap<u32, Vec<u8>>,
    /// Properties by encoded path.
    pub(crate) properties: HashMap<Vec<u8>, Vec<u8>>,
    pub(crate) shared: HashMap<String, (Vec<u8>, u32)>,
    pub(crate) next_cas: u32,
    pub(crate) metrics: Vec<MockMetric>,
    pub(crate) calls: Vec<MockCall>,
    pub(crate) local_responses: Vec<(u32, MockLocalResponse)>,
    /// `proxy_continue_stream` calls: (context, stream type).
    pub(crate) continued: Vec<(u32, u32)>,
    pub(crate) closed: Vec<(u32, u32)>,
    /// The context the host is calling into (set by the harness, or by the guest with
    /// `proxy_set_effective_context`).
    pub(crate) context: u32,
    /// `proxy_call_foreign_function` calls: (name, argument).
    pub(crate) foreign_calls: Vec<(String, Vec<u8>)>,
}

thread_local! {
    static HOST: RefCell<MockHost> = RefCell::new(MockHost::default());
}

/// Runs `f` on this thread's mock host.
pub(crate) fn with<R>(f: impl FnOnce(&mut MockHost) -> R) -> R {
    HOST.with(|host| f(&mut host.borrow_mut()))
}

/// The mock's implementation of each import, with the import's signature.
#[allow(unsafe_code, clippy::missing_safety_doc, clippy::too_many_arguments)]
pub(crate) mod abi {
    // The same contract as the real imports: pointers the guest passes are live for the
    // call; out-pointers are writable.
    use super::*;

    unsafe fn slice<'a>(data: *const u8, size: usize) -> &'a [u8] {
        if data.is_null() || size == 0 {
            return &[];
        }
        // SAFETY: the caller passes a live slice (the ABI contract).
        unsafe { std::slice::from_raw_parts(data, size) }
    }

    unsafe fn text(data: *const u8, size: usize) -> String {
        // SAFETY: forwarded contract.
        String::from_utf8_lossy(unsafe { slice(data, size) }).into_owned()
    }

    /// Copies `bytes` into guest memory and writes where they are.
    unsafe fn give(bytes: &[u8], data: *mut *mut u8, size: *mut usize) {
        let buf = memory::allocate(bytes.len());
        if !bytes.is_empty() {
            // SAFETY: `buf` has `bytes.len()` bytes.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf, bytes.len()) };
        }
        // SAFETY: the out-pointers are writable (the ABI contract).
        unsafe {
            *data = buf;
            *size = bytes.len();
        }
    }

    fn find<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a String> {
        pairs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub(crate) unsafe fn proxy_log(level: u32, data: *const u8, size: usize) -> u32 {
        // SAFETY: forwarded contract.
        let line = unsafe { text(data, size) };
        with(|h| h.logs.push((level, line)));
        status::OK
    }

    pub(crate) unsafe fn proxy_get_log_level(level: *mut u32) -> u32 {
        // SAFETY: writable out-pointer.
        unsafe { *level = with(|h| h.log_level) };
        status::OK
    }

    pub(crate) unsafe fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32 {
        // SAFETY: writable out-pointer.
        unsafe { *time = with(|h| h.now_nanos) };
        status::OK
    }

    pub(crate) unsafe fn proxy_set_tick_period_milliseconds(period: u32) -> u32 {
        with(|h| h.tick_period_ms = period);
        status::OK
    }

    pub(crate) unsafe fn proxy_get_buffer_bytes(
        kind: u32,
        start: usize,
        max: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32 {
        let Some(bytes) = with(|h| h.buffers.get(&kind).cloned()) else {
            return status::NOT_FOUND;
        };
        let from = start.min(bytes.len());
        let to = start.saturating_add(max).min(bytes.len());
        // SAFETY: forwarded contract.
        unsafe { give(&bytes[from..to], data, size) };
        status::OK
    }

    pub(crate) unsafe fn proxy_set_buffer_bytes(
        kind: u32,
        start: usize,
        size: usize,
        data: *const u8,
        len: usize,
    ) -> u32 {
        // SAFETY: forwarded contract.
        let new = unsafe { slice(data, len) }.to_vec();
        with(|h| {
            let buf = h.buffers.entry(kind).or_default();
            let from = start.min(buf.len());
            let to = start.saturating_add(size).min(buf.len());
            buf.splice(from..to, new);
        });
        status::OK
    }

    pub(crate) unsafe fn proxy_get_header_map_pairs(
        kind: u32,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32 {
        let pairs = with(|h| h.maps.get(&kind).cloned().unwrap_or_default());
        // SAFETY: forwarded contract.
        unsafe { give(&codec::encode_map(&pairs), data, size) };
        status::OK
    }

    pub(crate) unsafe fn proxy_set_header_map_pairs(
        kind: u32,
        data: *const u8,
        size: usize,
    ) -> u32 {
        // SAFETY: forwarded contract.
        let Some(pairs) = codec::decode_map(unsafe { slice(data, size) }) else {
            return status::BAD_ARGUMENT;
        };
        with(|h| h.maps.insert(kind, pairs));
        status::OK
    }

    pub(crate) unsafe fn proxy_get_header_map_value(
        kind: u32,
        key: *const u8,
        key_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32 {
        // SAFETY: forwarded contract.
        let name = unsafe { text(key, key_size) };
        let value = with(|h| h.maps.get(&kind).and_then(|m| find(m, &name).cloned()));
        match value {
            Some(value) => {
                // SAFETY: forwarded contract.
                unsafe { give(value.as_bytes(), data, size) };
                status::OK
            }
            None => status::NOT_FOUND,
        }
    }

    pub(crate) unsafe fn proxy_remove_header_map_value(
        kind: u32,
        key: *const u8,
        key_size: usize,
    ) -> u32 {
        // SAFETY: forwarded contract.
        let name = unsafe { text(key, key_size) };
        with(|h| {
            h.maps
                .entry(kind)
                .or_default()
                .retain(|(n, _)| !n.eq_ignore_ascii_case(&name))
        });
        status::OK
    }

    pub(crate) unsafe fn proxy_replace_header_map_value(
        kind: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32 {
        // SAFETY: forwarded contract.
        let (name, value) = unsafe { (text(key, key_size), text(value, value_size)) };
        with(|h| {
            let pairs = h.maps.entry(kind).or_default();
            match pairs
                .iter()
                .position(|(n, _)| n.eq_ignore_ascii_case(&name))
            {
                Some(at) => {
                    pairs[at].1 = value;
                    let mut i = 0;
                    pairs.retain(|(n, _)| {
                        i += 1;
                        i - 1 <= at || !n.eq_ignore_ascii_case(&name)
                    });
                }
                None => pairs.push((name.to_ascii_lowercase(), value)),
            }
        });
        status::OK
    }

    pub(crate) unsafe fn proxy_add_header_map_value(
        kind: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32 {
        // SAFETY: forwarded contract.
        let (name, value) = unsafe { (text(key, key_size), text(value, value_size)) };
        with(|h| {
            h.maps
                .entry(kind)
                .or_default()
                .push((name.to_ascii_lowercase(), value))
        });
        status::OK
    }

    pub(crate) unsafe fn proxy_get_property(
        path: *const u8,
        path_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32 {
        // SAFETY: forwarded contract.
        let path = unsafe { slice(path, path_size) };
        match with(|h| h.properties.get(path).cloned()) {
            Some(value) => {
                // SAFETY: forwarded contract.
                unsafe { give(&value, data, size) };
                status::OK
            }
            None => status::NOT_FOUND,
        }
    }

    pub(crate) unsafe fn proxy_get_shared_data(
        key: *const u8,
        key_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
        cas: *mut u32,
    ) -> u32 {
        // SAFETY: forwarded contract.
        let key = unsafe { text(key, key_size) };
        match with(|h| h.shared.get(&key).cloned()) {
            Some((value, version)) => {
                // SAFETY: forwarded contract.
                unsafe {
                    give(&value, data, size);
                    *cas = version;
                }
                status::OK
            }
            None => status::NOT_FOUND,
        }
    }

    pub(crate) unsafe fn proxy_set_shared_data(
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32 {
        // SAFETY: forwarded contract.
        let (key, value) = unsafe { (text(key, key_size), slice(value, value_size).to_vec()) };
        with(|h| {
            let current = h.shared.get(&key).map(|(_, version)| *version);
            if cas != 0 && current != Some(cas) {
                return status::CAS_MISMATCH;
            }
            h.next_cas += 1;
            let version = h.next_cas;
            h.shared.insert(key, (value, version));
            status::OK
        })
    }

    pub(crate) unsafe fn proxy_continue_stream(kind: u32) -> u32 {
        with(|h| {
            let context = h.context;
            h.continued.push((context, kind))
        });
        status::OK
    }

    pub(crate) unsafe fn proxy_close_stream(kind: u32) -> u32 {
        with(|h| {
            let context = h.context;
            h.closed.push((context, kind))
        });
        status::OK
    }

    pub(crate) unsafe fn proxy_send_local_response(
        code: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        _grpc_status: i32,
    ) -> u32 {
        // SAFETY: forwarded contract.
        let (details, body, headers) = unsafe {
            (
                text(details, details_size),
                slice(body, body_size).to_vec(),
                codec::decode_map(slice(headers, headers_size)),
            )
        };
        let Some(headers) = headers else {
            return status::BAD_ARGUMENT;
        };
        with(|h| {
            let context = h.context;
            h.local_responses.push((
                context,
                MockLocalResponse {
                    status: code,
                    details,
                    body,
                    headers,
                },
            ))
        });
        status::OK
    }

    pub(crate) unsafe fn proxy_http_call(
        upstream: *const u8,
        upstream_size: usize,
        headers: *const u8,
        headers_size: usize,
        body: *const u8,
        body_size: usize,
        _trailers: *const u8,
        _trailers_size: usize,
        timeout_ms: u32,
        token: *mut u32,
    ) -> u32 {
        // SAFETY: forwarded contract.
        let (upstream, headers, body) = unsafe {
            (
                text(upstream, upstream_size),
                codec::decode_map(slice(headers, headers_size)),
                slice(body, body_size).to_vec(),
            )
        };
        let Some(headers) = headers else {
            return status::BAD_ARGUMENT;
        };
        if [":method", ":path", ":authority"]
            .iter()
            .any(|p| find(&headers, p).is_none())
        {
            return status::BAD_ARGUMENT;
        }
        let id = with(|h| {
            let id = u32::try_from(h.calls.len() + 1).unwrap_or(u32::MAX);
            let context = h.context;
            h.calls.push(MockCall {
                context,
                token: id,
                upstream,
                headers,
                body,
                timeout_ms,
            });
            id
        });
        // SAFETY: writable out-pointer.
        unsafe { *token = id };
        status::OK
    }

    pub(crate) unsafe fn proxy_set_effective_context(context: u32) -> u32 {
        with(|h| h.context = context);
        status::OK
    }

    /// The mock knows no foreign function (it calls every hook, whatever the filter
    /// declares unused), like a host without the mesh's extension; it records the calls.
    pub(crate) unsafe fn proxy_call_foreign_function(
        name: *const u8,
        name_size: usize,
        arguments: *const u8,
        arguments_size: usize,
        _results: *mut *mut u8,
        _results_size: *mut usize,
    ) -> u32 {
        // SAFETY: forwarded contract.
        let call = unsafe {
            (
                text(name, name_size),
                slice(arguments, arguments_size).to_vec(),
            )
        };
        with(|h| h.foreign_calls.push(call));
        status::NOT_FOUND
    }

    pub(crate) unsafe fn proxy_define_metric(
        kind: u32,
        name: *const u8,
        name_size: usize,
        id: *mut u32,
    ) -> u32 {
        // SAFETY: forwarded contract.
        let name = unsafe { text(name, name_size) };
        let index = with(|h| {
            if let Some(at) = h.metrics.iter().position(|m| m.name == name) {
                return at;
            }
            h.metrics.push(MockMetric {
                name,
                kind,
                value: 0,
            });
            h.metrics.len() - 1
        });
        // SAFETY: writable out-pointer.
        unsafe { *id = u32::try_from(index + 1).unwrap_or(u32::MAX) };
        status::OK
    }

    fn metric_index(id: u32) -> usize {
        (id as usize).wrapping_sub(1)
    }

    pub(crate) unsafe fn proxy_get_metric(id: u32, value: *mut u64) -> u32 {
        match with(|h| h.metrics.get(metric_index(id)).map(|m| m.value)) {
            Some(v) => {
                // SAFETY: writable out-pointer.
                unsafe { *value = u64::try_from(v).unwrap_or(0) };
                status::OK
            }
            None => status::NOT_FOUND,
        }
    }

    pub(crate) unsafe fn proxy_record_metric(id: u32, value: u64) -> u32 {
        with(|h| match h.metrics.get_mut(metric_index(id)) {
            Some(m) if m.kind == crate::abi::metric::HISTOGRAM => {
                m.value += 1;
                status::OK
            }
            Some(m) => {
                m.value = i64::try_from(value).unwrap_or(i64::MAX);
                status::OK
            }
            None => status::NOT_FOUND,
        })
    }

    pub(crate) unsafe fn proxy_increment_metric(id: u32, offset: i64) -> u32 {
        with(|h| match h.metrics.get_mut(metric_index(id)) {
            Some(m) if m.kind == crate::abi::metric::COUNTER && offset < 0 => status::BAD_ARGUMENT,
            Some(m) if m.kind == crate::abi::metric::HISTOGRAM => status::BAD_ARGUMENT,
            Some(m) => {
                m.value = m.value.saturating_add(offset);
                status::OK
            }
            None => status::NOT_FOUND,
        })
    }
}
