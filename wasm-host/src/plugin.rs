//! A plugin: one filter on one module version, with one slot (a warm instance behind a
//! mutex) per worker thread; failures, ticks and context finishing live here.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime::{InstancePre, Trap};

use crate::hooks::{bit, UnusedHooks};
use crate::instance::{Instance, ROOT_ID};
use crate::state::HostState;
use crate::stream::StartFacts;
use crate::{CallResponse, Failure, FailureReason, Host, StreamInfo};

/// One warm instance and the contexts whose finishing had to wait for it.
pub(crate) struct Slot {
    instance: Mutex<Option<Instance>>,
    /// (generation, context) of streams dropped while the slot was busy.
    deferred: Mutex<Vec<(u64, u32)>>,
    /// Whether `deferred` may hold something (so that locking the slot need not lock it).
    has_deferred: AtomicBool,
}

/// Where a stream's context lives: its instance (by generation) and context id, which
/// change only when the stream moves to a fresh instance ([`Plugin::rebind`]); and what
/// the stream's context is told about the request, for that move.
pub(crate) struct Binding {
    pub(crate) generation: AtomicU64,
    pub(crate) ctx: AtomicU32,
    pub(crate) info: StreamInfo,
}

/// A [`Binding`]'s generation once the filter failed on its own request (instance
/// generations count from 1): such a stream is not moved to a fresh instance.
pub(crate) const FAILED: u64 = 0;

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's index, assigned round-robin when it first starts a stream (so that
    /// blocking threads loading plugins do not take indices from the workers);
    /// slot = index mod slots.
    static THREAD_INDEX: Cell<Option<usize>> = const { Cell::new(None) };
    /// Slot locks this thread holds: a drop inside one must not block on another.
    static HELD: Cell<usize> = const { Cell::new(0) };
}

/// A locked slot; counts itself in [`HELD`] while it lives.
pub(crate) struct SlotGuard<'a> {
    guard: MutexGuard<'a, Option<Instance>>,
}

impl<'a> SlotGuard<'a> {
    fn new(guard: MutexGuard<'a, Option<Instance>>) -> Self {
        let _ = HELD.try_with(|h| h.set(h.get() + 1));
        SlotGuard { guard }
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let _ = HELD.try_with(|h| h.set(h.get().saturating_sub(1)));
    }
}

impl std::ops::Deref for SlotGuard<'_> {
    type Target = Option<Instance>;
    fn deref(&self) -> &Option<Instance> {
        &self.guard
    }
}

impl std::ops::DerefMut for SlotGuard<'_> {
    fn deref_mut(&mut self) -> &mut Option<Instance> {
        &mut self.guard
    }
}

/// One policy filter loaded from one module version: its warm instances (one per slot).
pub struct Plugin {
    pub(crate) host: Arc<Host>,
    pub(crate) me: Weak<Plugin>,
    pub(crate) name: Arc<str>,
    pub(crate) sha256: [u8; 32],
    pub(crate) pre: InstancePre<HostState>,
    pub(crate) config: Bytes,
    pub(crate) memory_bytes: usize,
    /// The CPU time limit of one callback.
    pub(crate) time_limit: std::time::Duration,
    /// Tightens that limit while callbacks keep running out of it (see `strain`).
    pub(crate) strain: Arc<crate::strain::Strain>,
    slots: Vec<Slot>,
    /// Callbacks the filter said it does nothing in.
    pub(crate) unused: UnusedHooks,
    last_warning: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("name", &self.name).finish()
    }
}

/// Why an error ended a guest call, from the error and the instance it happened in.
fn classify(err: &wasmtime::Error, instance: Option<&Instance>) -> FailureReason {
    let trap = err.downcast_ref::<Trap>();
    if trap == Some(&Trap::Interrupt) || trap == Some(&Trap::OutOfFuel) {
        FailureReason::Timeout
    } else if instance.is_some_and(|i| i.store.data().limits.refused) {
        FailureReason::Memory
    } else {
        FailureReason::Trap
    }
}

/// The trap's own words (the root cause), with the innermost guest frame when there is a
/// backtrace.
pub(crate) fn describe(err: &wasmtime::Error) -> String {
    let root = err.root_cause().to_string();
    let top = err.to_string();
    if top == root {
        return root;
    }
    match top.lines().nth(1).map(str::trim) {
        Some(frame) if !frame.is_empty() => format!("{root} at {frame}"),
        _ => root,
    }
}

