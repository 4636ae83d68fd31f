//! What the `control_frames` fuzz target runs, shared with its corpus replay
//! (`control/tests/fuzz_corpus.rs`): the control stream's frame decoder
//! (`mesh_table::frames::Decoder`, used by the proxies) and the control plane's reading of
//! a proxy's stream (`frames::check_header` before `frames::next`, as `distribution.rs` does),
//! on arbitrary bytes cut into arbitrary chunks.
//!
//! The input's first byte says how many of the next bytes are chunk lengths; the rest is the
//! stream. Whatever the chunks: no panic; the frames and the outcome (clean end, truncated,
//! or the same error) equal those of the whole stream pushed at once; no frame is above the
//! codec's limit; the control plane accepts no frame above its kind's limit, and between
//! chunks its buffer never holds (nor reserves room for) more than about the largest limit.

use mesh_control::frames::{self, Decoder, Frame, FrameError};

/// One input.
pub(crate) fn control_frames(data: &[u8]) {
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(count % 16).min(rest.len());
    let (lengths, stream) = rest.split_at(count);
    let chunks = chunks(stream, lengths);

    // The proxies' decoder.
    let whole = decode(&[stream]);
    let chunked = decode(&chunks);
    assert_eq!(chunked, whole, "the chunks change what the decoder reads");
    for frame in &whole.0 {
        assert!(frame.payload.len() < frames::MAX_FRAME);
        // Re-encoding gives the bytes back.
        assert_eq!(
            frames::encode(frame.kind, &frame.payload).len(),
            frame.payload.len() + 5
        );
    }

    // The control plane's reading of a proxy's stream.
    // The same frames and the same end; the reason may differ in words only where a chunk
    // ended between the length and the kind byte (the kind is not known yet).
    let whole = control_plane(&[stream]);
    let chunked = control_plane(&chunks);
    assert_eq!(
        chunked.0, whole.0,
        "the chunks change the control plane's frames"
    );
    assert_eq!(
        chunked.1.as_ref().ok(),
        whole.1.as_ref().ok(),
        "the chunks change how the control plane's reading ends: {chunked:?} / {whole:?}"
    );
    for frame in &whole.0 {
        assert!(frame.payload.len() < frames::limit(frame.kind));
    }
}

/// `stream` cut after each of `lengths` (1 to 256 bytes each, cycling), the rest whole.
fn chunks<'a>(stream: &'a [u8], lengths: &[u8]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = stream;
    for &length in lengths
        .iter()
        .cycle()
        .take(if lengths.is_empty() { 0 } else { 4096 })
    {
        if rest.is_empty() {
            break;
        }
        let (chunk, after) = rest.split_at((usize::from(length) + 1).min(rest.len()));
        chunks.push(chunk);
        rest = after;
    }
    if !rest.is_empty() || chunks.is_empty() {
        chunks.push(rest);
    }
    chunks
}

/// The frames, then the error that stopped the stream or what `finish` says at its end.
type Outcome = (Vec<Frame>, Result<(), FrameError>);

fn decode(chunks: &[&[u8]]) -> Outcome {
    let mut decoder = Decoder::default();
    let mut out = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => out.push(frame),
                Ok(None) => break,
                Err(error) => return (out, Err(error)),
            }
        }
    }
    let end = decoder.finish();
    (out, end)
}

/// As `distribution.rs` reads a proxy's stream: the frames, then why it stopped (its kind's
/// limit, a bad frame, or the end with what is left over).
fn control_plane(chunks: &[&[u8]]) -> (Vec<Frame>, Result<usize, String>) {
    let mut buf = bytes::BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        let (held, room) = (buf.len(), buf.capacity());
        assert!(
            held <= 4 + frames::MAX_FROM_PROXY && room <= 2 * (4 + frames::MAX_FROM_PROXY) + 4096,
            "between chunks the buffer held {held} bytes in room for {room}"
        );
        buf.extend_from_slice(chunk);
        loop {
            if let Err(why) = frames::check_header(&buf) {
                return (out, Err(why));
            }
            match frames::next(&mut buf) {
                Ok(Some(frame)) => out.push(frame),
                Ok(None) => break,
                Err(error) => return (out, Err(error.to_string())),
            }
        }
    }
    (out, Ok(buf.len()))
}
