//! Metrics the host exports (`proxy_define_metric`): [`Counter`], [`Gauge`], [`Histogram`].
//! Define them once (in [`crate::Filter::configure`]) and keep the handle: it is an id.

use crate::abi::metric;
use crate::hostcalls;
use crate::HostError;

/// A counter: only goes up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter(u32);

impl Counter {
    /// Defines (or finds) the counter `name`.
    pub fn define(name: &str) -> Result<Counter, HostError> {
        hostcalls::define_metric(metric::COUNTER, name).map(Counter)
    }

    /// Adds `by`.
    pub fn increment(self, by: u64) -> Result<(), HostError> {
        hostcalls::increment_metric(self.0, i64::try_from(by).unwrap_or(i64::MAX))
    }

    /// The current value.
    pub fn get(self) -> Result<u64, HostError> {
        hostcalls::metric(self.0)
    }
}

/// A gauge: set, or moved either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gauge(u32);

impl Gauge {
    /// Defines (or finds) the gauge `name`.
    pub fn define(name: &str) -> Result<Gauge, HostError> {
        hostcalls::define_metric(metric::GAUGE, name).map(Gauge)
    }

    /// Sets the value.
    pub fn set(self, value: u64) -> Result<(), HostError> {
        hostcalls::record_metric(self.0, value)
    }

    /// Moves the value by `by`.
    pub fn increment(self, by: i64) -> Result<(), HostError> {
        hostcalls::increment_metric(self.0, by)
    }

    /// The current value.
    pub fn get(self) -> Result<u64, HostError> {
        hostcalls::metric(self.0)
    }
}

/// A histogram: recorded values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Histogram(u32);

impl Histogram {
    /// Defines (or finds) the histogram `name`.
    pub fn define(name: &str) -> Result<Histogram, HostError> {
        hostcalls::define_metric(metric::HISTOGRAM, name).map(Histogram)
    }

    /// Records `value`.
    pub fn record(self, value: u64) -> Result<(), HostError> {
        hostcalls::record_metric(self.0, value)
    }
}
