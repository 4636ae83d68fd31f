//! Distributions of each algorithm over a few endpoints, with fixed seeds.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_table::Balance;

use super::ring_hash::{hash, Ring};
use super::{Balancer, Input};
use crate::cluster::Endpoint;

pub(crate) fn endpoints(n: u16) -> Vec<Arc<Endpoint>> {
    (0..n)
        .map(|i| Arc::new(Endpoint::new(SocketAddr::from(([10, 0, 0, 1], 8000 + i)))))
        .collect()
}

/// How many of `picks` selections went to each endpoint.
fn spread(
    balancer: &Balancer,
    eps: &[Arc<Endpoint>],
    picks: usize,
    seed: u64,
    eligible: &dyn Fn(&Endpoint) -> bool,
) -> Vec<usize> {
    let cursor = AtomicUsize::new(0);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut counts = vec![0; eps.len()];
    for _ in 0..picks {
        let mut input = Input {
            key: None,
            cursor: &cursor,
            now: Instant::now(),
            rng: &mut rng,
        };
        if let Some(i) = balancer.select(eps, eligible, &mut input) {
            counts[i] += 1;
        }
    }
    counts
}

#[test]
fn round_robin_takes_turns_and_skips_the_ineligible() {
    let eps = endpoints(3);
    let b = Balancer::new(&Balance::RoundRobin, &eps);
    assert_eq!(spread(&b, &eps, 300, 1, &|_| true), [100, 100, 100]);
    let skip = eps[1].addr();
    let counts = spread(&b, &eps, 300, 1, &|e| e.addr() != skip);
    assert_eq!(counts[1], 0);
    assert_eq!(counts[0] + counts[2], 300);
    assert_eq!(spread(&b, &eps, 10, 1, &|_| false), [0, 0, 0]);
}

#[test]
fn random_is_even_within_a_few_percent() {
    let eps = endpoints(4);
    let b = Balancer::new(&Balance::Random, &eps);
    let counts = spread(&b, &eps, 40_000, 42, &|_| true);
    for c in counts {
        assert!((9_000..=11_000).contains(&c), "{c}");
    }
}

#[test]
fn least_request_never_picks_the_busiest_and_favours_the_idlest() {
    let eps = endpoints(3);
    let _busy: Vec<_> = (0..5).map(|_| eps[0].start()).collect();
    let _one = eps[1].start();
    let b = Balancer::new(&Balance::LeastRequest, &eps);
    let counts = spread(&b, &eps, 3_000, 7, &|_| true);
    // Of two distinct random endpoints the less busy wins: the busiest never, the idlest
    // whenever it is drawn (2 pairs of 3).
    assert_eq!(counts[0], 0, "{counts:?}");
    assert!((1_800..=2_200).contains(&counts[2]), "{counts:?}");
    // With equal loads, it is as even as random.
    let eps = endpoints(3);
    let counts = spread(&b, &eps, 30_000, 7, &|_| true);
    for c in counts {
        assert!((9_000..=11_000).contains(&c), "{c}");
    }
}

#[test]
fn ewma_shuns_a_slow_endpoint_until_the_others_are_loaded() {
    let eps = endpoints(3);
    let now = Instant::now();
    for e in &eps {
        e.observe_latency(Duration::from_millis(5), now);
    }
    // One slow response is enough (peak sensitivity).
    eps[2].observe_latency(Duration::from_millis(500), now);
    let b = Balancer::new(&Balance::Ewma, &eps);
    let cursor = AtomicUsize::new(0);
    let mut rng = fastrand::Rng::with_seed(3);
    let mut pick = |at: Instant| {
        let mut input = Input {
            key: None,
            cursor: &cursor,
            now: at,
            rng: &mut rng,
        };
        b.select(&eps, &|_| true, &mut input).expect("an endpoint")
    };
    let soon: Vec<usize> = (0..1_000).map(|_| pick(now)).collect();
    assert!(!soon.contains(&2), "the slow endpoint got traffic at once");
    // The fast ones decay too, but relative costs hold; in-flight requests tilt it back:
    // the fast endpoints busy with 200 requests each cost more than the idle slow one.
    let _busy: Vec<_> = (0..200)
        .flat_map(|_| [eps[0].start(), eps[1].start()])
        .collect();
    let later: Vec<usize> = (0..300).map(|_| pick(now)).collect();
    assert!(
        later.contains(&2),
        "a slow but idle endpoint is tried when the others are loaded"
    );
}

