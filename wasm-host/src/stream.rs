//! A request's context in one filter: the phases, the wait while the filter is paused on
//! `http_call`s, and finishing the context when the last clone drops.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use http::HeaderMap;

use crate::abi::headers_consts::{REQUEST_TRAILERS, RESPONSE_TRAILERS};
use crate::abi::Frozen;
use crate::hooks::{bit, LAST_CALLBACK};
use crate::instance::{Funcs, Instance, PhaseFn};
use crate::mailbox::Mailbox;
use crate::plugin::{call_counts, Binding, FAILED};
use crate::state::{Event, HostState, Lent, ReqView, Scope};
use crate::{CallResponse, Failure, FailureReason, Plugin, Verdict};

/// One request's context in one filter. Cheap to clone (the request body and response
/// phases hold clones); the context is finished (`proxy_on_log`, `proxy_on_done`,
/// `proxy_on_delete`) when the last clone is dropped.
#[derive(Clone)]
pub struct Stream {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("filter", &self.inner.plugin.name())
            .field("context", &self.inner.bound.ctx.load(Ordering::Relaxed))
            .finish()
    }
}

struct Inner {
    plugin: Arc<Plugin>,
    slot: usize,
    /// Its instance and context (they change if another request's failure discards the
    /// instance: see `Plugin::rebind`).
    bound: Binding,
    /// Call results and wake-ups for this context: made when it first pauses or makes an
    /// `http_call` (`make_mailbox`, `adopt_mailbox`), so that most requests allocate none.
    events: OnceLock<Arc<Mailbox>>,
    /// Callbacks this request's messages cannot reach (a body or trailers that cannot
    /// come): skipped like unused ones, and nothing is kept for them.
    ruled_out: AtomicU32,
    /// The context was finished by the last phase that could run (see `head_phase`).
    finished: AtomicBool,
    /// The caller lends the request head as sent to the response phase
    /// ([`Stream::will_lend_sent_request`]).
    lends_sent_request: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.finished.load(Ordering::Relaxed) {
            self.plugin.finish(
                self.slot,
                self.bound.generation.load(Ordering::Relaxed),
                self.bound.ctx.load(Ordering::Relaxed),
            );
        }
    }
}

/// What the caller knows of a request when its stream starts.
#[derive(Clone, Copy, Default)]
pub(crate) struct StartFacts {
    /// Callbacks the request cannot reach ([`Inner::ruled_out`]).
    pub(crate) ruled_out: u32,
    /// As [`Stream::will_lend_sent_request`].
    pub(crate) lends_sent_request: bool,
}

/// What a head phase decided before its call.
struct HeadPlan {
    /// The callbacks that may read the head's snapshot later.
    later: u32,
    /// The filter is told this is its last callback (see `bit::FORGETS_AFTER_LAST`).
    last: bool,
    /// The callback's `end_of_stream` argument.
    flags: i32,
}

/// Where a head phase's callback left the request.
#[derive(Debug)]
pub enum Step {
    /// The filter decided.
    Done(Verdict),
    /// The filter paused on `http_call`s: its verdict comes from [`Stream::resume_request`]
    /// or [`Stream::resume_response`].
    Paused,
}

/// What the context's flags and the callback's action come to.
fn outcome(state: &mut HostState, ctx: u32, action: Option<i32>) -> Step {
    let Some(c) = state.contexts.get_mut(&ctx) else {
        return Step::Done(Verdict::Continue);
    };
    if let Some(response) = c.local_response.take() {
        c.continued = false;
        return Step::Done(Verdict::Respond(*response));
    }
    if c.close {
        return Step::Done(Verdict::Reset);
    }
    if action == Some(0) || c.continued {
        c.continued = false;
        return Step::Done(Verdict::Continue);
    }
    Step::Paused
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// A request or response head, lent to the store for one call.
trait Head: Send {
    /// Moves the head into the scope; returns the number of headers (pseudo included).
    fn install(&mut self, scope: &mut Scope) -> i32;
    /// Moves it back, and keeps a copy for later phases if `snapshot`.
    fn restore(&mut self, state: &mut HostState, ctx: u32, snapshot: bool);
}

/// A response head, with the request head as it was sent lent beside it (read-only in
/// effect: the request is gone).
struct WithSentRequest<'a> {
    response: &'a mut http::response::Parts,
    request: &'a mut http::request::Parts,
}

