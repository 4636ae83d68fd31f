//! A callback's time limit, counted in its thread's CPU time: a thread the machine preempts
//! is not charged for the wait. The epoch ticker only says when to look.
//!
//! Reading a thread's CPU clock is a system call (no vDSO for `CLOCK_THREAD_CPUTIME_ID`),
//! and even a wall-clock read at each of the several guest calls of a request showed in a
//! filter's cost; yet almost every callback ends within a tick. So arming a callback reads
//! no clock: its first deadline is the next epoch tick, and only a callback still running
//! then takes its starting CPU reading, and gets its whole limit from there. One still
//! running a tick later hurries the ticker to its fine pace (`engine::EpochTicker`), so its
//! budget is checked every millisecond. The CPU spent before the first deadline (at most an
//! idle tick's worth of wall time, 4 ms) is not counted: a callback is never stopped early,
//! and a runaway one is stopped at most that, plus a fine tick or two, late.

use std::time::Duration;

/// The thread's CPU time now (a system call).
fn thread_cpu() -> Duration {
    cpu_time::ThreadTime::now().as_duration()
}

/// What a deadline of the running callback comes to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// The first deadline: the count starts now; look again a tick later.
    Started,
    /// Look again when this much more CPU could be spent.
    Continue(Duration),
    /// The budget is spent.
    Spent,
}

/// The budget of the callback running in a store.
#[derive(Debug)]
pub(crate) struct CpuBudget {
    /// The filter's `time_limit`.
    pub(crate) limit: Duration,
    /// The thread's CPU time at the callback's first deadline (`None` before it).
    start: Option<Duration>,
}

impl CpuBudget {
    /// A budget of `limit` per callback.
    pub(crate) fn new(limit: Duration) -> CpuBudget {
        CpuBudget { limit, start: None }
    }

    /// A callback starts (a callback is synchronous: it ends on the thread it started on).
    pub(crate) fn arm(&mut self) {
        self.start = None;
    }

    /// A deadline of the running callback passed: at the first, the CPU count starts;
    /// after that, what is left of the limit, or `Spent`.
    pub(crate) fn check(&mut self) -> Check {
        let now = thread_cpu();
        let Some(start) = self.start else {
            self.start = Some(now);
            return Check::Started;
        };
        let used = now.saturating_sub(start);
        match self.limit.checked_sub(used).filter(|left| !left.is_zero()) {
            Some(left) => Check::Continue(left),
            None => Check::Spent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{thread_cpu, Check, CpuBudget};
    use std::time::Duration;

    /// Spins until the thread has spent `for_` of CPU (not of wall time: on a busy machine
    /// the thread may wait for a core, and that wait is not charged).
    fn spin(for_: Duration) {
        let start = thread_cpu();
        while thread_cpu().saturating_sub(start) < for_ {
            std::hint::black_box(0u64);
        }
    }

    #[test]
    fn spinning_spends_the_budget_and_sleeping_does_not() {
        let mut budget = CpuBudget::new(Duration::from_millis(20));
        budget.arm();
        assert_eq!(budget.check(), Check::Started, "the first deadline");
        std::thread::sleep(Duration::from_millis(40));
        assert!(
            matches!(budget.check(), Check::Continue(_)),
            "a sleeping thread is not charged"
        );
        spin(Duration::from_millis(45));
        assert_eq!(
            budget.check(),
            Check::Spent,
            "45 ms of spinning spends 20 ms"
        );
        budget.arm();
        assert_eq!(
            budget.check(),
            Check::Started,
            "the next callback starts afresh"
        );
        assert!(matches!(budget.check(), Check::Continue(_)));
    }
}
