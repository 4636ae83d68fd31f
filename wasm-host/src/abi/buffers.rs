//! Buffers: request/response bodies (buffered by the proxy), the `http_call` response body,
//! and the plugin/VM configuration.

use bytes::BytesMut;
use wasmtime::{Caller, Linker};

use super::{code, copy_out, read, status, write_u32};
use crate::state::HostState;

const REQUEST_BODY: u32 = 0;
const RESPONSE_BODY: u32 = 1;
const CALL_RESPONSE_BODY: u32 = 4;
const VM_CONFIGURATION: u32 = 6;
const PLUGIN_CONFIGURATION: u32 = 7;

/// The buffer `kind` as the filter sees it now.
fn buffer(state: &HostState, kind: u32) -> Option<&[u8]> {
    match kind {
        REQUEST_BODY | RESPONSE_BODY => match &state.scope.body {
            Some((k, body)) if *k == kind => Some(&body[..]),
            _ => None,
        },
        CALL_RESPONSE_BODY => state.scope.call_response.as_ref().map(|r| &r.body[..]),
        VM_CONFIGURATION => Some(&[]),
        PLUGIN_CONFIGURATION => Some(&state.plugin_config[..]),
        _ => None,
    }
}

fn get(
    mut c: Caller<'_, HostState>,
    kind: i32,
    start: i32,
    max: i32,
    ret_ptr: i32,
    ret_len: i32,
) -> wasmtime::Result<i32> {
    let Some(data) = buffer(c.data(), kind as u32) else {
        return Ok(status::NOT_FOUND);
    };
    let start = (start as u32 as usize).min(data.len());
    let end = start.saturating_add(max as u32 as usize).min(data.len());
    if start == end {
        // Nothing to hand over: null and zero, which the SDK reads as "no bytes".
        let zeroed = write_u32(&mut c, ret_ptr, 0).and_then(|()| write_u32(&mut c, ret_len, 0));
        return Ok(code(zeroed.map(|()| status::OK)));
    }
    let slice = data[start..end].to_vec();
    copy_out(&mut c, &slice, ret_ptr, ret_len)
}

/// Envoy's semantics: bytes `[start, start + size)` (clamped to the buffer) are replaced by
/// the data, so `(0, len)` replaces everything, `(0, 0)` prepends and `(len, 0)` appends.
fn splice(body: &mut BytesMut, start: usize, size: usize, data: &[u8]) {
    let s = start.min(body.len());
    let e = s.saturating_add(size).min(body.len());
    let mut out = BytesMut::with_capacity(body.len() - (e - s) + data.len());
    out.extend_from_slice(&body[..s]);
    out.extend_from_slice(data);
    out.extend_from_slice(&body[e..]);
    *body = out;
}

fn set(mut c: Caller<'_, HostState>, kind: i32, start: i32, size: i32, ptr: i32, len: i32) -> i32 {
    code((|| {
        let data = read(&c, ptr, len)?;
        match &mut c.data_mut().scope.body {
            Some((k, body)) if *k == kind as u32 => {
                splice(body, start as u32 as usize, size as u32 as usize, &data);
                Ok(status::OK)
            }
            _ => Err(status::NOT_FOUND),
        }
    })())
}

pub(super) fn define(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_get_buffer_bytes", get)?;
    linker.func_wrap("env", "proxy_set_buffer_bytes", set)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_replaces_prepends_and_appends() {
        let mut b = BytesMut::from(&b"hello"[..]);
        splice(&mut b, 0, usize::MAX, b"bye");
        assert_eq!(&b[..], b"bye");
        splice(&mut b, 0, 0, b">");
        assert_eq!(&b[..], b">bye");
        splice(&mut b, 99, 0, b"<");
        assert_eq!(&b[..], b">bye<");
        splice(&mut b, 1, 3, b"hi");
        assert_eq!(&b[..], b">hi<");
    }
}
