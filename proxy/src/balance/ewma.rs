//! Peak EWMA (Finagle's, as Linkerd uses it): each endpoint's latency estimate jumps to any
//! slower response at once (peak sensitivity) and decays towards faster ones and towards
//! zero as time passes (τ = 10 s), so an endpoint that turns slow loses traffic within a
//! request or two, and one that was slow is tried again a while later. The cost of an
//! endpoint is its estimate × (requests in flight + 1); of two random eligible endpoints,
//! the cheaper one is chosen.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{two_choices, Eligible};
use crate::cluster::Endpoint;

/// How fast old observations fade.
pub const DECAY: Duration = Duration::from_secs(10);

/// The estimate of an endpoint nothing is known about yet (Linkerd's default).
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// One endpoint's latency estimate.
#[derive(Debug, Clone)]
pub struct PeakEwma {
    estimate_ns: f64,
    updated: Instant,
}

impl PeakEwma {
    /// An estimate of [`DEFAULT_RTT`] as of `now`.
    pub fn new(now: Instant) -> PeakEwma {
        PeakEwma {
            estimate_ns: nanos(DEFAULT_RTT),
            updated: now,
        }
    }

    /// Feeds one observed response time.
    pub fn observe(&mut self, rtt: Duration, now: Instant) {
        self.update(nanos(rtt), now);
    }

    /// The estimate at `now`, in nanoseconds, decayed towards zero for the time without
    /// observations.
    pub fn estimate(&mut self, now: Instant) -> f64 {
        self.update(0.0, now)
    }

    /// estimate × (`in_flight` + 1).
    pub fn cost(&mut self, now: Instant, in_flight: f64) -> f64 {
        self.estimate(now) * (in_flight + 1.0)
    }

    fn update(&mut self, rtt_ns: f64, now: Instant) -> f64 {
        if rtt_ns > self.estimate_ns {
            // Peak: a slower response counts in full at once.
            self.estimate_ns = rtt_ns;
        } else {
            let elapsed = nanos(now.saturating_duration_since(self.updated));
            let decay = (-elapsed / nanos(DECAY)).exp();
            self.estimate_ns = self.estimate_ns * decay + rtt_ns * (1.0 - decay);
        }
        if now > self.updated {
            self.updated = now;
        }
        self.estimate_ns
    }
}

fn nanos(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

/// The cheaper of two random eligible endpoints.
pub fn select(
    endpoints: &[Arc<Endpoint>],
    eligible: Eligible<'_>,
    now: Instant,
    rng: &mut fastrand::Rng,
) -> Option<usize> {
    match two_choices(endpoints, eligible, rng)? {
        (a, Some(b)) if endpoints[b].cost(now) < endpoints[a].cost(now) => Some(b),
        (a, _) => Some(a),
    }
}
