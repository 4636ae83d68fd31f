//! Repeated timeouts: a filter whose callbacks keep running into their time limit is not
//! run again until a cool-down passes, so that a looping filter cannot take a worker's
//! time request after request (each timeout costs a whole `time_limit` of CPU). One
//! timeout alone gets a fresh instance at once; from the second within 30 s of the one
//! before, the filter rests 100 ms, doubling up to 10 s, and its failure mode answers
//! meanwhile (as Envoy answers for a failed VM until it reloads). 30 s without a timeout
//! starts the count over.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const FIRST: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_secs(10);
/// Timeouts further apart than this are not a run.
const RUN_GAP: Duration = Duration::from_secs(30);

/// A plugin's run of timeouts.
#[derive(Debug)]
pub(crate) struct Cooldown {
    /// The plugin's clock origin (`until` counts from it).
    origin: Instant,
    /// Timeouts in the current run.
    consecutive: AtomicU32,
    /// When the last timeout was (nanoseconds after `origin`).
    last: AtomicU64,
    /// Nanoseconds after `origin` before which the filter does not run; 0: it runs.
    until: AtomicU64,
}

impl Cooldown {
    pub(crate) fn new() -> Cooldown {
        Cooldown {
            origin: Instant::now(),
            consecutive: AtomicU32::new(0),
            last: AtomicU64::new(0),
            until: AtomicU64::new(0),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// How long the filter still rests, if it does (one atomic load when it does not).
    pub(crate) fn resting(&self) -> Option<Duration> {
        let until = self.until.load(Ordering::Acquire);
        if until == 0 {
            return None;
        }
        let now = self.nanos(Instant::now());
        (now < until).then(|| Duration::from_nanos(until - now))
    }

    /// A callback timed out; returns the rest it starts, if any.
    pub(crate) fn timed_out(&self) -> Option<Duration> {
        self.timed_out_at(Instant::now())
    }

    fn timed_out_at(&self, at: Instant) -> Option<Duration> {
        let now = self.nanos(at);
        let last = self.last.swap(now, Ordering::AcqRel);
        if now.saturating_sub(last) > self.nanos(self.origin + RUN_GAP) {
            self.consecutive.store(0, Ordering::Release);
        }
        let n = self.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
        if n < 2 {
            return None;
        }
        let rest = FIRST.saturating_mul(1 << (n - 2).min(16)).min(MAX);
        let until = self.nanos(at + rest).max(1);
        self.until.store(until, Ordering::Release);
        Some(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::{Cooldown, FIRST, MAX};

    #[test]
    fn rests_from_the_second_timeout_of_a_run_doubling_up_to_the_cap() {
        let c = Cooldown::new();
        assert_eq!(c.timed_out(), None, "one timeout: a fresh instance at once");
        assert!(c.resting().is_none());
        assert_eq!(c.timed_out(), Some(FIRST));
        assert!(c.resting().is_some_and(|left| left <= FIRST));
        assert_eq!(c.timed_out(), Some(FIRST * 2));
        for _ in 0..20 {
            c.timed_out();
        }
        assert_eq!(c.timed_out(), Some(MAX), "capped");
    }

    #[test]
    fn timeouts_far_apart_are_not_a_run() {
        let c = Cooldown::new();
        let t0 = std::time::Instant::now();
        assert_eq!(c.timed_out_at(t0), None);
        let later = t0 + super::RUN_GAP + std::time::Duration::from_secs(1);
        assert_eq!(c.timed_out_at(later), None, "31 s later: a new run");
        assert_eq!(
            c.timed_out_at(later + std::time::Duration::from_secs(1)),
            Some(FIRST),
            "1 s after that: the second of a run"
        );
    }
}
