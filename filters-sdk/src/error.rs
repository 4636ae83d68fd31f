//! [`HostError`]: a host call that did not succeed, from the ABI's `Status`.

use crate::abi::status;

/// A host call that did not succeed. Every wrapper returns it instead of panicking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HostError {
    /// `NotFound`: no such header, property, key, metric or token.
    NotFound,
    /// `BadArgument`: the host refused an argument (or the call is not allowed here).
    BadArgument,
    /// `SerializationFailure`.
    SerializationFailure,
    /// `ParseFailure`.
    ParseFailure,
    /// `Empty`.
    Empty,
    /// `CasMismatch`: shared data changed since it was read.
    CasMismatch,
    /// `InternalFailure`.
    InternalFailure,
    /// `Unimplemented`: the host does not provide this call.
    Unimplemented,
    /// A status this SDK does not know.
    Other(u32),
}

impl HostError {
    /// `Ok(())` for `Status::Ok`, the error otherwise.
    pub(crate) fn check(code: u32) -> Result<(), HostError> {
        Err(match code {
            status::OK => return Ok(()),
            status::NOT_FOUND => HostError::NotFound,
            status::BAD_ARGUMENT => HostError::BadArgument,
            status::SERIALIZATION_FAILURE => HostError::SerializationFailure,
            status::PARSE_FAILURE => HostError::ParseFailure,
            status::EMPTY => HostError::Empty,
            status::CAS_MISMATCH => HostError::CasMismatch,
            status::INTERNAL_FAILURE => HostError::InternalFailure,
            status::UNIMPLEMENTED => HostError::Unimplemented,
            other => HostError::Other(other),
        })
    }

    /// The error's name, for log lines (no formatting machinery).
    pub fn as_str(self) -> &'static str {
        match self {
            HostError::NotFound => "not found",
            HostError::BadArgument => "bad argument",
            HostError::SerializationFailure => "serialization failure",
            HostError::ParseFailure => "parse failure",
            HostError::Empty => "empty",
            HostError::CasMismatch => "cas mismatch",
            HostError::InternalFailure => "internal failure",
            HostError::Unimplemented => "unimplemented",
            HostError::Other(_) => "unknown status",
        }
    }
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostError::Other(code) => write!(f, "host status {code}"),
            other => f.write_str(other.as_str()),
        }
    }
}

impl std::error::Error for HostError {}
