//! The stream's framing: `u32` big-endian length of kind + payload, one kind byte, the payload.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Control plane → proxy: a rule table.
pub const TABLE: u8 = 1;
/// Control plane → proxy: keep-alive.
pub const PING: u8 = 2;
/// Proxy → control plane: who it is and what it runs.
pub const HELLO: u8 = 16;
/// Proxy → control plane: a table was applied.
pub const ACK: u8 = 17;
/// Proxy → control plane: a table was refused.
pub const NACK: u8 = 18;
/// Proxy → control plane: request counts and latencies.
pub const TRAFFIC: u8 = 19;
/// Proxy → control plane: keep-alive.
pub const PROXY_PING: u8 = 20;

/// The largest frame either side accepts (kind + payload).
pub const MAX_FRAME: usize = 64 << 20;

/// The five bytes before a payload of `len` bytes.
pub fn header(kind: u8, len: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(5);
    b.put_u32(u32::try_from(len + 1).unwrap_or(u32::MAX));
    b.put_u8(kind);
    b.freeze()
}

/// A whole frame in one buffer.
pub fn frame(kind: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.extend_from_slice(&header(kind, payload.len()));
    b.extend_from_slice(payload);
    b.freeze()
}

/// A frame that breaks the format.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A zero length (no kind byte) or one over [`MAX_FRAME`].
    #[error("bad frame length {0}")]
    BadLength(usize),
}

/// Takes the next complete frame off `buf`: `Ok(None)` until one is complete.
pub fn next(buf: &mut BytesMut) -> Result<Option<(u8, Bytes)>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(FrameError::BadLength(len));
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let mut body = buf.split_to(len).freeze();
    let kind = body[0];
    body.advance(1);
    Ok(Some((kind, body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_pieces() {
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&frame(HELLO, b"{}"));
        wire.extend_from_slice(&frame(PROXY_PING, b""));
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in wire.iter() {
            buf.put_u8(*byte);
            while let Some(f) = next(&mut buf).expect("valid") {
                got.push(f);
            }
        }
        assert_eq!(
            got,
            [
                (HELLO, Bytes::from_static(b"{}")),
                (PROXY_PING, Bytes::new())
            ]
        );
        let mut bad = BytesMut::from(&[0_u8, 0, 0, 0][..]);
        assert!(next(&mut bad).is_err());
    }
}
