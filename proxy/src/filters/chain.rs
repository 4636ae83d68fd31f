//! A request's filter chain: one stream per filter, request phases in declaration order and
//! response phases in reverse (as docs/language.md says). A filter that fails is skipped
//! when it is `failure open` and answers 503 `filter-failed` when it is `failure closed`;
//! either way its instance was discarded by the host.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Version};
use mesh_table::{FailureMode, FilterId, Table};
use mesh_wasm::{Failure, LocalResponse, Step, Stream, StreamInfo, Verdict};

use super::body::{Aborted, FilterBody, Side};
use super::store::{FilterStore, Plugins};
use crate::body::{full, Body};
use crate::errors::ProxyError;

/// One filter's stream within a request.
#[derive(Clone)]
pub(super) struct Link {
    pub(super) stream: Stream,
    pub(super) failure: FailureMode,
}

impl Link {
    /// The filter's name (its plugin's).
    pub(super) fn name(&self) -> &Arc<str> {
        self.stream.filter()
    }

    /// What a failure comes to: `Ok(())` to skip the filter (open), the error otherwise.
    pub(super) fn on_failure(&self, failure: &Failure) -> Result<(), ProxyError> {
        on_failure(self.name(), self.failure, failure)
    }
}

/// The links of a request's chain: inline up to four filters (no allocation per request).
type Links = smallvec::SmallVec<[Link; 4]>;

/// The filters taking part in one request, after its request-headers phase.
#[derive(Default)]
pub struct Chain {
    links: Links,
    /// A local response a request-body phase asked for (the body was aborted for it); only
    /// when the request body goes through filters.
    aborted: Option<Aborted>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.links.iter().map(Link::name))
            .finish()
    }
}

/// How the request phase ended.
pub enum Start {
    /// Forward the (possibly changed) head with this body; run the response through the
    /// chain.
    Forward(Body, Chain),
    /// A filter answered by itself.
    Respond(Response<Body>),
}

/// How the response phase ended.
pub enum Finish {
    /// Answer with the (possibly changed) head and this body.
    Pass(Body),
    /// A filter answered by itself instead.
    Respond(Response<Body>),
}

/// Runs `request` through `filters` around `send`, which forwards it and returns the
/// response with the request head as sent (`forward_keeping`).
///
/// The heads stay in this function's future while the filters change them in place: a
/// request's future is moved whole a few times, and each head passed by value through the
/// chain's phases was copied several times more.
pub async fn around<F, Sent>(
    store: &FilterStore,
    table: &Table,
    filters: &[FilterId],
    info: StreamInfo,
    request: Request<Body>,
    send: F,
) -> Result<Response<Body>, ProxyError>
where
    F: FnOnce(Request<Body>) -> Sent,
    Sent: Future<Output = Result<(Response<Body>, http::request::Parts), ProxyError>>,
{
    let (mut head, body) = request.into_parts();
    // The request id is the proxy's before the filters run, as in Envoy (whose connection
    // manager sets it before its filter chain): the ABI lets filters read request headers
    // only in request phases, so a filter that reports the id must see it there.
    crate::headers::ensure_request_id(&mut head.headers);
    let (body, chain) = match Chain::start(store, table, filters, info, &mut head, body).await? {
        Start::Forward(body, chain) => (body, chain),
        Start::Respond(response) => return Ok(response),
    };
    let (response, mut sent) = match send(Request::from_parts(head, body)).await {
        Ok(forwarded) => forwarded,
        Err(error) => return chain.aborted_response().ok_or(error),
    };
    let (mut head, body) = response.into_parts();
    match chain.finish(&mut head, body, &mut sent).await? {
        Finish::Pass(body) => Ok(Response::from_parts(head, body)),
        Finish::Respond(response) => Ok(response),
    }
}

/// A phase's result: at once when no filter paused (the usual case), or when the paused
/// filter decides. Awaiting it costs nothing more in the first case, and the caller's
/// future holds no space for the rare wait (it is boxed), so every request's future stays
/// small: each request moves its future whole a few times.
pub enum Ready<'a, T> {
    /// Decided already (taken by the first poll).
    Now(Option<Result<T, ProxyError>>),
    /// A filter paused: the rest of the phase.
    Later(Pin<Box<dyn Future<Output = Result<T, ProxyError>> + Send + 'a>>),
}

