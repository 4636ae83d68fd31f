//! From the ABI's exported entry points to the filter's objects: context ids to the root
//! [`Filter`] of each plugin and the [`HttpFilter`] of each request. The `filter!` macro
//! exports thin `extern "C"` functions that call these, monomorphised for the filter.
//!
//! A request's phase hooks run in place, with the table borrowed: the host calls nothing in
//! the guest during a host call but its allocator, which does not use the table, and a
//! callback that re-entered anyway would find the table in use and be ignored (it
//! continues) instead of aliasing the filter. The rarer callbacks (`on_done`, call
//! answers, ticks) take their object out of the table while their hook runs.

use std::any::{Any, TypeId};
use std::cell::{Cell, RefCell};

use crate::abi::{buffer, map, stream as phase, unused_hooks as hook};
use crate::contexts::Contexts;
use crate::filter::{Action, Filter, HttpFilter};
use crate::hostcalls;
use crate::log;
use crate::stream::{CallResponse, Request, Response, Stream, Token};

/// The contexts of one instance.
struct Dispatcher<F: Filter> {
    /// Root contexts (usually one): `None` until configured, or while a hook runs.
    roots: Vec<(u32, Option<F>)>,
    /// Request contexts: `None` while a hook runs.
    streams: Contexts<Slot<F>>,
}

impl<F: Filter> Dispatcher<F> {
    fn root(&mut self, id: u32) -> Option<&mut Option<F>> {
        self.roots
            .iter_mut()
            .find(|(r, _)| *r == id)
            .map(|(_, f)| f)
    }

    fn set_root(&mut self, id: u32, filter: Option<F>) {
        match self.root(id) {
            Some(entry) => *entry = filter,
            None => self.roots.push((id, filter)),
        }
    }

    fn remove_root(&mut self, id: u32) {
        self.roots.retain(|(r, _)| *r != id);
    }

    /// Makes request `id`'s filter from root `parent`'s and puts it in the table. `None`
    /// for an unconfigured (refused) or unknown root: the request runs without this filter.
    fn create(&mut self, id: u32, parent: u32) -> Option<&mut Option<Slot<F>>> {
        let slot = make_slot(self.root(parent)?.as_mut()?, id);
        Some(self.streams.insert(id, Some(slot)))
    }

    /// Request `id`'s entry; a request not seen before (its `proxy_on_context_create`
    /// skipped) gets its filter from the only root, the one it belongs to.
    fn stream(&mut self, id: u32) -> Option<&mut Option<Slot<F>>> {
        let Dispatcher { roots, streams } = self;
        streams.get_or_insert_with(id, || {
            let [(_, Some(root))] = roots.as_mut_slice() else {
                return None; // no root, several, or not configured (refused)
            };
            Some(Some(make_slot(root, id)))
        })
    }
}

/// Request `id`'s filter, made by its root's.
fn make_slot<F: Filter>(root: &mut F, id: u32) -> Slot<F> {
    let stream = Stream::new(id);
    let filter = root.http(&stream);
    Slot {
        filter,
        stream,
        done: false,
    }
}

struct Slot<F: Filter> {
    filter: F::Http,
    stream: Stream,
    done: bool,
}

thread_local! {
    /// The instance's dispatcher (a WASM instance is one thread), type-erased because a
    /// `thread_local!` cannot be generic, with its type's id beside it: comparing that is a
    /// constant compare, where `downcast_mut` makes a virtual `type_id` call on every access
    /// (a visible part of a header filter's guest time).
    static DISPATCH: RefCell<Option<(TypeId, Box<dyn Any>)>> = const { RefCell::new(None) };
}

/// Runs `f` on the dispatcher.
fn with<F: Filter, R>(f: impl FnOnce(&mut Dispatcher<F>) -> R) -> R {
    try_with::<F, R>(f).expect("the dispatcher is not in use outside a phase hook")
}

/// Runs `f` on the dispatcher unless a phase hook is running (a callback that re-entered
/// from a host call, which no host does): `None` then.
#[allow(unsafe_code)]
fn try_with<F: Filter, R>(f: impl FnOnce(&mut Dispatcher<F>) -> R) -> Option<R> {
    DISPATCH.with(|cell| {
        let mut slot = cell.try_borrow_mut().ok()?;
        if let Some((id, dispatcher)) = slot.as_mut() {
            if *id == TypeId::of::<Dispatcher<F>>() {
                let dispatcher: *mut dyn Any = &mut **dispatcher;
                // SAFETY: the box holds a `Dispatcher<F>`: its type id was stored with it.
                return Some(f(unsafe { &mut *dispatcher.cast::<Dispatcher<F>>() }));
            }
        }
        let mut dispatcher = Box::new(Dispatcher::<F> {
            roots: Vec::new(),
            streams: Contexts::default(),
        });
        let r = f(&mut dispatcher);
        *slot = Some((TypeId::of::<Dispatcher<F>>(), dispatcher));
        Some(r)
    })
}

