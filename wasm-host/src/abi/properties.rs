//! Properties (`proxy_get_property`/`proxy_set_property`): the request, connection, plugin
//! and mesh facts Envoy's attribute names expose, plus whatever the filter set itself.

use http::Version;
use wasmtime::{Caller, Linker};

use super::{code, copy_out, headers, read, status};
use crate::state::HostState;
use crate::Direction;

/// The property's name with its segments joined by `.` (the ABI separates them with NUL).
fn key(path: &[u8]) -> String {
    let joined: Vec<u8> = path
        .iter()
        .map(|&b| if b == 0 { b'.' } else { b })
        .collect();
    String::from_utf8_lossy(&joined).into_owned()
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// The value of property `name` for the effective context; `None` if it has none.
pub(crate) fn lookup(state: &HostState, name: &str) -> Option<Vec<u8>> {
    let ctx = state.contexts.get(&state.active);
    if let Some(v) = ctx.and_then(|c| c.props.as_ref()?.get(name.as_bytes())) {
        return Some(v.clone());
    }
    let s = |v: &str| Some(v.as_bytes().to_vec());
    match name {
        "plugin_name" | "plugin_root_id" | "plugin_vm_id" => return s(&state.filter),
        _ => {}
    }
    if let Some(rest) = name.strip_prefix("request.") {
        let request = |key: &[u8]| headers::value(state, headers::REQUEST_HEADERS, key, None).ok();
        return match rest {
            "path" => request(b":path"),
            "url_path" => request(b":path").map(|mut p| {
                p.truncate(p.iter().position(|&b| b == b'?').unwrap_or(p.len()));
                p
            }),
            "host" => request(b":authority"),
            "method" => request(b":method"),
            "scheme" => request(b":scheme"),
            "protocol" => s(protocol(state.request()?.version())),
            "id" => request(b"x-request-id"),
            _ => None,
        };
    }
    if name == "response.code" {
        let status = headers::value(state, headers::RESPONSE_HEADERS, b":status", None).ok()?;
        let code: u16 = std::str::from_utf8(&status).ok()?.parse().ok()?;
        return Some(u64::from(code).to_le_bytes().to_vec());
    }
    let info = ctx?.info.as_ref()?;
    match name {
        "source.address" => info.source.map(|a| a.to_string().into_bytes()),
        "source.port" => info
            .source
            .map(|a| u64::from(a.port()).to_le_bytes().to_vec()),
        "destination.address" => info.destination.map(|a| a.to_string().into_bytes()),
        "destination.port" => info
            .destination
            .map(|a| u64::from(a.port()).to_le_bytes().to_vec()),
        "connection.mtls" => Some(vec![u8::from(info.mtls)]),
        "connection.uri_san_peer_certificate" | "source.principal" => {
            info.peer_identity.as_deref().and_then(s)
        }
        "route_name" | "xds.route_name" => info.route.as_deref().and_then(s),
        "cluster_name" | "xds.cluster_name" => info.upstream_service.as_deref().and_then(s),
        "node.id" | "mesh.service" => s(&info.service),
        "mesh.direction" => s(match info.direction {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }),
        _ => None,
    }
}

pub(super) fn define(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: Caller<'_, HostState>, ptr: i32, len: i32, ret_ptr: i32, ret_len: i32| {
            let path = match read(&c, ptr, len) {
                Ok(p) => p,
                Err(e) => return Ok(e),
            };
            match lookup(c.data(), &key(&path)) {
                Some(v) => copy_out(&mut c, &v, ret_ptr, ret_len),
                None => Ok(status::NOT_FOUND),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: Caller<'_, HostState>, ptr: i32, len: i32, vptr: i32, vlen: i32| {
            code((|| {
                let name = key(&read(&c, ptr, len)?);
                let value = read(&c, vptr, vlen)?;
                let ctx = c.data_mut().ctx().ok_or(status::NOT_FOUND)?;
                ctx.props
                    .get_or_insert_default()
                    .insert(name.into_bytes(), value);
                Ok(status::OK)
            })())
        },
    )?;
    Ok(())
}