impl<T: Unpin> Future for Ready<'_, T> {
    type Output = Result<T, ProxyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Ready::Now(result) => Poll::Ready(result.take().expect("polled after it was ready")),
            Ready::Later(rest) => rest.as_mut().poll(cx),
        }
    }
}

/// Why a phase stopped before its last filter.
enum Stop {
    /// A filter answered by itself.
    Respond(Response<Body>),
    /// A filter paused: wait for its verdict.
    Paused,
}

impl Chain {
    /// Runs the request head through `filters` (table ids, in declaration order) and wraps
    /// the body so its chunks go through them too.
    pub fn start<'a>(
        store: &FilterStore,
        table: &'a Table,
        filters: &'a [FilterId],
        info: StreamInfo,
        parts: &'a mut http::request::Parts,
        body: Body,
    ) -> Ready<'a, Start> {
        let mut run = Starting {
            plugins: store.plugins(),
            table,
            filters,
            next: 0,
            info: Some(info),
            end_of_stream: hyper::body::Body::is_end_stream(&body),
            no_trailers: cannot_carry_trailers(parts.version, &body),
            parts,
            body,
            chain: Chain::default(),
            paused: None,
        };
        match run.advance() {
            Ok(None) => Ready::Now(Some(Ok(run.forward()))),
            Ok(Some(Stop::Respond(response))) => Ready::Now(Some(Ok(Start::Respond(response)))),
            Ok(Some(Stop::Paused)) => Ready::Later(Box::pin(run.after_pause())),
            Err(error) => Ready::Now(Some(Err(error))),
        }
    }

    /// The local response a request-body phase asked for, if the forward failed for it.
    pub fn aborted_response(&self) -> Option<Response<Body>> {
        self.aborted.as_ref()?.take().map(local_response)
    }

    /// Runs the response head through the chain, last filter first, and wraps its body;
    /// the filters read the request as it was `sent` (`forward_keeping`).
    pub fn finish<'a>(
        self,
        parts: &'a mut http::response::Parts,
        body: Body,
        sent: &'a mut http::request::Parts,
    ) -> Ready<'a, Finish> {
        if self.links.is_empty() {
            return Ready::Now(Some(Ok(Finish::Pass(body))));
        }
        let mut kept = self.links;
        kept.reverse();
        let end_of_stream = hyper::body::Body::is_end_stream(&body);
        // Without a body, the head phase rules the trailers out itself.
        if !end_of_stream && cannot_carry_trailers(parts.version, &body) {
            kept.iter().for_each(|l| l.stream.no_response_trailers());
        }
        let mut run = Finishing {
            kept,
            next: 0,
            sent,
            parts,
            body,
            end_of_stream,
        };
        match run.advance() {
            Ok(None) => Ready::Now(Some(Ok(run.response()))),
            Ok(Some(Stop::Respond(response))) => Ready::Now(Some(Ok(Finish::Respond(response)))),
            Ok(Some(Stop::Paused)) => Ready::Later(Box::pin(run.after_pause())),
            Err(error) => Ready::Now(Some(Err(error))),
        }
    }
}

/// The request phase under way: the filters run one after another on the head.
struct Starting<'a> {
    /// Held while the phase runs: a filter that pauses keeps it (the loads that find
    /// this thread's few fast slots taken meanwhile count a reference instead).
    plugins: arc_swap::Guard<Arc<Plugins>>,
    table: &'a Table,
    filters: &'a [FilterId],
    /// The next filter to start.
    next: usize,
    /// Each filter's context gets the facts; the last one takes them.
    info: Option<StreamInfo>,
    end_of_stream: bool,
    no_trailers: bool,
    parts: &'a mut http::request::Parts,
    body: Body,
    chain: Chain,
    /// The filter that paused, and its failure mode.
    paused: Option<(Stream, FailureMode)>,
}

