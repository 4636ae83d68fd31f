//! [`Exchange`]: one request through the filter on the mock host, phase by phase.

use std::time::Duration;

use super::host;
use super::request::{TestRequest, TestResponse};
use super::{Harness, ROOT};
use crate::abi::{buffer, map, stream};
use crate::codec;
use crate::dispatch;
use crate::filter::Filter;
use crate::stream::Token;

/// A local response the filter sent (`send_response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// The status code.
    pub status: u16,
    /// The headers the filter added.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The status code details.
    pub details: String,
}

impl LocalResponse {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }

    /// The body as text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An `http_call` the filter made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    /// Its token, for [`Exchange::answer_call`].
    pub token: Token,
    /// The mesh service called.
    pub upstream: String,
    /// Its headers (pseudo-headers included).
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Vec<u8>,
    /// Its timeout.
    pub timeout: Duration,
}

impl HttpCall {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }
}

fn find<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Request,
    Response,
}

/// One request through the filter. Dropping it ends the request (`on_done`).
#[derive(Debug)]
pub struct Exchange<'h, F: Filter> {
    _harness: &'h mut Harness<F>,
    id: u32,
    /// The side whose phase paused, with whether its body phase is still to run.
    paused: Option<(Side, bool)>,
    /// The response phases ran.
    responded: bool,
    finished: bool,
}

impl<'h, F: Filter> Exchange<'h, F> {
    pub(super) fn start(harness: &'h mut Harness<F>, id: u32, request: TestRequest) -> Self {
        let base = harness.properties.clone();
        host::with(|h| {
            h.context = id;
            h.properties = base;
            for (path, value) in &request.properties {
                let path: Vec<&str> = path.iter().map(String::as_str).collect();
                h.properties
                    .insert(codec::encode_path(&path), value.as_bytes().to_vec());
            }
            h.maps.clear();
            h.maps.insert(map::REQUEST_HEADERS, request.headers.clone());
            h.buffers.remove(&buffer::RESPONSE_BODY);
            h.buffers.insert(buffer::REQUEST_BODY, request.body.clone());
        });
        dispatch::on_context_create::<F>(id, ROOT);
        let mut exchange = Exchange {
            _harness: harness,
            id,
            paused: None,
            responded: false,
            finished: false,
        };
        let has_body = !request.body.is_empty();
        let n = request.headers.len();
        if exchange.run(Side::Request, |id| {
            dispatch::on_request_headers::<F>(id, n, !has_body)
        }) {
            exchange.request_body(has_body);
        } else if let Some((_, body)) = exchange.paused.as_mut() {
            *body = has_body;
        }
        exchange
    }

    /// Runs one phase; true if it continued.
    fn run(&mut self, side: Side, phase: impl FnOnce(u32) -> u32) -> bool {
        host::with(|h| h.context = self.id);
        if phase(self.id) == 0 {
            return true;
        }
        self.paused = Some((side, false));
        false
    }

    fn request_body(&mut self, has_body: bool) {
        if has_body && self.local_response().is_none() {
            let size = host::with(|h| h.buffers.get(&buffer::REQUEST_BODY).map_or(0, Vec::len));
            self.run(Side::Request, |id| {
                dispatch::on_request_body::<F>(id, size, true)
            });
        }
    }

    fn response_body(&mut self, has_body: bool) {
        if has_body && self.local_response().is_none() {
            let size = host::with(|h| h.buffers.get(&buffer::RESPONSE_BODY).map_or(0, Vec::len));
            self.run(Side::Response, |id| {
                dispatch::on_response_body::<F>(id, size, true)
            });
        }
    }

    /// The request's headers as the filter left them.
    pub fn request_headers(&self) -> Vec<(String, String)> {
        host::with(|h| {
            h.maps
                .get(&map::REQUEST_HEADERS)
                .cloned()
                .unwrap_or_default()
        })
    }

    /// The first value of request header `name`.
    pub fn request_header(&self, name: &str) -> Option<String> {
        find(&self.request_headers(), name).map(str::to_owned)
    }

    /// The request's body as the filter left it.
    pub fn request_body_bytes(&self) -> Vec<u8> {
        host::with(|h| {
            h.buffers
                .get(&buffer::REQUEST_BODY)
                .cloned()
                .unwrap_or_default()
        })
    }

    /// The response's headers as the filter left them.
    pub fn response_headers(&self) -> Vec<(String, String)> {
        host::with(|h| {
            h.maps
                .get(&map::RESPONSE_HEADERS)
                .cloned()
                .unwrap_or_default()
        })
    }

    /// The first value of response header `name`.
    pub fn response_header(&self, name: &str) -> Option<String> {
        find(&self.response_headers(), name).map(str::to_owned)
    }

