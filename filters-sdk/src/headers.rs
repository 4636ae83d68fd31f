//! [`Headers`]: one of the host's header maps (request or response headers, trailers, an
//! `http_call`'s response), read and changed in place. Names are lower-case; the
//! pseudo-headers `:method`, `:path`, `:authority`, `:scheme` and `:status` are entries.

use crate::abi::map;
use crate::hostcalls;
use crate::HostError;

/// A header map of the current request.
#[derive(Debug)]
pub struct Headers {
    kind: u32,
}

impl Headers {
    pub(crate) fn request() -> Headers {
        Headers {
            kind: map::REQUEST_HEADERS,
        }
    }

    pub(crate) fn response() -> Headers {
        Headers {
            kind: map::RESPONSE_HEADERS,
        }
    }

    pub(crate) fn request_trailers() -> Headers {
        Headers {
            kind: map::REQUEST_TRAILERS,
        }
    }

    pub(crate) fn response_trailers() -> Headers {
        Headers {
            kind: map::RESPONSE_TRAILERS,
        }
    }

    /// The value of `name` (the first, if several), `None` if absent.
    pub fn get(&self, name: &str) -> Result<Option<String>, HostError> {
        Ok(self
            .get_bytes(name)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The raw value of `name`.
    pub fn get_bytes(&self, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        hostcalls::map_value(self.kind, name)
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> Result<bool, HostError> {
        Ok(self.get_bytes(name)?.is_some())
    }

    /// Sets `name` to `value`, replacing any values it had.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        hostcalls::replace_map_value(self.kind, name, value.as_bytes())
    }

    /// Adds a value of `name`, keeping the ones it has.
    pub fn add(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        hostcalls::add_map_value(self.kind, name, value.as_bytes())
    }

    /// Removes every value of `name`.
    pub fn remove(&mut self, name: &str) -> Result<(), HostError> {
        hostcalls::remove_map_value(self.kind, name)
    }

    /// Every (name, value) pair, in order.
    pub fn pairs(&self) -> Result<Vec<(String, String)>, HostError> {
        hostcalls::map(self.kind)
    }

    /// Replaces the whole map with `pairs`.
    pub fn set_pairs(&mut self, pairs: &[(&str, &str)]) -> Result<(), HostError> {
        hostcalls::set_map(self.kind, pairs)
    }
}
