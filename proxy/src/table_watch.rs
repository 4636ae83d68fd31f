//! Keeps the current snapshot fresh: polls the table file and reloads on change or SIGHUP.
//! A table that fails to load is logged and the previous one keeps serving.
//!
//! This is the table source seam: the control plane will be a second source that stores
//! snapshots into the same [`Tables`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;

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

/// What identifies a version of the file cheaply. Size and modification time alone miss a
/// new table of the same size whose mtime was kept (`cp -p`, `rsync -t`, reproducible
/// builds); the inode and status-change time catch it (a rename brings a new inode, and
/// any write or mtime change moves the ctime).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    /// Device, inode, ctime seconds and nanoseconds.
    #[cfg(unix)]
    identity: (u64, u64, i64, i64),
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        #[cfg(unix)]
        identity: {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec())
        },
    })
}

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
    loop {
        let forced = tokio::select! {
            _ = ticker.tick() => false,
            _ = recv(&mut hangup) => true,
        };
        let now = stamp(&path);
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
            Ok(Err(error)) => {
                tables.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, path = %path.display(), "rule table refused; the previous table keeps serving");
            }
            Err(error) => tracing::error!(%error, "table load task failed"),
        }
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
