//! Selection: who gets this request, among the endpoints that may take it. One algorithm
//! per file, each a plain function of the endpoint list and a filter of who is eligible;
//! the fallbacks (another endpoint for a retry, panic mode when none is available) are the
//! cluster's (`cluster::Cluster::pick`), so every algorithm gets them alike.

pub mod ewma;
pub mod least_request;
pub mod random;
pub mod ring_hash;
pub mod round_robin;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

use mesh_table::Balance;

use crate::cluster::Endpoint;

/// Which endpoints a selection may choose from.
pub type Eligible<'a> = &'a dyn Fn(&Endpoint) -> bool;

/// What one selection reads besides the endpoints.
#[derive(Debug)]
pub struct Input<'a> {
    /// The hashed value of the ring-hash header, when the request carries it.
    pub key: Option<u64>,
    /// The round-robin position, shared by the cluster's requests.
    pub cursor: &'a AtomicUsize,
    /// Now, for latency decay.
    pub now: Instant,
    /// Random choices (seeded in tests).
    pub rng: &'a mut fastrand::Rng,
}

/// A service's algorithm and what it precomputes over one endpoint list (the ring).
#[derive(Debug)]
pub enum Balancer {
    /// Each endpoint in turn.
    RoundRobin,
    /// Power of two choices on requests in flight.
    LeastRequest,
    /// Power of two choices on peak-EWMA latency × requests in flight.
    Ewma,
    /// Uniformly random.
    Random,
    /// Consistent hashing of a request header.
    RingHash {
        /// The header (lower case).
        header: String,
        /// The ring over the endpoint list it was built with.
        ring: ring_hash::Ring,
    },
}

impl Balancer {
    /// The balancer for `balance` over `endpoints`.
    pub fn new(balance: &Balance, endpoints: &[Arc<Endpoint>]) -> Balancer {
        match balance {
            Balance::RoundRobin => Balancer::RoundRobin,
            Balance::LeastRequest => Balancer::LeastRequest,
            Balance::Ewma => Balancer::Ewma,
            Balance::Random => Balancer::Random,
            Balance::RingHash { header } => Balancer::RingHash {
                header: header.clone(),
                ring: ring_hash::Ring::new(endpoints),
            },
        }
    }

    /// The header whose value is hashed, for ring hashing.
    pub fn hash_header(&self) -> Option<&str> {
        match self {
            Balancer::RingHash { header, .. } => Some(header),
            _ => None,
        }
    }

    /// The index of the chosen endpoint among `endpoints`, or `None` when none is eligible.
    pub fn select(
        &self,
        endpoints: &[Arc<Endpoint>],
        eligible: Eligible<'_>,
        input: &mut Input<'_>,
    ) -> Option<usize> {
        match self {
            Balancer::RoundRobin => round_robin::select(endpoints, eligible, input.cursor),
            Balancer::LeastRequest => least_request::select(endpoints, eligible, input.rng),
            Balancer::Ewma => ewma::select(endpoints, eligible, input.now, input.rng),
            Balancer::Random => random::select(endpoints, eligible, input.rng),
            Balancer::RingHash { ring, .. } => match input.key {
                Some(key) => ring.select(endpoints, eligible, key),
                // Without the header there is nothing to be consistent about.
                None => random::select(endpoints, eligible, input.rng),
            },
        }
    }
}

/// The index of the `n`-th eligible endpoint (from 0).
fn nth_eligible(endpoints: &[Arc<Endpoint>], eligible: Eligible<'_>, n: usize) -> Option<usize> {
    endpoints
        .iter()
        .enumerate()
        .filter(|(_, e)| eligible(e))
        .nth(n)
        .map(|(i, _)| i)
}

/// Two distinct eligible endpoints chosen at random (the second is `None` when only one is
/// eligible): the "power of two choices" draw.
fn two_choices(
    endpoints: &[Arc<Endpoint>],
    eligible: Eligible<'_>,
    rng: &mut fastrand::Rng,
) -> Option<(usize, Option<usize>)> {
    let count = endpoints.iter().filter(|e| eligible(e)).count();
    match count {
        0 => None,
        1 => nth_eligible(endpoints, eligible, 0).map(|i| (i, None)),
        _ => {
            let a = rng.usize(..count);
            let mut b = rng.usize(..count - 1);
            if b >= a {
                b += 1;
            }
            let first = nth_eligible(endpoints, eligible, a)?;
            Some((first, nth_eligible(endpoints, eligible, b)))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