impl Head for WithSentRequest<'_> {
    fn install(&mut self, scope: &mut Scope) -> i32 {
        // Only the response's headers are counted for the callback.
        lend_request(self.request, &mut scope.req);
        self.response.install(scope)
    }

    fn restore(&mut self, state: &mut HostState, ctx: u32, snapshot: bool) {
        // The sent request replaces what the request phase left for the phases after this.
        self.request.restore(state, ctx, snapshot);
        self.response.restore(state, ctx, snapshot);
    }
}

/// Lends the request head in `parts` to the store (returned by `Head::restore`).
fn lend_request(parts: &mut http::request::Parts, lent: &mut Lent<ReqView>) {
    let view = &mut lent.view;
    std::mem::swap(&mut parts.method, &mut view.method);
    std::mem::swap(&mut parts.uri, &mut view.uri);
    std::mem::swap(&mut parts.headers, &mut view.headers);
    view.version = parts.version;
    lent.live = true;
}

impl Head for http::request::Parts {
    fn install(&mut self, scope: &mut Scope) -> i32 {
        lend_request(self, &mut scope.req);
        let view = &scope.req.view;
        let pseudo =
            if view.uri.authority().is_some() || view.headers.contains_key(http::header::HOST) {
                4
            } else {
                3
            };
        count(view.headers.len() + pseudo)
    }

    fn restore(&mut self, state: &mut HostState, ctx: u32, snapshot: bool) {
        let lent = &mut state.scope.req;
        if !std::mem::take(&mut lent.live) {
            return;
        }
        let view = &mut lent.view;
        if let Some(c) = snapshot.then(|| state.contexts.get_mut(&ctx)).flatten() {
            c.req_snapshot = Some(Frozen::request(view));
        }
        std::mem::swap(&mut self.method, &mut view.method);
        std::mem::swap(&mut self.uri, &mut view.uri);
        std::mem::swap(&mut self.headers, &mut view.headers);
    }
}

impl Head for http::response::Parts {
    fn install(&mut self, scope: &mut Scope) -> i32 {
        let lent = &mut scope.resp;
        lent.view.status = self.status;
        std::mem::swap(&mut self.headers, &mut lent.view.headers);
        lent.live = true;
        count(lent.view.headers.len() + 1)
    }

    fn restore(&mut self, state: &mut HostState, ctx: u32, snapshot: bool) {
        let lent = &mut state.scope.resp;
        if !std::mem::take(&mut lent.live) {
            return;
        }
        let view = &mut lent.view;
        if let Some(c) = snapshot.then(|| state.contexts.get_mut(&ctx)).flatten() {
            c.resp_snapshot = Some(Frozen::response(view));
        }
        self.status = view.status;
        std::mem::swap(&mut self.headers, &mut view.headers);
    }
}

/// No head to lend: results delivered between phases see the snapshots only.
struct NoHead;

impl Head for NoHead {
    fn install(&mut self, _scope: &mut Scope) -> i32 {
        0
    }

    fn restore(&mut self, _state: &mut HostState, _ctx: u32, _snapshot: bool) {}
}

#[derive(Clone, Copy)]
enum Side {
    Request,
    Response,
}

impl Side {
    fn headers(self, f: &Funcs) -> Option<&PhaseFn> {
        match self {
            Side::Request => f.on_request_headers.as_ref(),
            Side::Response => f.on_response_headers.as_ref(),
        }
    }

    fn body(self, f: &Funcs) -> Option<&PhaseFn> {
        match self {
            Side::Request => f.on_request_body.as_ref(),
            Side::Response => f.on_response_body.as_ref(),
        }
    }
}

/// Context `ctx` is about to get a phase callback: it is the effective context, and has
/// not continued yet.
fn enter(state: &mut HostState, ctx: u32) {
    state.active = ctx;
    if let Some(c) = state.contexts.get_mut(&ctx) {
        c.continued = false;
    }
}

