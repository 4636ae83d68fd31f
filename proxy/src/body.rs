//! The one body type every stage passes along: streamed, boxed, with trailers kept.

use std::any::Any;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};

/// Any error a body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed HTTP body.
pub type Body = BoxBody<Bytes, BoxError>;

/// Boxes any body whose errors convert. A body that is a [`Body`] already is passed through
/// (not boxed around its box), and one that has ended with no length (a GET's) becomes
/// [`empty`], which costs no allocation.
pub fn boxed<B>(body: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    if body.is_end_stream() && body.size_hint().exact() == Some(0) {
        return empty();
    }
    let mut body = Some(body);
    if let Some(already) = <dyn Any>::downcast_mut::<Option<Body>>(&mut body) {
        if let Some(already) = already.take() {
            return already;
        }
    }
    match body {
        Some(body) => body.map_err(Into::into).boxed(),
        None => empty(),
    }
}

/// A body holding `text`.
pub fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body (zero-sized: boxing it allocates nothing).
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// `body` holding `guard` until the body is dropped (read to its end, or abandoned): how
/// counts of requests in flight last as long as the response streams. Any body type: one
/// box for both, where boxing the body first would take two.
pub fn with_guard<B, G>(body: B, guard: G) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
    G: Send + Sync + Unpin + 'static,
{
    Guarded {
        body,
        _guard: guard,
    }
    .boxed()
}

/// A body and what it holds until dropped (fields drop in order: the body first).
struct Guarded<B, G> {
    body: B,
    _guard: G,
}

impl<B, G> hyper::body::Body for Guarded<B, G>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    G: Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        std::pin::Pin::new(&mut self.body)
            .poll_frame(cx)
            .map(|frame| frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use hyper::body::Body as _;

    use super::{boxed, full, with_guard};

    #[tokio::test]
    async fn a_body_already_boxed_passes_through_whole() {
        let body = boxed(full("abc"));
        assert_eq!(body.size_hint().exact(), Some(3));
        let read = body.collect().await.expect("read").to_bytes();
        assert_eq!(read, "abc");
    }

    #[test]
    fn an_ended_body_of_no_length_stays_ended_and_empty() {
        let body = boxed(http_body_util::Full::new(bytes::Bytes::new()));
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
    }

    #[tokio::test]
    async fn a_guard_lasts_until_its_body_is_dropped() {
        let guard = std::sync::Arc::new(());
        let body = with_guard(full("ab"), std::sync::Arc::clone(&guard));
        assert_eq!(std::sync::Arc::strong_count(&guard), 2);
        let read = body.collect().await.expect("read").to_bytes();
        assert_eq!(read, "ab");
        assert_eq!(std::sync::Arc::strong_count(&guard), 1);
    }
}
