//! Shared data: a key-value store the host keeps across the instances (and threads) of a
//! module, with compare-and-swap so concurrent updates do not lose each other.

use crate::hostcalls;
use crate::HostError;

/// A version of a shared value, for [`set`]'s compare-and-swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cas(pub u32);

/// The value of `key` and its version, `None` if absent.
pub fn get(key: &str) -> Result<Option<(Vec<u8>, Cas)>, HostError> {
    Ok(hostcalls::shared_data(key)?.map(|(value, cas)| (value, Cas(cas))))
}

/// Sets `key` to `value`. With `Some(cas)`, only if the value is still that version
/// (else `Err(HostError::CasMismatch)`); with `None`, unconditionally.
pub fn set(key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), HostError> {
    hostcalls::set_shared_data(key, value, cas.map_or(0, |c| c.0))
}

/// Read-modify-write with retries: `update` gets the current value (if any) and returns
/// the new one and a result; on a CAS mismatch it runs again on the newer value, at most
/// `attempts` times (then `Err(HostError::CasMismatch)`).
pub fn update<T>(
    key: &str,
    attempts: u32,
    mut update: impl FnMut(Option<&[u8]>) -> (Vec<u8>, T),
) -> Result<T, HostError> {
    for _ in 0..attempts {
        let current = get(key)?;
        let (value, result) = update(current.as_ref().map(|(v, _)| v.as_slice()));
        match set(key, &value, current.map(|(_, cas)| cas)) {
            Ok(()) => return Ok(result),
            Err(HostError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(HostError::CasMismatch)
}
