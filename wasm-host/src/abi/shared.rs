//! Shared data (with compare-and-swap) and shared queues, scoped to the filter.

use wasmtime::{Caller, Linker};

use super::{code, copy_out, read, read_str, status, write_u32};
use crate::state::HostState;
use crate::tables::QueueTable;

type C<'a> = Caller<'a, HostState>;

pub(super) fn define(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: C<'_>, kp: i32, kl: i32, ret_ptr: i32, ret_len: i32, ret_cas: i32| {
            let key = match read(&c, kp, kl) {
                Ok(k) => k,
                Err(e) => return Ok(e),
            };
            // Copied out before calling the guest's allocator: no lock held across guest code.
            let found = {
                let state = c.data();
                let shared = state.host.shared.lock().unwrap_or_else(|e| e.into_inner());
                shared.get(&(state.filter.clone(), key)).cloned()
            };
            let Some((value, cas)) = found else {
                return Ok(status::NOT_FOUND);
            };
            let st = copy_out(&mut c, &value, ret_ptr, ret_len)?;
            if st != status::OK {
                return Ok(st);
            }
            Ok(code(write_u32(&mut c, ret_cas, cas).map(|()| status::OK)))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |c: C<'_>, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32| {
            code((|| {
                let key = read(&c, kp, kl)?;
                let value = read(&c, vp, vl)?;
                let state = c.data();
                let mut shared = state.host.shared.lock().unwrap_or_else(|e| e.into_inner());
                let entry = shared
                    .entry((state.filter.clone(), key))
                    .or_insert((Vec::new(), 0));
                if cas != 0 && entry.1 != cas as u32 {
                    return Err(status::CAS_MISMATCH);
                }
                // Versions start at 1 and skip 0 on wrap: 0 means "no CAS" to the ABI.
                entry.1 = entry.1.wrapping_add(1).max(1);
                entry.0 = value;
                Ok(status::OK)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut c: C<'_>, np: i32, nl: i32, ret: i32| {
            code((|| {
                let name = read_str(&c, np, nl)?;
                let id = {
                    let state = c.data();
                    let mut q = state.host.queues.lock().unwrap_or_else(|e| e.into_inner());
                    q.register(&state.filter, name)
                }
                .ok_or(status::INTERNAL_FAILURE)?;
                write_u32(&mut c, ret, id)?;
                Ok(status::OK)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: C<'_>, _vp: i32, _vl: i32, np: i32, nl: i32, ret: i32| {
            // The VM id is ignored: a filter only ever resolves its own queues.
            code((|| {
                let name = read_str(&c, np, nl)?;
                let id = {
                    let state = c.data();
                    let q = state.host.queues.lock().unwrap_or_else(|e| e.into_inner());
                    q.resolve(&state.filter, name)
                }
                .ok_or(status::NOT_FOUND)?;
                write_u32(&mut c, ret, id)?;
                Ok(status::OK)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut c: C<'_>, id: i32, ret_ptr: i32, ret_len: i32| {
            let item = {
                let state = c.data();
                let mut q = state.host.queues.lock().unwrap_or_else(|e| e.into_inner());
                match q.queue(&state.filter, id as u32) {
                    None => return Ok(status::NOT_FOUND),
                    Some(queue) => queue.pop_front(),
                }
            };
            match item {
                None => Ok(status::EMPTY),
                Some(v) => copy_out(&mut c, &v, ret_ptr, ret_len),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |c: C<'_>, id: i32, vp: i32, vl: i32| {
            code((|| {
                let value = read(&c, vp, vl)?;
                let state = c.data();
                let mut q = state.host.queues.lock().unwrap_or_else(|e| e.into_inner());
                let queue = q.queue(&state.filter, id as u32).ok_or(status::NOT_FOUND)?;
                QueueTable::push(queue, value);
                Ok(status::OK)
            })())
        },
    )?;
    Ok(())
}
