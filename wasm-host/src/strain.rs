//! A filter under strain: while its callbacks keep running out of time (an attacker's
//! requests that make it loop), each new callback gets a tight limit, so that such a request
//! costs the proxy a fraction of a millisecond of CPU instead of the whole `time_limit`.
//!
//! A filter's own callbacks take microseconds; its `time_limit` is headroom for the rare slow
//! one. Every looping request spends all of it, on a worker thread that the other requests
//! wait for: at 50 such requests a second and `time_limit 20ms`, a one-worker proxy had no
//! CPU left for anyone (bench/README.md, "Filter isolation under attack"). So after a
//! timeout the filter's callbacks get [`TIGHT_FUEL`] guest instructions and [`TIGHT_LIMIT`]
//! of CPU (or `time_limit`, if lower) until [`STRAIN_WINDOW`] has passed without another. A
//! callback that honestly needs more than that during an attack fails by the filter's
//! `failure` policy, like the attack's own. Outside strain nothing changes, and arming a
//! callback reads no clock (one atomic load).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The CPU limit of a strained filter's callbacks (checked at epoch ticks: the bound for
/// callbacks that spend their time in host calls rather than guest instructions).
pub(crate) const TIGHT_LIMIT: Duration = Duration::from_millis(1);
/// The guest instructions a strained filter's callback may run (wasmtime's fuel): about
/// half a millisecond of a tight loop on a current core. The CPU limit alone is checked at
/// the epoch ticker's ticks, and a ticker thread that shares its core with a busy worker
/// runs only when the scheduler lets it, a millisecond or more late; fuel runs out in the
/// guest itself. A callback that loops through host calls spends more CPU per unit of fuel,
/// and there the CPU limit still holds.
pub(crate) const TIGHT_FUEL: u64 = 1_000_000;
/// How long a filter stays strained after its last timeout.
pub(crate) const STRAIN_WINDOW: Duration = Duration::from_secs(10);

/// One filter's strain.
#[derive(Debug)]
pub(crate) struct Strain {
    strained: AtomicBool,
    /// When the strain ends, unless another timeout moves it.
    until: Mutex<Instant>,
    /// Times the filter became strained (for logs and tests).
    pub(crate) episodes: AtomicU64,
}

impl Default for Strain {
    fn default() -> Strain {
        Strain {
            strained: AtomicBool::new(false),
            until: Mutex::new(Instant::now()),
            episodes: AtomicU64::new(0),
        }
    }
}

impl Strain {
    /// A callback ran out of time: strained for the next [`STRAIN_WINDOW`]. True when this
    /// starts a strain (the caller logs it).
    pub(crate) fn timed_out(&self) -> bool {
        *self.until.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now() + STRAIN_WINDOW;
        let started = !self.strained.swap(true, Ordering::AcqRel);
        if started {
            self.episodes.fetch_add(1, Ordering::Relaxed);
        }
        started
    }

    /// The limit of a callback starting now: `Some` (tighter than `limit`) while strained.
    #[inline]
    pub(crate) fn limit(&self, limit: Duration) -> Option<Duration> {
        if !self.strained.load(Ordering::Relaxed) {
            return None;
        }
        self.strained_limit(limit)
    }

    #[cold]
    fn strained_limit(&self, limit: Duration) -> Option<Duration> {
        let until = *self.until.lock().unwrap_or_else(PoisonError::into_inner);
        if Instant::now() >= until {
            self.strained.store(false, Ordering::Relaxed);
            return None;
        }
        Some(limit.min(TIGHT_LIMIT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_tightens_the_limit_for_a_window() {
        let strain = Strain::default();
        assert_eq!(strain.limit(Duration::from_millis(20)), None);
        assert!(strain.timed_out(), "the first timeout starts a strain");
        assert!(!strain.timed_out(), "the next only extends it");
        assert_eq!(strain.limit(Duration::from_millis(20)), Some(TIGHT_LIMIT));
        assert_eq!(
            strain.limit(Duration::from_micros(300)),
            Some(Duration::from_micros(300)),
            "never looser than the filter's own limit"
        );
        // The window passed: back to the filter's limit.
        *strain.until.lock().expect("lock") = Instant::now();
        assert_eq!(strain.limit(Duration::from_millis(20)), None);
        assert_eq!(strain.episodes.load(Ordering::Relaxed), 1);
    }
}