impl Plugin {
    pub(crate) fn new(
        host: Arc<Host>,
        name: Arc<str>,
        sha256: [u8; 32],
        pre: InstancePre<HostState>,
        config: Bytes,
        memory_bytes: usize,
        time_limit: std::time::Duration,
    ) -> Arc<Plugin> {
        // A callback the module does not export is as unused as one it declares so.
        let unused = UnusedHooks::default();
        let module = pre.module();
        for (bits, exports) in bit::EXPORTS {
            if exports.iter().all(|name| module.get_export(name).is_none()) {
                unused.add(*bits);
            }
        }
        let slots = (0..host.config.slots.max(1))
            .map(|_| Slot {
                instance: Mutex::new(None),
                deferred: Mutex::new(Vec::new()),
                has_deferred: AtomicBool::new(false),
            })
            .collect();
        Arc::new_cyclic(|me| Plugin {
            host,
            me: me.clone(),
            name,
            sha256,
            pre,
            time_limit,
            strain: Arc::default(),
            config,
            memory_bytes,
            slots,
            unused,
            last_warning: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        })
    }

    /// The filter's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// SHA-256 of the module it runs.
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// Starts a request's context in this thread's warm instance (a fresh instance where
    /// the last one failed).
    pub fn start(self: &Arc<Self>, info: StreamInfo) -> Result<crate::Stream, Failure> {
        self.start_then(info, StartFacts::default(), |_, _, _| Ok(()))
            .map(|(stream, ())| stream)
    }

    /// Starts a request's context (its stream knowing `facts`), then runs `first` on its
    /// stream in the same hold of the instance; an error from either discards the instance.
    pub(crate) fn start_then<R>(
        self: &Arc<Self>,
        info: StreamInfo,
        facts: StartFacts,
        first: impl FnOnce(&crate::Stream, &mut Instance, u32) -> wasmtime::Result<R>,
    ) -> Result<(crate::Stream, R), Failure> {
        let slot = self.worker_slot();
        let mut guard = self.lock(slot);
        if guard.is_none() {
            self.fill(slot, &mut guard)
                .map_err(|err| self.failure(FailureReason::Unavailable, describe(&err)))?;
        }
        let Some(inst) = guard.as_mut() else {
            return Err(self.failure(FailureReason::Unavailable, "no instance".into()));
        };
        let ctx = inst.new_context_id();
        let state = inst.store.data_mut();
        state.contexts.insert(
            ctx,
            crate::state::Context {
                // Kept by the stream too, for a context it may need in a fresh instance.
                info: Some(info.clone()),
                ..Default::default()
            },
        );
        state.active = ctx;
        let created = if self.unused.skips(bit::CONTEXT_CREATE) {
            // The filter makes the context at its first callback for it.
            Ok(())
        } else {
            inst.arm();
            inst.funcs
                .context_create
                .call(&mut inst.store, (ctx as i32, ROOT_ID as i32))
        };
        let bound = Binding {
            generation: AtomicU64::new(inst.generation),
            ctx: AtomicU32::new(ctx),
            info,
        };
        let stream = crate::Stream::new(self.clone(), slot, bound, facts);
        match created.and_then(|()| first(&stream, inst, ctx)) {
            Ok(r) => {
                self.after_call(slot, &mut guard);
                drop(guard);
                Ok((stream, r))
            }
            Err(err) => {
                // Its instance goes with the failure: nothing is left to finish.
                stream.abandon();
                Err(self.fail(&mut guard, err))
            }
        }
    }

    /// The slot this thread uses, assigning the thread an index if it has none.
    fn worker_slot(&self) -> usize {
        let index = THREAD_INDEX
            .try_with(|i| match i.get() {
                Some(index) => index,
                None => {
                    let index = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
                    i.set(Some(index));
                    index
                }
            })
            .unwrap_or(0);
        index % self.slots.len()
    }

    /// The slot this thread would use (slot 0 for a thread that never started a stream).
    pub(crate) fn this_slot(&self) -> usize {
        THREAD_INDEX.try_with(Cell::get).ok().flatten().unwrap_or(0) % self.slots.len()
    }

