//! Circuit breaking: what this sidecar lets through to one destination service at once
//! (the service's `limits { max_requests  max_pending }`, Envoy's `max_requests` and
//! `max_pending_requests`). A request takes an in-flight slot before its first try and
//! keeps it until its response body ends (retries go within the one slot); beyond
//! `max_requests` it waits, if fewer than `max_pending` already wait, else it is refused at
//! once (`503 overloaded`). Nothing queues without bound.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use mesh_table::Limits;
use tokio::sync::Notify;

/// The counts of one destination service.
#[derive(Debug)]
pub struct Admission {
    in_flight: AtomicU32,
    pending: AtomicU32,
    max_requests: AtomicU32,
    max_pending: AtomicU32,
    released: Notify,
}

/// An in-flight slot, given back when dropped.
#[derive(Debug)]
pub struct Slot(Arc<Admission>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.released.notify_one();
    }
}

/// Refused: the destination is at its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded;

struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    /// Counts under `limits`.
    pub fn new(limits: Limits) -> Arc<Admission> {
        Arc::new(Admission {
            in_flight: AtomicU32::new(0),
            pending: AtomicU32::new(0),
            max_requests: AtomicU32::new(limits.max_requests),
            max_pending: AtomicU32::new(limits.max_pending),
            released: Notify::new(),
        })
    }

    /// Applies a new table's limits (to the requests that come next; a raised limit lets
    /// waiting ones in).
    pub fn set_limits(&self, limits: Limits) {
        self.max_requests
            .store(limits.max_requests, Ordering::Release);
        self.max_pending
            .store(limits.max_pending, Ordering::Release);
        self.released.notify_waiters();
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Requests waiting for a slot now.
    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Acquire)
    }

    fn try_take(self: &Arc<Self>) -> Option<Slot> {
        let max = self.max_requests.load(Ordering::Acquire);
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(Arc::clone(self)))
    }

    /// A slot now, or after waiting among at most `max_pending` others; `Overloaded` at
    /// once when the wait list is full too. The caller bounds the wait (the route's timeout).
    pub async fn admit(self: &Arc<Self>) -> Result<Slot, Overloaded> {
        if let Some(slot) = self.try_take() {
            return Ok(slot);
        }
        let max_pending = self.max_pending.load(Ordering::Acquire);
        self.pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max_pending).then_some(n + 1)
            })
            .map_err(|_| Overloaded)?;
        let _waiting = Waiting(&self.pending);
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            // Registered before looking, so a slot given back in between wakes this one.
            released.as_mut().enable();
            if let Some(slot) = self.try_take() {
                return Ok(slot);
            }
            released.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn beyond_the_limits_requests_are_refused_at_once() {
        let a = Admission::new(Limits {
            max_requests: 2,
            max_pending: 1,
        });
        let one = a.admit().await.expect("one");
        let _two = a.admit().await.expect("two");
        // The third waits; the fourth finds the wait list full.
        let waiter = {
            let a = Arc::clone(&a);
            tokio::spawn(async move { a.admit().await.map(|_| ()) })
        };
        for _ in 0..100 {
            if a.pending() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(a.pending(), 1);
        assert_eq!(a.admit().await.map(|_| ()), Err(Overloaded));
        drop(one);
        assert_eq!(waiter.await.expect("join"), Ok(()));
        assert_eq!((a.in_flight(), a.pending()), (1, 0));
    }

    #[tokio::test]
    async fn no_pending_means_shed_at_once() {
        let a = Admission::new(Limits {
            max_requests: 1,
            max_pending: 0,
        });
        let slot = a.admit().await.expect("one");
        assert_eq!(a.admit().await.map(|_| ()), Err(Overloaded));
        drop(slot);
        assert!(a.admit().await.is_ok());
    }
}
