//! Header maps: the ABI's pair serialization, request/response heads with pseudo-headers,
//! trailers and `http_call` response maps.

use http::header::{HeaderName, HeaderValue, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, StatusCode, Uri, Version};
use wasmtime::{Caller, Linker};

use super::{code, copy_out, memory_and_state, read, slice, status};
use crate::header_cache::HeaderCache;
use crate::state::{HostState, ReqView, RespView, Scope};

/// Map types of the ABI.
pub(crate) const REQUEST_HEADERS: u32 = 0;
pub(crate) const REQUEST_TRAILERS: u32 = 1;
pub(crate) const RESPONSE_HEADERS: u32 = 2;
pub(crate) const RESPONSE_TRAILERS: u32 = 3;
const CALL_RESPONSE_HEADERS: u32 = 6;
const CALL_RESPONSE_TRAILERS: u32 = 7;

type Pair = (Vec<u8>, Vec<u8>);

/// The ABI's map encoding: count, then (key length, value length) for each pair, then each
/// key and value NUL-terminated; all integers u32 little-endian. `pairs` is called twice
/// (to size the buffer, then to fill it), so the result is one exact allocation.
pub(crate) fn serialize_pairs<'a, I>(pairs: impl Fn() -> I) -> Vec<u8>
where
    I: Iterator<Item = (&'a [u8], &'a [u8])>,
{
    let (count, data) = pairs().fold((0, 0), |(n, size), (k, v)| {
        (n + 1, size + k.len() + v.len() + 2)
    });
    let mut out = Vec::with_capacity(4 + count * 8 + data);
    out.extend_from_slice(&(count as u32).to_le_bytes());
    for (k, v) in pairs() {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs() {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// The pairs of a buffer this host serialized (so well-formed; a short one ends early).
fn pairs_in(bytes: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let u32_at = move |at: usize| {
        bytes
            .get(at..at + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = u32_at(0);
    let mut data = 4 + count * 8;
    (0..count).map_while(move |i| {
        let (klen, vlen) = (u32_at(4 + i * 8), u32_at(8 + i * 8));
        let key = bytes.get(data..data + klen)?;
        let value = bytes.get(data + klen + 1..data + klen + 1 + vlen)?;
        data += klen + vlen + 2;
        Some((key, value))
    })
}

/// A head as the phases after its own see it: its pairs (pseudo-headers first) serialized
/// once, as `proxy_get_header_map_pairs` returns them. One buffer of its own: keeping the
/// head's `HeaderMap` instead would keep its values, which are slices of the connection's
/// read buffer, and the connection would then allocate a new buffer for the next request.
pub(crate) struct Frozen {
    pairs: Vec<u8>,
    version: Version,
}

impl Frozen {
    pub(crate) fn request(r: &ReqView) -> Frozen {
        Frozen {
            pairs: serialize_pairs(|| request_pairs(r)),
            version: r.version,
        }
    }

    pub(crate) fn response(r: &RespView) -> Frozen {
        Frozen {
            pairs: serialize_pairs(|| response_pairs(r)),
            version: Version::default(),
        }
    }

    /// The values of `key` (any case) joined with `,`.
    fn value(&self, key: &[u8]) -> Option<Vec<u8>> {
        joined(
            pairs_in(&self.pairs)
                .filter(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v),
        )
    }
}

/// A request or response head as a filter may read it now.
pub(crate) enum Visible<'a, V> {
    /// Lent by the caller for this phase.
    Live(&'a V),
    /// A later phase: what the head's own phase left.
    Frozen(&'a Frozen),
}

impl Visible<'_, ReqView> {
    pub(crate) fn version(&self) -> Version {
        match self {
            Visible::Live(r) => r.version,
            Visible::Frozen(f) => f.version,
        }
    }
}

/// Parses the ABI's map encoding; `None` if it is malformed (never panics on bad input).
pub(crate) fn deserialize_pairs(bytes: &[u8]) -> Option<Vec<Pair>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let u32_at = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = u32_at(0)?;
    // Each pair takes at least 10 bytes, so a count beyond that is a lie.
    if count > bytes.len() / 8 {
        return None;
    }
    let mut data = 4 + count * 8;
    let mut pairs = Vec::with_capacity(count);
    for i in 0..count {
        let klen = u32_at(4 + i * 8)?;
        let vlen = u32_at(8 + i * 8)?;
        let key = bytes.get(data..data.checked_add(klen)?)?.to_vec();
        data = data.checked_add(klen + 1)?;
        let value = bytes.get(data..data.checked_add(vlen)?)?.to_vec();
        data = data.checked_add(vlen + 1)?;
        pairs.push((key, value));
    }
    Some(pairs)
}

fn authority(r: &ReqView) -> Option<&[u8]> {
    r.uri
        .authority()
        .map(|a| a.as_str().as_bytes())
        .or_else(|| r.headers.get(HOST).map(HeaderValue::as_bytes))
}

fn path(r: &ReqView) -> &[u8] {
    r.uri
        .path_and_query()
        .map(|p| p.as_str().as_bytes())
        .unwrap_or(b"/")
}

fn header_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes()))
}

/// A request head's pairs: pseudo-headers, then headers.
fn request_pairs(r: &ReqView) -> impl Iterator<Item = (&[u8], &[u8])> {
    let pseudo: [Option<(&[u8], &[u8])>; 4] = [
        Some((b":method", r.method.as_str().as_bytes())),
        Some((b":path", path(r))),
        authority(r).map(|a| (&b":authority"[..], a)),
        Some((b":scheme", r.uri.scheme_str().unwrap_or("http").as_bytes())),
    ];
    pseudo.into_iter().flatten().chain(header_pairs(&r.headers))
}

fn response_pairs(r: &RespView) -> impl Iterator<Item = (&[u8], &[u8])> {
    std::iter::once((&b":status"[..], r.status.as_str().as_bytes())).chain(header_pairs(&r.headers))
}

/// The serialized map `map_type` as the filter sees it now; `None` if it has none now.
fn serialized(state: &HostState, map_type: u32) -> Option<Vec<u8>> {
    match map_type {
        REQUEST_HEADERS => Some(match state.request()? {
            Visible::Live(r) => serialize_pairs(|| request_pairs(r)),
            Visible::Frozen(f) => f.pairs.clone(),
        }),
        RESPONSE_HEADERS => Some(match state.response()? {
            Visible::Live(r) => serialize_pairs(|| response_pairs(r)),
            Visible::Frozen(f) => f.pairs.clone(),
        }),
        REQUEST_TRAILERS | RESPONSE_TRAILERS => match &state.scope.trailers {
            Some((t, map)) if *t == map_type => Some(serialize_pairs(|| header_pairs(map))),
            _ => None,
        },
        CALL_RESPONSE_HEADERS | CALL_RESPONSE_TRAILERS => {
            let resp = state.scope.call_response.as_ref()?;
            let pairs = if map_type == CALL_RESPONSE_HEADERS {
                &resp.headers
            } else {
                &resp.trailers
            };
            Some(serialize_pairs(|| {
                pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_slice()))
            }))
        }
        _ => None,
    }
}