impl Stream {
    /// A stream of context `ctx`; `facts` are what the caller knows of the request from the
    /// start (no atomic operation to say them later).
    pub(crate) fn new(
        plugin: Arc<Plugin>,
        slot: usize,
        bound: Binding,
        facts: StartFacts,
    ) -> Stream {
        Stream {
            inner: Arc::new(Inner {
                plugin,
                slot,
                bound,
                events: OnceLock::new(),
                ruled_out: AtomicU32::new(facts.ruled_out),
                finished: AtomicBool::new(false),
                lends_sent_request: AtomicBool::new(facts.lends_sent_request),
            }),
        }
    }

    /// The filter's name.
    pub fn filter(&self) -> &Arc<str> {
        self.inner.plugin.name()
    }

    /// Delivers `http_call` results that arrived while no phase was waiting (calls the
    /// filter made without pausing), before the next phase runs.
    fn drain_ready(&self) -> Result<(), Failure> {
        let Some(events) = self.inner.events.get().filter(|e| !e.is_empty()) else {
            return Ok(());
        };
        let Ok(_waiting) = events.waiting.try_lock() else {
            return Ok(());
        };
        while let Some(event) = events.try_recv() {
            if let Event::CallDone(token, result) = event {
                self.run_in_place(|inst, ctx| deliver(inst, ctx, &mut NoHead, token, result))?;
            }
        }
        Ok(())
    }

    fn run<R>(
        &self,
        f: impl FnOnce(&mut Instance, u32) -> wasmtime::Result<R>,
    ) -> Result<R, Failure> {
        let i = &self.inner;
        i.plugin.with_instance(i.slot, &i.bound, true, f)
    }

    /// As `run`, for what only the stream's own instance can take (a call result, a
    /// pause's wake-up): Unavailable if another request's failure discarded it.
    fn run_in_place<R>(
        &self,
        f: impl FnOnce(&mut Instance, u32) -> wasmtime::Result<R>,
    ) -> Result<R, Failure> {
        let i = &self.inner;
        i.plugin.with_instance(i.slot, &i.bound, false, f)
    }

    /// Takes the mailbox an `http_call` made for the context during the last guest call,
    /// before anything looks at what is in flight.
    fn adopt_mailbox(&self, state: &mut HostState) {
        let i = &self.inner;
        // An instance that never made a mailbox (most filters make no `http_call`) has
        // none to adopt: no context lookup.
        if state.made_mailboxes && i.events.get().is_none() {
            let context = state.contexts.get_mut(&i.bound.ctx.load(Ordering::Relaxed));
            if let Some(mailbox) = context.and_then(|c| c.new_mailbox.take()) {
                let _ = i.events.set(mailbox);
            }
        }
    }

    /// Makes the context's mailbox if it has none: a phase is about to wait on it.
    fn make_mailbox(&self, inst: &mut Instance) {
        let i = &self.inner;
        i.events.get_or_init(|| {
            let context = inst
                .store
                .data_mut()
                .contexts
                .get_mut(&i.bound.ctx.load(Ordering::Relaxed));
            // Without a context (or a sender whose mailbox was lost, which `adopt_mailbox`
            // rules out),
            // a mailbox nobody sends to ends the wait at once, as an unavailable instance.
            context
                .and_then(|c| {
                    c.sender();
                    c.new_mailbox.take()
                })
                .unwrap_or_else(|| Mailbox::new().0)
        });
    }

    /// `proxy_on_request_headers`: the filter may read and change the method, path,
    /// authority, scheme (as pseudo-headers) and headers. Waits while the filter is paused
    /// on `http_call`s until it continues or answers.
    pub async fn request_headers(
        &self,
        parts: &mut http::request::Parts,
        end_of_stream: bool,
    ) -> Result<Verdict, Failure> {
        self.head_phase(parts, Side::Request, end_of_stream).await
    }

    /// Whether the filter's request body callback does something (if not, the proxy may
    /// pass the body's data along untouched, its length included).
    pub fn wants_request_body(&self) -> bool {
        !self.skips(bit::REQUEST_BODY)
    }

    /// Whether the filter's request trailers callback does something.
    pub fn wants_request_trailers(&self) -> bool {
        !self.skips(bit::REQUEST_TRAILERS)
    }

    /// Whether the filter's response body callback does something.
    pub fn wants_response_body(&self) -> bool {
        !self.skips(bit::RESPONSE_BODY)
    }

    /// Whether the filter's response trailers callback does something.
    pub fn wants_response_trailers(&self) -> bool {
        !self.skips(bit::RESPONSE_TRAILERS)
    }

