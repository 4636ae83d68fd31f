//! Backoff between tries: exponential with full jitter (as in "Exponential Backoff And
//! Jitter", AWS, and Envoy). The ceiling starts at the route's lower bound and doubles with
//! each retry up to its upper bound; the pause is uniform between zero and the ceiling, so
//! clients that failed together do not retry together.

use std::time::Duration;

/// The pause before retry number `retry` (1 for the first retry).
pub fn delay(base_ms: u64, max_ms: u64, retry: u32, rng: &mut fastrand::Rng) -> Duration {
    Duration::from_millis(rng.u64(..=ceiling(base_ms, max_ms, retry)))
}

/// The longest pause before retry number `retry`: `base × 2^(retry-1)`, at most `max`.
pub fn ceiling(base_ms: u64, max_ms: u64, retry: u32) -> u64 {
    let doublings = retry.saturating_sub(1).min(63);
    base_ms
        .saturating_mul(1u64 << doublings)
        .min(max_ms.max(base_ms))
}

#[cfg(test)]
mod tests {
    use super::{ceiling, delay};

    #[test]
    fn the_ceiling_doubles_from_the_lower_bound_up_to_the_upper() {
        let c: Vec<u64> = (1..=6).map(|n| ceiling(25, 250, n)).collect();
        assert_eq!(c, [25, 50, 100, 200, 250, 250]);
        assert_eq!(ceiling(25, 250, 1_000), 250);
        assert_eq!(ceiling(0, 0, 3), 0);
        // A misordered pair never yields less than the lower bound as the ceiling.
        assert_eq!(ceiling(100, 10, 1), 100);
    }

    #[test]
    fn pauses_stay_within_zero_and_the_ceiling_and_spread_over_it() {
        let mut rng = fastrand::Rng::with_seed(7);
        for retry in 1..=8 {
            let top = ceiling(25, 250, retry);
            let samples: Vec<u64> = (0..2_000)
                .map(|_| {
                    u64::try_from(delay(25, 250, retry, &mut rng).as_millis()).unwrap_or(u64::MAX)
                })
                .collect();
            assert!(samples.iter().all(|&d| d <= top), "retry {retry}");
            let mean = samples.iter().sum::<u64>() as f64 / samples.len() as f64;
            // Full jitter: uniform on [0, top], mean top/2.
            assert!(
                (mean - top as f64 / 2.0).abs() <= top as f64 * 0.1,
                "retry {retry}: mean {mean}"
            );
            assert!(
                samples.contains(&0) || top > 50,
                "retry {retry}: zero is a possible pause"
            );
        }
    }
}