fn joined<'a>(values: impl Iterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for v in values {
        match &mut out {
            None => out = Some(v.to_vec()),
            Some(o) => {
                o.push(b',');
                o.extend_from_slice(v);
            }
        }
    }
    out
}

/// Pseudo-header `key` of a head's pairs (they come first, and header names cannot start
/// with `:`).
fn pseudo<'a>(
    mut pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    key: &[u8],
) -> Option<Vec<u8>> {
    pairs.find(|(k, _)| *k == key).map(|(_, v)| v.to_vec())
}

/// The values of `key` in `map`; `name`: the key as a header name, if the caller has it
/// (from the header cache: no parsing).
fn live_values(
    map: &HeaderMap,
    key: &[u8],
    name: Option<&HeaderName>,
) -> Result<Option<Vec<u8>>, i32> {
    let values = match name {
        Some(name) => map.get_all(name),
        None => map.get_all(lookup(key)?),
    };
    Ok(joined(values.iter().map(HeaderValue::as_bytes)))
}

/// One value of map `map_type` (repeated headers joined with `,`, as Envoy does); `key`
/// lower-cased if it is a pseudo-header; `name`: as in [`live_values`].
pub(crate) fn value(
    state: &HostState,
    map_type: u32,
    key: &[u8],
    name: Option<&HeaderName>,
) -> Result<Vec<u8>, i32> {
    let found = match map_type {
        REQUEST_HEADERS => match state.request().ok_or(status::NOT_FOUND)? {
            Visible::Frozen(f) => f.value(key),
            Visible::Live(r) if key.starts_with(b":") => pseudo(request_pairs(r), key),
            Visible::Live(r) => live_values(&r.headers, key, name)?,
        },
        RESPONSE_HEADERS => match state.response().ok_or(status::NOT_FOUND)? {
            Visible::Frozen(f) => f.value(key),
            Visible::Live(r) if key.starts_with(b":") => pseudo(response_pairs(r), key),
            Visible::Live(r) => live_values(&r.headers, key, name)?,
        },
        REQUEST_TRAILERS | RESPONSE_TRAILERS => match &state.scope.trailers {
            Some((t, map)) if *t == map_type => live_values(map, key, name)?,
            _ => return Err(status::NOT_FOUND),
        },
        CALL_RESPONSE_HEADERS | CALL_RESPONSE_TRAILERS => {
            let resp = state
                .scope
                .call_response
                .as_ref()
                .ok_or(status::NOT_FOUND)?;
            let pairs = if map_type == CALL_RESPONSE_HEADERS {
                &resp.headers
            } else {
                &resp.trailers
            };
            pairs
                .iter()
                .find(|(k, _)| k.as_bytes().eq_ignore_ascii_case(key))
                .map(|(_, v)| v.clone())
        }
        _ => return Err(status::BAD_ARGUMENT),
    };
    found.ok_or(status::NOT_FOUND)
}