thread_local! {
    /// Set by the default body of a hook: the filter left that hook alone.
    static DEFAULTED: Cell<bool> = const { Cell::new(false) };
    /// The hooks already reported unused to the host.
    static UNUSED: Cell<u32> = const { Cell::new(0) };
}

/// Called by the default body of every [`HttpFilter`] hook.
pub(crate) fn defaulted() {
    DEFAULTED.with(|d| d.set(true));
}

/// Runs a hook; if it turned out to be a default body (which does nothing, on every
/// request), tells the host once that it may skip that hook (`mesh_unused_hooks`; hosts
/// without the function answer NotFound, and keep calling it).
fn watching<R>(bit: u32, hook: impl FnOnce() -> R) -> R {
    DEFAULTED.with(|d| d.set(false));
    let result = hook();
    if DEFAULTED.with(|d| d.replace(false)) {
        declare_unused(bit);
    }
    result
}

/// Tells the host, once, that it may skip the callbacks `bit`.
fn declare_unused(bit: u32) {
    let before = UNUSED.with(Cell::get);
    if before & bit != bit {
        let all = before | bit;
        UNUSED.with(|u| u.set(all));
        let _ = hostcalls::call_foreign_function(hook::FUNCTION, &all.to_le_bytes());
    }
}

/// Forgets every context (the mock host starts each harness afresh).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn reset() {
    DISPATCH.with(|cell| *cell.borrow_mut() = None);
    UNUSED.with(|u| u.set(0));
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
        with::<F, _>(|d| d.set_root(id, None));
        return;
    }
    with::<F, _>(|d| d.create(id, parent).map(drop));
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
            let only_root = with::<F, _>(|d| {
                d.set_root(root, Some(filter));
                d.roots.len() == 1
            });
            // A request that was told its response headers were its last callback is
            // forgotten then (`phase`), so a host that knows may skip its
            // `proxy_on_delete`. With one root, a request's filter can be made at its first
            // callback (`take`), so such a host may skip `proxy_on_context_create` too.
            let creates = if only_root { hook::CONTEXT_CREATE } else { 0 };
            declare_unused(hook::FORGETS_AFTER_LAST | creates);
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

/// Puts request `id`'s slot back after its hook (unless the context was deleted meanwhile).
fn put_back<F: Filter>(id: u32, slot: Slot<F>) {
    with::<F, _>(|d| {
        if let Some(entry) = d.streams.get_mut(id) {
            *entry = Some(slot);
        }
    });
}

/// Runs one phase hook of request `id`; requests this instance does not know continue.
/// `last`: the host said nothing follows unless the hook pauses, answers or makes a call;
/// if it does none of these, the request is forgotten now (the host sends no
/// `proxy_on_delete` for it).
fn phase<F: Filter>(
    id: u32,
    kind: u32,
    bit: u32,
    last: bool,
    hook: impl FnOnce(&mut F::Http, &mut Stream) -> Action,
) -> u32 {
    let verdict = try_with::<F, _>(|d| {
        // `None` in the table: another callback of the request has it (`on_done`, a call's
        // answer), which cannot be running now.
        let slot = d.stream(id)?.as_mut()?;
        slot.stream.responded = false;
        let mut verdict = watching(bit, || hook(&mut slot.filter, &mut slot.stream));
        if slot.stream.responded {
            verdict = Action::Pause;
        }
        slot.stream.paused = match verdict {
            Action::Pause => Some(kind),
            Action::Continue => None,
        };
        if last && verdict == Action::Continue && slot.stream.calls.is_empty() {
            d.streams.remove(id);
        }
        Some(verdict)
    });
    action(verdict.flatten().unwrap_or(Action::Continue))
}

/// `proxy_on_request_headers`.
pub fn on_request_headers<F: Filter>(id: u32, _headers: usize, end_of_stream: bool) -> u32 {
    phase::<F>(
        id,
        phase::REQUEST,
        hook::REQUEST_HEADERS,
        false,
        |f, stream| {
            f.on_request_headers(&mut Request {
                stream,
                body_size: 0,
                end_of_stream,
            })
        },
    )
}

