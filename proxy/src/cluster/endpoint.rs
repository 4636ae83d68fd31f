//! One endpoint of a cluster and what this proxy knows about it: requests in flight, the
//! peak-EWMA latency, active health and passive ejection. The rules that change that state
//! live in `balance::ewma`, `health` and `outlier`; this file only holds it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::balance::ewma::PeakEwma;
use crate::health::Counts;
use crate::outlier::Record;

/// One address of a service and its live state; shared by every snapshot that lists it.
#[derive(Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    in_flight: AtomicUsize,
    healthy: AtomicBool,
    /// `clock::now_ms` until which the endpoint is ejected; 0 when it never was.
    ejected_until_ms: AtomicU64,
    latency: Mutex<PeakEwma>,
    health: Mutex<Counts>,
    outlier: Mutex<Record>,
}

impl Endpoint {
    /// A new endpoint: healthy (until probes say otherwise), not ejected, nothing in flight.
    pub fn new(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            in_flight: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            ejected_until_ms: AtomicU64::new(0),
            latency: Mutex::new(PeakEwma::new(Instant::now())),
            health: Mutex::new(Counts::default()),
            outlier: Mutex::new(Record::default()),
        }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests sent to it whose response has not ended.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether active health checks (if any) pass.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Sets the health checks' verdict.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Whether it is ejected at `now_ms` (see `clock::now_ms`).
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// Ejects it until `until_ms`.
    pub fn eject_until(&self, until_ms: u64) {
        self.ejected_until_ms.store(until_ms, Ordering::Relaxed);
    }

    /// When its last ejection ends (or ended); 0 when it never was ejected.
    pub fn ejected_until_ms(&self) -> u64 {
        self.ejected_until_ms.load(Ordering::Relaxed)
    }

    /// Whether it may take traffic: healthy and not ejected.
    pub fn is_available(&self, now_ms: u64) -> bool {
        self.is_healthy() && !self.is_ejected(now_ms)
    }

    /// The peak-EWMA cost of sending it one more request.
    pub fn cost(&self, now: Instant) -> f64 {
        let in_flight = self.in_flight() as f64;
        lock(&self.latency).cost(now, in_flight)
    }

    /// Feeds one response time into the latency estimate.
    pub fn observe_latency(&self, rtt: Duration, now: Instant) {
        lock(&self.latency).observe(rtt, now);
    }

    /// Counts a request in flight until the guard drops.
    pub fn start(self: &Arc<Endpoint>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// The health-check counters.
    pub(crate) fn health(&self) -> MutexGuard<'_, Counts> {
        lock(&self.health)
    }

    /// The outlier counters.
    pub(crate) fn outlier(&self) -> MutexGuard<'_, Record> {
        lock(&self.outlier)
    }
}

/// A request in flight to an endpoint; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A poisoned lock only means a panic elsewhere mid-update of plain counters: keep going.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
