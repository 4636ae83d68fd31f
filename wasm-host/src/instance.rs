//! One wasmtime instance of a filter: its store, its callbacks, and its start-up
//! (`_initialize`, root context, `proxy_on_vm_start`, `proxy_on_configure`).

use std::sync::atomic::Ordering;

use wasmtime::{Store, TypedFunc, UpdateDeadline, WasmParams, WasmResults};

use crate::abi::wasi_exit_code;
use crate::budget::{Check, CpuBudget};
use crate::engine::deadline_ticks;
use crate::state::{Context, Contexts, HostState, Limits, Scope};
use crate::strain::TIGHT_FUEL;
use crate::Plugin;

/// The root context's id in every instance; request contexts count up from the next.
pub(crate) const ROOT_ID: u32 = 1;

/// Every callback's first deadline, in epoch ticks: the next tick (see `budget`).
const FIRST_DEADLINE: u64 = 1;

/// The fuel of a callback outside strain: no bound but its CPU time limit.
const ALL_FUEL: u64 = u64::MAX;

/// `proxy_on_http_call_response(context, token, headers, body size, trailers)`.
pub(crate) type CallResponseFn = TypedFunc<(i32, i32, i32, i32, i32), ()>;

/// A phase callback: `(context, headers or body size, end_of_stream) -> action`.
pub(crate) type PhaseFn = TypedFunc<(i32, i32, i32), i32>;

/// The guest's callbacks, looked up once (absent or mistyped ones are `None`).
pub(crate) struct Funcs {
    pub(crate) context_create: TypedFunc<(i32, i32), ()>,
    pub(crate) on_request_headers: Option<PhaseFn>,
    pub(crate) on_request_body: Option<PhaseFn>,
    pub(crate) on_request_trailers: Option<TypedFunc<(i32, i32), i32>>,
    pub(crate) on_response_headers: Option<PhaseFn>,
    pub(crate) on_response_body: Option<PhaseFn>,
    pub(crate) on_response_trailers: Option<TypedFunc<(i32, i32), i32>>,
    pub(crate) on_http_call_response: Option<CallResponseFn>,
    pub(crate) on_tick: Option<TypedFunc<i32, ()>>,
    pub(crate) on_log: Option<TypedFunc<i32, ()>>,
    pub(crate) on_done: Option<TypedFunc<i32, i32>>,
    pub(crate) on_delete: Option<TypedFunc<i32, ()>>,
}

/// A live instance in a plugin's slot.
pub(crate) struct Instance {
    pub(crate) store: Store<HostState>,
    pub(crate) funcs: Funcs,
    /// Unique across the host: tells a stream whether its instance is still this one.
    pub(crate) generation: u64,
    next_ctx: u32,
    /// The `proxy_on_tick` task, stopped with the instance.
    pub(crate) tick: Option<tokio::task::AbortHandle>,
}

fn func<P: WasmParams, R: WasmResults>(
    instance: &wasmtime::Instance,
    store: &mut Store<HostState>,
    name: &str,
) -> Option<TypedFunc<P, R>> {
    instance.get_typed_func::<P, R>(&mut *store, name).ok()
}

