//! Small responses read whole before their head is sent on, where a reset may be retried.
//!
//! A response whose body fails after its head has gone to the client cannot be retried: the
//! client's stream is cut (an endpoint killed between the HEADERS and DATA frames of a
//! response did that twice in the 20-minute soak). So on a route whose policy would retry
//! a reset of this request, a response with a `Content-Length` up to [`MAX_WHOLE`] is read
//! to its end first, within the try; if the body fails, the try failed with a reset and the
//! policy decides as for any other. Such bodies almost always arrive with their head, so
//! the wait is for nothing in the common case. Longer or unknown-length bodies (streams,
//! gRPC) stream as before.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, Collected};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};

use crate::body::BoxError;
use crate::errors::{Failure, ProxyError};

/// The longest body read whole: the same bound as a request body kept for replay.
pub const MAX_WHOLE: u64 = super::replay::MAX_REPLAY as u64;

/// A response's body: streaming from the upstream, or read whole already.
#[derive(Debug)]
pub enum Received {
    /// As it comes.
    Streaming(Incoming),
    /// Read to its end (with its trailers).
    Whole(Collected<Bytes>),
}

/// Whether `response` is one to read whole: a body of known length, not empty, within
/// [`MAX_WHOLE`].
pub fn wanted(response: &Response<Incoming>) -> bool {
    let body = response.body();
    !body.is_end_stream() && body.size_hint().exact().is_some_and(|len| len <= MAX_WHOLE)
}

/// Reads `response`'s body to its end; a body that fails is a reset of the try.
pub async fn read(response: Response<Incoming>) -> Result<Response<Received>, ProxyError> {
    let (parts, body) = response.into_parts();
    match body.collect().await {
        Ok(whole) => Ok(Response::from_parts(parts, Received::Whole(whole))),
        Err(error) => Err(ProxyError::upstream(
            Failure::Reset,
            format!("the response body failed before its end: {error}"),
        )),
    }
}

impl HttpBody for Received {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Received::Streaming(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Received::Whole(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Received::Streaming(body) => body.is_end_stream(),
            Received::Whole(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Received::Streaming(body) => body.size_hint(),
            Received::Whole(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Full};

    use super::Received;

    #[tokio::test]
    async fn a_received_body_takes_a_guard_without_a_box_of_its_own() {
        let whole = Full::new(bytes::Bytes::from_static(b"abc"))
            .collect()
            .await
            .expect("collect");
        let guard = std::sync::Arc::new(());
        let body = crate::body::with_guard(Received::Whole(whole), std::sync::Arc::clone(&guard));
        let read = body.collect().await.expect("read").to_bytes();
        assert_eq!(read, "abc");
        assert_eq!(std::sync::Arc::strong_count(&guard), 1);
    }
}
