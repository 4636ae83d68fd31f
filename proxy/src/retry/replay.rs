//! Request bodies that can be sent again. The first try streams the body as usual (nothing
//! waits for it to end, so streaming calls keep working) and keeps a copy of what passes,
//! up to [`MAX_REPLAY`]; a later try replays the copy, then goes on reading the original
//! where the earlier try left it. Past the limit the copy is dropped and the request can no
//! longer be tried again. (Linkerd's `ReplayBody`, simplified: one reader at a time.)

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::body::{Body, BoxError};

/// The largest body kept for replay.
pub const MAX_REPLAY: usize = 64 * 1024;

struct State {
    /// The original body, while no try is reading it (and it has not ended).
    source: Option<Body>,
    /// What tries have read so far, in order.
    chunks: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    buffered: usize,
    /// The original ended: `chunks` and `trailers` are the whole body.
    complete: bool,
    /// Too long (the copy was dropped) or broken: no try can send it whole again.
    unreplayable: bool,
    /// The try allowed to read further from the original.
    generation: u64,
    /// The original's size hint (a declared `content-length`).
    hint: SizeHint,
    limit: usize,
}

/// A request body and what has been read of it, shared by the bodies of its tries.
#[derive(Clone)]
pub struct Replay {
    /// `None` for a body that had ended already (most requests: GET and the like): every
    /// try sends an empty body, which costs no allocation, and nothing is shared.
    state: Option<Arc<Mutex<State>>>,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay").finish_non_exhaustive()
    }
}

impl Replay {
    /// Wraps `body`, keeping at most `limit` bytes for replay.
    pub fn new(body: Body, limit: usize) -> Replay {
        if body.is_end_stream() {
            return Replay { state: None };
        }
        let hint = body.size_hint();
        Replay {
            state: Some(Arc::new(Mutex::new(State {
                source: Some(body),
                chunks: Vec::new(),
                trailers: None,
                buffered: 0,
                complete: false,
                unreplayable: false,
                generation: 0,
                hint,
                limit,
            }))),
        }
    }

    /// Whether a new try could send the whole body: nothing was lost, and the original is
    /// either read to its end or free to be read further.
    pub fn can_replay(&self) -> bool {
        let Some(state) = &self.state else {
            return true;
        };
        let state = lock(state);
        !state.unreplayable && (state.complete || state.source.is_some())
    }

    /// The body of the next try. Bodies of earlier tries may no longer read the original.
    pub fn next_try(&self) -> Body {
        let Some(shared) = &self.state else {
            return crate::body::empty();
        };
        let generation = {
            let mut state = lock(shared);
            state.generation += 1;
            state.generation
        };
        TryBody {
            state: Arc::clone(shared),
            generation,
            position: 0,
            source: None,
            done: false,
        }
        .boxed()
    }
}

/// The body of one try.
struct TryBody {
    state: Arc<Mutex<State>>,
    generation: u64,
    /// Chunks of `State::chunks` this try has sent.
    position: usize,
    /// The original, while this try reads it.
    source: Option<Body>,
    /// Everything, trailers included, was sent.
    done: bool,
}