/// `proxy_on_request_body`.
pub fn on_request_body<F: Filter>(id: u32, body_size: usize, end_of_stream: bool) -> u32 {
    phase::<F>(
        id,
        phase::REQUEST,
        hook::REQUEST_BODY,
        false,
        |f, stream| {
            f.on_request_body(&mut Request {
                stream,
                body_size,
                end_of_stream,
            })
        },
    )
}

/// `proxy_on_request_trailers`.
pub fn on_request_trailers<F: Filter>(id: u32, _trailers: usize) -> u32 {
    phase::<F>(
        id,
        phase::REQUEST,
        hook::REQUEST_TRAILERS,
        false,
        |f, stream| {
            f.on_request_trailers(&mut Request {
                stream,
                body_size: 0,
                end_of_stream: true,
            })
        },
    )
}

/// `proxy_on_response_headers`; `flags`: `end_of_stream` (1), and from the mesh host
/// [`hook::LAST_CALLBACK`] (2).
pub fn on_response_headers<F: Filter>(id: u32, _headers: usize, flags: u32) -> u32 {
    let end_of_stream = flags & 1 != 0;
    let last = flags & hook::LAST_CALLBACK != 0;
    phase::<F>(
        id,
        phase::RESPONSE,
        hook::RESPONSE_HEADERS,
        last,
        |f, stream| {
            f.on_response_headers(&mut Response {
                stream,
                body_size: 0,
                end_of_stream,
            })
        },
    )
}

/// `proxy_on_response_body`.
pub fn on_response_body<F: Filter>(id: u32, body_size: usize, end_of_stream: bool) -> u32 {
    phase::<F>(
        id,
        phase::RESPONSE,
        hook::RESPONSE_BODY,
        false,
        |f, stream| {
            f.on_response_body(&mut Response {
                stream,
                body_size,
                end_of_stream,
            })
        },
    )
}

/// `proxy_on_response_trailers`.
pub fn on_response_trailers<F: Filter>(id: u32, _trailers: usize) -> u32 {
    phase::<F>(
        id,
        phase::RESPONSE,
        hook::RESPONSE_TRAILERS,
        false,
        |f, stream| {
            f.on_response_trailers(&mut Response {
                stream,
                body_size: 0,
                end_of_stream: true,
            })
        },
    )
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
            .find(|(_, slot)| {
                slot.as_ref()
                    .is_some_and(|slot| slot.stream.calls.contains(&token))
            })
            .map(|(id, _)| id)
            .or_else(|| d.streams.contains(context).then_some(context))?;
        d.streams
            .get_mut(id)
            .and_then(Option::take)
            .map(|slot| (id, slot))
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
    put_back::<F>(id, slot);
}

/// `proxy_on_tick`.
pub fn on_tick<F: Filter>(root: u32) {
    let Some(mut filter) = with::<F, _>(|d| d.root(root).and_then(Option::take)) else {
        return;
    };
    filter.on_tick();
    with::<F, _>(|d| d.set_root(root, Some(filter)));
}