    /// Locks a slot, first finishing the contexts whose streams were dropped while it was
    /// busy.
    pub(crate) fn lock(&self, slot: usize) -> SlotGuard<'_> {
        let mut guard = SlotGuard::new(
            self.slots[slot]
                .instance
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let slot = &self.slots[slot];
        // Usually false, sparing a lock per call. It is set after the push, so a context
        // deferred now is finished by this lock or the next one.
        if !slot.has_deferred.load(Ordering::Acquire)
            || !slot.has_deferred.swap(false, Ordering::AcqRel)
        {
            return guard;
        }
        let deferred =
            std::mem::take(&mut *slot.deferred.lock().unwrap_or_else(PoisonError::into_inner));
        for (generation, ctx) in deferred {
            self.finish_locked(&mut guard, generation, ctx);
        }
        guard
    }

    /// Makes a fresh instance in an empty slot.
    #[cold] // off the request path: kept out of its code
    pub(crate) fn fill(&self, slot: usize, guard: &mut SlotGuard<'_>) -> wasmtime::Result<()> {
        let started = Instant::now();
        let instance = Instance::new(self, slot)?;
        let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.host.longest_start.fetch_max(took, Ordering::Relaxed);
        **guard = Some(instance);
        self.after_call(slot, guard);
        Ok(())
    }

    /// Runs `f` on the stream's instance and context; an error from `f` discards the
    /// instance. A stream whose instance another request's failure discarded is not
    /// failed for it: it continues in a new context of the slot's fresh instance (see
    /// [`Plugin::rebind`]).
    /// `may_move: false` for what belongs to the lost instance (a pause's wake-up, a call
    /// result): that fails as Unavailable instead.
    pub(crate) fn with_instance<R>(
        &self,
        slot: usize,
        bound: &Binding,
        may_move: bool,
        f: impl FnOnce(&mut Instance, u32) -> wasmtime::Result<R>,
    ) -> Result<R, Failure> {
        let mut guard = self.lock(slot);
        let generation = bound.generation.load(Ordering::Relaxed);
        if generation == FAILED {
            drop(guard);
            return Err(self.failure(
                FailureReason::Unavailable,
                "the filter already failed on this request".into(),
            ));
        }
        if guard.as_ref().is_none_or(|i| i.generation != generation) {
            if !may_move {
                drop(guard);
                bound.generation.store(FAILED, Ordering::Relaxed);
                return Err(self.failure(
                    FailureReason::Unavailable,
                    "the instance this request was paused in was discarded".into(),
                ));
            }
            if let Err(err) = self.rebind(slot, &mut guard, bound) {
                bound.generation.store(FAILED, Ordering::Relaxed);
                return Err(self.fail(&mut guard, err));
            }
        }
        let Some(inst) = guard.as_mut() else {
            return Err(self.failure(FailureReason::Unavailable, "no instance".into()));
        };
        match f(inst, bound.ctx.load(Ordering::Relaxed)) {
            Ok(v) => {
                self.after_call(slot, &mut guard);
                Ok(v)
            }
            Err(err) => {
                // This request's own failure: it is not moved to the next instance.
                bound.generation.store(FAILED, Ordering::Relaxed);
                Err(self.fail(&mut guard, err))
            }
        }
    }

    /// Moves a stream whose instance is gone (discarded after another request's trap,
    /// timeout or memory failure) into a new context of the slot's current instance,
    /// making one if the slot is empty. The filter sees the stream's remaining callbacks
    /// as a new context (what it kept for the request in the lost instance is gone; the
    /// request head as sent stays readable where the caller lends it).
    #[cold] // off the request path: kept out of its code
    fn rebind(
        &self,
        slot: usize,
        guard: &mut SlotGuard<'_>,
        bound: &Binding,
    ) -> wasmtime::Result<()> {
        if guard.is_none() {
            self.fill(slot, guard)?;
        }
        let Some(inst) = guard.as_mut() else {
            wasmtime::bail!("no instance");
        };
        let ctx = inst.new_context_id();
        let state = inst.store.data_mut();
        state.contexts.insert(
            ctx,
            crate::state::Context {
                info: Some(bound.info.clone()),
                ..Default::default()
            },
        );
        state.active = ctx;
        bound.generation.store(inst.generation, Ordering::Relaxed);
        bound.ctx.store(ctx, Ordering::Relaxed);
        self.host.rebound.fetch_add(1, Ordering::Relaxed);
        if !self.unused.skips(bit::CONTEXT_CREATE) {
            inst.arm();
            inst.funcs
                .context_create
                .call(&mut inst.store, (ctx as i32, ROOT_ID as i32))?;
        }
        Ok(())
    }

