//! Response bodies: a whole buffer, or a channel of frames (the subscription stream).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Response, StatusCode};
use hyper::body::Frame;
use tokio::sync::mpsc;

/// A response body.
#[derive(Debug)]
pub enum Body {
    /// One buffer, then the end.
    Full(Option<Bytes>),
    /// Whatever the channel yields, until its senders are gone.
    Channel(mpsc::Receiver<Bytes>),
    /// Another body, and what is released when it is dropped (the listener's count of the
    /// requests in progress on a connection and of a certificate).
    Held(Box<Body>, Held),
}

/// Something kept alive as long as a response body: its `Drop` releases it.
pub struct Held(pub Box<dyn std::any::Any + Send + Sync>);

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Held")
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Channel(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
            Body::Held(inner, _) => Pin::new(inner.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(None) => true,
            Body::Held(inner, _) => inner.is_end_stream(),
            _ => false,
        }
    }
}

/// A JSON answer.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Body::Full(Some(Bytes::from(value.to_string()))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// `{"error": "..."}` with `status`.
pub fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message.to_string() }))
}

/// Reads a whole request body of at most `limit` bytes (more is an error as soon as the
/// bytes received pass it: nothing beyond `limit` is buffered).
pub async fn read(body: hyper::body::Incoming, limit: usize) -> Result<Bytes, String> {
    use http_body_util::BodyExt;
    http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| format!("cannot read the request body: {e}"))
}
