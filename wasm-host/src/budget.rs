//! A callback's time limit, counted in its thread's CPU time: a thread the machine preempts
//! is not charged for the wait. The epoch ticker only says when to look.
//!
//! Reading a thread's CPU clock is a system call (no vDSO for `CLOCK_THREAD_CPUTIME_ID`),
//! and a request makes several guest calls per filter; so arming a callback reads a
//! per-thread reading at most 1 ms old, and the check at the deadline subtracts the wall
//! time since that reading (the CPU spent then cannot exceed it). The estimate is a lower
//! bound of the callback's CPU: a callback is never stopped early, and a runaway one is
//! stopped at most about 1 ms of CPU late.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How old a cached CPU reading may be when a callback is armed.
const MAX_STALENESS: Duration = Duration::from_millis(1);

thread_local! {
    /// This thread's last CPU-time reading and when (wall clock) it was taken.
    static LAST: Cell<Option<(Duration, Instant)>> = const { Cell::new(None) };
}

/// The thread's CPU time now (a system call), remembered for [`CpuBudget::arm`].
fn read_cpu() -> (Duration, Instant) {
    let reading = (cpu_time::ThreadTime::now().as_duration(), Instant::now());
    LAST.with(|last| last.set(Some(reading)));
    reading
}

/// The budget of the callback running in a store.
#[derive(Debug)]
pub(crate) struct CpuBudget {
    /// The filter's `time_limit`.
    pub(crate) limit: Duration,
    /// A CPU reading of this thread, when it was taken, and when the callback started.
    start: Option<(Duration, Instant, Instant)>,
}

impl CpuBudget {
    /// A budget of `limit` per callback.
    pub(crate) fn new(limit: Duration) -> CpuBudget {
        CpuBudget { limit, start: None }
    }

    /// A callback starts on this thread now (a callback is synchronous: it ends on the
    /// thread it started on).
    pub(crate) fn arm(&mut self) {
        let now = Instant::now();
        let (cpu, at) = match LAST.with(Cell::get) {
            Some((cpu, at)) if now.saturating_duration_since(at) <= MAX_STALENESS => (cpu, at),
            _ => read_cpu(),
        };
        self.start = Some((cpu, at, now));
    }

    /// What is left of the budget, or `None` when it is spent.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        let used = self.start.map_or(Duration::ZERO, |(cpu, at, armed)| {
            let (cpu_now, _) = read_cpu();
            // CPU since the reading, less what may have been spent before the callback.
            cpu_now
                .saturating_sub(cpu)
                .saturating_sub(armed.saturating_duration_since(at))
        });
        self.limit.checked_sub(used).filter(|left| !left.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::CpuBudget;
    use std::time::{Duration, Instant};

    fn spin(for_: Duration) {
        let start = Instant::now();
        while start.elapsed() < for_ {
            std::hint::black_box(0u64);
        }
    }

    #[test]
    fn spinning_spends_the_budget_and_sleeping_does_not() {
        let mut budget = CpuBudget::new(Duration::from_millis(20));
        budget.arm();
        std::thread::sleep(Duration::from_millis(40));
        assert!(
            budget.remaining().is_some(),
            "a sleeping thread is not charged"
        );
        budget.arm();
        spin(Duration::from_millis(45));
        assert!(
            budget.remaining().is_none(),
            "45 ms of spinning spends 20 ms"
        );
    }
}