    /// The request cannot carry trailers (the proxy knows it from its framing: HTTP/1 with
    /// a length). Its trailers callback will not run, so a filter that needs nothing else
    /// later keeps no copy of the request head.
    pub fn no_request_trailers(&self) {
        self.rule_out(bit::REQUEST_TRAILERS);
    }

    /// The response cannot carry trailers.
    pub fn no_response_trailers(&self) {
        self.rule_out(bit::RESPONSE_TRAILERS);
    }

    fn rule_out(&self, bits: u32) {
        // Usually said already (each head says it of its message): a locked
        // read-modify-write only when something changes.
        let ruled_out = &self.inner.ruled_out;
        if ruled_out.load(Ordering::Relaxed) & bits != bits {
            ruled_out.fetch_or(bits, Ordering::Relaxed);
        }
    }

    /// Whether the callbacks `bits` may be skipped now: the message cannot reach them, or
    /// the filter does nothing in them and no `http_call` result is waiting for a callback
    /// to be delivered in.
    fn skips(&self, bits: u32) -> bool {
        let left = bits & !self.inner.ruled_out.load(Ordering::Relaxed);
        left == 0
            || (self.inner.plugin.unused.skips(left)
                && self.inner.events.get().is_none_or(|e| e.idle()))
    }

    /// `proxy_on_response_headers` (`:status` included).
    pub async fn response_headers(
        &self,
        parts: &mut http::response::Parts,
        end_of_stream: bool,
    ) -> Result<Verdict, Failure> {
        self.head_phase(parts, Side::Response, end_of_stream).await
    }

    /// The caller will lend the request head, as it sent it upstream, to the response phase
    /// ([`Stream::response_headers_after`]), as Envoy shows its filters the request
    /// headers the router sent. The request phase then keeps no copy of the head for the
    /// response phase: only for a request body or trailers phase, `proxy_on_log`, or the
    /// answer to an `http_call`, which may come before the response.
    pub fn will_lend_sent_request(&self) {
        self.inner.lends_sent_request.store(true, Ordering::Relaxed);
    }

    /// `proxy_on_response_headers`, with the request head as it was sent: what the filter
    /// reads of the request from here on (changing it has no effect).
    pub async fn response_headers_after(
        &self,
        request: &mut http::request::Parts,
        parts: &mut http::response::Parts,
        end_of_stream: bool,
    ) -> Result<Verdict, Failure> {
        match self.begin_response(request, parts, end_of_stream)? {
            Step::Done(verdict) => Ok(verdict),
            // Boxed, as in `after_head`.
            Step::Paused => Box::pin(self.resume_response(request, parts)).await,
        }
    }

    /// `proxy_on_request_body` with every byte buffered so far (the filter may change it).
    pub fn request_body(
        &self,
        body: &mut BytesMut,
        end_of_stream: bool,
    ) -> Result<Verdict, Failure> {
        self.body_phase(Side::Request, body, end_of_stream)
    }

    /// `proxy_on_response_body` with every byte buffered so far.
    pub fn response_body(
        &self,
        body: &mut BytesMut,
        end_of_stream: bool,
    ) -> Result<Verdict, Failure> {
        self.body_phase(Side::Response, body, end_of_stream)
    }

    /// `proxy_on_request_trailers`.
    pub fn request_trailers(&self, trailers: &mut HeaderMap) -> Result<Verdict, Failure> {
        self.trailer_phase(Side::Request, trailers)
    }

    /// `proxy_on_response_trailers`.
    pub fn response_trailers(&self, trailers: &mut HeaderMap) -> Result<Verdict, Failure> {
        self.trailer_phase(Side::Response, trailers)
    }

    async fn head_phase<H: Head>(
        &self,
        head: &mut H,
        side: Side,
        end_of_stream: bool,
    ) -> Result<Verdict, Failure> {
        let first = self.begin_head(head, side, end_of_stream)?;
        self.after_head(first, head).await
    }

    /// A head phase up to its callback's return.
    fn begin_head<H: Head>(
        &self,
        head: &mut H,
        side: Side,
        end_of_stream: bool,
    ) -> Result<Step, Failure> {
        self.drain_ready()?;
        let Some(plan) = self.head_plan(side, end_of_stream) else {
            return Ok(Step::Done(Verdict::Continue));
        };
        self.run(|inst, ctx| self.head_call(inst, ctx, head, side, &plan))
    }

