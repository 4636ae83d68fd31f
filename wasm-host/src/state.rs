//! The data a store carries: per-context state of the filter and what the current
//! synchronous guest call may see of the request (moved in before the call, out after).

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use bytes::BytesMut;
use http::{HeaderMap, Method, StatusCode, Uri, Version};
use wasmtime::{Memory, ResourceLimiter, TypedFunc};

use crate::abi::{Frozen, Visible};
use crate::{CallResponse, Host, LocalResponse, Plugin, StreamInfo};

/// Something for a paused stream: a finished `http_call`, or a nudge to look at its flags.
pub(crate) enum Event {
    /// The call `token` came back.
    CallDone(u32, Result<CallResponse, String>),
    /// The filter continued or answered from another callback.
    Wake,
}

/// The store's resource limiter: the filter's memory cap, remembering a refusal so that the
/// trap that usually follows (an allocator abort) is reported as `Memory`.
pub(crate) struct Limits {
    pub(crate) memory: usize,
    pub(crate) refused: bool,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            self.refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        4
    }

    fn memories(&self) -> usize {
        1
    }
}

/// A request's head while a filter may look at it.
#[derive(Default)]
pub(crate) struct ReqView {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
}

/// A response's head while a filter may look at it.
#[derive(Default)]
pub(crate) struct RespView {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
}

/// A head lent to the store for one call. Its fields are swapped with the caller's, not
/// moved out and back: between calls the view holds the caller's placeholders, so lending
/// builds and drops nothing.
#[derive(Default)]
pub(crate) struct Lent<V> {
    pub(crate) view: V,
    /// The view holds the caller's head now.
    pub(crate) live: bool,
}

impl<V> Lent<V> {
    pub(crate) fn get(&self) -> Option<&V> {
        self.live.then_some(&self.view)
    }

    pub(crate) fn get_mut(&mut self) -> Option<&mut V> {
        if self.live {
            Some(&mut self.view)
        } else {
            None
        }
    }
}

/// What the current synchronous call exposes; empty between calls.
#[derive(Default)]
pub(crate) struct Scope {
    pub(crate) req: Lent<ReqView>,
    pub(crate) resp: Lent<RespView>,
    /// The buffered body and its ABI buffer type (0 request, 1 response).
    pub(crate) body: Option<(u32, BytesMut)>,
    /// Trailers and their ABI map type (1 request, 3 response).
    pub(crate) trailers: Option<(u32, HeaderMap)>,
    /// The response of the `http_call` being delivered.
    pub(crate) call_response: Option<CallResponse>,
}

impl Scope {
    /// Forgets what a call left (nothing, when every call returned what it was lent);
    /// keeps the lent views' placeholders.
    pub(crate) fn clear(&mut self) {
        if std::mem::take(&mut self.req.live) {
            self.req.view = ReqView::default();
        }
        if std::mem::take(&mut self.resp.live) {
            self.resp.view = RespView::default();
        }
        self.body = None;
        self.trailers = None;
        self.call_response = None;
    }
}

/// One context of the filter: the root context or a request's.
#[derive(Default)]
pub(crate) struct Context {
    /// The request's facts; `None` on the root context.
    pub(crate) info: Option<StreamInfo>,
    /// Properties the filter set (`proxy_set_property`), by serialized path. Boxed, like
    /// the local response: rare, and a context is moved in and out of its map per request.
    #[allow(clippy::box_collection)] // one pointer in the context instead of a map's 48 bytes
    pub(crate) props: Option<Box<HashMap<Vec<u8>, Vec<u8>>>>,
    pub(crate) local_response: Option<Box<LocalResponse>>,
    pub(crate) close: bool,
    pub(crate) continued: bool,
    /// `http_call`s dispatched by this context and not yet delivered.
    pub(crate) pending_calls: usize,
    /// Where this context's call results and wake-ups go (its `Stream`): made when the
    /// request first pauses or makes an `http_call` (most never do).
    pub(crate) events: Option<crate::mailbox::Sender>,
    /// A mailbox made by an `http_call`, until the request's `Stream` takes it.
    pub(crate) new_mailbox: Option<Arc<crate::mailbox::Mailbox>>,
    /// The request head as the filter left it, for later phases (read-only there).
    pub(crate) req_snapshot: Option<Frozen>,
    /// The response head as the filter left it.
    pub(crate) resp_snapshot: Option<Frozen>,
}