impl HttpBody for TryBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.source.is_none() {
            let mut state = lock(&this.state);
            if !state.unreplayable && this.position < state.chunks.len() {
                let chunk = state.chunks[this.position].clone();
                this.position += 1;
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if state.complete && !state.unreplayable {
                this.done = true;
                return Poll::Ready(state.trailers.clone().map(|t| Ok(Frame::trailers(t))));
            }
            if state.generation != this.generation {
                return Poll::Ready(Some(Err("a later try took over the request body".into())));
            }
            if state.unreplayable || this.position != state.chunks.len() {
                return Poll::Ready(Some(Err("the request body cannot be sent again".into())));
            }
            match state.source.take() {
                Some(source) => this.source = Some(source),
                None => {
                    return Poll::Ready(Some(Err(
                        "the request body is still held by an earlier try".into(),
                    )));
                }
            }
        }
        let Some(source) = this.source.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(source).poll_frame(cx);
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.source = None;
                this.done = true;
                lock(&this.state).complete = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => {
                this.source = None;
                this.done = true;
                lock(&this.state).unreplayable = true;
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                let mut state = lock(&this.state);
                if let Some(data) = frame.data_ref() {
                    if !state.unreplayable {
                        if state.buffered + data.len() > state.limit {
                            state.unreplayable = true;
                            state.chunks = Vec::new();
                        } else {
                            state.buffered += data.len();
                            state.chunks.push(data.clone());
                            this.position += 1;
                        }
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    state.trailers = Some(trailers.clone());
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.done {
            return true;
        }
        if self.source.is_some() {
            return false;
        }
        let state = lock(&self.state);
        state.complete
            && !state.unreplayable
            && self.position >= state.chunks.len()
            && state.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let state = lock(&self.state);
        if state.complete && !state.unreplayable && self.source.is_none() {
            let rest: usize = state
                .chunks
                .iter()
                .skip(self.position)
                .map(Bytes::len)
                .sum();
            return SizeHint::with_exact(rest as u64);
        }
        if self.position == 0 && self.source.is_none() {
            return state.hint;
        }
        SizeHint::default()
    }
}

impl Drop for TryBody {
    fn drop(&mut self) {
        // Hand the original back so that a later try can go on reading it.
        if let Some(source) = self.source.take() {
            let mut state = lock(&self.state);
            if state.source.is_none() {
                state.source = Some(source);
            }
        }
    }
}

/// A poisoned lock only means a panic elsewhere mid-update: keep going.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::BodyExt;
    use hyper::body::Frame;

    use super::Replay;
    use crate::body::{full, Body, BoxError};

    fn chunked(parts: &[&'static str], trailers: bool) -> Body {
        let mut frames: Vec<Frame<Bytes>> = parts
            .iter()
            .map(|p| Frame::data(Bytes::from_static(p.as_bytes())))
            .collect();
        if trailers {
            let mut t = http::HeaderMap::new();
            t.insert("x-sum", http::HeaderValue::from_static("7"));
            frames.push(Frame::trailers(t));
        }
        frames.reverse();
        Frames(frames).boxed()
    }

    /// A body of the given frames, one per poll, with no size hint (like chunked encoding).
    struct Frames(Vec<Frame<Bytes>>);

    impl hyper::body::Body for Frames {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            std::task::Poll::Ready(self.0.pop().map(Ok))
        }
    }

    async fn read(body: Body) -> Result<(Vec<u8>, Option<http::HeaderMap>), BoxError> {
        let collected = body.collect().await?;
        let trailers = collected.trailers().cloned();
        Ok((collected.to_bytes().to_vec(), trailers))
    }

    #[tokio::test]
    async fn a_read_body_replays_whole_with_its_trailers() {
        let replay = Replay::new(chunked(&["ab", "cd", "e"], true), 1024);
        let (first, t1) = read(replay.next_try()).await.expect("first");
        assert_eq!(first, b"abcde");
        assert!(replay.can_replay());
        let (second, t2) = read(replay.next_try()).await.expect("second");
        assert_eq!(second, b"abcde");
        assert_eq!(t1, t2);
        assert_eq!(t2.expect("trailers")["x-sum"], "7");
    }

    #[tokio::test]
    async fn a_later_try_goes_on_where_an_abandoned_one_stopped() {
        let replay = Replay::new(chunked(&["ab", "cd", "ef"], false), 1024);
        let mut first = replay.next_try();
        let frame = first.frame().await.expect("a frame").expect("data");
        assert_eq!(frame.into_data().expect("data"), "ab");
        drop(first);
        assert!(replay.can_replay());
        let (second, _) = read(replay.next_try()).await.expect("second");
        assert_eq!(second, b"abcdef");
    }

    #[tokio::test]
    async fn past_the_limit_the_body_streams_once_and_no_more() {
        let replay = Replay::new(chunked(&["abcd", "efgh", "ij"], false), 6);
        let (first, _) = read(replay.next_try()).await.expect("first");
        assert_eq!(first, b"abcdefghij");
        assert!(!replay.can_replay());
        assert!(read(replay.next_try()).await.is_err());
    }

    #[tokio::test]
    async fn an_unread_body_of_any_size_may_still_go_to_another_endpoint() {
        let replay = Replay::new(chunked(&["abcd", "efgh"], false), 2);
        drop(replay.next_try()); // e.g. the connection failed
        assert!(replay.can_replay());
        let (body, _) = read(replay.next_try()).await.expect("whole");
        assert_eq!(body, b"abcdefgh");
    }

    #[tokio::test]
    async fn empty_and_whole_bodies_keep_their_length() {
        use hyper::body::Body as _;
        let replay = Replay::new(crate::body::empty(), 10);
        let b = replay.next_try();
        assert!(b.is_end_stream());
        assert_eq!(b.size_hint().exact(), Some(0));
        let replay = Replay::new(full("hello"), 10);
        assert_eq!(replay.next_try().size_hint().exact(), Some(5));
        let (body, _) = read(replay.next_try()).await.expect("read");
        assert_eq!(body, b"hello");
        assert_eq!(replay.next_try().size_hint().exact(), Some(5));
    }
}
