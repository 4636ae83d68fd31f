//! From the ABI's exported entry points to the filter's objects: context ids to the root
//! [`Filter`] of each plugin and the [`HttpFilter`] of each request. The `filter!` macro
//! exports thin `extern "C"` functions that call these, monomorphised for the filter.
//!
//! Objects are taken out of the table while their hook runs, so a hook that calls the host
//! never meets a borrowed table, and a re-entrant callback for the same context is ignored
//! (it continues) instead of aliasing the filter.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;

use crate::abi::{buffer, map, stream as phase};
use crate::filter::{Action, Filter, HttpFilter};
use crate::hostcalls;
use crate::log;
use crate::stream::{CallResponse, Request, Response, Stream, Token};

/// The contexts of one instance.
struct Dispatcher<F: Filter> {
    /// Root contexts: `None` until configured, or while a hook runs.
    roots: HashMap<u32, Option<F>>,
    /// Request contexts; absent while a hook runs.
    streams: HashMap<u32, Slot<F>>,
}

struct Slot<F: Filter> {
    filter: F::Http,
    stream: Stream,
    done: bool,
}

thread_local! {
    /// The instance's dispatcher (a WASM instance is one thread); type-erased because a
    /// `thread_local!` cannot be generic.
    static DISPATCH: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

fn with<F: Filter, R>(f: impl FnOnce(&mut Dispatcher<F>) -> R) -> R {
    DISPATCH.with(|cell| {
        let mut slot = cell.borrow_mut();
        if !slot.as_ref().is_some_and(|d| d.is::<Dispatcher<F>>()) {
            *slot = Some(Box::new(Dispatcher::<F> {
                roots: HashMap::new(),
                streams: HashMap::new(),
            }));
        }
        match slot
            .as_mut()
            .and_then(|d| d.downcast_mut::<Dispatcher<F>>())
        {
            Some(dispatcher) => f(dispatcher),
            // Just made above with this type.
            None => unreachable!("dispatcher of another type"),
        }
    })
}

/// Forgets every context (the mock host starts each harness afresh).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn reset() {
    DISPATCH.with(|cell| *cell.borrow_mut() = None);
}

fn action(action: Action) -> u32 {
    match action {
        Action::Continue => 0,
        Action::Pause => 1,
    }
}

/// `proxy_on_context_create`: a root context when `parent` is 0, else a request of `parent`.
pub fn on_context_create<F: Filter>(id: u32, parent: u32) {
    if parent == 0 {
        with::<F, _>(|d| d.roots.insert(id, None));
        return;
    }
    let Some(mut root) = with::<F, _>(|d| d.roots.get_mut(&parent).and_then(Option::take)) else {
        // An unconfigured (refused) or unknown root: the request runs without this filter.
        return;
    };
    let stream = Stream::new(id);
    let filter = root.http(&stream);
    with::<F, _>(|d| {
        d.roots.insert(parent, Some(root));
        d.streams.insert(
            id,
            Slot {
                filter,
                stream,
                done: false,
            },
        );
    });
}

/// `proxy_on_vm_start`.
pub fn on_vm_start<F: Filter>(_root: u32, _vm_config_size: usize) -> bool {
    true
}

/// `proxy_on_configure`: parses the plugin configuration (JSON) into `F::Config` and makes
/// the filter; false (with a log line saying why) if it does not parse or is refused.
pub fn on_configure<F: Filter>(root: u32, config_size: usize) -> bool {
    let bytes = match hostcalls::buffer(buffer::PLUGIN_CONFIGURATION, 0, config_size) {
        Ok(bytes) => bytes,
        Err(e) => {
            log::error(&format!("filter config could not be read: {e}"));
            return false;
        }
    };
    let config = match parse_config::<F::Config>(&bytes) {
        Ok(config) => config,
        Err(why) => {
            log::error(&format!("filter config refused: {why}"));
            return false;
        }
    };
    match F::configure(config) {
        Ok(filter) => {
            with::<F, _>(|d| d.roots.insert(root, Some(filter)));
            true
        }
        Err(why) => {
            log::error(&format!("filter config refused: {why}"));
            false
        }
    }
}

/// An empty configuration is `{}` (a struct whose fields all have defaults), else `null`.
fn parse_config<C: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<C, serde_json::Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return serde_json::from_slice(b"{}")
            .or_else(|e| serde_json::from_slice(b"null").map_err(|_| e));
    }
    serde_json::from_slice(bytes)
}

/// Runs one phase hook of request `id`; requests this instance does not know continue.
fn phase<F: Filter>(
    id: u32,
    kind: u32,
    hook: impl FnOnce(&mut F::Http, &mut Stream) -> Action,
) -> u32 {
    let Some(mut slot) = with::<F, _>(|d| d.streams.remove(&id)) else {
        return action(Action::Continue);
    };
    slot.stream.responded = false;
    let mut verdict = hook(&mut slot.filter, &mut slot.stream);
    if slot.stream.responded {
        verdict = Action::Pause;
    }
    slot.stream.paused = match verdict {
        Action::Pause => Some(kind),
        Action::Continue => None,
    };
    with::<F, _>(|d| d.streams.insert(id, slot));
    action(verdict)
}

