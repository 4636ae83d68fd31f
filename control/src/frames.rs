//! The control stream's frames: the codec shared with the proxies, and the per-kind limits
//! the control plane applies to what a proxy sends.

pub use mesh_table::frames::*;

/// A whole frame in one buffer.
pub fn frame(kind: u8, payload: &[u8]) -> bytes::Bytes {
    encode(kind, payload)
}

/// The largest length field (kind byte + payload) the control plane accepts from a proxy for
/// a frame of `kind`: far below the codec's 64 MiB, which only tables (control plane → proxy)
/// approach. A hello is a service name, an address and a checksum; an ack a checksum; a nack a
/// checksum and the proxy's reason (a validation message); a traffic report one line per
/// (service, route) the proxy called in 5 s; pings are empty. Kinds this version does not
/// know (a newer proxy's) get the hello's limit.
pub fn limit(kind: u8) -> usize {
    match kind {
        HELLO => 4 * 1024,
        ACK => 1024,
        NACK => 64 * 1024,
        TRAFFIC => 256 * 1024,
        PROXY_PING => 1,
        _ => 4 * 1024,
    }
}

/// The largest of [`limit`]: what a stream's buffer can hold at most, plus one chunk.
pub const MAX_FROM_PROXY: usize = 256 * 1024;

/// Checks the header at the front of `buffer` (when its five bytes are there) against the
/// kind's [`limit`], before the frame's payload is waited for or buffered: a header that
/// announces more is an error naming the kind, its length and the limit. With only the
/// length there (the kind byte in the next chunk), a length above [`MAX_FROM_PROXY`] is
/// refused already: no kind allows it, and the codec would otherwise reserve room for it
/// (up to 64 MiB) while waiting for the kind (found by the `control_frames` fuzz target).
pub fn check_header(buffer: &[u8]) -> Result<(), String> {
    let Some(header) = buffer.get(..5) else {
        if let Some(len) = buffer.get(..4) {
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            if len > MAX_FROM_PROXY {
                return Err(format!(
                    "a frame announces {len} bytes, above the largest limit of {MAX_FROM_PROXY}"
                ));
            }
        }
        return Ok(());
    };
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    let kind = header[4];
    let limit = limit(kind);
    if len > limit {
        return Err(format!(
            "a frame of kind {kind} announces {len} bytes, above its limit of {limit}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_above_the_kinds_limit_are_refused_before_the_payload() {
        let hello = encode(HELLO, br#"{"service":"web"}"#);
        assert_eq!(check_header(&hello), Ok(()));
        assert_eq!(check_header(&hello[..3]), Ok(()), "not a whole header yet");
        let big = header(TRAFFIC, 60 << 20);
        let err = check_header(&big).expect_err("60 MiB traffic report");
        assert!(err.contains("kind 19") && err.contains("262144"), "{err}");
        assert!(
            check_header(&header(PROXY_PING, 1)).is_err(),
            "pings are empty"
        );
        assert_eq!(check_header(&header(PROXY_PING, 0)), Ok(()));
        assert!(check_header(&header(ACK, 2000)).is_err());
        assert!(
            check_header(&header(200, 5000)).is_err(),
            "unknown kinds: 4 KiB"
        );
        assert_eq!(check_header(&header(TRAFFIC, 256 * 1024 - 1)), Ok(()));
        for kind in 0..=255u8 {
            assert!(limit(kind) <= MAX_FROM_PROXY);
        }
    }

    /// Found by the `control_frames` fuzz target: a length whose kind byte has not arrived
    /// yet passed unchecked, and the codec reserved room for up to 64 MiB.
    #[test]
    fn a_length_above_every_limit_is_refused_before_its_kind_arrives() {
        let big = header(HELLO, 60 << 20);
        let err = check_header(&big[..4]).expect_err("60 MiB, kind not yet known");
        assert!(err.contains("262144"), "{err}");
        assert_eq!(
            check_header(&header(HELLO, MAX_FROM_PROXY - 1)[..4]),
            Ok(())
        );
    }
}