    /// [`Stream::response_headers_after`] without waiting: the verdict, or
    /// [`Step::Paused`] (then [`Stream::resume_response`] gives it). A caller that is rarely
    /// paused keeps the wait's future out of its own this way.
    pub fn begin_response(
        &self,
        request: &mut http::request::Parts,
        parts: &mut http::response::Parts,
        end_of_stream: bool,
    ) -> Result<Step, Failure> {
        let mut head = WithSentRequest {
            response: parts,
            request,
        };
        self.begin_head(&mut head, Side::Response, end_of_stream)
    }

    /// The verdict of a response-headers phase that paused: delivers the filter's
    /// `http_call` answers, lending it the heads again, until it decides.
    pub async fn resume_response(
        &self,
        request: &mut http::request::Parts,
        parts: &mut http::response::Parts,
    ) -> Result<Verdict, Failure> {
        let mut head = WithSentRequest {
            response: parts,
            request,
        };
        self.wait(&mut head).await
    }

    /// The verdict of a request-headers phase that paused ([`Stream::begin_request`]).
    pub async fn resume_request(
        &self,
        parts: &mut http::request::Parts,
    ) -> Result<Verdict, Failure> {
        self.wait(parts).await
    }

    /// What a head phase needs to know before its call; `None`: nothing to do at all.
    fn head_plan(&self, side: Side, end_of_stream: bool) -> Option<HeadPlan> {
        let (hook, later, rest) = match side {
            Side::Request if self.inner.lends_sent_request.load(Ordering::Relaxed) => (
                bit::REQUEST_HEADERS,
                bit::BEFORE_RESPONSE_HEADERS | bit::DONE,
                bit::REQUEST_BODY | bit::REQUEST_TRAILERS,
            ),
            Side::Request => (
                bit::REQUEST_HEADERS,
                bit::AFTER_REQUEST_HEADERS,
                bit::REQUEST_BODY | bit::REQUEST_TRAILERS,
            ),
            Side::Response => (
                bit::RESPONSE_HEADERS,
                bit::AFTER_RESPONSE_HEADERS,
                bit::RESPONSE_BODY | bit::RESPONSE_TRAILERS,
            ),
        };
        if end_of_stream {
            // No body and no trailers follow this head.
            self.rule_out(rest);
        }
        // Nothing later needs the head as it is now, and this callback is unused too:
        // nothing to do at all.
        if self.skips(later) && self.skips(hook) {
            return None;
        }
        // A filter that forgets a request by itself is told when this is its last callback.
        let last = matches!(side, Side::Response)
            && self.inner.plugin.unused.skips(bit::FORGETS_AFTER_LAST)
            && self.skips(bit::MAY_FOLLOW_RESPONSE_HEADERS);
        Some(HeadPlan {
            later,
            last,
            flags: i32::from(end_of_stream) | if last { LAST_CALLBACK } else { 0 },
        })
    }

    /// A head phase's callback, in its locked instance.
    fn head_call<H: Head>(
        &self,
        inst: &mut Instance,
        ctx: u32,
        head: &mut H,
        side: Side,
        plan: &HeadPlan,
    ) -> wasmtime::Result<Step> {
        let state = inst.store.data_mut();
        enter(state, ctx);
        let n = head.install(&mut state.scope);
        let result = inst
            .call(|f| side.headers(f), (ctx as i32, n, plan.flags))
            .unwrap_or(Ok(0));
        self.adopt_mailbox(inst.store.data_mut());
        // The head goes back to the caller whatever happened in the guest, copied only if
        // a later phase may read it (decided after the call, which may have made an
        // `http_call` whose answer comes in a later phase).
        let snapshot = !self.skips(plan.later);
        head.restore(inst.store.data_mut(), ctx, snapshot);
        let action = result?;
        let outcome = outcome(inst.store.data_mut(), ctx, Some(action));
        // After a response head that continues, if no callback of this context can run
        // any more, its last callbacks run now, under the same lock, rather than when the
        // last clone of the stream drops. Decided after the call: the call may have
        // dispatched an `http_call` whose answer needs the context.
        if matches!(
            (side, &outcome),
            (Side::Response, Step::Done(Verdict::Continue))
        ) && self.skips(bit::MAY_FOLLOW_RESPONSE_HEADERS)
        {
            // Told it was its last callback, the filter forgot the request if it
            // continued itself (not resumed from a pause); no call is in flight (above).
            let forgotten = plan.last && action == 0;
            self.inner.plugin.finish_context(inst, ctx, forgotten)?;
            self.inner.finished.store(true, Ordering::Relaxed);
        }
        if matches!(outcome, Step::Paused) {
            self.make_mailbox(inst);
        }
        Ok(outcome)
    }

