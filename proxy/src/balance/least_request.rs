//! Least request: of two random eligible endpoints, the one with fewer requests in flight
//! (the power of two choices: nearly as good as scanning all, without the herd that
//! always picking the global minimum sends to one endpoint).

use std::sync::Arc;

use super::{two_choices, Eligible};
use crate::cluster::Endpoint;

/// The less loaded of two random eligible endpoints.
pub fn select(
    endpoints: &[Arc<Endpoint>],
    eligible: Eligible<'_>,
    rng: &mut fastrand::Rng,
) -> Option<usize> {
    match two_choices(endpoints, eligible, rng)? {
        (a, Some(b)) if endpoints[b].in_flight() < endpoints[a].in_flight() => Some(b),
        (a, _) => Some(a),
    }
}
