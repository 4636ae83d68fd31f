//! The wasmtime engine (cranelift, epoch interruption, pooling allocator) and its epoch ticker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Instances the pool holds at least and at most (all filters, all slots): a sidecar runs
/// a few filters on a few worker threads. Each pooled memory reserves (not commits) 4 GiB of
/// address space plus its guard (see [`Reservation`]), so the ceiling keeps the pool's
/// reservation within a few TiB of the 128 TiB a process may address.
const POOL_MIN: usize = 64;
const POOL_MAX: usize = 512;
/// Pool instances per slot: room for a dozen filters plus the old versions of a reload.
const POOL_PER_SLOT: usize = 16;
/// Largest linear memory any filter may have; `PluginSpec::memory_bytes` caps below this.
pub(crate) const MAX_MEMORY: usize = 256 << 20;
/// The epoch ticker's pace while a callback runs long: the granularity of the CPU time
/// limit.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// How much address space a linear memory reserves.
#[derive(Clone, Copy)]
enum Reservation {
    /// 4 GiB and a guard region, wasmtime's default on 64-bit hosts: every 32-bit address
    /// lands in the reservation, so compiled code needs no bounds check on loads and stores
    /// (they were about a quarter of a header filter's guest instructions).
    Full,
    /// Only the cap, and explicit bounds checks in the code: for when the full reservation
    /// was refused (an address-space limit such as `ulimit -v`).
    Capped,
}

fn base_config(reservation: Reservation) -> Config {
    let mut config = Config::new();
    config
        .strategy(wasmtime::Strategy::Cranelift)
        .epoch_interruption(true)
        // Fuel (a count of guest instructions) bounds a strained filter's callbacks (see
        // `strain`) without waiting for a tick that the scheduler may hold back; outside
        // strain every callback gets all the fuel there is.
        .consume_fuel(true)
        .parallel_compilation(true);
    if let Reservation::Capped = reservation {
        config
            .memory_reservation(MAX_MEMORY as u64)
            .memory_guard_size(32 << 20)
            .memory_reservation_for_growth(0);
    }
    // `MESH_WASM_PERFMAP=1`: name the filters' compiled functions in /tmp/perf-<pid>.map,
    // so `perf report` shows guest frames (for profiling a filter's cost).
    if std::env::var_os("MESH_WASM_PERFMAP").is_some_and(|v| v == "1") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
}

/// Makes the engine: pooled with full reservations when the platform allows it, else
/// pooled with capped ones, else on demand. Returns whether the pool is in use.
pub(crate) fn make_engine(slots: usize) -> Result<(Engine, bool), String> {
    let total = u32::try_from(
        slots
            .saturating_mul(POOL_PER_SLOT)
            .clamp(POOL_MIN, POOL_MAX),
    )
    .unwrap_or(POOL_MIN as u32);
    let mut pooling = PoolingAllocationConfig::new();
    pooling
        .total_core_instances(total)
        .total_memories(total)
        .total_tables(total)
        .max_memory_size(MAX_MEMORY)
        // Released slots keep no more than this many pages resident between uses.
        .max_unused_warm_slots(16);
    // `MESH_WASM_POOLING=0`: allocate instances on demand, with full reservations (for
    // counting instructions under valgrind, whose address space cannot hold the pool).
    if std::env::var_os("MESH_WASM_POOLING").is_some_and(|v| v == "0") {
        return Engine::new(&base_config(Reservation::Full))
            .map(|engine| (engine, false))
            .map_err(|err| err.to_string());
    }
    let mut last_error = None;
    for reservation in [Reservation::Full, Reservation::Capped] {
        let mut config = base_config(reservation);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling.clone()));
        match Engine::new(&config) {
            Ok(engine) => return Ok((engine, true)),
            Err(err) => last_error = Some(err),
        }
    }
    if let Some(err) = last_error {
        tracing::warn!(error = %err, "the pooling allocator is unavailable; instances are allocated on demand");
    }
    Engine::new(&base_config(Reservation::Capped))
        .map(|engine| (engine, false))
        .map_err(|err| err.to_string())
}

/// Increments the engine's epoch until dropped: every [`IDLE_TICK`], and every [`TICK`]
/// while some callback runs long (`hurry`).
///
/// Each tick wakes a thread, and under load that thread takes a core from a worker: ticking
/// every millisecond took 16 ms of CPU a second even idle, about 0.4 µs per request at
/// 40 000 requests a second, for callbacks that almost all end within microseconds. So the
/// ticker idles at a slower pace, which only delays when a callback's CPU count starts
/// (see `budget`).
pub(crate) struct EpochTicker {
    state: Arc<TickerState>,
    thread: std::thread::Thread,
}

struct TickerState {
    stop: AtomicBool,
    /// A callback has run for a tick: tick at the fine pace for a while.
    hurry: AtomicBool,
}

/// The ticker's pace while nothing runs long.
const IDLE_TICK: Duration = Duration::from_millis(4);
/// Fine ticks go on this many ticks after the last `hurry`.
const FINE_TICKS: u32 = 20;

impl EpochTicker {
    pub(crate) fn start(engine: &Engine) -> Result<EpochTicker, String> {
        let state = Arc::new(TickerState {
            stop: AtomicBool::new(false),
            hurry: AtomicBool::new(false),
        });
        let shared = state.clone();
        let engine = engine.clone();
        let thread = std::thread::Builder::new()
            .name("mesh-wasm-epoch".into())
            .spawn(move || {
                let mut fine_left = 0;
                while !shared.stop.load(Ordering::Relaxed) {
                    let pace = if fine_left > 0 { TICK } else { IDLE_TICK };
                    // Woken early by `hurry` (or spuriously): an early tick only makes a
                    // callback's next look at its budget come sooner.
                    std::thread::park_timeout(pace);
                    engine.increment_epoch();
                    if shared.hurry.swap(false, Ordering::AcqRel) {
                        fine_left = FINE_TICKS;
                    } else {
                        fine_left = fine_left.saturating_sub(1);
                    }
                }
            })
            .map_err(|err| err.to_string())?;
        Ok(EpochTicker {
            state,
            thread: thread.thread().clone(),
        })
    }

    /// A callback is running long: tick at the fine pace, from now.
    pub(crate) fn hurry(&self) {
        if !self.state.hurry.swap(true, Ordering::AcqRel) {
            self.thread.unpark();
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        self.thread.unpark();
    }
}

/// Fine epoch ticks until a long callback's next look at its budget: what is left of it
/// rounded up, plus one because the deadline counts from a tick that may be about to
/// happen; at most half of [`FINE_TICKS`], so that each look hurries the ticker again
/// before it would slow down (a slow tick would make the look come late).
pub(crate) fn deadline_ticks(left: Duration) -> u64 {
    let tick = TICK.as_nanos();
    let ticks = left.as_nanos().div_ceil(tick).max(1);
    let ticks = u64::try_from(ticks).unwrap_or(u64::MAX / 2) + 1;
    ticks.min(u64::from(FINE_TICKS / 2))
}