#[test]
fn peak_ewma_jumps_to_peaks_and_decays_with_a_ten_second_time_constant() {
    use super::ewma::PeakEwma;
    let t0 = Instant::now();
    let mut e = PeakEwma::new(t0);
    e.observe(Duration::from_millis(100), t0);
    assert!((e.estimate(t0) - 100e6).abs() < 1.0);
    // 10 s later, with no observation, e^-1 of it is left.
    let left = e.estimate(t0 + Duration::from_secs(10));
    assert!((left / 100e6 - (-1f64).exp()).abs() < 0.01, "{left}");
    // A faster observation pulls the estimate towards it in proportion to the time passed.
    let mut e = PeakEwma::new(t0);
    e.observe(Duration::from_millis(100), t0);
    e.observe(Duration::from_millis(10), t0 + Duration::from_secs(10));
    let expected = 100e6 * (-1f64).exp() + 10e6 * (1.0 - (-1f64).exp());
    assert!((e.estimate(t0 + Duration::from_secs(10)) - expected).abs() < 1e3);
}

fn owner(ring: &Ring, eps: &[Arc<Endpoint>], key: u64) -> SocketAddr {
    eps[ring.select(eps, &|_| true, key).expect("an owner")].addr()
}

#[test]
fn ring_hash_spreads_keys_within_a_third_of_even() {
    let eps = endpoints(5);
    let ring = Ring::new(&eps);
    let mut counts = std::collections::HashMap::new();
    for i in 0..10_000 {
        *counts
            .entry(owner(&ring, &eps, hash(format!("user-{i}").as_bytes())))
            .or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 5);
    for (addr, c) in counts {
        assert!((1_300..=2_700).contains(&c), "{addr}: {c}");
    }
}

#[test]
fn removing_one_of_n_endpoints_moves_only_its_keys_about_one_nth() {
    let eps = endpoints(5);
    let before = Ring::new(&eps);
    let removed = eps[3].addr();
    let rest: Vec<Arc<Endpoint>> = eps
        .iter()
        .filter(|e| e.addr() != removed)
        .cloned()
        .collect();
    let after = Ring::new(&rest);
    let keys: Vec<u64> = (0..10_000)
        .map(|i| hash(format!("k{i}").as_bytes()))
        .collect();
    let mut moved = 0;
    for &k in &keys {
        let (a, b) = (owner(&before, &eps, k), owner(&after, &rest, k));
        if a != b {
            moved += 1;
            assert_eq!(a, removed, "a key of a remaining endpoint moved");
        }
    }
    let share = moved as f64 / keys.len() as f64;
    assert!((0.13..=0.27).contains(&share), "moved {share}");
    // Putting it back restores every key.
    let again = Ring::new(&eps);
    assert!(keys
        .iter()
        .all(|&k| owner(&before, &eps, k) == owner(&again, &eps, k)));
}

#[test]
fn an_ineligible_owner_hands_its_keys_to_the_next_on_the_ring_consistently() {
    let eps = endpoints(4);
    let ring = Ring::new(&eps);
    let out = eps[0].addr();
    for i in 0..2_000 {
        let k = hash(format!("u{i}").as_bytes());
        let first = ring.select(&eps, &|e| e.addr() != out, k);
        let second = ring.select(&eps, &|e| e.addr() != out, k);
        assert_eq!(first, second);
        let chosen = eps[first.expect("an owner")].addr();
        assert_ne!(chosen, out);
        if owner(&ring, &eps, k) != out {
            assert_eq!(
                chosen,
                owner(&ring, &eps, k),
                "keys of eligible owners stay put"
            );
        }
    }
    assert_eq!(ring.select(&eps, &|_| false, 1), None);
}

#[test]
fn ring_hash_without_the_header_picks_at_random() {
    let eps = endpoints(3);
    let b = Balancer::new(&Balance::RingHash { header: "x".into() }, &eps);
    assert_eq!(b.hash_header(), Some("x"));
    let counts = spread(&b, &eps, 3_000, 9, &|_| true);
    assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
}
