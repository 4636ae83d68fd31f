//! Retry budgets (Linkerd's): over the last [`WINDOW_SECS`] seconds, the retries of a route
//! may add at most its `budget` share to its requests, plus a floor of
//! [`MIN_RETRIES_PER_SEC`] per second so that a quiet route can still retry. A budget bounds
//! the extra load retries put on a service that is failing, where per-request attempts
//! alone would multiply it. Budgets are kept by route name, so a table swap keeps them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use mesh_table::{Ppm, Table};

use crate::clock::now_ms;

/// The window retries are counted over.
pub const WINDOW_SECS: u64 = 10;

/// Retries allowed per second of the window whatever the request rate.
pub const MIN_RETRIES_PER_SEC: u64 = 10;

/// Requests and retries in one second.
#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    second: u64,
    requests: u64,
    retries: u64,
}

/// One route's budget.
#[derive(Debug)]
pub struct Budget {
    ratio: AtomicU32,
    slots: Mutex<[Slot; WINDOW_SECS as usize]>,
}

impl Budget {
    /// A budget letting retries add `ratio` to the requests.
    pub fn new(ratio: Ppm) -> Budget {
        Budget {
            ratio: AtomicU32::new(ratio.0),
            slots: Mutex::new([Slot::default(); WINDOW_SECS as usize]),
        }
    }

    /// Changes the share (a new table).
    pub fn set_ratio(&self, ratio: Ppm) {
        self.ratio.store(ratio.0, Ordering::Relaxed);
    }

    /// Counts a request (its first try).
    pub fn deposit(&self) {
        self.deposit_at(now_ms());
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn try_withdraw(&self) -> bool {
        self.try_withdraw_at(now_ms())
    }

    /// [`Budget::deposit`] at `now_ms`.
    pub fn deposit_at(&self, now_ms: u64) {
        let mut slots = self.lock();
        current(&mut slots, now_ms / 1000).requests += 1;
    }

    /// [`Budget::try_withdraw`] at `now_ms`.
    pub fn try_withdraw_at(&self, now_ms: u64) -> bool {
        let second = now_ms / 1000;
        let mut slots = self.lock();
        let (requests, retries) = slots
            .iter()
            .filter(|s| s.second + WINDOW_SECS > second && s.second <= second)
            .fold((0u64, 0u64), |(q, r), s| (q + s.requests, r + s.retries));
        let ratio = u64::from(self.ratio.load(Ordering::Relaxed));
        let allowed = requests.saturating_mul(ratio) / u64::from(Ppm::FULL.0)
            + MIN_RETRIES_PER_SEC * WINDOW_SECS;
        if retries >= allowed {
            return false;
        }
        current(&mut slots, second).retries += 1;
        true
    }

    fn lock(&self) -> MutexGuard<'_, [Slot; WINDOW_SECS as usize]> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The slot of `second`, cleared if it last held an older second.
fn current(slots: &mut [Slot; WINDOW_SECS as usize], second: u64) -> &mut Slot {
    let slot = &mut slots[(second % WINDOW_SECS) as usize];
    if slot.second != second {
        *slot = Slot {
            second,
            ..Slot::default()
        };
    }
    slot
}

/// The budgets of every route with a retry policy, by `service/route`.
#[derive(Debug, Default)]
pub struct Budgets {
    map: Mutex<HashMap<String, Arc<Budget>>>,
}

impl Budgets {
    /// Brings the budgets in line with `table`; returns each route's (in table order),
    /// `None` for routes that do not retry.
    pub fn sync(&self, table: &Table) -> Vec<Option<Arc<Budget>>> {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut keep = Vec::new();
        let budgets = table
            .routes
            .iter()
            .map(|route| {
                let retry = route.retry.as_ref()?;
                let service = table.services.get(route.service as usize)?;
                let key = format!("{}/{}", service.name, route.name);
                let budget = map
                    .entry(key.clone())
                    .or_insert_with(|| Arc::new(Budget::new(retry.budget)));
                budget.set_ratio(retry.budget);
                keep.push(key);
                Some(Arc::clone(budget))
            })
            .collect();
        map.retain(|key, _| keep.contains(key));
        budgets
    }
}

#[cfg(test)]
mod tests {
    use super::{Budget, MIN_RETRIES_PER_SEC, WINDOW_SECS};
    use mesh_table::Ppm;

    fn withdraw_all(budget: &Budget, now_ms: u64) -> u64 {
        let mut n = 0;
        while budget.try_withdraw_at(now_ms) {
            n += 1;
            assert!(n < 1_000_000, "the budget never ran out");
        }
        n
    }

    #[test]
    fn a_quiet_route_gets_the_floor() {
        let b = Budget::new(Ppm(200_000));
        assert_eq!(withdraw_all(&b, 0), MIN_RETRIES_PER_SEC * WINDOW_SECS);
    }

    #[test]
    fn retries_add_at_most_the_share_of_the_requests_plus_the_floor() {
        let b = Budget::new(Ppm(200_000));
        for i in 0..5_000 {
            b.deposit_at(i % 5_000);
        }
        // 20% of 5,000 plus 10/s over 10 s.
        assert_eq!(withdraw_all(&b, 4_999), 1_000 + 100);
        // Spent retries stay counted within the window...
        assert!(!b.try_withdraw_at(9_999));
        // ...and age out with the requests: past the window only the floor is back.
        assert_eq!(withdraw_all(&b, 15_000), 100);
    }

    #[test]
    fn the_window_slides_second_by_second() {
        let b = Budget::new(Ppm(500_000));
        for _ in 0..1_000 {
            b.deposit_at(0); // second 0
        }
        for _ in 0..1_000 {
            b.deposit_at(5_000); // second 5
        }
        // Both seconds count at 9 s: 50% of 2,000 + 100.
        assert_eq!(withdraw_all(&b, 9_000), 1_100);
        // At 10 s second 0 has left the window, and with it its requests; the retries
        // (counted at second 9) stay: 50% of 1,000 + 100 = 600 < 1,100 taken.
        assert!(!b.try_withdraw_at(10_000));
        // At 19 s the window is seconds 10..=19: nothing is left but the floor.
        assert_eq!(withdraw_all(&b, 19_000), 100);
    }

    #[test]
    fn a_new_share_applies_at_once() {
        let b = Budget::new(Ppm(0));
        for _ in 0..1_000 {
            b.deposit_at(0);
        }
        assert_eq!(withdraw_all(&b, 0), 100);
        b.set_ratio(Ppm::FULL);
        assert_eq!(withdraw_all(&b, 0), 1_000);
    }
}
