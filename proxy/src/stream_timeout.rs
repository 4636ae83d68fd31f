//! Timeouts that cover bodies: a route's `idle_timeout` (no body byte in either direction
//! for that long) and `stream_timeout` (the whole exchange). One [`StreamClock`] per request
//! is shared by its request body and its response body, each wrapped in [`Watched`]: every
//! data frame either way restarts the idle time; a body that waits past either limit ends
//! with an error, which hyper turns into an HTTP/2 `RST_STREAM` or, over HTTP/1.1, a closed
//! connection (the body is short of its `Content-Length` or has no last chunk). The clock
//! keeps why it cut, for the access log and `mesh_streams_cut_total`.
//!
//! A timer is armed only while a body waits, and re-armed lazily: it fires at the deadline
//! it was set to, and the body then looks at the last activity and sleeps again if bytes
//! came meanwhile, so flowing bytes cost an atomic store each, not a timer update.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::BodyExt;
use hyper::body::Frame;
use tokio::time::{Instant, Sleep};

use crate::body::{Body, BoxError};

/// Envoy's stream idle timeout: the default `idle_timeout`.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(300);

/// Sent by the caller's sidecar to the service's: the route's idle timeout in ms.
pub const IDLE_HEADER: &str = "x-mesh-idle-timeout-ms";
/// Sent by the caller's sidecar to the service's: the route's stream timeout in ms.
pub const STREAM_HEADER: &str = "x-mesh-stream-timeout-ms";
/// How much later than the caller's sidecar the service's sidecar cuts, so that the
/// caller's, which can say why in its log, cuts first.
pub const INBOUND_GRACE: Duration = Duration::from_secs(1);

/// Why a stream was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// No body byte either way for `idle_timeout`.
    Idle,
    /// The stream outlived `stream_timeout`.
    Stream,
}

impl Cut {
    /// The reason as the access log and `x-mesh-error` give it.
    pub fn reason(self) -> &'static str {
        match self {
            Cut::Idle => "idle-timeout",
            Cut::Stream => "stream-timeout",
        }
    }
}

/// The limits of one request's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest time without a body byte either way.
    pub idle: Duration,
    /// Bound on the whole exchange from the request's arrival.
    pub stream: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            idle: DEFAULT_IDLE,
            stream: None,
        }
    }
}

impl Limits {
    /// A route's limits (none: the defaults).
    pub fn of_route(route: Option<&mesh_table::Route>) -> Limits {
        Limits {
            idle: route
                .and_then(|r| r.idle_timeout_ms)
                .map_or(DEFAULT_IDLE, Duration::from_millis),
            stream: route
                .and_then(|r| r.stream_timeout_ms)
                .map(Duration::from_millis),
        }
    }

    /// Tells the next sidecar these limits (replacing whatever the application sent).
    pub fn announce(&self, headers: &mut HeaderMap) {
        headers.insert(IDLE_NAME, millis_value(self.idle));
        match self.stream {
            Some(stream) => {
                headers.insert(STREAM_NAME, millis_value(stream));
            }
            None => {
                headers.remove(STREAM_NAME);
            }
        }
    }

