//! Logging through the host (`proxy_log`). The level functions never fail: a log line the
//! host refuses has nowhere else to go. [`write`] returns the host's answer.

use crate::hostcalls;
use crate::HostError;

/// A log level, as the ABI numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Trace.
    Trace = 0,
    /// Debug.
    Debug = 1,
    /// Info.
    Info = 2,
    /// Warn.
    Warn = 3,
    /// Error.
    Error = 4,
    /// Critical.
    Critical = 5,
}

impl Level {
    /// The level of an ABI number (out-of-range numbers are `Critical`).
    pub fn from_abi(level: u32) -> Level {
        match level {
            0 => Level::Trace,
            1 => Level::Debug,
            2 => Level::Info,
            3 => Level::Warn,
            4 => Level::Error,
            _ => Level::Critical,
        }
    }
}

impl Level {
    /// The level's name in capitals (`INFO`).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }
}

/// Writes `message` at `level`.
pub fn write(level: Level, message: &str) -> Result<(), HostError> {
    hostcalls::log(level as u32, message)
}

/// The host's current level: lines below it are dropped, so a filter can skip building them.
pub fn level() -> Result<Level, HostError> {
    hostcalls::log_level().map(Level::from_abi)
}

/// Whether a line at `level` would be kept (true when the host cannot say).
pub fn enabled(level: Level) -> bool {
    self::level().map_or(true, |min| level >= min)
}

/// Logs at trace level.
pub fn trace(message: &str) {
    let _ = write(Level::Trace, message);
}

/// Logs at debug level.
pub fn debug(message: &str) {
    let _ = write(Level::Debug, message);
}

/// Logs at info level.
pub fn info(message: &str) {
    let _ = write(Level::Info, message);
}

/// Logs at warn level.
pub fn warn(message: &str) {
    let _ = write(Level::Warn, message);
}

/// Logs at error level.
pub fn error(message: &str) {
    let _ = write(Level::Error, message);
}
