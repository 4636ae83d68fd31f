//! The loaded filters: each of the table's filters this proxy runs, found by file name in
//! `[filters] modules`, loaded only when its SHA-256 matches the table's pin, compiled off
//! the request path and swapped in atomically. The previous plugin serves until its
//! successor is ready; a module that does not compile or start is refused and the previous
//! one keeps serving. `POST /filters/NAME` on the admin listener loads a module for
//! development, pin or no pin, until a table pins another version.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use mesh_identity::FileStamp;
use mesh_table::{Filter, Table};
use mesh_wasm::{Host, Plugin, PluginSpec};

use crate::table_watch::Tables;

/// Where a plugin's module came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The file the table names, matching its pin.
    Table,
    /// `POST /filters/NAME`.
    Admin,
}

/// What the store knows of one filter besides its plugin.
#[derive(Debug, Clone)]
struct Entry {
    /// The table's settings the plugin was made with.
    settings: Settings,
    /// The module file's stamp when it was last read.
    stamp: Option<FileStamp>,
    source: Source,
    /// Why the latest attempt was refused (cleared by a load).
    refused: Option<String>,
}

/// What makes two table filters the same plugin: pin, config and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    sha256: [u8; 32],
    module: String,
    config_json: String,
    memory_bytes: u64,
    time_limit_ms: u64,
}

impl Settings {
    fn of(filter: &Filter) -> Settings {
        Settings {
            sha256: filter.sha256,
            module: filter.module.clone(),
            config_json: filter.config_json.clone(),
            memory_bytes: filter.memory_bytes,
            time_limit_ms: filter.time_limit_ms,
        }
    }

    fn spec(&self, name: &str) -> PluginSpec {
        PluginSpec {
            name: name.to_string(),
            config_json: self.config_json.clone(),
            memory_bytes: self.memory_bytes,
            time_limit: Duration::from_millis(self.time_limit_ms),
        }
    }
}

/// Loads and counts, for `/metrics`.
#[derive(Debug, Default)]
pub struct LoadCounts {
    /// Modules loaded and swapped in.
    pub loaded: AtomicU64,
    /// Modules refused (digest mismatch, missing, compile or start failure).
    pub refused: AtomicU64,
}

/// Loaded plugins by filter name; FxHash, because names come from the operator's table
/// (not from requests) and each filter of a request looks its plugin up.
pub type Plugins = rustc_hash::FxHashMap<String, Arc<Plugin>>;

/// The filters this proxy runs, by name.
pub struct FilterStore {
    host: Arc<Host>,
    dirs: Vec<PathBuf>,
    /// Read on the request path: the plugin of each loaded filter.
    current: ArcSwap<Plugins>,
    entries: Mutex<HashMap<String, Entry>>,
    /// One reconciliation at a time (the poll loop and the admin endpoint).
    busy: tokio::sync::Mutex<()>,
    /// Whether every filter the table names has been loaded or refused at least once.
    settled: AtomicBool,
    /// Load counters.
    pub counts: LoadCounts,
}

