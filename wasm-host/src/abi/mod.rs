//! The proxy-wasm 0.2.1 host functions (module `env`) and a capability-free
//! `wasi_snapshot_preview1`, with the guest-memory helpers they share.

use wasmtime::{Caller, Linker};

use crate::state::HostState;

mod buffers;
mod headers;
mod http_call;
mod metrics;
mod misc;
pub(crate) mod properties;
mod shared;
mod wasi;

pub(crate) use headers::{deserialize_pairs, Frozen, Visible};

/// Map types the phases need.
pub(crate) mod headers_consts {
    pub(crate) use super::headers::{REQUEST_TRAILERS, RESPONSE_TRAILERS};
}

/// The ABI's status codes (`WasmResult` in Envoy; the proxy-wasm crate's `Status`).
pub(crate) mod status {
    pub(crate) const OK: i32 = 0;
    pub(crate) const NOT_FOUND: i32 = 1;
    pub(crate) const BAD_ARGUMENT: i32 = 2;
    pub(crate) const INVALID_MEMORY_ACCESS: i32 = 6;
    pub(crate) const EMPTY: i32 = 7;
    pub(crate) const CAS_MISMATCH: i32 = 8;
    pub(crate) const INTERNAL_FAILURE: i32 = 10;
    pub(crate) const UNIMPLEMENTED: i32 = 12;
}

/// Every `env` function the host defines: what the proxy-wasm 0.2.5 crate imports, plus
/// the pre-0.2 names of continue/clear-route-cache that older SDKs import.
pub(crate) const ENV_FUNCTIONS: &[&str] = &[
    "proxy_log",
    "proxy_get_log_level",
    "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_buffer_bytes",
    "proxy_set_buffer_bytes",
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_add_header_map_value",
    "proxy_get_property",
    "proxy_set_property",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_continue_stream",
    "proxy_close_stream",
    "proxy_send_local_response",
    "proxy_get_status",
    "proxy_http_call",
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_grpc_close",
    "proxy_set_effective_context",
    "proxy_done",
    "proxy_call_foreign_function",
    "proxy_define_metric",
    "proxy_increment_metric",
    "proxy_record_metric",
    "proxy_get_metric",
    "proxy_continue_request",
    "proxy_continue_response",
    "proxy_clear_route_cache",
];

/// Every `wasi_snapshot_preview1` function the host defines.
pub(crate) const WASI_FUNCTIONS: &[&str] = wasi::FUNCTIONS;

/// Defines every host function in a linker.
pub(crate) fn define(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    misc::define(linker)?;
    headers::define(linker)?;
    buffers::define(linker)?;
    properties::define(linker)?;
    metrics::define(linker)?;
    shared::define(linker)?;
    http_call::define(linker)?;
    wasi::define(linker)?;
    Ok(())
}

/// Whether the host defines `module.name`.
pub(crate) fn provides(module: &str, name: &str) -> bool {
    match module {
        "env" => ENV_FUNCTIONS.contains(&name),
        "wasi_snapshot_preview1" => WASI_FUNCTIONS.contains(&name),
        _ => false,
    }
}

/// A guest pointer or length (`usize` is 32 bits on wasm32).
fn addr(v: i32) -> usize {
    v as u32 as usize
}

/// Copies `len` bytes at `ptr` out of the guest's memory; `Err(status)` if out of bounds.
pub(crate) fn read(caller: &Caller<'_, HostState>, ptr: i32, len: i32) -> Result<Vec<u8>, i32> {
    let memory = caller.data().memory.ok_or(status::INVALID_MEMORY_ACCESS)?;
    slice(memory.data(caller), ptr, len).map(<[u8]>::to_vec)
}

/// The guest's memory and the store's data at once, so that host functions can read
/// their arguments in place instead of copying them out first.
pub(crate) fn memory_and_state<'a>(
    caller: &'a mut Caller<'_, HostState>,
) -> Result<(&'a [u8], &'a mut HostState), i32> {
    let memory = caller.data().memory.ok_or(status::INVALID_MEMORY_ACCESS)?;
    let (bytes, state) = memory.data_and_store_mut(caller);
    Ok((bytes, state))
}

/// `len` bytes at `ptr` of guest memory `mem`; `Err(status)` if out of bounds.
pub(crate) fn slice(mem: &[u8], ptr: i32, len: i32) -> Result<&[u8], i32> {
    let (start, len) = (addr(ptr), addr(len));
    let end = start
        .checked_add(len)
        .ok_or(status::INVALID_MEMORY_ACCESS)?;
    mem.get(start..end).ok_or(status::INVALID_MEMORY_ACCESS)
}

/// Like [`read`], as UTF-8 (`BAD_ARGUMENT` if it is not).
pub(crate) fn read_str(caller: &Caller<'_, HostState>, ptr: i32, len: i32) -> Result<String, i32> {
    String::from_utf8(read(caller, ptr, len)?).map_err(|_| status::BAD_ARGUMENT)
}

/// Writes `bytes` at `ptr` in the guest's memory.
pub(crate) fn write(caller: &mut Caller<'_, HostState>, ptr: i32, bytes: &[u8]) -> Result<(), i32> {
    let memory = caller.data().memory.ok_or(status::INVALID_MEMORY_ACCESS)?;
    let start = addr(ptr);
    let end = start
        .checked_add(bytes.len())
        .ok_or(status::INVALID_MEMORY_ACCESS)?;
    memory
        .data_mut(caller)
        .get_mut(start..end)
        .ok_or(status::INVALID_MEMORY_ACCESS)?
        .copy_from_slice(bytes);
    Ok(())
}

/// Writes a `u32` (a wasm32 `usize` or pointer) at `ptr`.
pub(crate) fn write_u32(caller: &mut Caller<'_, HostState>, ptr: i32, v: u32) -> Result<(), i32> {
    write(caller, ptr, &v.to_le_bytes())
}

/// Hands `bytes` to the guest the way Envoy does: memory from the guest's own allocator,
/// its address and length written to the two return slots. The allocator's trap (an
/// out-of-memory abort) propagates, so it fails the callback.
pub(crate) fn copy_out(
    caller: &mut Caller<'_, HostState>,
    bytes: &[u8],
    ret_ptr: i32,
    ret_len: i32,
) -> wasmtime::Result<i32> {
    let Ok(len) = i32::try_from(bytes.len()) else {
        return Ok(status::INVALID_MEMORY_ACCESS);
    };
    let Some(alloc) = caller.data().alloc.clone() else {
        return Ok(status::INTERNAL_FAILURE);
    };
    let ptr = alloc.call(&mut *caller, len)?;
    if ptr == 0 && len > 0 {
        return Ok(status::INVALID_MEMORY_ACCESS);
    }
    let written = write(caller, ptr, bytes)
        .and_then(|()| write_u32(caller, ret_ptr, ptr as u32))
        .and_then(|()| write_u32(caller, ret_len, len as u32));
    Ok(match written {
        Ok(()) => status::OK,
        Err(code) => code,
    })
}

/// Folds a helper's `Result<i32, i32>` (status either way) into the status.
pub(crate) fn code(r: Result<i32, i32>) -> i32 {
    r.unwrap_or_else(|e| e)
}

/// The code of a `proc_exit` that ended a call, if that is what `err` is.
pub(crate) fn wasi_exit_code(err: &wasmtime::Error) -> Option<i32> {
    err.downcast_ref::<wasi::Exit>().map(|e| e.0)
}
