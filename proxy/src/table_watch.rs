//! Keeps the current snapshot fresh: polls the table file and reloads on change or SIGHUP.
//! A table that fails to load is logged and the previous one keeps serving.
//!
//! This is the table source seam: the control plane is a second source ([`apply_bytes`])
//! that stores snapshots into the same [`Tables`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use mesh_identity::FileStamp;

use crate::snapshot::{Registries, Snapshot};

/// The current snapshot (none until a first table loads) and reload statistics.
#[derive(Debug, Default)]
pub struct Tables {
    current: ArcSwapOption<Snapshot>,
    /// Tables applied since start.
    pub loads: AtomicU64,
    /// Tables refused.
    pub failures: AtomicU64,
}

impl Tables {
    /// The snapshot a new request uses; `None` until a table has loaded.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.current.load_full()
    }

    /// Replaces the snapshot; requests in flight keep the one they took.
    pub fn store(&self, snapshot: Snapshot) {
        self.current.store(Some(Arc::new(snapshot)));
        self.loads.fetch_add(1, Ordering::Relaxed);
    }
}

/// How often a sidecar that has no table yet looks for its file.
const FIRST_TABLE_POLL: Duration = Duration::from_millis(100);

/// Reloads `path` into `tables` when its stamp changes (checked every `poll`) or on SIGHUP,
/// until the process ends.
/// Each table loaded brings `registries` (clusters, budgets) in line with it.
pub async fn watch(
    tables: Arc<Tables>,
    registries: Arc<Registries>,
    path: PathBuf,
    service: String,
    poll: Duration,
) {
    let mut last = None;
    let mut last_checksum = tables
        .current()
        .map(|s| s.checksum.clone())
        .unwrap_or_default();
    let mut hangup = hangup_signal();
    let mut ticker = tokio::time::interval(poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A sidecar without a table serves nothing, so until the first one loads it looks at
    // the file often, whatever the poll interval (which is for changes to a good table).
    let mut waiting = tokio::time::interval(poll.min(FIRST_TABLE_POLL));
    loop {
        let forced = tokio::select! {
            _ = ticker.tick() => false,
            _ = waiting.tick(), if tables.current().is_none() => false,
            _ = recv(&mut hangup) => true,
        };
        let now = FileStamp::of(&path);
        if !forced && now == last && tables.current().is_some() {
            continue;
        }
        last = now;
        let loaded = {
            let path = path.clone();
            let service = service.clone();
            let registries = Arc::clone(&registries);
            tokio::task::spawn_blocking(move || Snapshot::load(&path, &service, &registries)).await
        };
        match loaded {
            Ok(Ok(snapshot)) if snapshot.checksum == last_checksum && !forced => {}
            Ok(Ok(snapshot)) => {
                tracing::info!(checksum = %snapshot.checksum, path = %path.display(), "rule table loaded");
                last_checksum = snapshot.checksum.clone();
                tables.store(snapshot);
            }
            Ok(Err(error)) if error.is_missing_file() => {
                // Logged at start; polled quietly until the file appears.
            }
            Ok(Err(error)) => {
                tables.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, path = %path.display(), "rule table refused; the previous table keeps serving");
            }
            Err(error) => tracing::error!(%error, "table load task failed"),
        }
    }
}

/// Applies an encoded table from the control plane as the file watcher would: decoded,
/// validated and indexed off the runtime, then stored. `Ok` is its checksum; `Err` the
/// reason it was refused (for a NACK), in which case the previous table keeps serving.
pub async fn apply_bytes(
    tables: &Tables,
    registries: &Arc<Registries>,
    service: &str,
    bytes: Vec<u8>,
) -> Result<String, String> {
    let loaded = {
        let service = service.to_string();
        let registries = Arc::clone(registries);
        tokio::task::spawn_blocking(move || Snapshot::from_bytes(&bytes, &service, &registries))
            .await
    };
    match loaded {
        Ok(Ok(snapshot)) => {
            let checksum = snapshot.checksum.clone();
            tracing::info!(%checksum, "rule table applied from the control plane");
            tables.store(snapshot);
            Ok(checksum)
        }
        Ok(Err(error)) => {
            tables.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%error, "rule table from the control plane refused; the previous table keeps serving");
            Err(error.to_string())
        }
        Err(error) => Err(format!("table load task failed: {error}")),
    }
}

#[cfg(unix)]
fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangup_signal() -> Option<()> {
    None
}

#[cfg(unix)]
async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn recv(_: &mut Option<()>) {
    std::future::pending().await
}