impl std::fmt::Debug for FilterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterStore")
            .field("dirs", &self.dirs)
            .field("loaded", &self.current.load().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl FilterStore {
    /// A store loading modules from `dirs` into `host`.
    pub fn new(host: Arc<Host>, dirs: Vec<PathBuf>) -> FilterStore {
        FilterStore {
            host,
            dirs,
            current: ArcSwap::from_pointee(Plugins::default()),
            entries: Mutex::new(HashMap::new()),
            busy: tokio::sync::Mutex::new(()),
            settled: AtomicBool::new(false),
            counts: LoadCounts::default(),
        }
    }

    /// The host, for its metrics.
    pub fn host(&self) -> &Arc<Host> {
        &self.host
    }

    /// The plugin of each loaded filter now (one load for a request's whole chain). A
    /// guard, not a counted reference: two atomic operations fewer per request.
    pub fn plugins(&self) -> arc_swap::Guard<Arc<Plugins>> {
        self.current.load()
    }

    /// Whether every filter of the table has been loaded or refused (for `/ready`).
    pub fn settled(&self) -> bool {
        self.settled.load(Ordering::Relaxed)
    }

    /// Each filter's state, for `/filters` on the admin listener.
    pub fn describe(&self) -> serde_json::Value {
        let current = self.current.load();
        let entries = lock(&self.entries);
        let mut names: Vec<&String> = entries.keys().collect();
        names.sort();
        let filters: Vec<serde_json::Value> = names
            .into_iter()
            .map(|name| {
                let entry = &entries[name];
                serde_json::json!({
                    "name": name,
                    "module": entry.settings.module,
                    "pinned_sha256": hex(&entry.settings.sha256),
                    "loaded_sha256": current.get(name).map(|p| hex(&p.sha256())),
                    "source": match entry.source { Source::Table => "table", Source::Admin => "admin" },
                    "refused": entry.refused,
                })
            })
            .collect();
        serde_json::json!({ "filters": filters })
    }

    /// Polls the table and the module files every `every`, loading what changed.
    pub async fn watch(self: Arc<Self>, tables: Arc<Tables>, service: String, every: Duration) {
        // Until the first table has been reconciled the sidecar is not ready, so it looks
        // often then, whatever the poll interval (which is for new module versions).
        let first = every.min(Duration::from_millis(100));
        loop {
            if let Some(snapshot) = tables.current() {
                self.reconcile(snapshot.table(), &service).await;
            }
            tokio::time::sleep(if self.settled() { every } else { first }).await;
        }
    }

    /// Brings the loaded plugins in line with `table`: loads new or changed filters (new
    /// pin, new settings, new file at the path), drops filters the table no longer names.
    pub async fn reconcile(&self, table: &Table, service: &str) {
        let _one_at_a_time = self.busy.lock().await;
        let wanted = wanted_filters(table, service);
        // Drop what the table no longer names.
        {
            let mut entries = lock(&self.entries);
            entries.retain(|name, _| wanted.iter().any(|f| f.name == *name));
        }
        if self
            .current
            .load()
            .keys()
            .any(|n| !wanted.iter().any(|f| f.name == *n))
        {
            let kept: Plugins = self
                .current
                .load()
                .iter()
                .filter(|(n, _)| wanted.iter().any(|f| f.name == **n))
                .map(|(n, p)| (n.clone(), Arc::clone(p)))
                .collect();
            self.current.store(Arc::new(kept));
        }
        for filter in wanted {
            self.reconcile_one(filter).await;
        }
        self.settled.store(true, Ordering::Relaxed);
    }

    async fn reconcile_one(&self, filter: &Filter) {
        let settings = Settings::of(filter);
        let path = self.find(&filter.module);
        let stamp = path.as_deref().and_then(FileStamp::of);
        let previous = lock(&self.entries).get(&filter.name).cloned();
        if let Some(entry) = &previous {
            let same_settings = entry.settings == settings;
            // A development module stays until a table changes the filter's settings.
            if same_settings && (entry.source == Source::Admin || entry.stamp == stamp) {
                return;
            }
        }
        let result = match &path {
            None => Err(format!(
                "module `{}` not found in {}",
                filter.module,
                self.describe_dirs()
            )),
            Some(path) => self.load_pinned(path, &filter.name, &settings).await,
        };
        let refused = match result {
            Ok(plugin) => {
                self.swap_in(&filter.name, plugin);
                tracing::info!(filter = %filter.name, module = %filter.module, sha256 = %hex(&settings.sha256), "filter loaded");
                None
            }
            Err(why) => Some(why),
        };
        // Said once per file version, not on every poll.
        let newly_refused = refused
            .as_ref()
            .filter(|why| previous.as_ref().and_then(|e| e.refused.as_ref()) != Some(*why))
            .cloned();
        lock(&self.entries).insert(
            filter.name.clone(),
            Entry {
                settings,
                stamp,
                source: Source::Table,
                refused,
            },
        );
        // Counted once `/filters` shows the reason: whoever sees the count sees why.
        if let Some(why) = newly_refused {
            self.counts.refused.fetch_add(1, Ordering::Relaxed);
            tracing::error!(filter = %filter.name, reason = %why, "filter module refused; the previous version (if any) keeps serving");
        }
    }

    /// Reads `path`, checks it against the pin, compiles and starts it.
    async fn load_pinned(
        &self,
        path: &Path,
        name: &str,
        settings: &Settings,
    ) -> Result<Arc<Plugin>, String> {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        let digest = sha256(&bytes);
        if digest != settings.sha256 {
            return Err(format!(
                "`{}` has SHA-256 {}, but the table pins {}: rebuild the table with this module, or load it with POST /filters/{name} for development",
                path.display(),
                hex(&digest),
                hex(&settings.sha256)
            ));
        }
        self.build(bytes, settings.spec(name)).await
    }

    /// Compiles and starts a plugin off the request path.
    async fn build(&self, bytes: Vec<u8>, spec: PluginSpec) -> Result<Arc<Plugin>, String> {
        let host = Arc::clone(&self.host);
        tokio::task::spawn_blocking(move || {
            let module = host.compile(&bytes).map_err(|e| e.to_string())?;
            host.plugin(&module, spec).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("the loader stopped: {e}"))?
    }

    fn swap_in(&self, name: &str, plugin: Arc<Plugin>) {
        let mut next: Plugins = (**self.current.load()).clone();
        next.insert(name.to_string(), plugin);
        self.current.store(Arc::new(next));
        self.counts.loaded.fetch_add(1, Ordering::Relaxed);
    }

    /// `POST /filters/NAME`: loads `bytes` as filter `name` with the table's settings,
    /// whatever the pin says. Returns the module's SHA-256 (hex).
    pub async fn load_development(
        &self,
        table: &Table,
        name: &str,
        bytes: Vec<u8>,
    ) -> Result<String, AdminLoadError> {
        let filter = table
            .filters
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| AdminLoadError::UnknownFilter(name.to_string()))?;
        let _one_at_a_time = self.busy.lock().await;
        let settings = Settings::of(filter);
        let digest = hex(&sha256(&bytes));
        match self.build(bytes, settings.spec(name)).await {
            Ok(plugin) => {
                self.swap_in(name, plugin);
                let stamp = self.find(&filter.module).as_deref().and_then(FileStamp::of);
                lock(&self.entries).insert(
                    name.to_string(),
                    Entry {
                        settings,
                        stamp,
                        source: Source::Admin,
                        refused: None,
                    },
                );
                tracing::warn!(filter = %name, sha256 = %digest, "filter loaded for development (POST /filters); a table that changes this filter replaces it");
                Ok(digest)
            }
            Err(why) => {
                self.counts.refused.fetch_add(1, Ordering::Relaxed);
                Err(AdminLoadError::Refused(why))
            }
        }
    }

    fn find(&self, module: &str) -> Option<PathBuf> {
        // A module name is a file name: nothing may climb out of the configured directories.
        if Path::new(module).components().any(|c| {
            matches!(
                c,
                std::path::Component::ParentDir
                    | std::path::Component::RootDir
                    | std::path::Component::Prefix(_)
            )
        }) {
            return None;
        }
        self.dirs
            .iter()
            .map(|d| d.join(module))
            .find(|p| p.is_file())
    }

    fn describe_dirs(&self) -> String {
        self.dirs
            .iter()
            .map(|d| format!("`{}`", d.display()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why `POST /filters/NAME` did not load.
#[derive(Debug, thiserror::Error)]
pub enum AdminLoadError {
    /// The table has no filter of that name.
    #[error("the table has no filter `{0}`")]
    UnknownFilter(String),
    /// The module did not compile or start.
    #[error("{0}")]
    Refused(String),
}

/// The filters this sidecar runs: its own service's (inbound) and every route's (outbound).
fn wanted_filters<'t>(table: &'t Table, service: &str) -> Vec<&'t Filter> {
    let mut ids: HashSet<u32> = HashSet::new();
    if let Some(own) = table
        .service_id(service)
        .and_then(|id| table.services.get(id as usize))
    {
        ids.extend(own.filters.iter().copied());
    }
    for route in &table.routes {
        ids.extend(route.filters.iter().copied());
    }
    let mut wanted: Vec<&Filter> = ids
        .into_iter()
        .filter_map(|id| table.filters.get(id as usize))
        .collect();
    wanted.sort_by(|a, b| a.name.cmp(&b.name));
    wanted
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).into()
}

/// Lower-case hex, as `meshc inspect` prints digests.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
