//! The host's clock (`proxy_get_current_time_nanoseconds`): wall-clock time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::hostcalls;
use crate::HostError;

/// Nanoseconds since the Unix epoch.
pub fn now_nanos() -> Result<u64, HostError> {
    hostcalls::now_nanos()
}

/// The current time.
pub fn now() -> Result<SystemTime, HostError> {
    now_nanos().map(|nanos| UNIX_EPOCH + Duration::from_nanos(nanos))
}

/// Asks the host to call [`crate::Filter::on_tick`] every `period` (zero: stop).
pub fn set_tick_period(period: Duration) -> Result<(), HostError> {
    hostcalls::set_tick_period(u32::try_from(period.as_millis()).unwrap_or(u32::MAX))
}