impl Context {
    /// The sender to this request's mailbox, making the mailbox if it has none yet (its
    /// `Stream` takes it after the call: `Stream::adopt_mailbox`).
    pub(crate) fn sender(&mut self) -> &crate::mailbox::Sender {
        let new_mailbox = &mut self.new_mailbox;
        self.events.get_or_insert_with(|| {
            let (mailbox, tx) = crate::mailbox::Mailbox::new();
            *new_mailbox = Some(mailbox);
            tx
        })
    }
}

/// Contexts by id; FxHash, because ids are this host's own counter (not attacker-chosen
/// keys) and SipHash showed in a filter's per-request cost.
pub(crate) type Contexts = rustc_hash::FxHashMap<u32, Context>;

/// The store's data.
pub(crate) struct HostState {
    /// The CPU budget of the callback running now.
    pub(crate) budget: crate::budget::CpuBudget,
    /// The filter's `time_limit`, and its strain (which may tighten it per callback).
    pub(crate) time_limit: std::time::Duration,
    pub(crate) strain: Arc<crate::strain::Strain>,
    pub(crate) host: Arc<Host>,
    pub(crate) plugin: Weak<Plugin>,
    pub(crate) filter: Arc<str>,
    pub(crate) plugin_config: bytes::Bytes,
    pub(crate) limits: Limits,
    /// The guest's `memory` export, once instantiated.
    pub(crate) memory: Option<Memory>,
    /// The guest's allocator (`proxy_on_memory_allocate` or `malloc`); in an `Arc` because a
    /// `TypedFunc` clone touches the type registry.
    pub(crate) alloc: Option<std::sync::Arc<TypedFunc<i32, i32>>>,
    /// This instance's slot in its plugin and its generation (to find it again later).
    pub(crate) slot: usize,
    pub(crate) generation: u64,
    /// The effective context (`proxy_set_effective_context`, or the callback's).
    pub(crate) active: u32,
    pub(crate) contexts: Contexts,
    pub(crate) scope: Scope,
    /// Header names and values the filter set recently.
    pub(crate) header_cache: crate::header_cache::HeaderCache,
    pub(crate) next_token: u32,
    /// An `http_call` of this instance made a context's mailbox at some time (never
    /// reset: a mailbox may wait for its stream to adopt it for several calls).
    pub(crate) made_mailboxes: bool,
    /// A tick period the root context asked for in the last call, to act on after it.
    pub(crate) tick_change: Option<u32>,
}

impl HostState {
    /// The effective context's state (the root's when it is unknown, which cannot happen
    /// through `proxy_set_effective_context` since that checks the id).
    pub(crate) fn ctx(&mut self) -> Option<&mut Context> {
        self.contexts.get_mut(&self.active)
    }

    /// The request head visible now: live in a request-headers call, the snapshot later.
    pub(crate) fn request(&self) -> Option<Visible<'_, ReqView>> {
        match self.scope.req.get() {
            Some(live) => Some(Visible::Live(live)),
            None => self.frozen(|c| &c.req_snapshot),
        }
    }

    /// The response head visible now.
    pub(crate) fn response(&self) -> Option<Visible<'_, RespView>> {
        match self.scope.resp.get() {
            Some(live) => Some(Visible::Live(live)),
            None => self.frozen(|c| &c.resp_snapshot),
        }
    }

    fn frozen<V>(&self, which: impl Fn(&Context) -> &Option<Frozen>) -> Option<Visible<'_, V>> {
        let context = self.contexts.get(&self.active)?;
        which(context).as_ref().map(Visible::Frozen)
    }
}