/// A header name to look up by, in place (the map's lookup lower-cases it, and a name
/// no header can have finds nothing).
fn lookup(key: &[u8]) -> Result<&str, i32> {
    std::str::from_utf8(key).map_err(|_| status::BAD_ARGUMENT)
}

/// A header name from the guest (`from_bytes` lower-cases it).
fn name(key: &[u8]) -> Result<HeaderName, i32> {
    HeaderName::from_bytes(key).map_err(|_| status::BAD_ARGUMENT)
}

fn header_value(v: &[u8]) -> Result<HeaderValue, i32> {
    HeaderValue::from_bytes(v).map_err(|_| status::BAD_ARGUMENT)
}

/// A map the filter may change in the current call.
enum Target<'a> {
    Req(&'a mut ReqView),
    Resp(&'a mut RespView),
    Map(&'a mut HeaderMap),
}

fn target(state: &mut HostState, map_type: u32) -> Result<Target<'_>, i32> {
    scope_target(&mut state.scope, map_type)
}

fn scope_target(scope: &mut Scope, map_type: u32) -> Result<Target<'_>, i32> {
    match map_type {
        REQUEST_HEADERS => scope.req.get_mut().map(Target::Req),
        RESPONSE_HEADERS => scope.resp.get_mut().map(Target::Resp),
        REQUEST_TRAILERS | RESPONSE_TRAILERS => match &mut scope.trailers {
            Some((t, map)) if *t == map_type => Some(Target::Map(map)),
            _ => None,
        },
        CALL_RESPONSE_HEADERS | CALL_RESPONSE_TRAILERS => None,
        _ => return Err(status::BAD_ARGUMENT),
    }
    .ok_or(status::NOT_FOUND)
}