    /// The verdict of a head phase whose call ended in `first`: waits if it paused.
    async fn after_head<H: Head>(&self, first: Step, head: &mut H) -> Result<Verdict, Failure> {
        match first {
            Step::Done(verdict) => Ok(verdict),
            // Boxed: rare, and it would make every phase's future (and the proxy's request
            // future around it) as large as its timer and lock.
            Step::Paused => Box::pin(self.wait(head)).await,
        }
    }

    /// Starts a request's context in `plugin` and runs its request-headers phase in the
    /// same hold of the instance (as [`crate::Plugin::start`] then
    /// [`Stream::request_headers`], one lock fewer), without waiting: the stream and the
    /// verdict, or [`Step::Paused`] (then [`Stream::resume_request`] gives it).
    /// `no_trailers` and `lends_sent_request`: as [`Stream::no_request_trailers`] and
    /// [`Stream::will_lend_sent_request`], said before the phase. An `Err` is a failure
    /// to start or in the phase; either way the request goes on without this filter.
    pub fn begin_request(
        plugin: &Arc<Plugin>,
        info: crate::StreamInfo,
        parts: &mut http::request::Parts,
        end_of_stream: bool,
        no_trailers: bool,
        lends_sent_request: bool,
    ) -> Result<(Stream, Step), Failure> {
        let mut ruled_out = 0;
        if no_trailers {
            ruled_out |= bit::REQUEST_TRAILERS;
        }
        if end_of_stream {
            ruled_out |= bit::REQUEST_BODY | bit::REQUEST_TRAILERS;
        }
        let facts = StartFacts {
            ruled_out,
            lends_sent_request,
        };
        plugin.start_then(info, facts, |stream, inst, ctx| {
            match stream.head_plan(Side::Request, end_of_stream) {
                Some(plan) => stream.head_call(inst, ctx, parts, Side::Request, &plan),
                None => Ok(Step::Done(Verdict::Continue)),
            }
        })
    }

    /// Marks the context finished without its last callbacks: its instance is being
    /// discarded.
    pub(crate) fn abandon(&self) {
        self.inner.finished.store(true, Ordering::Relaxed);
    }

    /// Waits for the paused filter: delivers its `http_call` results (lending it the head
    /// again) until it continues, answers or closes, or `max_pause` runs out.
    async fn wait<H: Head>(&self, head: &mut H) -> Result<Verdict, Failure> {
        let i = &self.inner;
        let max_pause = i.plugin.host.config.max_pause;
        let deadline = tokio::time::Instant::now() + max_pause;
        let Some(events) = i.events.get() else {
            return Err(i.plugin.failure(
                FailureReason::Unavailable,
                "the paused request has no mailbox".into(),
            ));
        };
        let _waiting = events.waiting.lock().await;
        loop {
            let event = match tokio::time::timeout_at(deadline, events.recv()).await {
                Err(_) => {
                    let generation = i.bound.generation.swap(FAILED, Ordering::Relaxed);
                    return Err(i.plugin.discard(
                        i.slot,
                        generation,
                        FailureReason::Paused,
                        format!("the filter kept the request paused for more than {max_pause:?}"),
                    ));
                }
                Ok(None) => {
                    // What the filter awaited (its calls) went with the instance.
                    i.bound.generation.store(FAILED, Ordering::Relaxed);
                    return Err(i.plugin.failure(
                        FailureReason::Unavailable,
                        "the instance this request was paused in was discarded".into(),
                    ));
                }
                Ok(Some(event)) => event,
            };
            let out = self.run_in_place(|inst, ctx| {
                if let Event::CallDone(token, result) = event {
                    deliver(inst, ctx, head, token, result)?;
                }
                Ok(outcome(inst.store.data_mut(), ctx, None))
            })?;
            if let Step::Done(verdict) = out {
                return Ok(verdict);
            }
        }
    }

