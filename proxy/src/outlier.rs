//! Passive outlier ejection: endpoints that answer `consecutive_5xx` failures in a row (5xx
//! responses, and failures to connect or to get an answer) are ejected for `eject_for` ×
//! the number of times they were ejected (capped at [`MAX_MULTIPLIER`]×), and come back
//! when that time has passed. At most `max_ejected` of the set (rounded down) is ejected at
//! once, so a service-wide failure cannot eject everything.

use std::sync::Arc;

use mesh_table::{Outlier, Ppm};

use crate::cluster::Endpoint;

/// Ejection times grow up to `eject_for` × this.
pub const MAX_MULTIPLIER: u32 = 10;

/// The outlier counters of one endpoint.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Record {
    consecutive: u32,
    times_ejected: u32,
}

/// How many endpoints of `total` may be ejected at once: `share` of them, rounded down.
pub fn max_ejected(total: usize, share: Ppm) -> usize {
    let allowed = (total as u64).saturating_mul(u64::from(share.0)) / u64::from(Ppm::FULL.0);
    usize::try_from(allowed).unwrap_or(usize::MAX)
}

/// Feeds one result of `endpoint` (`failed` or not), one of `members`, at `now_ms`; when it
/// ejects the endpoint, returns for how long (ms). The caller serializes calls per cluster
/// so two ejections cannot both pass the `max_ejected` check.
pub fn observe(
    members: &[Arc<Endpoint>],
    endpoint: &Endpoint,
    failed: bool,
    policy: &Outlier,
    now_ms: u64,
) -> Option<u64> {
    let mut record = endpoint.outlier();
    if !failed {
        record.consecutive = 0;
        return None;
    }
    record.consecutive = record.consecutive.saturating_add(1);
    if record.consecutive < policy.consecutive_5xx.max(1) || endpoint.is_ejected(now_ms) {
        return None;
    }
    let ejected = members.iter().filter(|e| e.is_ejected(now_ms)).count();
    if ejected >= max_ejected(members.len(), policy.max_ejected) {
        // Keep the count: the next failure tries again, once another endpoint is back.
        return None;
    }
    record.consecutive = 0;
    // A long enough good spell since the last ejection forgets the earlier ones.
    let cap = policy
        .eject_for_ms
        .saturating_mul(u64::from(MAX_MULTIPLIER));
    if now_ms.saturating_sub(endpoint.ejected_until_ms()) > cap {
        record.times_ejected = 0;
    }
    record.times_ejected = record.times_ejected.saturating_add(1);
    let duration = policy
        .eject_for_ms
        .saturating_mul(u64::from(record.times_ejected.min(MAX_MULTIPLIER)));
    endpoint.eject_until(now_ms.saturating_add(duration));
    Some(duration)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use mesh_table::{Outlier, Ppm};

    use super::{max_ejected, observe};
    use crate::cluster::Endpoint;

    fn members(n: u16) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| Arc::new(Endpoint::new(SocketAddr::from(([127, 0, 0, 1], 1000 + i)))))
            .collect()
    }

    fn policy(max_percent: u32) -> Outlier {
        Outlier {
            consecutive_5xx: 3,
            eject_for_ms: 1_000,
            max_ejected: Ppm(max_percent * 10_000),
        }
    }

    #[test]
    fn the_cap_rounds_down_and_may_be_zero() {
        assert_eq!(max_ejected(3, Ppm(100_000)), 0);
        assert_eq!(max_ejected(10, Ppm(100_000)), 1);
        assert_eq!(max_ejected(3, Ppm(500_000)), 1);
        assert_eq!(max_ejected(4, Ppm(500_000)), 2);
        assert_eq!(max_ejected(7, Ppm::FULL), 7);
        assert_eq!(max_ejected(0, Ppm::FULL), 0);
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets_the_run() {
        let m = members(2);
        let p = policy(50);
        assert_eq!(observe(&m, &m[0], true, &p, 0), None);
        assert_eq!(observe(&m, &m[0], true, &p, 0), None);
        assert_eq!(observe(&m, &m[0], false, &p, 0), None);
        assert_eq!(observe(&m, &m[0], true, &p, 0), None);
        assert_eq!(observe(&m, &m[0], true, &p, 0), None);
        assert_eq!(observe(&m, &m[0], true, &p, 10), Some(1_000));
        assert!(m[0].is_ejected(500) && !m[0].is_ejected(1_010));
    }

    #[test]
    fn ejection_time_grows_with_each_ejection_up_to_the_cap() {
        let m = members(2);
        let p = policy(50);
        let mut now = 0;
        let mut durations = Vec::new();
        for _ in 0..12 {
            let mut ejected = None;
            for _ in 0..3 {
                ejected = observe(&m, &m[0], true, &p, now).or(ejected);
            }
            let d = ejected.expect("ejected");
            durations.push(d);
            now += d + 1; // back, and failing again at once
        }
        assert_eq!(&durations[..4], &[1_000, 2_000, 3_000, 4_000]);
        assert!(durations[9..].iter().all(|&d| d == 10_000), "{durations:?}");
        // A long healthy spell forgets the earlier ejections.
        now += 10 * 1_000 + 1;
        let mut again = None;
        for _ in 0..3 {
            again = observe(&m, &m[0], true, &p, now).or(again);
        }
        assert_eq!(again, Some(1_000));
    }

    #[test]
    fn never_more_than_max_ejected_of_the_set() {
        let m = members(4);
        let p = policy(50); // 2 of 4
        for e in &m {
            for _ in 0..3 {
                observe(&m, e, true, &p, 0);
            }
        }
        assert_eq!(m.iter().filter(|e| e.is_ejected(0)).count(), 2);
        // With 10% of 4 (0 endpoints), nothing is ejected however it fails.
        let m = members(4);
        let p = policy(10);
        for _ in 0..20 {
            assert_eq!(observe(&m, &m[0], true, &p, 0), None);
        }
    }
}