impl Starting<'_> {
    /// Starts the filters from `next` on until all ran (`None`), one answered, or one
    /// paused.
    fn advance(&mut self) -> Result<Option<Stop>, ProxyError> {
        while let Some(&id) = self.filters.get(self.next) {
            self.next += 1;
            let Some(filter) = self.table.filters.get(id as usize) else {
                continue;
            };
            let mode = filter.failure;
            let Some(plugin) = self.plugins.get(filter.name.as_str()) else {
                // Not loaded (missing, refused, or still compiling): the failure mode decides.
                tracing::debug!(filter = %filter.name, "filter not loaded");
                match mode {
                    FailureMode::Open => continue,
                    FailureMode::Closed => {
                        return Err(ProxyError::FilterFailed(filter.name.clone()))
                    }
                }
            };
            let last = self.next == self.filters.len();
            let Some(facts) = (if last {
                self.info.take()
            } else {
                self.info.clone()
            }) else {
                break; // taken by the last filter: no filter is left
            };
            // `finish` lends the request as sent (`forward_keeping`).
            let lends_sent_request = true;
            let started = Stream::begin_request(
                plugin,
                facts,
                self.parts,
                self.end_of_stream,
                self.no_trailers,
                lends_sent_request,
            );
            match started {
                Ok((stream, Step::Done(verdict))) => {
                    if let Some(stop) = self.decided(stream, mode, Ok(verdict))? {
                        return Ok(Some(stop));
                    }
                }
                Ok((stream, Step::Paused)) => {
                    self.paused = Some((stream, mode));
                    return Ok(Some(Stop::Paused));
                }
                Err(failure) => on_failure(plugin.name(), mode, &failure)?,
            }
        }
        Ok(None)
    }

    /// A filter's verdict on the request head.
    fn decided(
        &mut self,
        stream: Stream,
        mode: FailureMode,
        verdict: Result<Verdict, Failure>,
    ) -> Result<Option<Stop>, ProxyError> {
        match verdict {
            Ok(Verdict::Continue | Verdict::Buffer) => self.chain.links.push(Link {
                stream,
                failure: mode,
            }),
            Ok(Verdict::Respond(local)) => return Ok(Some(Stop::Respond(local_response(local)))),
            Ok(Verdict::Reset) => return Err(ProxyError::FilterReset(stream.filter().to_string())),
            Err(failure) => on_failure(stream.filter(), mode, &failure)?,
        }
        Ok(None)
    }

    /// The rest of the phase after a filter paused: its verdict, then the filters after it
    /// (which may pause too).
    async fn after_pause(mut self) -> Result<Start, ProxyError> {
        while let Some((stream, mode)) = self.paused.take() {
            let verdict = stream.resume_request(self.parts).await;
            let stop = match self.decided(stream, mode, verdict)? {
                Some(stop) => Some(stop),
                None => self.advance()?,
            };
            if let Some(Stop::Respond(response)) = stop {
                return Ok(Start::Respond(response));
            }
        }
        Ok(self.forward())
    }

    /// The request to forward once every filter continued. Only filters that do
    /// something with bodies or trailers see them; with none, the body passes untouched.
    fn forward(self) -> Start {
        let Starting {
            parts,
            body,
            mut chain,
            end_of_stream,
            ..
        } = self;
        let body_links: Vec<Link> = chain
            .links
            .iter()
            .filter(|l| l.stream.wants_request_body() || l.stream.wants_request_trailers())
            .cloned()
            .collect();
        if body_links.is_empty() || end_of_stream {
            return Start::Forward(body, chain);
        }
        let data = body_links.iter().any(|l| l.stream.wants_request_body());
        if data {
            // Filters may change the body's length: let the next hop frame it.
            parts.headers.remove(http::header::CONTENT_LENGTH);
        }
        let aborted = chain.aborted.insert(Aborted::default()).clone();
        let body = FilterBody::wrap(body, body_links, Side::Request, aborted, data);
        Start::Forward(body, chain)
    }
}

/// The response phase under way: the filters run last first on the head.
struct Finishing<'a> {
    /// The chain's links, last filter first; a filter that failed open is removed.
    kept: Links,
    /// The next link to run.
    next: usize,
    sent: &'a mut http::request::Parts,
    parts: &'a mut http::response::Parts,
    body: Body,
    end_of_stream: bool,
}

