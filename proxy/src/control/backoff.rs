//! Exponential backoff with full jitter, so that proxies that lost the same control plane
//! do not all come back in the same instant.

use std::time::Duration;

/// Delays that double from `base` up to `cap`; each is uniformly random below its bound.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `base`, never above `cap`.
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The reconnect backoff of the subscription stream: 100 ms to 10 s (the control plane
    /// counts on that bound after its restarts).
    pub fn reconnect() -> Backoff {
        Backoff::new(
            Duration::from_millis(100),
            mesh_table::frames::MAX_RECONNECT_BACKOFF,
        )
    }

    /// The bound of the next delay: `base * 2^attempt`, at most `cap`.
    pub fn bound(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The next delay: uniform in `[0, bound]` (full jitter), then the bound doubles.
    pub fn next_delay(&mut self) -> Duration {
        let bound = self.bound();
        self.attempt = self.attempt.saturating_add(1);
        let millis = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(fastrand::u64(0..=millis))
    }

    /// Back to `base`, after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_double_from_base_to_cap() {
        let mut b = Backoff::reconnect();
        let mut bounds = Vec::new();
        for _ in 0..12 {
            bounds.push(b.bound().as_millis());
            let delay = b.next_delay();
            assert!(delay <= Duration::from_millis(*bounds.last().unwrap_or(&0) as u64));
        }
        assert_eq!(
            &bounds[..8],
            &[100, 200, 400, 800, 1600, 3200, 6400, 10_000]
        );
        assert!(bounds.iter().all(|b| *b <= 10_000));
        b.reset();
        assert_eq!(b.bound(), Duration::from_millis(100));
    }

    #[test]
    fn many_attempts_stay_at_the_cap() {
        let mut b = Backoff::reconnect();
        for _ in 0..1000 {
            assert!(b.next_delay() <= Duration::from_secs(10));
        }
        assert_eq!(b.bound(), Duration::from_secs(10));
    }

    #[test]
    fn delays_are_jittered() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(10));
            seen.insert(b.next_delay());
        }
        assert!(seen.len() > 10, "{seen:?}");
    }
}