/// `proxy_on_request_headers`.
pub fn on_request_headers<F: Filter>(id: u32, _headers: usize, end_of_stream: bool) -> u32 {
    phase::<F>(id, phase::REQUEST, |f, stream| {
        f.on_request_headers(&mut Request {
            stream,
            body_size: 0,
            end_of_stream,
        })
    })
}

/// `proxy_on_request_body`.
pub fn on_request_body<F: Filter>(id: u32, body_size: usize, end_of_stream: bool) -> u32 {
    phase::<F>(id, phase::REQUEST, |f, stream| {
        f.on_request_body(&mut Request {
            stream,
            body_size,
            end_of_stream,
        })
    })
}

/// `proxy_on_request_trailers`.
pub fn on_request_trailers<F: Filter>(id: u32, _trailers: usize) -> u32 {
    phase::<F>(id, phase::REQUEST, |f, stream| {
        f.on_request_trailers(&mut Request {
            stream,
            body_size: 0,
            end_of_stream: true,
        })
    })
}

/// `proxy_on_response_headers`.
pub fn on_response_headers<F: Filter>(id: u32, _headers: usize, end_of_stream: bool) -> u32 {
    phase::<F>(id, phase::RESPONSE, |f, stream| {
        f.on_response_headers(&mut Response {
            stream,
            body_size: 0,
            end_of_stream,
        })
    })
}

/// `proxy_on_response_body`.
pub fn on_response_body<F: Filter>(id: u32, body_size: usize, end_of_stream: bool) -> u32 {
    phase::<F>(id, phase::RESPONSE, |f, stream| {
        f.on_response_body(&mut Response {
            stream,
            body_size,
            end_of_stream,
        })
    })
}

/// `proxy_on_response_trailers`.
pub fn on_response_trailers<F: Filter>(id: u32, _trailers: usize) -> u32 {
    phase::<F>(id, phase::RESPONSE, |f, stream| {
        f.on_response_trailers(&mut Response {
            stream,
            body_size: 0,
            end_of_stream: true,
        })
    })
}

/// `proxy_on_http_call_response`: finds the request that made call `token` (the host may
/// pass the root's id), makes it the effective context, and runs its hook; `Continue`
/// resumes the paused phase.
pub fn on_http_call_response<F: Filter>(
    context: u32,
    token: u32,
    headers: usize,
    body_size: usize,
    _trailers: usize,
) {
    let Some((id, mut slot)) = with::<F, _>(|d| {
        let id = d
            .streams
            .iter()
            .find(|(_, slot)| slot.stream.calls.contains(&token))
            .map(|(id, _)| *id)
            .or_else(|| d.streams.contains_key(&context).then_some(context))?;
        d.streams.remove(&id).map(|slot| (id, slot))
    }) else {
        return;
    };
    slot.stream.calls.retain(|t| *t != token);
    let _ = hostcalls::set_effective_context(id);
    let headers = if headers == 0 {
        Vec::new()
    } else {
        hostcalls::map(map::HTTP_CALL_RESPONSE_HEADERS).unwrap_or_default()
    };
    let body = if body_size == 0 {
        Vec::new()
    } else {
        hostcalls::buffer(buffer::HTTP_CALL_RESPONSE_BODY, 0, body_size).unwrap_or_default()
    };
    let status = headers
        .iter()
        .find(|(name, _)| name == ":status")
        .and_then(|(_, value)| value.parse().ok());
    let response = CallResponse {
        token: Token(token),
        status,
        headers,
        body,
    };
    slot.stream.responded = false;
    let verdict = slot
        .filter
        .on_http_call_response(&mut slot.stream, &response);
    if !slot.stream.responded && verdict == Action::Continue {
        let _ = slot.stream.resume();
    }
    with::<F, _>(|d| d.streams.insert(id, slot));
}

/// `proxy_on_tick`.
pub fn on_tick<F: Filter>(root: u32) {
    let Some(mut filter) = with::<F, _>(|d| d.roots.get_mut(&root).and_then(Option::take)) else {
        return;
    };
    filter.on_tick();
    with::<F, _>(|d| d.roots.insert(root, Some(filter)));
}

/// Runs `on_done` once for request `id` (at `proxy_on_log` or `proxy_on_done`, whichever
/// the host calls first, or at `proxy_on_delete`).
fn finish<F: Filter>(id: u32, remove: bool) {
    let Some(mut slot) = with::<F, _>(|d| d.streams.remove(&id)) else {
        return;
    };
    if !slot.done {
        slot.done = true;
        slot.filter.on_done(&mut slot.stream);
    }
    if !remove {
        with::<F, _>(|d| d.streams.insert(id, slot));
    }
}

/// `proxy_on_log`.
pub fn on_log<F: Filter>(id: u32) {
    finish::<F>(id, false);
}

/// `proxy_on_done`: always done at once.
pub fn on_done<F: Filter>(id: u32) -> bool {
    finish::<F>(id, false);
    true
}

/// `proxy_on_delete`.
pub fn on_delete<F: Filter>(id: u32) {
    finish::<F>(id, true);
    with::<F, _>(|d| d.roots.remove(&id));
}
