//! The token bucket's arithmetic and its 16-byte encoding in shared data: milli-tokens
//! left, and when they were counted (nanoseconds), both little-endian `u64`.

/// A bucket's parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    /// Milli-tokens added per second.
    rate: u128,
    /// Capacity in milli-tokens.
    capacity: u64,
}

/// One request's cost.
const TOKEN: u64 = 1000;

impl Bucket {
    pub(crate) fn new(requests_per_second: u32, burst: u32) -> Bucket {
        Bucket {
            rate: u128::from(requests_per_second) * u128::from(TOKEN),
            capacity: u64::from(burst) * TOKEN,
        }
    }

    /// Refills `state` (absent or unreadable: a full bucket) to `now` and takes a token
    /// if there is one: the new state, and whether a token was taken.
    pub(crate) fn take(&self, state: Option<&[u8]>, now: u64) -> (Vec<u8>, bool) {
        let (mut tokens, then) = state.and_then(decode).unwrap_or((self.capacity, now));
        let elapsed = u128::from(now.saturating_sub(then));
        let refill = elapsed * self.rate / 1_000_000_000;
        tokens = u64::try_from(u128::from(tokens) + refill)
            .unwrap_or(u64::MAX)
            .min(self.capacity);
        // Keep the time of the last whole milli-token, so slow trickles still add up.
        let counted = if refill == 0 { then.min(now) } else { now };
        let allowed = tokens >= TOKEN;
        if allowed {
            tokens -= TOKEN;
        }
        (encode(tokens, counted), allowed)
    }
}

fn encode(tokens: u64, at: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&tokens.to_le_bytes());
    out.extend_from_slice(&at.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<(u64, u64)> {
    let tokens = bytes.get(0..8)?.try_into().ok()?;
    let at = bytes.get(8..16)?.try_into().ok()?;
    Some((u64::from_le_bytes(tokens), u64::from_le_bytes(at)))
}