    /// The service's sidecar: the limits the caller's sidecar announced, later by
    /// [`INBOUND_GRACE`] (the idle one at most the default), removed from the request; the
    /// defaults when none came.
    pub fn take_announced(headers: &mut HeaderMap) -> Limits {
        let read = |headers: &mut HeaderMap, name: &str| {
            headers
                .remove(name)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis)
        };
        let idle = read(headers, IDLE_HEADER)
            .map_or(DEFAULT_IDLE, |d| (d + INBOUND_GRACE).min(DEFAULT_IDLE));
        let stream = read(headers, STREAM_HEADER).map(|d| d + INBOUND_GRACE);
        Limits { idle, stream }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The headers' names as constants: a name given as a `&str` is copied for every insert.
const IDLE_NAME: HeaderName = HeaderName::from_static(IDLE_HEADER);
const STREAM_NAME: HeaderName = HeaderName::from_static(STREAM_HEADER);

/// `d` in ms as a header value, without an allocation for one of the last few values made
/// on this thread (the default idle timeout, and routes repeat theirs; a clone shares).
fn millis_value(d: Duration) -> HeaderValue {
    const RECENT: usize = 8;
    thread_local! {
        static MADE: RefCell<Vec<(u64, HeaderValue)>> = const { RefCell::new(Vec::new()) };
    }
    let ms = millis(d);
    MADE.with_borrow_mut(|made| {
        if let Some((_, value)) = made.iter().find(|(m, _)| *m == ms) {
            return value.clone();
        }
        let value = HeaderValue::from(ms);
        if made.len() == RECENT {
            made.remove(0);
        }
        made.push((ms, value.clone()));
        value
    })
}

/// One request's clock, shared by both bodies.
#[derive(Debug)]
pub struct StreamClock {
    started: Instant,
    limits: Limits,
    /// The last body byte either way, in ms since `started`.
    last_ms: AtomicU64,
    /// 0: not cut; 1: idle; 2: stream.
    cut: AtomicU8,
}

impl StreamClock {
    /// A clock started now (at the request's arrival).
    pub fn new(limits: Limits) -> Arc<StreamClock> {
        Arc::new(StreamClock {
            started: Instant::now(),
            limits,
            last_ms: AtomicU64::new(0),
            cut: AtomicU8::new(0),
        })
    }

    /// The limits it enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// What is left of the stream timeout (none: no bound).
    pub fn stream_left(&self) -> Option<Duration> {
        self.limits
            .stream
            .map(|s| s.saturating_sub(self.started.elapsed()))
    }

    /// Why the stream was cut, if it was.
    pub fn cut(&self) -> Option<Cut> {
        match self.cut.load(Ordering::Relaxed) {
            1 => Some(Cut::Idle),
            2 => Some(Cut::Stream),
            _ => None,
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn set_cut(&self, cut: Cut) -> Cut {
        let code = match cut {
            Cut::Idle => 1,
            Cut::Stream => 2,
        };
        // The first cut stands (the other body then ends because of it).
        match self
            .cut
            .compare_exchange(0, code, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => cut,
            Err(_) => self.cut().unwrap_or(cut),
        }
    }

    /// Whether the stream is over its limits now, or else when to look again.
    fn check(&self, now: Instant) -> Result<Instant, Cut> {
        if let Some(cut) = self.cut() {
            return Err(cut);
        }
        let mut wake = self.started
            + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
            + self.limits.idle;
        if let Some(stream) = self.limits.stream {
            let end = self.started + stream;
            if now >= end {
                return Err(self.set_cut(Cut::Stream));
            }
            wake = wake.min(end);
        }
        if now >= wake {
            return Err(self.set_cut(Cut::Idle));
        }
        Ok(wake)
    }

    /// `body` under this clock (an empty body is left as is: it cannot stall).
    pub fn watch<B>(self: &Arc<StreamClock>, body: B) -> Body
    where
        B: hyper::body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        if body.is_end_stream() {
            return crate::body::boxed(body);
        }
        self.watching(body).boxed()
    }

    /// [`StreamClock::watch`] without the box, for a caller that wraps it further (in
    /// `body::with_guard`, say) and boxes once.
    pub fn watching<B: hyper::body::Body>(self: &Arc<StreamClock>, body: B) -> Watched<B> {
        let clock = (!body.is_end_stream()).then(|| Arc::clone(self));
        Watched {
            body,
            clock,
            sleep: None,
        }
    }
}

/// The error a cut body ends with.
#[derive(Debug, thiserror::Error)]
#[error("stream cut: {}", .0.reason())]
pub struct CutError(pub Cut);

/// A body whose waits are bounded by its request's [`StreamClock`] (none: passed through).
pub struct Watched<B> {
    body: B,
    clock: Option<Arc<StreamClock>>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<B> hyper::body::Body for Watched<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body)
            .poll_frame(cx)
            .map(|frame| frame.map(|f| f.map_err(Into::into)));
        let Some(clock) = &this.clock else {
            return polled;
        };
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if frame.is_data() {
                    clock.touch();
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(other) => return Poll::Ready(other),
            Poll::Pending => {}
        }
        loop {
            let wake = match clock.check(Instant::now()) {
                Ok(wake) => wake,
                Err(cut) => {
                    this.sleep = None;
                    return Poll::Ready(Some(Err(Box::new(CutError(cut)))));
                }
            };
            let sleep = match &mut this.sleep {
                // Armed for no later than needed and not yet fired: when it fires, this
                // loop looks again (bytes may have come meanwhile).
                Some(sleep) if sleep.deadline() <= wake && !sleep.is_elapsed() => sleep,
                Some(sleep) => {
                    sleep.as_mut().reset(wake);
                    sleep
                }
                None => this.sleep.insert(Box::pin(tokio::time::sleep_until(wake))),
            };
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
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
    use super::*;

    /// `chunks` one-byte frames, then nothing, ever.
    struct Stalls(usize);

    impl hyper::body::Body for Stalls {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            if self.0 == 0 {
                return Poll::Pending;
            }
            self.0 -= 1;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
        }
    }

