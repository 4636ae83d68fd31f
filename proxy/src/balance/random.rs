//! Random: any eligible endpoint, uniformly.

use std::sync::Arc;

use super::{nth_eligible, Eligible};
use crate::cluster::Endpoint;

/// A uniformly random eligible endpoint.
pub fn select(
    endpoints: &[Arc<Endpoint>],
    eligible: Eligible<'_>,
    rng: &mut fastrand::Rng,
) -> Option<usize> {
    let count = endpoints.iter().filter(|e| eligible(e)).count();
    if count == 0 {
        return None;
    }
    nth_eligible(endpoints, eligible, rng.usize(..count))
}
