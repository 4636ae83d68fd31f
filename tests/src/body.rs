//! Bodies the tests and the backend send: whole, empty, generated on the fly (large bodies
//! that are never held in memory) and fed from a channel (streams with pauses and trailers).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::mpsc;

/// Any error a body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request and response the tests make.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body holding `data`.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// `len` bytes of a fixed pattern, produced chunk by chunk as the peer reads them, with an
/// exact size hint (so HTTP/1.1 sends a `content-length`).
#[derive(Debug)]
pub struct RepeatBody {
    chunk: Bytes,
    remaining: u64,
}

impl RepeatBody {
    /// `len` bytes in chunks of 64 KiB.
    pub fn new(len: u64) -> RepeatBody {
        let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        RepeatBody {
            chunk: Bytes::from(chunk),
            remaining: len,
        }
    }

    /// The body boxed.
    pub fn boxed(len: u64) -> Body {
        RepeatBody::new(len).boxed()
    }
}

impl HttpBody for RepeatBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len() as u64);
        self.remaining -= n;
        // `n` is at most the chunk's length, a usize.
        let data = self.chunk.slice(..usize::try_from(n).unwrap_or(0));
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// The sending half of a [`channel`] body: data frames, then optionally trailers.
pub type FrameSender = mpsc::Sender<Result<Frame<Bytes>, BoxError>>;

/// A body whose frames are sent through the returned sender; it ends when the sender drops.
pub fn channel(capacity: usize) -> (FrameSender, Body) {
    let (tx, rx) = mpsc::channel(capacity);
    (tx, ChannelBody { rx }.boxed())
}

struct ChannelBody {
    rx: mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
}

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx)
    }
}

/// Reads a body to its end without keeping it: the number of data bytes, and the trailers.
pub async fn drain<B>(mut body: B) -> Result<(u64, Option<http::HeaderMap>), B::Error>
where
    B: HttpBody + Unpin,
{
    let mut bytes = 0u64;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Some(data) = frame.data_ref() {
            bytes += bytes::Buf::remaining(data) as u64;
        } else if let Ok(t) = frame.into_trailers() {
            trailers = Some(t);
        }
    }
    Ok((bytes, trailers))
}