    /// Discards the stream's instance (if still there) for a failure not raised by a trap.
    #[cold] // off the request path: kept out of its code
    pub(crate) fn discard(
        &self,
        slot: usize,
        generation: u64,
        reason: FailureReason,
        message: String,
    ) -> Failure {
        let mut guard = self.lock(slot);
        let ours = guard.as_ref().is_some_and(|i| i.generation == generation);
        if ours {
            wake_all(&mut guard);
            *guard = None;
        }
        drop(guard);
        if ours {
            self.failure(reason, message)
        } else {
            self.failure(
                FailureReason::Unavailable,
                "the instance this request started in was discarded".into(),
            )
        }
    }

    /// Acts on what the last call asked for beyond its result (a tick period).
    fn after_call(&self, slot: usize, guard: &mut SlotGuard<'_>) {
        let Some(inst) = guard.as_mut() else { return };
        if let Some(ms) = inst.store.data_mut().tick_change.take() {
            self.start_ticks(slot, inst, ms);
        }
    }

    /// Discards the instance in `guard` after `err`, counts and logs the failure.
    #[cold] // off the request path: kept out of its code
    pub(crate) fn fail(&self, guard: &mut SlotGuard<'_>, err: wasmtime::Error) -> Failure {
        let reason = classify(&err, guard.as_ref());
        if reason == FailureReason::Timeout && self.strain.timed_out() {
            tracing::warn!(
                filter = %self.name,
                limit_ms = crate::strain::TIGHT_LIMIT.as_secs_f64() * 1e3,
                fuel = crate::strain::TIGHT_FUEL,
                window_s = crate::strain::STRAIN_WINDOW.as_secs(),
                "WASM filter under strain: a callback ran out of time; its callbacks get a tight limit until none has for the window"
            );
        }
        wake_all(guard);
        // Dropping the store frees the pool slot and ends the instance's tick task and
        // its streams' channels.
        **guard = None;
        self.failure(reason, describe(&err))
    }

    /// Counts a failure and logs it (at most one line a second per filter).
    #[cold] // off the request path: kept out of its code
    pub(crate) fn failure(&self, reason: FailureReason, message: String) -> Failure {
        *self
            .host
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((self.name.clone(), reason))
            .or_insert(0) += 1;
        let now = Instant::now();
        let mut last = self
            .last_warning
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            *last = Some(now);
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            tracing::warn!(
                filter = %self.name,
                reason = reason.as_str(),
                suppressed,
                "WASM filter failed: {message}"
            );
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
        Failure {
            filter: self.name.clone(),
            reason,
            message,
        }
    }

    /// Ends a stream's context: now if this thread can take the slot without waiting on
    /// itself, else on the slot's next use.
    pub(crate) fn finish(&self, slot: usize, generation: u64, ctx: u32) {
        // During thread teardown the count is gone: take the cautious path.
        if HELD.try_with(Cell::get).unwrap_or(1) == 0 {
            let mut guard = self.lock(slot);
            self.finish_locked(&mut guard, generation, ctx);
            return;
        }
        match self.slots[slot].instance.try_lock() {
            Ok(g) => {
                let mut guard = SlotGuard::new(g);
                self.finish_locked(&mut guard, generation, ctx);
            }
            Err(TryLockError::Poisoned(p)) => {
                let mut guard = SlotGuard::new(p.into_inner());
                self.finish_locked(&mut guard, generation, ctx);
            }
            Err(TryLockError::WouldBlock) => {
                let slot = &self.slots[slot];
                slot.deferred
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((generation, ctx));
                slot.has_deferred.store(true, Ordering::Release);
            }
        }
    }

    /// `proxy_on_log`, `proxy_on_done`, `proxy_on_delete` for a context, if its instance
    /// still lives.
    fn finish_locked(&self, guard: &mut SlotGuard<'_>, generation: u64, ctx: u32) {
        let Some(inst) = guard.as_mut().filter(|i| i.generation == generation) else {
            return;
        };
        if let Err(err) = self.finish_context(inst, ctx, false) {
            self.fail(guard, err);
        }
    }

