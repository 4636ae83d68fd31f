//! A cluster's life on demand: made at its service's first request, asleep (tasks stopped,
//! endpoints forgotten) once no request used it for the idle period, woken by the next one;
//! and its warm-up (first discovery answer, first round of health checks), which a request
//! to a new or woken cluster waits for, for a bounded time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// When a cluster was last used, whether it sleeps, and whether it is warm.
#[derive(Debug)]
pub struct Usage {
    last_used_ms: AtomicU64,
    asleep: AtomicBool,
    /// Discovery has given its first answer (literal addresses: at once).
    discovered: AtomicBool,
    /// Health checks have probed every endpoint once (no health checks: at once).
    probed: AtomicBool,
    warmed: Notify,
}

impl Usage {
    /// A cluster used now, awake, not yet warm.
    pub(super) fn new(now_ms: u64) -> Usage {
        Usage {
            last_used_ms: AtomicU64::new(now_ms),
            asleep: AtomicBool::new(false),
            discovered: AtomicBool::new(false),
            probed: AtomicBool::new(false),
            warmed: Notify::new(),
        }
    }

    /// Records a use at `now_ms`; false when the cluster sleeps (the caller wakes it).
    ///
    /// The stamp is written before the state is read, and [`Usage::try_sleep`] writes the
    /// state before it reads the stamp again (all sequentially consistent): so either this
    /// use sees the cluster asleep, or the sleeper sees this use and stays awake. A cluster
    /// that answered "awake" here keeps its endpoints for the request.
    pub fn touch(&self, now_ms: u64) -> bool {
        self.last_used_ms.store(now_ms, Ordering::SeqCst);
        !self.asleep.load(Ordering::SeqCst)
    }

    /// When the cluster was last used.
    pub fn last_used_ms(&self) -> u64 {
        self.last_used_ms.load(Ordering::SeqCst)
    }

    /// Whether the cluster sleeps.
    pub fn is_asleep(&self) -> bool {
        self.asleep.load(Ordering::SeqCst)
    }

    /// Puts the cluster to sleep if it was not used since `before_ms`; false (and awake)
    /// when a use came in meanwhile. The caller holds the registry's lock.
    pub(super) fn try_sleep(&self, before_ms: u64) -> bool {
        self.asleep.store(true, Ordering::SeqCst);
        if self.last_used_ms.load(Ordering::SeqCst) >= before_ms {
            self.asleep.store(false, Ordering::SeqCst);
            return false;
        }
        self.discovered.store(false, Ordering::SeqCst);
        self.probed.store(false, Ordering::SeqCst);
        true
    }

    /// Wakes a sleeping cluster (not yet warm). The caller holds the registry's lock.
    pub(super) fn wake(&self) {
        self.asleep.store(false, Ordering::SeqCst);
    }

    /// Discovery gave its first answer.
    pub fn set_discovered(&self) {
        self.discovered.store(true, Ordering::SeqCst);
        self.notify_if_warm();
    }

    /// Health checks probed every endpoint once.
    pub fn set_probed(&self) {
        self.probed.store(true, Ordering::SeqCst);
        self.notify_if_warm();
    }

    /// Whether the cluster is warm: its endpoints known and, with health checks, probed.
    pub fn is_warm(&self) -> bool {
        self.discovered.load(Ordering::SeqCst) && self.probed.load(Ordering::SeqCst)
    }

    fn notify_if_warm(&self) {
        if self.is_warm() {
            self.warmed.notify_waiters();
        }
    }

    /// Waits until the cluster is warm, for at most `limit`; whether it is.
    pub async fn warm_within(&self, limit: Duration) -> bool {
        if self.is_warm() {
            return true;
        }
        let notified = self.warmed.notified();
        tokio::pin!(notified);
        // Registered before the second look, so a warm-up in between is not missed.
        notified.as_mut().enable();
        if self.is_warm() {
            return true;
        }
        let _ = tokio::time::timeout(limit, notified).await;
        self.is_warm()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_use_after_the_idle_mark_keeps_the_cluster_awake() {
        let usage = Usage::new(100);
        assert!(usage.touch(200));
        // Idle since before 150? No: used at 200.
        assert!(!usage.try_sleep(150));
        assert!(usage.touch(210));
        // Idle since before 300: asleep, and the next use says so.
        assert!(usage.try_sleep(300));
        assert!(!usage.touch(400));
        usage.wake();
        assert!(usage.touch(401));
    }

    #[tokio::test]
    async fn warm_up_needs_discovery_and_probes_and_wakes_waiters() {
        let usage = std::sync::Arc::new(Usage::new(0));
        assert!(!usage.warm_within(Duration::from_millis(10)).await);
        usage.set_discovered();
        assert!(!usage.is_warm());
        let waiter = {
            let usage = std::sync::Arc::clone(&usage);
            tokio::spawn(async move { usage.warm_within(Duration::from_secs(10)).await })
        };
        tokio::task::yield_now().await;
        usage.set_probed();
        assert!(waiter.await.expect("waiter"));
        // Sleeping forgets the warm-up.
        assert!(usage.try_sleep(u64::MAX));
        assert!(!usage.is_warm());
    }
}