impl Instance {
    /// Instantiates the plugin's module and starts its root context.
    pub(crate) fn new(plugin: &Plugin, slot: usize) -> wasmtime::Result<Instance> {
        let host = &plugin.host;
        let generation = host.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let mut contexts = Contexts::default();
        contexts.insert(ROOT_ID, Context::default());
        let state = HostState {
            budget: CpuBudget::new(plugin.time_limit),
            time_limit: plugin.time_limit,
            strain: std::sync::Arc::clone(&plugin.strain),
            host: host.clone(),
            plugin: plugin.me.clone(),
            filter: plugin.name.clone(),
            plugin_config: plugin.config.clone(),
            limits: Limits {
                memory: plugin.memory_bytes,
                refused: false,
            },
            memory: None,
            alloc: None,
            slot,
            generation,
            active: ROOT_ID,
            contexts,
            scope: Scope::default(),
            header_cache: Default::default(),
            next_token: 1,
            made_mailboxes: false,
            tick_change: None,
        };
        let mut store = Store::new(&host.engine, state);
        store.limiter(|s| &mut s.limits);
        // At each deadline, charge the callback its thread's CPU time: trap when the budget
        // is spent, otherwise look again when the rest of it could be.
        store.epoch_deadline_callback(|mut store| {
            let state = store.data_mut();
            Ok(match state.budget.check() {
                Check::Started => UpdateDeadline::Continue(1),
                Check::Continue(left) => {
                    state.host.ticker.hurry();
                    UpdateDeadline::Continue(deadline_ticks(left))
                }
                Check::Spent => UpdateDeadline::Interrupt,
            })
        });
        store.set_epoch_deadline(FIRST_DEADLINE);
        store.set_fuel(ALL_FUEL)?;
        let instance = plugin.pre.instantiate(&mut store)?;
        let memory = instance.get_memory(&mut store, "memory");
        let alloc = func::<i32, i32>(&instance, &mut store, "proxy_on_memory_allocate")
            .or_else(|| func::<i32, i32>(&instance, &mut store, "malloc"));
        store.data_mut().memory = memory;
        store.data_mut().alloc = alloc.map(std::sync::Arc::new);
        let funcs = Funcs {
            context_create: instance.get_typed_func(&mut store, "proxy_on_context_create")?,
            on_request_headers: func(&instance, &mut store, "proxy_on_request_headers"),
            on_request_body: func(&instance, &mut store, "proxy_on_request_body"),
            on_request_trailers: func(&instance, &mut store, "proxy_on_request_trailers"),
            on_response_headers: func(&instance, &mut store, "proxy_on_response_headers"),
            on_response_body: func(&instance, &mut store, "proxy_on_response_body"),
            on_response_trailers: func(&instance, &mut store, "proxy_on_response_trailers"),
            on_http_call_response: func(&instance, &mut store, "proxy_on_http_call_response"),
            on_tick: func(&instance, &mut store, "proxy_on_tick"),
            on_log: func(&instance, &mut store, "proxy_on_log"),
            on_done: func(&instance, &mut store, "proxy_on_done"),
            on_delete: func(&instance, &mut store, "proxy_on_delete"),
        };
        let on_vm_start = func::<(i32, i32), i32>(&instance, &mut store, "proxy_on_vm_start");
        let on_configure = func::<(i32, i32), i32>(&instance, &mut store, "proxy_on_configure");
        let initialize = func::<(), ()>(&instance, &mut store, "_initialize");
        let start = func::<(), ()>(&instance, &mut store, "_start");
        host.live.fetch_add(1, Ordering::Relaxed);
        host.created.fetch_add(1, Ordering::Relaxed);
        // From here on `Drop` keeps the live count right whatever fails below.
        let mut inst = Instance {
            store,
            funcs,
            generation,
            next_ctx: ROOT_ID + 1,
            tick: None,
        };
        if let Some(f) = initialize {
            inst.arm_start();
            f.call(&mut inst.store, ())?;
        } else if let Some(f) = start {
            inst.arm_start();
            // A command's `_start` ends in `proc_exit(0)`: that is a clean start.
            if let Err(err) = f.call(&mut inst.store, ()) {
                if wasi_exit_code(&err) != Some(0) {
                    return Err(err);
                }
            }
        }
        let root = ROOT_ID as i32;
        inst.arm_start();
        inst.funcs.context_create.call(&mut inst.store, (root, 0))?;
        if let Some(f) = on_vm_start {
            inst.arm_start();
            if f.call(&mut inst.store, (root, 0))? == 0 {
                wasmtime::bail!("proxy_on_vm_start returned false");
            }
        }
        if let Some(f) = on_configure {
            let size = i32::try_from(plugin.config.len()).unwrap_or(i32::MAX);
            inst.arm_start();
            if f.call(&mut inst.store, (root, size))? == 0 {
                wasmtime::bail!("proxy_on_configure refused the configuration");
            }
        }
        Ok(inst)
    }

    /// Calls the callback `pick` chooses, if the guest has it, with the filter's time limit.
    /// (Borrowing it rather than cloning it: a `TypedFunc` clone touches the type registry.)
    pub(crate) fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        pick: impl FnOnce(&Funcs) -> Option<&TypedFunc<P, R>>,
        params: P,
    ) -> Option<wasmtime::Result<R>> {
        let f = pick(&self.funcs)?;
        arm(&mut self.store);
        Some(f.call(&mut self.store, params))
    }

    /// Gives the next guest call the filter's time limit.
    pub(crate) fn arm(&mut self) {
        arm(&mut self.store);
    }

    /// A fresh request-context id (never the root's, never 0).
    pub(crate) fn new_context_id(&mut self) -> u32 {
        let id = self.next_ctx;
        self.next_ctx = self.next_ctx.wrapping_add(1).max(ROOT_ID + 1);
        id
    }
}

impl Instance {
    /// Arms a callback of the instance's start (`_initialize`, `proxy_on_vm_start`,
    /// `proxy_on_configure`...) with the filter's whole limit, strained or not: a fresh
    /// instance is how the filter recovers, and its start may take longer than a request's
    /// callbacks.
    fn arm_start(&mut self) {
        let state = self.store.data_mut();
        state.budget.limit = state.time_limit;
        state.budget.arm();
        self.store.set_epoch_deadline(FIRST_DEADLINE);
        refuel(&mut self.store, ALL_FUEL);
    }
}

/// Starts a callback's CPU budget and sets its first deadline; a free function so that
/// `Instance::call` can use it while it borrows the callback.
fn arm(store: &mut Store<HostState>) {
    let state = store.data_mut();
    let fuel = match state.strain.limit(state.time_limit) {
        Some(tight) => {
            state.budget.limit = tight;
            TIGHT_FUEL
        }
        None => {
            state.budget.limit = state.time_limit;
            ALL_FUEL
        }
    };
    state.budget.arm();
    store.set_epoch_deadline(FIRST_DEADLINE);
    refuel(store, fuel);
}

/// Gives the next guest call `fuel` (see `strain::TIGHT_FUEL`).
fn refuel(store: &mut Store<HostState>, fuel: u64) {
    // It fails only in an engine without fuel, and `engine` turns fuel on.
    let _ = store.set_fuel(fuel);
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(tick) = self.tick.take() {
            tick.abort();
        }
        self.store.data().host.live.fetch_sub(1, Ordering::Relaxed);
    }
}
