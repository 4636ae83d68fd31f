//! Ring hash: consistent hashing of a request header (ketama-style). Each endpoint owns
//! [`VNODES`] points on a 64-bit ring, placed by hashing its address; a key goes to the
//! owner of the first point at or after its hash. Adding or removing one endpoint of N
//! moves only the keys of the points it gains or loses, about 1/N of them. When the owner
//! may not take the request, the walk goes on to the next point: the fallback is as
//! consistent as the choice.

use std::sync::Arc;

use super::Eligible;
use crate::cluster::Endpoint;

/// Points per endpoint: enough for shares within a few percent of even at small N.
pub const VNODES: u32 = 100;

/// The ring over one endpoint list.
#[derive(Debug, Default)]
pub struct Ring {
    /// (point, index of its endpoint), sorted by point.
    points: Vec<(u64, u32)>,
}

impl Ring {
    /// The ring of `endpoints`; a point depends only on its endpoint's address, so the same
    /// address keeps the same points in any list.
    pub fn new(endpoints: &[Arc<Endpoint>]) -> Ring {
        let mut points = Vec::with_capacity(endpoints.len() * VNODES as usize);
        for (index, endpoint) in endpoints.iter().enumerate() {
            let Ok(index) = u32::try_from(index) else {
                break;
            };
            let addr = endpoint.addr().to_string();
            for vnode in 0..VNODES {
                points.push((hash(format!("{addr}-{vnode}").as_bytes()), index));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// The eligible endpoint owning `key`, walking on past those that are not.
    pub fn select(
        &self,
        endpoints: &[Arc<Endpoint>],
        eligible: Eligible<'_>,
        key: u64,
    ) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let start = self.points.partition_point(|(point, _)| *point < key);
        let n = self.points.len();
        (0..n)
            .map(|i| self.points[(start + i) % n].1 as usize)
            .find(|&i| endpoints.get(i).is_some_and(|e| eligible(e)))
    }
}

/// A 64-bit hash for ring points and keys: FNV-1a, then a 64-bit finalizer (MurmurHash3's
/// fmix64) so that near-identical inputs (`addr-1`, `addr-2`) land far apart. Stable
/// across processes and versions: every proxy puts a key on the same endpoint.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}