/// Runs `f` on map `map_type` with the instance's header cache.
fn with_target(
    state: &mut HostState,
    map_type: u32,
    f: impl FnOnce(&mut Target<'_>, &mut HeaderCache) -> Result<(), i32>,
) -> Result<(), i32> {
    let HostState {
        scope,
        header_cache,
        ..
    } = state;
    scope_target(scope, map_type).and_then(|mut t| f(&mut t, header_cache))
}

fn rebuild(uri: &Uri, f: impl FnOnce(&mut http::uri::Parts)) -> Result<Uri, i32> {
    let mut parts = uri.clone().into_parts();
    f(&mut parts);
    Uri::from_parts(parts).map_err(|_| status::BAD_ARGUMENT)
}

fn set_request_pseudo(r: &mut ReqView, key: &[u8], v: &[u8]) -> Result<(), i32> {
    match key {
        b":method" => r.method = Method::from_bytes(v).map_err(|_| status::BAD_ARGUMENT)?,
        b":path" => {
            let pq = PathAndQuery::try_from(v).map_err(|_| status::BAD_ARGUMENT)?;
            if pq.as_str().is_empty() {
                return Err(status::BAD_ARGUMENT);
            }
            r.uri = rebuild(&r.uri, |p| p.path_and_query = Some(pq))?;
        }
        b":authority" => {
            let a = Authority::try_from(v).map_err(|_| status::BAD_ARGUMENT)?;
            let host = header_value(v)?;
            let absolute = r.uri.scheme().is_some();
            if absolute {
                r.uri = rebuild(&r.uri, |p| p.authority = Some(a))?;
            }
            // Origin-form requests (HTTP/1) carry the authority in `host`.
            if !absolute || r.headers.contains_key(HOST) {
                r.headers.insert(HOST, host);
            }
        }
        b":scheme" => {
            let s = Scheme::try_from(v).map_err(|_| status::BAD_ARGUMENT)?;
            // Without an authority the URI cannot carry a scheme; the connection decides it.
            if r.uri.authority().is_some() {
                r.uri = rebuild(&r.uri, |p| p.scheme = Some(s))?;
            }
        }
        _ => return Err(status::BAD_ARGUMENT),
    }
    Ok(())
}

fn set_status(r: &mut RespView, key: &[u8], v: &[u8]) -> Result<(), i32> {
    if key != b":status" {
        return Err(status::BAD_ARGUMENT);
    }
    r.status = StatusCode::from_bytes(v).map_err(|_| status::BAD_ARGUMENT)?;
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Replace,
    Add,
}

impl Target<'_> {
    fn headers(&mut self) -> &mut HeaderMap {
        match self {
            Target::Req(r) => &mut r.headers,
            Target::Resp(r) => &mut r.headers,
            Target::Map(m) => m,
        }
    }

    /// Sets or adds one header, its name and value from (and into) `cache`.
    fn put(&mut self, cache: &mut HeaderCache, key: &[u8], v: &[u8], op: Op) -> Result<(), i32> {
        if key.starts_with(b":") {
            let key = key.to_ascii_lowercase();
            // A pseudo-header has one value: adding one replaces it.
            return match self {
                Target::Req(r) => set_request_pseudo(r, &key, v),
                Target::Resp(r) => set_status(r, &key, v),
                Target::Map(_) => Err(status::BAD_ARGUMENT),
            };
        }
        let n = cache.name(key).ok_or(status::BAD_ARGUMENT)?;
        let v = cache.value(v).ok_or(status::BAD_ARGUMENT)?;
        match op {
            Op::Replace => {
                self.headers().insert(n, v);
            }
            Op::Add => {
                self.headers().append(n, v);
            }
        }
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> Result<(), i32> {
        if key.starts_with(b":") {
            return Err(status::BAD_ARGUMENT);
        }
        let n = name(key)?;
        self.headers().remove(n);
        Ok(())
    }

    fn replace_all(&mut self, cache: &mut HeaderCache, pairs: &[Pair]) -> Result<(), i32> {
        // Validate everything first so a bad pair leaves the map as it was.
        for (k, v) in pairs {
            if !k.starts_with(b":") {
                name(k)?;
                header_value(v)?;
            }
        }
        let saved = self.headers().clone();
        self.headers().clear();
        for (k, v) in pairs {
            if let Err(e) = self.put(cache, k, v, Op::Add) {
                *self.headers() = saved;
                return Err(e);
            }
        }
        Ok(())
    }
}

type C<'a> = Caller<'a, HostState>;

fn get_pairs(mut c: C<'_>, map_type: i32, ret_ptr: i32, ret_len: i32) -> wasmtime::Result<i32> {
    // Envoy answers an absent map with an empty one; the Rust SDK treats anything but OK
    // from this call as fatal.
    let bytes =
        serialized(c.data(), map_type as u32).unwrap_or_else(|| 0u32.to_le_bytes().to_vec());
    copy_out(&mut c, &bytes, ret_ptr, ret_len)
}

fn set_pairs(mut c: C<'_>, map_type: i32, ptr: i32, len: i32) -> i32 {
    code((|| {
        let bytes = read(&c, ptr, len)?;
        let pairs = deserialize_pairs(&bytes).ok_or(status::BAD_ARGUMENT)?;
        with_target(c.data_mut(), map_type as u32, |t, cache| {
            t.replace_all(cache, &pairs)
        })?;
        Ok(status::OK)
    })())
}

fn get_value(
    mut c: C<'_>,
    map_type: i32,
    kptr: i32,
    klen: i32,
    ret_ptr: i32,
    ret_len: i32,
) -> wasmtime::Result<i32> {
    let found = memory_and_state(&mut c).and_then(|(mem, state)| {
        let key = slice(mem, kptr, klen)?;
        if key.starts_with(b":") {
            value(state, map_type as u32, &key.to_ascii_lowercase(), None)
        } else {
            // Filters ask for the same few names again and again: the cache has them parsed.
            let name = state.header_cache.name(key);
            value(state, map_type as u32, key, name.as_ref())
        }
    });
    match found {
        Ok(v) => copy_out(&mut c, &v, ret_ptr, ret_len),
        Err(e) => Ok(e),
    }
}

fn put(mut c: C<'_>, map_type: i32, kptr: i32, klen: i32, vptr: i32, vlen: i32, op: Op) -> i32 {
    code((|| {
        let (mem, state) = memory_and_state(&mut c)?;
        let (k, v) = (slice(mem, kptr, klen)?, slice(mem, vptr, vlen)?);
        with_target(state, map_type as u32, |t, cache| t.put(cache, k, v, op))?;
        Ok(status::OK)
    })())
}

pub(super) fn define(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_get_header_map_pairs", get_pairs)?;
    linker.func_wrap("env", "proxy_set_header_map_pairs", set_pairs)?;
    linker.func_wrap("env", "proxy_get_header_map_value", get_value)?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |c: C<'_>, t: i32, kp: i32, kl: i32, vp: i32, vl: i32| {
            put(c, t, kp, kl, vp, vl, Op::Replace)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |c: C<'_>, t: i32, kp: i32, kl: i32, vp: i32, vl: i32| put(c, t, kp, kl, vp, vl, Op::Add),
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: C<'_>, t: i32, kp: i32, kl: i32| {
            code((|| {
                let (mem, state) = memory_and_state(&mut c)?;
                target(state, t as u32)?.remove(slice(mem, kp, kl)?)?;
                Ok(status::OK)
            })())
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_and_garbage_is_refused() {
        let pairs: Vec<(&[u8], &[u8])> = vec![(b":path", b"/a"), (b"x", b"")];
        let bytes = serialize_pairs(|| pairs.iter().copied());
        let back = deserialize_pairs(&bytes).expect("valid");
        assert_eq!(
            back,
            vec![
                (b":path".to_vec(), b"/a".to_vec()),
                (b"x".to_vec(), Vec::new())
            ]
        );
        assert!(deserialize_pairs(&[255, 255, 255, 255]).is_none());
        assert!(deserialize_pairs(&bytes[..bytes.len() - 3]).is_none());
    }
}