impl Finishing<'_> {
    /// Runs the links from `next` on until all ran (`None`), one answered, or one paused.
    fn advance(&mut self) -> Result<Option<Stop>, ProxyError> {
        while let Some(link) = self.kept.get(self.next) {
            let verdict = link
                .stream
                .begin_response(self.sent, self.parts, self.end_of_stream);
            let stop = match verdict {
                Ok(Step::Done(verdict)) => self.decided(Ok(verdict))?,
                Ok(Step::Paused) => Some(Stop::Paused),
                Err(failure) => self.decided(Err(failure))?,
            };
            if stop.is_some() {
                return Ok(stop);
            }
        }
        Ok(None)
    }

    /// The verdict of the link at `next`.
    fn decided(&mut self, verdict: Result<Verdict, Failure>) -> Result<Option<Stop>, ProxyError> {
        let link = &self.kept[self.next];
        match verdict {
            Ok(Verdict::Continue | Verdict::Buffer) => self.next += 1,
            Ok(Verdict::Respond(local)) => return Ok(Some(Stop::Respond(local_response(local)))),
            Ok(Verdict::Reset) => return Err(ProxyError::FilterReset(link.name().to_string())),
            Err(failure) => {
                link.on_failure(&failure)?;
                self.kept.remove(self.next);
            }
        }
        Ok(None)
    }

    /// The rest of the phase after a filter paused.
    async fn after_pause(mut self) -> Result<Finish, ProxyError> {
        loop {
            let stream = self.kept[self.next].stream.clone();
            let verdict = stream.resume_response(self.sent, self.parts).await;
            let stop = match self.decided(verdict)? {
                Some(stop) => Some(stop),
                None => self.advance()?,
            };
            match stop {
                None => return Ok(self.response()),
                Some(Stop::Respond(response)) => return Ok(Finish::Respond(response)),
                Some(Stop::Paused) => {}
            }
        }
    }

    /// The response's body once every filter continued: through those that want it.
    fn response(self) -> Finish {
        let Finishing {
            mut kept,
            parts,
            body,
            end_of_stream,
            ..
        } = self;
        kept.retain(|l| l.stream.wants_response_body() || l.stream.wants_response_trailers());
        if kept.is_empty() || end_of_stream {
            return Finish::Pass(body);
        }
        let data = kept.iter().any(|l| l.stream.wants_response_body());
        if data {
            parts.headers.remove(http::header::CONTENT_LENGTH);
        }
        let body = FilterBody::wrap(
            body,
            kept.into_vec(),
            Side::Response,
            Aborted::default(),
            data,
        );
        Finish::Pass(body)
    }
}

/// Whether a message cannot carry trailers: HTTP/1 sends them only with chunked framing,
/// so a body of known length has none (HTTP/2 may send them after any body).
fn cannot_carry_trailers(version: Version, body: &Body) -> bool {
    version <= Version::HTTP_11 && hyper::body::Body::size_hint(body).exact().is_some()
}

#[cold] // off the request path: kept out of its code
fn on_failure(name: &str, mode: FailureMode, failure: &Failure) -> Result<(), ProxyError> {
    tracing::debug!(filter = %name, %failure, "filter failed on a request");
    match mode {
        FailureMode::Open => Ok(()),
        FailureMode::Closed => Err(ProxyError::FilterFailed(name.to_string())),
    }
}

/// A filter's `send_local_response` as a response. Headers the filter got wrong are
/// dropped (logged), never fatal. A body without a `content-type` from the filter is
/// `text/plain`, as Envoy labels local replies (a filter written for Envoy relies on it).
pub(super) fn local_response(local: LocalResponse) -> Response<Body> {
    let mut response = Response::new(full(Bytes::clone(&local.body)));
    *response.status_mut() =
        StatusCode::from_u16(local.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in &local.headers {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            (Ok(name), Ok(value)) => {
                response.headers_mut().append(name, value);
            }
            _ => {
                tracing::debug!(header = %name, "a filter's local response header is invalid; dropped")
            }
        }
    }
    if !local.body.is_empty() && !response.headers().contains_key(http::header::CONTENT_TYPE) {
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(headers: &[(&str, &str)], body: &'static [u8]) -> Response<Body> {
        local_response(LocalResponse {
            status: 403,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            body: Bytes::from_static(body),
            details: String::new(),
        })
    }

    #[test]
    fn a_local_reply_with_a_body_is_text_unless_the_filter_says_otherwise() {
        let reply = local(&[("x-why", "denied")], b"denied");
        assert_eq!(reply.status(), 403);
        assert_eq!(reply.headers()["content-type"], "text/plain");
        assert_eq!(reply.headers()["x-why"], "denied");
        let reply = local(&[("content-type", "application/json")], b"{}");
        let types: Vec<_> = reply.headers().get_all("content-type").iter().collect();
        assert_eq!(types, ["application/json"]);
        let reply = local(&[], b"");
        assert!(
            reply.headers().get("content-type").is_none(),
            "no body, no type"
        );
    }
}
