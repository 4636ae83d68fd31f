//! A body streamed through the filters' body phases. Each filter has its own buffer: a
//! chunk reaches filter `i + 1` once filter `i` lets it through, and a filter that pauses
//! (`Buffer`) keeps what it has until more arrives or the body ends, as in Envoy.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use hyper::body::Frame;
use mesh_table::FailureMode;
use mesh_wasm::{LocalResponse, Verdict};

use super::chain::Link;
use crate::body::{Body, BoxError};

/// Which phases the body goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Request,
    Response,
}

/// A local response a request-body phase asked for; the body is aborted and the handler
/// answers with it instead of the forward's error.
#[derive(Debug, Clone, Default)]
pub(super) struct Aborted(Arc<Mutex<Option<LocalResponse>>>);

impl Aborted {
    fn set(&self, local: LocalResponse) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(local);
    }

    pub(super) fn take(&self) -> Option<LocalResponse> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// Why a filtered body ended early.
#[derive(Debug, thiserror::Error)]
#[error("filter `{0}` ended the body")]
pub struct FilterAborted(String);

pub(super) struct FilterBody {
    inner: Body,
    links: Vec<Link>,
    /// What each filter holds: `buffers[i]` waits for filter `i`.
    buffers: Vec<BytesMut>,
    /// Bytes every filter let through, not yet handed on.
    ready: BytesMut,
    side: Side,
    aborted: Aborted,
    /// Trailers to hand on after the last data.
    trailers: Option<HeaderMap>,
    /// The inner body ended and every buffer was flushed.
    done: bool,
    /// Whether data goes through the body callbacks; if not (no filter has one that does
    /// something), only trailers do, and data passes as it comes, its length known.
    data: bool,
}

impl FilterBody {
    pub(super) fn wrap(
        inner: Body,
        links: Vec<Link>,
        side: Side,
        aborted: Aborted,
        data: bool,
    ) -> Body {
        let buffers = links.iter().map(|_| BytesMut::new()).collect();
        http_body_util::BodyExt::boxed(FilterBody {
            inner,
            links,
            buffers,
            ready: BytesMut::new(),
            side,
            aborted,
            trailers: None,
            done: false,
            data,
        })
    }

    /// Moves bytes along the chain as far as each filter lets them; at the end of the
    /// body every filter is called with `end_of_stream` in order.
    fn run(&mut self, end_of_stream: bool) -> Result<(), BoxError> {
        let mut i = 0;
        while i < self.links.len() {
            let flush_all = end_of_stream;
            if self.buffers[i].is_empty() && !flush_all {
                i += 1;
                continue;
            }
            let link = &self.links[i];
            let verdict = match self.side {
                Side::Request => link
                    .stream
                    .request_body(&mut self.buffers[i], end_of_stream),
                Side::Response => link
                    .stream
                    .response_body(&mut self.buffers[i], end_of_stream),
            };
            match verdict {
                Ok(Verdict::Continue) => {}
                // Paused: keep the bytes; at the end of the body there is no more to wait for.
                Ok(Verdict::Buffer) if !end_of_stream => return Ok(()),
                Ok(Verdict::Buffer) => {}
                Ok(Verdict::Respond(local)) => {
                    if self.side == Side::Request {
                        self.aborted.set(local);
                    }
                    return Err(FilterAborted(link.name().to_string()).into());
                }
                Ok(Verdict::Reset) => return Err(FilterAborted(link.name().to_string()).into()),
                Err(failure) => {
                    tracing::debug!(filter = %link.name(), %failure, "filter failed on a body");
                    if link.failure == FailureMode::Closed {
                        return Err(FilterAborted(link.name().to_string()).into());
                    }
                    // Failed open: the filter is out; what it held goes on.
                    let held = std::mem::take(&mut self.buffers[i]);
                    self.links.remove(i);
                    self.buffers.remove(i);
                    self.pass(i, held);
                    continue;
                }
            }
            let through = std::mem::take(&mut self.buffers[i]);
            self.pass(i + 1, through);
            i += 1;
        }
        Ok(())
    }

    /// Hands `bytes` to filter `to`, or out of the chain past the last one.
    fn pass(&mut self, to: usize, bytes: BytesMut) {
        match self.buffers.get_mut(to) {
            Some(buffer) => buffer.unsplit(bytes),
            None => self.ready.unsplit(bytes),
        }
    }

    fn run_trailers(&mut self, trailers: &mut HeaderMap) -> Result<(), BoxError> {
        let mut i = 0;
        while i < self.links.len() {
            let link = &self.links[i];
            let verdict = match self.side {
                Side::Request => link.stream.request_trailers(trailers),
                Side::Response => link.stream.response_trailers(trailers),
            };
            match verdict {
                Ok(Verdict::Continue | Verdict::Buffer) => {}
                Ok(Verdict::Respond(_) | Verdict::Reset) => {
                    return Err(FilterAborted(link.name().to_string()).into())
                }
                Err(_) if link.failure == FailureMode::Closed => {
                    return Err(FilterAborted(link.name().to_string()).into())
                }
                Err(_) => {}
            }
            i += 1;
        }
        Ok(())
    }

    fn take_ready(&mut self) -> Option<Bytes> {
        (!self.ready.is_empty()).then(|| self.ready.split().freeze())
    }
}

impl hyper::body::Body for FilterBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(data) = this.take_ready() {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            if this.done {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if !this.data => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(data) => {
                        if let Some(first) = this.buffers.first_mut() {
                            first.extend_from_slice(&data);
                        } else {
                            this.ready.extend_from_slice(&data);
                        }
                        let end = hyper::body::Body::is_end_stream(&this.inner);
                        if let Err(e) = this.run(end) {
                            return Poll::Ready(Some(Err(e)));
                        }
                        this.done = end;
                    }
                    Err(frame) => {
                        // Trailers end the body: flush the data first, then the trailers.
                        if let Ok(mut trailers) = frame.into_trailers() {
                            let flushed = if this.data { this.run(true) } else { Ok(()) };
                            if let Err(e) = flushed.and_then(|()| this.run_trailers(&mut trailers))
                            {
                                return Poll::Ready(Some(Err(e)));
                            }
                            this.trailers = Some(trailers);
                            this.done = true;
                        }
                    }
                },
                Poll::Ready(None) => {
                    if this.data {
                        if let Err(e) = this.run(true) {
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                    this.done = true;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if !self.data {
            return self.trailers.is_none() && (self.done || self.inner.is_end_stream());
        }
        self.done && self.ready.is_empty() && self.trailers.is_none()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        if self.data {
            hyper::body::SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}
