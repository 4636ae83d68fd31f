//! The control stream's framing (docs/control-protocol.md), shared by the control plane
//! and the proxies so both sides read the same bytes the same way: a `u32` big-endian length
//! of kind + payload, one kind byte, the payload.

use bytes::{Buf, Bytes, BytesMut};

/// The largest length field accepted (kind + payload).
pub const MAX_FRAME: usize = 64 << 20;

/// The longest a proxy waits between two attempts to open its stream (its backoff doubles
/// from 100 ms up to this, with full jitter): after a restart, the control plane allows
/// this long beyond the registry's grace for the proxies to come back.
pub const MAX_RECONNECT_BACKOFF: std::time::Duration = std::time::Duration::from_secs(10);

/// Control plane → proxy: a rule table (`mesh_table::encode`).
pub const TABLE: u8 = 1;
/// Control plane → proxy: keep-alive.
pub const PING: u8 = 2;
/// Control plane → proxy: the revoked certificate serials its listeners refuse (JSON
/// `{"serials": [hex, ...]}`), whole, at the stream's start and after every revocation.
pub const REVOKED: u8 = 3;
/// Proxy → control plane: who this proxy is (JSON).
pub const HELLO: u8 = 16;
/// Proxy → control plane: a table was applied (JSON).
pub const ACK: u8 = 17;
/// Proxy → control plane: a table was refused (JSON).
pub const NACK: u8 = 18;
/// Proxy → control plane: the last window's traffic (JSON).
pub const TRAFFIC: u8 = 19;
/// Proxy → control plane: keep-alive.
pub const PROXY_PING: u8 = 20;

/// The five bytes before a payload of `len` bytes (the control plane writes a shared
/// table after it without copying the table).
pub fn header(kind: u8, len: usize) -> Bytes {
    let len = u32::try_from(len + 1).unwrap_or(u32::MAX);
    let mut out = BytesMut::with_capacity(5);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[kind]);
    out.freeze()
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the payload is.
    pub kind: u8,
    /// The payload.
    pub payload: Bytes,
}

/// A byte stream that is not a sequence of frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field is 0 (no room for the kind byte).
    #[error("a frame with length 0 (no kind byte)")]
    Empty,
    /// The length field is above [`MAX_FRAME`].
    #[error("a frame of {0} bytes, above the 64 MiB limit")]
    TooLarge(usize),
    /// The stream ended inside a frame.
    #[error("the stream ended inside a frame ({0} bytes left over)")]
    Truncated(usize),
}

/// Encodes one frame. A payload above the limit is a bug of the caller (tables and JSON
/// documents are far smaller), so it is cut to keep the stream well formed.
pub fn encode(kind: u8, payload: &[u8]) -> Bytes {
    let payload = &payload[..payload.len().min(MAX_FRAME - 1)];
    let mut out = BytesMut::with_capacity(5 + payload.len());
    out.extend_from_slice(&header(kind, payload.len()));
    out.extend_from_slice(payload);
    out.freeze()
}

/// Reassembles frames from the chunks of a body, whatever their boundaries.
#[derive(Debug, Default)]
pub struct Decoder {
    buffer: BytesMut,
}

impl Decoder {
    /// Appends received bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next complete frame, `None` until one is. An error leaves the stream unusable.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        next(&mut self.buffer)
    }

    /// At the end of the stream: an error when a partial frame is left.
    pub fn finish(&self) -> Result<(), FrameError> {
        match self.buffer.len() {
            0 => Ok(()),
            n => Err(FrameError::Truncated(n)),
        }
    }
}

/// Takes the next complete frame off the front of `buffer`: `None` until one is complete.
/// An error leaves the stream unusable.
pub fn next(buffer: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    let Some(header) = buffer.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    if buffer.len() < 4 + len {
        // Room for the rest now, rather than growing chunk by chunk.
        buffer.reserve(4 + len - buffer.len());
        return Ok(None);
    }
    buffer.advance(4);
    let mut frame = buffer.split_to(len);
    let kind = frame[0];
    frame.advance(1);
    Ok(Some(Frame {
        kind,
        payload: frame.freeze(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(decoder: &mut Decoder) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(frame) = decoder.next_frame().expect("valid frames") {
            out.push(frame);
        }
        out
    }

    #[test]
    fn round_trip_across_any_chunking() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&encode(HELLO, br#"{"service":"web"}"#));
        wire.extend_from_slice(&encode(PING, b""));
        wire.extend_from_slice(&encode(TABLE, &[7; 1000]));
        for chunk in [1, 3, 5, 64, wire.len()] {
            let mut decoder = Decoder::default();
            let mut frames = Vec::new();
            for piece in wire.chunks(chunk) {
                decoder.push(piece);
                frames.extend(all(&mut decoder));
            }
            decoder.finish().expect("nothing left over");
            assert_eq!(frames.len(), 3, "chunks of {chunk}");
            assert_eq!(frames[0].kind, HELLO);
            assert_eq!(&frames[0].payload[..], br#"{"service":"web"}"#);
            assert_eq!((frames[1].kind, frames[1].payload.len()), (PING, 0));
            assert_eq!((frames[2].kind, frames[2].payload.len()), (TABLE, 1000));
        }
    }

    #[test]
    fn the_length_counts_the_kind_byte() {
        assert_eq!(&encode(ACK, b"ab")[..], &[0, 0, 0, 3, ACK, b'a', b'b']);
    }

    #[test]
    fn truncated_input_waits_then_fails_at_the_end() {
        let wire = encode(TABLE, b"0123456789");
        for cut in 1..wire.len() {
            let mut decoder = Decoder::default();
            decoder.push(&wire[..cut]);
            assert_eq!(decoder.next_frame(), Ok(None), "cut at {cut}");
            assert_eq!(decoder.finish(), Err(FrameError::Truncated(cut)));
        }
    }

    #[test]
    fn oversized_and_empty_frames_are_refused() {
        let mut decoder = Decoder::default();
        decoder.push(
            &u32::try_from(MAX_FRAME + 1)
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::TooLarge(MAX_FRAME + 1))
        );
        let mut decoder = Decoder::default();
        decoder.push(&[0xff, 0xff, 0xff, 0xff, 1]);
        assert!(matches!(decoder.next_frame(), Err(FrameError::TooLarge(_))));
        let mut decoder = Decoder::default();
        decoder.push(&[0, 0, 0, 0]);
        assert_eq!(decoder.next_frame(), Err(FrameError::Empty));
    }

    #[test]
    fn the_largest_frame_is_accepted() {
        let mut decoder = Decoder::default();
        decoder.push(&u32::try_from(MAX_FRAME).unwrap_or(0).to_be_bytes());
        assert_eq!(decoder.next_frame(), Ok(None));
    }
}