    /// Every value of response header `name`, in order.
    pub fn response_header_values(&self, name: &str) -> Vec<String> {
        self.response_headers()
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }

    /// The response's body as the filter left it.
    pub fn response_body_bytes(&self) -> Vec<u8> {
        host::with(|h| {
            h.buffers
                .get(&buffer::RESPONSE_BODY)
                .cloned()
                .unwrap_or_default()
        })
    }

    /// The local response the filter sent for this request, if any.
    pub fn local_response(&self) -> Option<LocalResponse> {
        host::with(|h| {
            h.local_responses
                .iter()
                .rev()
                .find(|(context, _)| *context == self.id)
                .map(|(_, r)| LocalResponse {
                    status: u16::try_from(r.status).unwrap_or(0),
                    headers: r.headers.clone(),
                    body: r.body.clone(),
                    details: r.details.clone(),
                })
        })
    }

    /// Whether a phase is paused (waiting on an `http_call`, or buffering).
    pub fn paused(&self) -> bool {
        self.paused.is_some()
    }

    /// Whether the request went on to the upstream: no local response, not paused.
    pub fn forwarded(&self) -> bool {
        self.paused.is_none() && self.local_response().is_none()
    }

    /// The `http_call`s this request made.
    pub fn http_calls(&self) -> Vec<HttpCall> {
        host::with(|h| {
            h.calls
                .iter()
                .filter(|c| c.context == self.id)
                .map(|c| HttpCall {
                    token: Token(c.token),
                    upstream: c.upstream.clone(),
                    headers: c.headers.clone(),
                    body: c.body.clone(),
                    timeout: Duration::from_millis(u64::from(c.timeout_ms)),
                })
                .collect()
        })
    }

    /// Answers call `token` with `response`; where the filter resumes, the remaining
    /// phases of the paused side run.
    pub fn answer_call(&mut self, token: Token, response: TestResponse) {
        let (headers, body) = (response.headers.len(), response.body.len());
        host::with(|h| {
            h.maps
                .insert(map::HTTP_CALL_RESPONSE_HEADERS, response.headers);
            h.buffers
                .insert(buffer::HTTP_CALL_RESPONSE_BODY, response.body);
        });
        self.deliver(token, headers, body);
    }

    /// Fails call `token` (no response: timeout, unreachable).
    pub fn fail_call(&mut self, token: Token) {
        host::with(|h| {
            h.maps.remove(&map::HTTP_CALL_RESPONSE_HEADERS);
            h.buffers.remove(&buffer::HTTP_CALL_RESPONSE_BODY);
        });
        self.deliver(token, 0, 0);
    }

    fn deliver(&mut self, token: Token, headers: usize, body: usize) {
        let before = host::with(|h| {
            h.context = ROOT;
            h.continued.len()
        });
        dispatch::on_http_call_response::<F>(ROOT, token.0, headers, body, 0);
        let resumed: Vec<u32> = host::with(|h| {
            h.continued[before..]
                .iter()
                .filter(|(context, _)| *context == self.id)
                .map(|(_, kind)| *kind)
                .collect()
        });
        match self.paused {
            Some((Side::Request, has_body)) if resumed.contains(&stream::REQUEST) => {
                self.paused = None;
                self.request_body(has_body);
            }
            Some((Side::Response, has_body)) if resumed.contains(&stream::RESPONSE) => {
                self.paused = None;
                self.response_body(has_body);
            }
            _ => {}
        }
    }

    /// The upstream answers with `response`: runs the response phases (headers, then body
    /// if it has one). Does nothing if the request was not forwarded.
    pub fn respond(&mut self, response: TestResponse) -> &mut Self {
        if !self.forwarded() || self.responded {
            return self;
        }
        self.responded = true;
        let has_body = !response.body.is_empty();
        let n = response.headers.len();
        host::with(|h| {
            h.maps.insert(map::RESPONSE_HEADERS, response.headers);
            h.buffers.insert(buffer::RESPONSE_BODY, response.body);
        });
        if self.run(Side::Response, |id| {
            dispatch::on_response_headers::<F>(id, n, u32::from(!has_body))
        }) {
            self.response_body(has_body);
        } else if let Some((_, body)) = self.paused.as_mut() {
            *body = has_body;
        }
        self
    }

    /// Ends the request: `proxy_on_log`, `proxy_on_done`, `proxy_on_delete`.
    pub fn finish(mut self) {
        self.end();
    }

    fn end(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        host::with(|h| h.context = self.id);
        dispatch::on_log::<F>(self.id);
        dispatch::on_done::<F>(self.id);
        dispatch::on_delete::<F>(self.id);
    }
}

impl<F: Filter> Drop for Exchange<'_, F> {
    fn drop(&mut self) {
        self.end();
    }
}