    fn body_phase(
        &self,
        side: Side,
        body: &mut BytesMut,
        end_of_stream: bool,
    ) -> Result<Verdict, Failure> {
        self.drain_ready()?;
        if self.skips(match side {
            Side::Request => bit::REQUEST_BODY,
            Side::Response => bit::RESPONSE_BODY,
        }) {
            return Ok(Verdict::Continue);
        }
        self.run(|inst, ctx| {
            if side.body(&inst.funcs).is_none() {
                return Ok(Verdict::Continue);
            }
            let kind = match side {
                Side::Request => 0,
                Side::Response => 1,
            };
            let state = inst.store.data_mut();
            enter(state, ctx);
            let size = count(body.len());
            state.scope.body = Some((kind, std::mem::take(body)));
            let result = inst
                .call(
                    |f| side.body(f),
                    (ctx as i32, size, i32::from(end_of_stream)),
                )
                .unwrap_or(Ok(0));
            self.adopt_mailbox(inst.store.data_mut());
            if let Some((_, b)) = inst.store.data_mut().scope.body.take() {
                *body = b;
            }
            let action = result?;
            Ok(match outcome(inst.store.data_mut(), ctx, Some(action)) {
                Step::Done(v) => v,
                // A body phase pauses by asking for more of the body.
                Step::Paused => Verdict::Buffer,
            })
        })
    }

    fn trailer_phase(&self, side: Side, trailers: &mut HeaderMap) -> Result<Verdict, Failure> {
        self.drain_ready()?;
        if self.skips(match side {
            Side::Request => bit::REQUEST_TRAILERS,
            Side::Response => bit::RESPONSE_TRAILERS,
        }) {
            return Ok(Verdict::Continue);
        }
        self.run(|inst, ctx| {
            let (present, kind) = match side {
                Side::Request => (inst.funcs.on_request_trailers.is_some(), REQUEST_TRAILERS),
                Side::Response => (inst.funcs.on_response_trailers.is_some(), RESPONSE_TRAILERS),
            };
            if !present {
                return Ok(Verdict::Continue);
            }
            let state = inst.store.data_mut();
            state.active = ctx;
            let n = count(trailers.len());
            state.scope.trailers = Some((kind, std::mem::take(trailers)));
            let result = inst
                .call(
                    |f| match side {
                        Side::Request => f.on_request_trailers.as_ref(),
                        Side::Response => f.on_response_trailers.as_ref(),
                    },
                    (ctx as i32, n),
                )
                .unwrap_or(Ok(0));
            self.adopt_mailbox(inst.store.data_mut());
            if let Some((_, t)) = inst.store.data_mut().scope.trailers.take() {
                *trailers = t;
            }
            let action = result?;
            Ok(match outcome(inst.store.data_mut(), ctx, Some(action)) {
                Step::Done(v) => v,
                // Trailers end the stream: there is nothing more to wait for.
                Step::Paused => Verdict::Continue,
            })
        })
    }
}

/// `proxy_on_http_call_response` on the context that made the call, with the head lent.
fn deliver<H: Head>(
    inst: &mut Instance,
    ctx: u32,
    head: &mut H,
    token: u32,
    result: Result<CallResponse, String>,
) -> wasmtime::Result<()> {
    let response = result.unwrap_or_else(|err| {
        tracing::debug!(target: "mesh_wasm", error = %err, "http_call failed");
        CallResponse::default()
    });
    let (nh, nb, nt) = call_counts(&response);
    let state = inst.store.data_mut();
    if let Some(c) = state.contexts.get_mut(&ctx) {
        c.pending_calls = c.pending_calls.saturating_sub(1);
    }
    if inst.funcs.on_http_call_response.is_none() {
        return Ok(());
    }
    state.active = ctx;
    state.scope.call_response = Some(response);
    head.install(&mut state.scope);
    let result = inst
        .call(
            |f| f.on_http_call_response.as_ref(),
            (ctx as i32, token as i32, nh, nb, nt),
        )
        .unwrap_or(Ok(()));
    let state = inst.store.data_mut();
    state.scope.call_response = None;
    head.restore(state, ctx, true);
    result
}
