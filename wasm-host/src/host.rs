//! The host: engine, linker, module cache, and the tables every plugin shares (metrics,
//! shared data and queues, failure counts).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, ExternType, Linker};

use crate::cache::ModuleCache;
use crate::engine::{make_engine, EpochTicker, MAX_MEMORY};
use crate::state::HostState;
use crate::tables::{MetricTable, QueueTable, SharedData};
use crate::{
    abi, FailureReason, FilterMetric, HostConfig, HttpCaller, LoadError, Module, Plugin, PluginSpec,
};

/// The WASM host: the engine (epoch ticker, pooling allocator), the module cache, shared
/// data and metrics of all filters.
pub struct Host {
    pub(crate) engine: Engine,
    linker: Linker<HostState>,
    pub(crate) config: HostConfig,
    pub(crate) caller: Arc<dyn HttpCaller>,
    /// Where ticks and `http_call`s run.
    pub(crate) runtime: Option<tokio::runtime::Handle>,
    cache: Mutex<ModuleCache>,
    pub(crate) metrics: RwLock<MetricTable>,
    pub(crate) shared: Mutex<SharedData>,
    pub(crate) queues: Mutex<QueueTable>,
    pub(crate) failures: Mutex<HashMap<(Arc<str>, FailureReason), u64>>,
    pub(crate) generation: AtomicU64,
    pub(crate) live: AtomicUsize,
    pub(crate) created: AtomicU64,
    /// Streams moved to a fresh instance after another request's failure discarded theirs.
    pub(crate) rebound: AtomicU64,
    /// The longest an instance took to make (nanoseconds): what replacing a broken one
    /// costs the next request in its slot.
    pub(crate) longest_start: AtomicU64,
    compiled: AtomicU64,
    pooled: bool,
    pub(crate) ticker: EpochTicker,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Host")
    }
}

/// Checks the ABI's exports and that every import is one the host defines.
fn validate(module: &wasmtime::Module) -> Result<(), LoadError> {
    for import in module.imports() {
        let known = matches!(import.ty(), ExternType::Func(_))
            && abi::provides(import.module(), import.name());
        if !known {
            return Err(LoadError::Abi(format!(
                "it imports {}.{}, which the host does not provide",
                import.module(),
                import.name()
            )));
        }
    }
    let export = |name: &str| module.get_export(name);
    if !matches!(export("memory"), Some(ExternType::Memory(_))) {
        return Err(LoadError::Abi("it does not export its memory".into()));
    }
    if !matches!(export("proxy_on_context_create"), Some(ExternType::Func(_))) {
        return Err(LoadError::Abi(
            "it does not export proxy_on_context_create".into(),
        ));
    }
    let versions = [
        "proxy_abi_version_0_2_1",
        "proxy_abi_version_0_2_0",
        "proxy_abi_version_0_1_0",
    ];
    if !versions.iter().any(|v| export(v).is_some()) {
        return Err(LoadError::Abi(
            "it exports no proxy_abi_version_0_2_1 (or 0_2_0, 0_1_0)".into(),
        ));
    }
    if export("proxy_on_memory_allocate").is_none() && export("malloc").is_none() {
        return Err(LoadError::Abi(
            "it exports neither proxy_on_memory_allocate nor malloc".into(),
        ));
    }
    Ok(())
}

impl Host {
    /// Makes the host. Call from inside a tokio runtime (ticks and paused streams use it).
    pub fn new(config: HostConfig, caller: Arc<dyn HttpCaller>) -> Result<Arc<Host>, LoadError> {
        let (engine, pooled) = make_engine(config.slots.max(1)).map_err(LoadError::Host)?;
        let mut linker = Linker::new(&engine);
        abi::define(&mut linker).map_err(|e| LoadError::Host(e.to_string()))?;
        let ticker = EpochTicker::start(&engine).map_err(LoadError::Host)?;
        Ok(Arc::new(Host {
            engine,
            linker,
            config,
            caller,
            runtime: tokio::runtime::Handle::try_current().ok(),
            cache: Mutex::new(ModuleCache::default()),
            metrics: RwLock::new(MetricTable::default()),
            shared: Mutex::new(SharedData::default()),
            queues: Mutex::new(QueueTable::default()),
            failures: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            live: AtomicUsize::new(0),
            created: AtomicU64::new(0),
            rebound: AtomicU64::new(0),
            longest_start: AtomicU64::new(0),
            compiled: AtomicU64::new(0),
            pooled,
            ticker,
        }))
    }

