//! A request's filter chain: one stream per filter, request phases in declaration order and
//! response phases in reverse (as the spec says). A filter that fails is skipped when it is
//! `failure open` and answers 503 `filter-failed` when it is `failure closed`; either way its
//! instance was discarded by the host.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Version};
use mesh_table::{FailureMode, FilterId, Table};
use mesh_wasm::{Failure, LocalResponse, Stream, StreamInfo, Verdict};

use super::body::{Aborted, FilterBody, Side};
use super::store::FilterStore;
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
    /// Forward the (possibly changed) request; run the response through the chain.
    Forward(Request<Body>, Chain),
    /// A filter answered by itself.
    Respond(Response<Body>),
}

impl Chain {
    /// Runs the request headers through `filters` (table ids, in declaration order) and
    /// wraps the body so its chunks go through them too.
    pub async fn start(
        store: &FilterStore,
        table: &Table,
        filters: &[FilterId],
        info: StreamInfo,
        request: Request<Body>,
    ) -> Result<Start, ProxyError> {
        let (mut parts, body) = request.into_parts();
        let end_of_stream = hyper::body::Body::is_end_stream(&body);
        let no_trailers = cannot_carry_trailers(parts.version, &body);
        let mut chain = Chain {
            links: Links::new(),
            aborted: None,
        };
        let plugins = store.plugins();
        // Each filter's context gets the facts; the last one takes them.
        let mut info = Some(info);
        for (i, &id) in filters.iter().enumerate() {
            let Some(filter) = table.filters.get(id as usize) else {
                continue;
            };
            let mode = filter.failure;
            let Some(plugin) = plugins.get(filter.name.as_str()) else {
                // Not loaded (missing, refused, or still compiling): the failure mode decides.
                tracing::debug!(filter = %filter.name, "filter not loaded");
                match mode {
                    FailureMode::Open => continue,
                    FailureMode::Closed => {
                        return Err(ProxyError::FilterFailed(filter.name.clone()))
                    }
                }
            };
            let last = i + 1 == filters.len();
            let Some(facts) = (if last { info.take() } else { info.clone() }) else {
                break; // taken by the last filter: no filter is left
            };
            // `finish` lends the request as sent (`forward_keeping`).
            let lends_sent_request = true;
            let started = Stream::start_request(
                plugin,
                facts,
                &mut parts,
                end_of_stream,
                no_trailers,
                lends_sent_request,
            );
            match started.await {
                Ok((stream, Verdict::Continue | Verdict::Buffer)) => chain.links.push(Link {
                    stream,
                    failure: mode,
                }),
                Ok((_, Verdict::Respond(local))) => {
                    return Ok(Start::Respond(local_response(local)))
                }
                Ok((_, Verdict::Reset)) => {
                    return Err(ProxyError::FilterReset(plugin.name().to_string()))
                }
                Err(failure) => on_failure(plugin.name(), mode, &failure)?,
            }
        }
        // Only filters that do something with bodies or trailers see them; with none, the
        // body passes untouched.
        let body_links: Vec<Link> = chain
            .links
            .iter()
            .filter(|l| l.stream.wants_request_body() || l.stream.wants_request_trailers())
            .cloned()
            .collect();
        if body_links.is_empty() || end_of_stream {
            return Ok(Start::Forward(Request::from_parts(parts, body), chain));
        }
        let data = body_links.iter().any(|l| l.stream.wants_request_body());
        if data {
            // Filters may change the body's length: let the next hop frame it.
            parts.headers.remove(http::header::CONTENT_LENGTH);
        }
        let aborted = chain.aborted.insert(Aborted::default()).clone();
        let body = FilterBody::wrap(body, body_links, Side::Request, aborted, data);
        Ok(Start::Forward(Request::from_parts(parts, body), chain))
    }

    /// The local response a request-body phase asked for, if the forward failed for it.
    pub fn aborted_response(&self) -> Option<Response<Body>> {
        self.aborted.as_ref()?.take().map(local_response)
    }

    /// Runs the response through the chain, last filter first; the filters read the
    /// request as it was `sent` (`forward_keeping`).
    pub async fn finish(
        self,
        response: Response<Body>,
        mut sent: http::request::Parts,
    ) -> Result<Response<Body>, ProxyError> {
        if self.links.is_empty() {
            return Ok(response);
        }
        let mut kept = self.links;
        kept.reverse();
        let (mut parts, body) = response.into_parts();
        let end_of_stream = hyper::body::Body::is_end_stream(&body);
        if cannot_carry_trailers(parts.version, &body) {
            kept.iter().for_each(|l| l.stream.no_response_trailers());
        }
        let mut i = 0;
        while i < kept.len() {
            let link = &kept[i];
            let verdict = link
                .stream
                .response_headers_after(&mut sent, &mut parts, end_of_stream)
                .await;
            match verdict {
                Ok(Verdict::Continue | Verdict::Buffer) => i += 1,
                Ok(Verdict::Respond(local)) => return Ok(local_response(local)),
                Ok(Verdict::Reset) => return Err(ProxyError::FilterReset(link.name().to_string())),
                Err(failure) => {
                    link.on_failure(&failure)?;
                    kept.remove(i);
                }
            }
        }
        kept.retain(|l| l.stream.wants_response_body() || l.stream.wants_response_trailers());
        if kept.is_empty() || end_of_stream {
            return Ok(Response::from_parts(parts, body));
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
        Ok(Response::from_parts(parts, body))
    }
}

/// Whether a message cannot carry trailers: HTTP/1 sends them only with chunked framing,
/// so a body of known length has none (HTTP/2 may send them after any body).
fn cannot_carry_trailers(version: Version, body: &Body) -> bool {
    version <= Version::HTTP_11 && hyper::body::Body::size_hint(body).exact().is_some()
}

fn on_failure(name: &str, mode: FailureMode, failure: &Failure) -> Result<(), ProxyError> {
    tracing::debug!(filter = %name, %failure, "filter failed on a request");
    match mode {
        FailureMode::Open => Ok(()),
        FailureMode::Closed => Err(ProxyError::FilterFailed(name.to_string())),
    }
}

/// A filter's `send_local_response` as a response. Headers the filter got wrong are
/// dropped (logged), never fatal.
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
    response
}