    fn stalled_after(chunks: usize) -> Body {
        Stalls(chunks).boxed()
    }

    #[tokio::test]
    async fn a_stalled_body_is_cut_after_the_idle_timeout() {
        let limits = Limits {
            idle: Duration::from_millis(200),
            stream: None,
        };
        let clock = StreamClock::new(limits);
        let mut body = clock.watch(stalled_after(2));
        assert!(body.frame().await.expect("frame").is_ok());
        assert!(body.frame().await.expect("frame").is_ok());
        let err = body.frame().await.expect("frame").expect_err("cut");
        assert_eq!(err.to_string(), "stream cut: idle-timeout");
        assert_eq!(clock.cut(), Some(Cut::Idle));
    }

    #[tokio::test]
    async fn a_watched_body_wrapped_further_is_still_cut() {
        let limits = Limits {
            idle: Duration::from_millis(100),
            stream: None,
        };
        let clock = StreamClock::new(limits);
        let guard = Arc::new(());
        let mut body = crate::body::with_guard(clock.watching(Stalls(1)), Arc::clone(&guard));
        assert!(body.frame().await.expect("frame").is_ok());
        let err = body.frame().await.expect("frame").expect_err("cut");
        assert_eq!(err.to_string(), "stream cut: idle-timeout");
        drop(body);
        assert_eq!(Arc::strong_count(&guard), 1);
    }

    #[tokio::test]
    async fn flowing_bytes_keep_the_stream_until_its_stream_timeout() {
        let limits = Limits {
            idle: Duration::from_millis(400),
            stream: Some(Duration::from_millis(800)),
        };
        let clock = StreamClock::new(limits);
        let started = Instant::now();
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        tokio::spawn(async move {
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if tx.send(Bytes::from_static(b"x")).await.is_err() {
                    return;
                }
            }
        });
        let mut body = clock.watch(Channel(rx).boxed());
        let mut frames = 0;
        let err = loop {
            match body.frame().await.expect("frame") {
                Ok(_) => frames += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(err.to_string(), "stream cut: stream-timeout");
        // Bytes every 50 ms kept it past its idle timeout, until the stream bound.
        assert!(frames >= 4, "{frames}");
        assert!(started.elapsed() >= Duration::from_millis(800));
    }

    struct Channel(tokio::sync::mpsc::Receiver<Bytes>);

    impl hyper::body::Body for Channel {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    #[test]
    fn announced_values_are_the_limits_in_ms() {
        assert_eq!(millis_value(DEFAULT_IDLE), millis(DEFAULT_IDLE).to_string());
        for _ in 0..2 {
            for ms in [1, 1500, 30_000, 1500, 7, 8, 9, 10, 11, 12, 13, 1500] {
                assert_eq!(millis_value(Duration::from_millis(ms)), ms.to_string());
            }
        }
    }

    #[test]
    fn announced_limits_come_later_and_are_removed() {
        let mut headers = HeaderMap::new();
        Limits {
            idle: Duration::from_millis(1500),
            stream: Some(Duration::from_secs(30)),
        }
        .announce(&mut headers);
        let got = Limits::take_announced(&mut headers);
        assert_eq!(got.idle, Duration::from_millis(2500));
        assert_eq!(got.stream, Some(Duration::from_secs(31)));
        assert!(headers.is_empty());
        headers.insert(IDLE_HEADER, "999999999".parse().expect("value"));
        assert_eq!(Limits::take_announced(&mut headers).idle, DEFAULT_IDLE);
        assert_eq!(Limits::take_announced(&mut headers), Limits::default());
    }
}