    /// Runs the context's last callbacks in `inst` and forgets it; `forgotten`: the guest
    /// has forgotten it already (see [`bit::FORGETS_AFTER_LAST`]), so it gets no
    /// `proxy_on_delete`.
    pub(crate) fn finish_context(
        &self,
        inst: &mut Instance,
        ctx: u32,
        forgotten: bool,
    ) -> wasmtime::Result<()> {
        let state = inst.store.data_mut();
        state.active = ctx;
        state.scope.clear();
        let id = ctx as i32;
        let skip_done = self.unused.skips(bit::DONE);
        let result = (|| {
            if !skip_done {
                inst.call(|f| f.on_log.as_ref(), id).transpose()?;
                inst.call(|f| f.on_done.as_ref(), id).transpose()?;
            }
            if !forgotten {
                inst.call(|f| f.on_delete.as_ref(), id).transpose()?;
            }
            wasmtime::Result::<()>::Ok(())
        })();
        let state = inst.store.data_mut();
        state.contexts.remove(&ctx);
        state.active = ROOT_ID;
        result
    }

    /// (Re)starts the instance's `proxy_on_tick` task; period 0 stops it.
    fn start_ticks(&self, slot: usize, inst: &mut Instance, ms: u32) {
        if let Some(old) = inst.tick.take() {
            old.abort();
        }
        let Some(runtime) = self.host.runtime.clone() else {
            return;
        };
        if ms == 0 || inst.funcs.on_tick.is_none() {
            return;
        }
        let period = Duration::from_millis(u64::from(ms));
        let plugin = self.me.clone();
        let generation = inst.generation;
        let task = runtime.spawn(async move {
            let mut interval =
                tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                // Weak: the task ends when the plugin is gone.
                let Some(plugin) = plugin.upgrade() else {
                    break;
                };
                if !plugin.tick(slot, generation) {
                    break;
                }
            }
        });
        inst.tick = Some(task.abort_handle());
    }

    /// One `proxy_on_tick`; false once the instance is gone.
    fn tick(&self, slot: usize, generation: u64) -> bool {
        let mut guard = self.lock(slot);
        let Some(inst) = guard.as_mut().filter(|i| i.generation == generation) else {
            return false;
        };
        inst.store.data_mut().active = ROOT_ID;
        match inst.call(|f| f.on_tick.as_ref(), ROOT_ID as i32) {
            None => false,
            Some(Ok(())) => {
                self.after_call(slot, &mut guard);
                true
            }
            Some(Err(err)) => {
                self.fail(&mut guard, err);
                false
            }
        }
    }

    /// Delivers an `http_call` result to the root context that made it.
    pub(crate) fn deliver_root_call(
        &self,
        slot: usize,
        generation: u64,
        ctx: u32,
        token: u32,
        result: Result<CallResponse, String>,
    ) {
        let mut guard = self.lock(slot);
        let Some(inst) = guard.as_mut().filter(|i| i.generation == generation) else {
            return;
        };
        if inst.funcs.on_http_call_response.is_none() {
            return;
        }
        let response = result.unwrap_or_default();
        let counts = call_counts(&response);
        let state = inst.store.data_mut();
        state.active = ctx;
        state.scope.call_response = Some(response);
        let r = inst
            .call(
                |f| f.on_http_call_response.as_ref(),
                (ctx as i32, token as i32, counts.0, counts.1, counts.2),
            )
            .unwrap_or(Ok(()));
        let state = inst.store.data_mut();
        state.scope.call_response = None;
        state.active = ROOT_ID;
        match r {
            Ok(()) => self.after_call(slot, &mut guard),
            Err(err) => {
                self.fail(&mut guard, err);
            }
        }
    }
}

/// Wakes every stream paused in the instance about to be discarded, so that they fail
/// (Unavailable) now rather than at `max_pause`.
fn wake_all(guard: &mut SlotGuard<'_>) {
    if let Some(inst) = guard.as_mut() {
        for ctx in inst.store.data().contexts.values() {
            if let Some(tx) = &ctx.events {
                tx.send(crate::state::Event::Wake);
            }
        }
    }
}

/// (headers, body bytes, trailers) of a call response, as the callback's arguments.
pub(crate) fn call_counts(r: &CallResponse) -> (i32, i32, i32) {
    let n = |v: usize| i32::try_from(v).unwrap_or(i32::MAX);
    (n(r.headers.len()), n(r.body.len()), n(r.trailers.len()))
}