/// Runs `on_done` once for request `id` (at `proxy_on_log` or `proxy_on_done`, whichever
/// the host calls first, or at `proxy_on_delete`); `remove` forgets the request after.
fn finish<F: Filter>(id: u32, remove: bool) {
    if !remove && with::<F, _>(|d| !d.streams.contains(id) && d.root(id).is_none()) {
        // A request that reached no hook before: its filter is made for `on_done`.
        with::<F, _>(|d| d.stream(id).map(drop));
    }
    // Take the slot unless it is already done (kept only for `proxy_on_delete`).
    let slot = with::<F, _>(|d| {
        if remove {
            return match d.streams.remove(id) {
                Some(slot) => slot.filter(|s| !s.done),
                None => {
                    d.remove_root(id);
                    None
                }
            };
        }
        match d.streams.get_mut(id) {
            Some(entry) if entry.as_ref().is_some_and(|s| !s.done) => entry.take(),
            _ => None,
        }
    });
    let Some(mut slot) = slot else {
        return;
    };
    slot.done = true;
    watching(hook::DONE, || slot.filter.on_done(&mut slot.stream));
    if !remove {
        put_back::<F>(id, slot);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::HttpFilter;
    use crate::testing::host;

    /// Counts the requests it made a filter for; each sets `x-made` on its request.
    struct Maker {
        made: u32,
    }

    struct Made;

    #[derive(serde::Deserialize)]
    struct NoConfig {}

    impl Filter for Maker {
        type Config = NoConfig;
        type Http = Made;

        fn configure(_: NoConfig) -> Result<Self, String> {
            Ok(Maker { made: 0 })
        }

        fn http(&mut self, _stream: &Stream) -> Made {
            self.made += 1;
            Made
        }
    }

    impl HttpFilter for Made {
        fn on_request_headers(&mut self, req: &mut Request<'_>) -> Action {
            let _ = req.headers().set("x-made", "1");
            Action::Continue
        }
    }

    fn made() -> u32 {
        with::<Maker, _>(|d| d.roots.iter().flat_map(|(_, r)| r).map(|r| r.made).sum())
    }

    /// A fresh mock host with a `Maker` configured as root context 1.
    fn configured_maker() {
        host::with(|h| {
            *h = host::MockHost::default();
            h.context = 1;
            h.buffers
                .insert(buffer::PLUGIN_CONFIGURATION, b"{}".to_vec());
        });
        reset();
        on_context_create::<Maker>(1, 0);
        assert!(on_configure::<Maker>(1, 2));
    }

    #[test]
    fn a_request_whose_context_create_was_skipped_gets_its_filter_at_its_first_hook() {
        configured_maker();

        // Request 2: no `proxy_on_context_create`, straight to its request headers.
        host::with(|h| {
            h.context = 2;
            h.maps.insert(map::REQUEST_HEADERS, Vec::new());
        });
        assert_eq!(on_request_headers::<Maker>(2, 0, true), 0);
        let set = host::with(|h| h.maps[&map::REQUEST_HEADERS].clone());
        assert_eq!(set, vec![("x-made".to_string(), "1".to_string())]);
        assert_eq!(made(), 1, "made once, at its first hook");
        assert_eq!(on_response_headers::<Maker>(2, 0, 1), 0);
        assert_eq!(made(), 1, "the same filter for its later hooks");
        assert!(
            with::<Maker, _>(|d| d.streams.contains(2)),
            "kept for on_delete"
        );

        // Request 3 reaches no hook before `proxy_on_log`: its filter is made for `on_done`.
        on_log::<Maker>(3);
        assert_eq!(made(), 2);
        on_delete::<Maker>(2);
        on_delete::<Maker>(3);
        assert!(with::<Maker, _>(|d| d.streams.is_empty()), "both forgotten");
        // A request deleted without any callback is not made at all.
        on_delete::<Maker>(4);
        assert_eq!(made(), 2);
    }

    #[test]
    fn a_phase_callback_that_re_enters_a_running_hook_continues_without_the_filter() {
        configured_maker();
        host::with(|h| {
            h.context = 2;
            h.maps.insert(map::REQUEST_HEADERS, Vec::new());
        });
        // As if the host called the guest back during a hook (the table is in use then).
        let nested = with::<Maker, _>(|_| on_request_headers::<Maker>(2, 0, true));
        assert_eq!(nested, 0, "continues");
        assert_eq!(made(), 0, "no filter was made for it");
        let set = host::with(|h| h.maps[&map::REQUEST_HEADERS].clone());
        assert!(set.is_empty(), "the filter did not run: {set:?}");
        // The request's own callbacks work as usual afterwards.
        assert_eq!(on_request_headers::<Maker>(2, 0, true), 0);
        assert_eq!(made(), 1);
    }

    #[test]
    fn a_request_told_its_response_headers_are_its_last_callback_is_forgotten_then() {
        configured_maker();
        let declared = host::with(|h| h.foreign_calls.clone());
        let bits = declared
            .last()
            .and_then(|(_, arg)| <[u8; 4]>::try_from(arg.as_slice()).ok())
            .map(u32::from_le_bytes);
        assert_eq!(
            bits.map(|b| b & (hook::FORGETS_AFTER_LAST | hook::CONTEXT_CREATE)),
            Some(hook::FORGETS_AFTER_LAST | hook::CONTEXT_CREATE),
            "declared when configured"
        );
        host::with(|h| {
            h.context = 2;
            h.maps.insert(map::REQUEST_HEADERS, Vec::new());
        });
        assert_eq!(on_request_headers::<Maker>(2, 0, true), 0);
        // Flagged last (and end of stream): continued with no call, so forgotten.
        assert_eq!(on_response_headers::<Maker>(2, 0, 3), 0);
        assert!(
            with::<Maker, _>(|d| d.streams.is_empty()),
            "forgotten at once"
        );
        // A host that sends `proxy_on_delete` anyway finds nothing to do.
        on_delete::<Maker>(2);
        assert_eq!(made(), 1);
    }
}