    /// Compiles `bytes`, or returns the module already compiled from the same bytes.
    /// Blocking (compilation takes milliseconds to seconds): call from `spawn_blocking`.
    pub fn compile(&self, bytes: &[u8]) -> Result<Module, LoadError> {
        let sha256: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(module) = self.lock_cache().get(&sha256) {
            return Ok(module);
        }
        let module = wasmtime::Module::new(&self.engine, bytes)
            .map_err(|e| LoadError::Compile(crate::plugin::describe(&e)))?;
        validate(&module)?;
        // Type-checks every import against the host's definitions.
        self.linker
            .instantiate_pre(&module)
            .map_err(|e| LoadError::Abi(crate::plugin::describe(&e)))?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        let module = Module {
            inner: Arc::new(module),
            sha256,
        };
        self.lock_cache().insert(module.clone());
        Ok(module)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, ModuleCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes a plugin of `module` with `spec`: instantiates one instance now, so a module
    /// that does not start (or refuses its config) is refused here, not on a request.
    pub fn plugin(
        self: &Arc<Self>,
        module: &Module,
        spec: PluginSpec,
    ) -> Result<Arc<Plugin>, LoadError> {
        let pre = self
            .linker
            .instantiate_pre(&module.inner)
            .map_err(|e| LoadError::Abi(crate::plugin::describe(&e)))?;
        let memory = usize::try_from(spec.memory_bytes)
            .unwrap_or(usize::MAX)
            .min(MAX_MEMORY);
        let plugin = Plugin::new(
            self.clone(),
            Arc::from(spec.name.as_str()),
            module.sha256,
            pre,
            bytes::Bytes::from(spec.config_json.into_bytes()),
            memory,
            spec.time_limit,
        );
        let slot = plugin.this_slot();
        let mut guard = plugin.lock(slot);
        plugin
            .fill(slot, &mut guard)
            .map_err(|e| LoadError::Start(crate::plugin::describe(&e)))?;
        drop(guard);
        Ok(plugin)
    }

    /// Every metric the filters defined, with their current values.
    pub fn metrics(&self) -> Vec<FilterMetric> {
        let table = self.metrics.read().unwrap_or_else(PoisonError::into_inner);
        table.all().map(|m| m.snapshot()).collect()
    }

    /// Failures so far: (filter, reason, count).
    pub fn failures(&self) -> Vec<(Arc<str>, FailureReason, u64)> {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures
            .iter()
            .map(|((filter, reason), n)| (filter.clone(), *reason, *n))
            .collect()
    }

    /// Modules compiled so far (cache misses).
    pub fn compiled_modules(&self) -> u64 {
        self.compiled.load(Ordering::Relaxed)
    }

    /// Instances alive now, across all plugins.
    pub fn live_instances(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Instances created so far.
    pub fn instances_created(&self) -> u64 {
        self.created.load(Ordering::Relaxed)
    }

    /// Streams that continued in a fresh instance after another request's failure
    /// discarded the one they started in.
    pub fn streams_rebound(&self) -> u64 {
        self.rebound.load(Ordering::Relaxed)
    }

    /// The longest an instance took to make so far (the bound on replacing a broken one).
    pub fn longest_instance_start(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.longest_start.load(Ordering::Relaxed))
    }

    /// Whether instances come from the pooling allocator (else on demand).
    pub fn pooled(&self) -> bool {
        self.pooled
    }
}
