//! `proxy_http_call`: a filter's call to a mesh service, sent through the proxy's
//! `HttpCaller` on the tokio runtime; the result goes back to the context that made it.

use std::time::Duration;

use bytes::Bytes;
use wasmtime::{Caller, Linker};

use super::{code, deserialize_pairs, read, read_str, status, write_u32};
use crate::state::{Event, HostState};
use crate::{OutgoingCall, Pairs};

fn pairs(bytes: &[u8]) -> Result<Pairs, i32> {
    deserialize_pairs(bytes)
        .ok_or(status::BAD_ARGUMENT)?
        .into_iter()
        .map(|(k, v)| {
            String::from_utf8(k)
                .map(|k| (k.to_ascii_lowercase(), v))
                .map_err(|_| status::BAD_ARGUMENT)
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn http_call(
    mut c: Caller<'_, HostState>,
    up_ptr: i32,
    up_len: i32,
    h_ptr: i32,
    h_len: i32,
    b_ptr: i32,
    b_len: i32,
    t_ptr: i32,
    t_len: i32,
    timeout_ms: i32,
    ret_token: i32,
) -> i32 {
    code((|| {
        let upstream = read_str(&c, up_ptr, up_len)?;
        if upstream.is_empty() {
            return Err(status::BAD_ARGUMENT);
        }
        let headers = pairs(&read(&c, h_ptr, h_len)?)?;
        let body = Bytes::from(read(&c, b_ptr, b_len)?);
        let trailers = pairs(&read(&c, t_ptr, t_len)?)?;
        let state = c.data_mut();
        let runtime = state.host.runtime.clone().ok_or(status::INTERNAL_FAILURE)?;
        let timeout = match timeout_ms as u32 {
            0 => state.host.config.max_pause,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let token = state.next_token;
        state.next_token = state.next_token.wrapping_add(1).max(1);
        let call = OutgoingCall {
            filter: state.filter.clone(),
            upstream,
            headers,
            body,
            trailers,
            timeout,
        };
        let fut = state.host.caller.call(call);
        let ctx_id = state.active;
        let (plugin, slot, generation) = (state.plugin.clone(), state.slot, state.generation);
        // A request context's stream delivers the result itself (it has the request head
        // to lend the filter); the root context's calls are delivered from the task.
        let stream = match state.ctx() {
            Some(ctx) if ctx.info.is_some() => {
                ctx.pending_calls += 1;
                let events = ctx.sender();
                events.call_started();
                Some(events.clone())
            }
            _ => None,
        };
        // The context's stream adopts the mailbox `sender` may have made (after this call).
        state.made_mailboxes |= stream.is_some();
        runtime.spawn(async move {
            let result = match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r,
                Err(_) => Err(format!("timed out after {timeout:?}")),
            };
            match stream {
                Some(tx) => {
                    tx.send(Event::CallDone(token, result));
                }
                None => {
                    if let Some(plugin) = plugin.upgrade() {
                        plugin.deliver_root_call(slot, generation, ctx_id, token, result);
                    }
                }
            }
        });
        write_u32(&mut c, ret_token, token)?;
        Ok(status::OK)
    })())
}

pub(super) fn define(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_http_call", http_call)?;
    Ok(())
}
