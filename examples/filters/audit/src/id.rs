//! Request ids: the host's clock, the instance's request counter and the context id,
//! mixed (splitmix64) and written as 16 hex digits, plus the counter, so ids differ
//! across instances started in the same nanosecond and never repeat within one.

/// The id generator of one instance.
#[derive(Debug, Default)]
pub(crate) struct Ids {
    counter: u64,
}

impl Ids {
    /// The next id.
    pub(crate) fn next(&mut self, context: u32) -> String {
        self.counter = self.counter.wrapping_add(1);
        let now = filters_sdk::time::now_nanos().unwrap_or(0);
        let seed = now ^ (u64::from(context) << 32) ^ self.counter.rotate_left(17);
        let mut out = String::with_capacity(25);
        hex(&mut out, mix(seed), 16);
        out.push('-');
        hex(&mut out, self.counter, 8);
        out
    }
}

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Appends the low `digits` hex digits of `value`.
fn hex(out: &mut String, value: u64, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        out.push(char::from(HEX[((value >> (i * 4)) & 0xf) as usize]));
    }
}
