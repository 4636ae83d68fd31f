//! Logging, time, ticks, stream control (continue, close, local response), effective
//! context, the host's foreign function, and the parts of the ABI the mesh does not offer
//! (gRPC).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use wasmtime::{Caller, Linker};

use super::{code, deserialize_pairs, memory_and_state, read, slice, status, write, write_u32};
use crate::hooks;
use crate::state::{Event, HostState};
use crate::LocalResponse;

type C<'a> = Caller<'a, HostState>;

/// Logs a guest message at the ABI level `level` (0 trace … 5 critical).
pub(crate) fn guest_log(filter: &str, level: i32, message: &str) {
    match level {
        0 => tracing::trace!(target: "mesh_wasm::guest", filter, "{message}"),
        1 => tracing::debug!(target: "mesh_wasm::guest", filter, "{message}"),
        2 => tracing::info!(target: "mesh_wasm::guest", filter, "{message}"),
        3 => tracing::warn!(target: "mesh_wasm::guest", filter, "{message}"),
        _ => tracing::error!(target: "mesh_wasm::guest", filter, "{message}"),
    }
}

/// The most verbose ABI level whose events a subscriber would record.
fn enabled_level() -> u32 {
    if tracing::enabled!(target: "mesh_wasm::guest", tracing::Level::TRACE) {
        0
    } else if tracing::enabled!(target: "mesh_wasm::guest", tracing::Level::DEBUG) {
        1
    } else if tracing::enabled!(target: "mesh_wasm::guest", tracing::Level::INFO) {
        2
    } else if tracing::enabled!(target: "mesh_wasm::guest", tracing::Level::WARN) {
        3
    } else if tracing::enabled!(target: "mesh_wasm::guest", tracing::Level::ERROR) {
        4
    } else {
        5
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Sets a flag on the effective context and wakes its stream if it is waiting.
fn flag(c: &mut C<'_>, set: impl FnOnce(&mut crate::state::Context)) -> i32 {
    match c.data_mut().ctx() {
        Some(ctx) if ctx.info.is_some() => {
            set(ctx);
            if let Some(tx) = &ctx.events {
                // A waiting phase re-reads the flags; nobody waiting is fine too.
                tx.send(Event::Wake);
            }
            status::OK
        }
        _ => status::NOT_FOUND,
    }
}

/// `proxy_call_foreign_function`: the host's one extension, `mesh_unused_hooks` (see
/// `hooks`); any other name is NOT_FOUND, as in Envoy. Returns no data.
fn foreign_function(
    mut c: C<'_>,
    name_ptr: i32,
    name_len: i32,
    args_ptr: i32,
    args_len: i32,
    ret_ptr: i32,
    ret_len: i32,
) -> i32 {
    code((|| {
        let (mem, state) = memory_and_state(&mut c)?;
        if slice(mem, name_ptr, name_len)? != hooks::FOREIGN_FUNCTION {
            return Err(status::NOT_FOUND);
        }
        let args: [u8; 4] = slice(mem, args_ptr, args_len)?
            .try_into()
            .map_err(|_| status::BAD_ARGUMENT)?;
        if let Some(plugin) = state.plugin.upgrade() {
            plugin.unused.add(u32::from_le_bytes(args));
        }
        write_u32(&mut c, ret_ptr, 0)?;
        write_u32(&mut c, ret_len, 0)?;
        Ok(status::OK)
    })())
}

#[allow(clippy::too_many_arguments)] // the ABI's signature
fn send_local_response(
    mut c: C<'_>,
    code_: i32,
    details_ptr: i32,
    details_len: i32,
    body_ptr: i32,
    body_len: i32,
    headers_ptr: i32,
    headers_len: i32,
    _grpc_status: i32,
) -> i32 {
    code((|| {
        let status_code = u16::try_from(code_)
            .ok()
            .filter(|s| (100..=999).contains(s))
            .ok_or(status::BAD_ARGUMENT)?;
        let details = String::from_utf8_lossy(&read(&c, details_ptr, details_len)?).into_owned();
        let body = Bytes::from(read(&c, body_ptr, body_len)?);
        let raw = read(&c, headers_ptr, headers_len)?;
        let headers = deserialize_pairs(&raw)
            .ok_or(status::BAD_ARGUMENT)?
            .into_iter()
            .map(|(k, v)| String::from_utf8(k).map(|k| (k.to_ascii_lowercase(), v)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| status::BAD_ARGUMENT)?;
        let response = LocalResponse {
            status: status_code,
            headers,
            body,
            details,
        };
        Ok(flag(&mut c, |ctx| {
            ctx.local_response = Some(Box::new(response))
        }))
    })())
}

pub(super) fn define(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |c: C<'_>, level: i32, ptr: i32, len: i32| {
            code(read(&c, ptr, len).map(|bytes| {
                guest_log(&c.data().filter, level, &String::from_utf8_lossy(&bytes));
                status::OK
            }))
        },
    )?;
    linker.func_wrap("env", "proxy_get_log_level", |mut c: C<'_>, ret: i32| {
        code(write_u32(&mut c, ret, enabled_level()).map(|()| status::OK))
    })?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: C<'_>, ret: i32| {
            code(write(&mut c, ret, &now_nanos().to_le_bytes()).map(|()| status::OK))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: C<'_>, ms: i32| {
            c.data_mut().tick_change = Some(ms as u32);
            status::OK
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut c: C<'_>, _kind: i32| flag(&mut c, |ctx| ctx.continued = true),
    )?;
    linker.func_wrap("env", "proxy_continue_request", |mut c: C<'_>| {
        flag(&mut c, |ctx| ctx.continued = true)
    })?;
    linker.func_wrap("env", "proxy_continue_response", |mut c: C<'_>| {
        flag(&mut c, |ctx| ctx.continued = true)
    })?;
    linker.func_wrap("env", "proxy_close_stream", |mut c: C<'_>, _kind: i32| {
        flag(&mut c, |ctx| ctx.close = true)
    })?;
    // Routes are chosen before filters run in this mesh: nothing to clear.
    linker.func_wrap("env", "proxy_clear_route_cache", |_c: C<'_>| status::OK)?;
    linker.func_wrap("env", "proxy_send_local_response", send_local_response)?;
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: C<'_>, id: i32| {
            let state = c.data_mut();
            if state.contexts.contains_key(&(id as u32)) {
                state.active = id as u32;
                status::OK
            } else {
                status::BAD_ARGUMENT
            }
        },
    )?;
    linker.func_wrap("env", "proxy_done", |_c: C<'_>| status::OK)?;
    // gRPC calls are not offered by the mesh.
    linker.func_wrap(
        "env",
        "proxy_grpc_call",
        |_c: C<'_>,
         _a: i32,
         _b: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _i: i32,
         _j: i32,
         _k: i32,
         _l: i32,
         _m: i32| status::UNIMPLEMENTED,
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_stream",
        |_c: C<'_>,
         _a: i32,
         _b: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _i: i32,
         _j: i32| { status::UNIMPLEMENTED },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_send",
        |_c: C<'_>, _t: i32, _p: i32, _l: i32, _e: i32| status::UNIMPLEMENTED,
    )?;
    linker.func_wrap("env", "proxy_grpc_cancel", |_c: C<'_>, _t: i32| {
        status::UNIMPLEMENTED
    })?;
    linker.func_wrap("env", "proxy_grpc_close", |_c: C<'_>, _t: i32| {
        status::UNIMPLEMENTED
    })?;
    linker.func_wrap(
        "env",
        "proxy_get_status",
        |_c: C<'_>, _a: i32, _b: i32, _d: i32| status::UNIMPLEMENTED,
    )?;
    linker.func_wrap("env", "proxy_call_foreign_function", foreign_function)?;
    Ok(())
}
