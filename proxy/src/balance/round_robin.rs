//! Round robin: each eligible endpoint in turn, from a cursor the cluster's requests share.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::Eligible;
use crate::cluster::Endpoint;

/// The next eligible endpoint at or after the cursor.
pub fn select(
    endpoints: &[Arc<Endpoint>],
    eligible: Eligible<'_>,
    cursor: &AtomicUsize,
) -> Option<usize> {
    let n = endpoints.len();
    if n == 0 {
        return None;
    }
    let start = cursor.fetch_add(1, Ordering::Relaxed);
    (0..n)
        .map(|i| start.wrapping_add(i) % n)
        .find(|&i| eligible(&endpoints[i]))
}
