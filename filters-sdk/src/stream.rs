//! What a filter sees of one request: [`Stream`] (properties, local responses,
//! `http_call`s, resuming), and the phase views [`Request`] and [`Response`] over it.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use crate::abi::{buffer, stream};
use crate::headers::Headers;
use crate::hostcalls;
use crate::HostError;

/// An `http_call`'s token: [`crate::HttpFilter::on_http_call_response`] says which call answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token(pub u32);

/// One request's context: the same across its phases.
#[derive(Debug)]
pub struct Stream {
    pub(crate) id: u32,
    /// The phase that returned `Pause` and was not resumed yet.
    pub(crate) paused: Option<u32>,
    /// A local response was sent during the current callback.
    pub(crate) responded: bool,
    /// Calls made and not answered yet.
    pub(crate) calls: Vec<u32>,
}

impl Stream {
    pub(crate) fn new(id: u32) -> Stream {
        Stream {
            id,
            paused: None,
            responded: false,
            calls: Vec::new(),
        }
    }

    /// The context id the host gave this request.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// A property (`["source", "principal"]`), `None` if the host has no such property.
    pub fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
        hostcalls::property(path)
    }

    /// A property as text.
    pub fn property_str(&self, path: &[&str]) -> Result<Option<String>, HostError> {
        Ok(self
            .property(path)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The request's path (`request.path`).
    pub fn path(&self) -> Result<Option<String>, HostError> {
        self.property_str(&["request", "path"])
    }

    /// The request's method (`request.method`).
    pub fn method(&self) -> Result<Option<String>, HostError> {
        self.property_str(&["request", "method"])
    }

    /// The caller's SPIFFE ID proved by mTLS (`source.principal`), `None` without one.
    pub fn peer_identity(&self) -> Result<Option<String>, HostError> {
        self.property_str(&["source", "principal"])
    }

    /// The route the request matched (`route_name`; outbound requests).
    pub fn route_name(&self) -> Result<Option<String>, HostError> {
        self.property_str(&["route_name"])
    }

    /// The mesh service this sidecar fronts (`mesh.service`).
    pub fn service(&self) -> Result<Option<String>, HostError> {
        self.property_str(&["mesh", "service"])
    }

    /// The request's headers (readable in every phase; changeable before it is forwarded).
    pub fn request_headers(&mut self) -> Headers {
        Headers::request()
    }

    /// The response's headers (response phases).
    pub fn response_headers(&mut self) -> Headers {
        Headers::response()
    }

    /// Answers the request with this response instead of forwarding it (or replaces the
    /// upstream's response). The phase then stops the request whatever the filter returns.
    pub fn send_response(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        hostcalls::send_local_response(u32::from(status), "filter", body, headers)?;
        self.responded = true;
        Ok(())
    }

    /// Calls `upstream` (a mesh service). `headers` must carry `:method`, `:path` and
    /// `:authority`. The answer comes to [`crate::HttpFilter::on_http_call_response`]; return
    /// [`crate::Action::Pause`] from the phase to wait for it.
    pub fn http_call(
        &mut self,
        upstream: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<Token, HostError> {
        let millis = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        let token = hostcalls::http_call(upstream, headers, body, millis)?;
        self.calls.push(token);
        Ok(Token(token))
    }

    /// Resumes the paused phase (`proxy_continue_stream`). Returning
    /// [`crate::Action::Continue`] from `on_http_call_response` does this for you.
    pub fn resume(&mut self) -> Result<(), HostError> {
        match self.paused.take() {
            Some(phase) => hostcalls::continue_stream(phase),
            None => Ok(()),
        }
    }

    /// Resets the request (`proxy_close_stream`).
    pub fn close(&mut self) -> Result<(), HostError> {
        hostcalls::close_stream(self.paused.take().unwrap_or(stream::REQUEST))
    }
}

/// A request phase: headers, body or trailers, with what the stream offers.
#[derive(Debug)]
pub struct Request<'a> {
    pub(crate) stream: &'a mut Stream,
    pub(crate) body_size: usize,
    pub(crate) end_of_stream: bool,
}

impl Request<'_> {
    /// The request's headers.
    pub fn headers(&mut self) -> Headers {
        Headers::request()
    }

    /// The request's trailers (trailers phase).
    pub fn trailers(&mut self) -> Headers {
        Headers::request_trailers()
    }

    /// Whether this is the last of the request.
    pub fn end_of_stream(&self) -> bool {
        self.end_of_stream
    }

    /// Body phase: the body buffered so far.
    pub fn body(&self) -> Result<Vec<u8>, HostError> {
        hostcalls::buffer(buffer::REQUEST_BODY, 0, self.body_size)
    }

    /// Body phase: replaces the body buffered so far with `body`.
    pub fn set_body(&mut self, body: &[u8]) -> Result<(), HostError> {
        hostcalls::set_buffer(buffer::REQUEST_BODY, 0, self.body_size, body)?;
        self.body_size = body.len();
        Ok(())
    }
}

impl Deref for Request<'_> {
    type Target = Stream;
    fn deref(&self) -> &Stream {
        self.stream
    }
}

impl DerefMut for Request<'_> {
    fn deref_mut(&mut self) -> &mut Stream {
        self.stream
    }
}

/// A response phase: headers, body or trailers, with what the stream offers.
#[derive(Debug)]
pub struct Response<'a> {
    pub(crate) stream: &'a mut Stream,
    pub(crate) body_size: usize,
    pub(crate) end_of_stream: bool,
}

impl Response<'_> {
    /// The response's headers.
    pub fn headers(&mut self) -> Headers {
        Headers::response()
    }

    /// The response's trailers (trailers phase).
    pub fn trailers(&mut self) -> Headers {
        Headers::response_trailers()
    }

    /// The status code (`:status`), `None` if absent or not a number.
    pub fn status(&self) -> Result<Option<u16>, HostError> {
        Ok(Headers::response()
            .get(":status")?
            .and_then(|s| s.parse().ok()))
    }

    /// Whether this is the last of the response.
    pub fn end_of_stream(&self) -> bool {
        self.end_of_stream
    }

    /// Body phase: the body buffered so far.
    pub fn body(&self) -> Result<Vec<u8>, HostError> {
        hostcalls::buffer(buffer::RESPONSE_BODY, 0, self.body_size)
    }

    /// Body phase: replaces the body buffered so far with `body`.
    pub fn set_body(&mut self, body: &[u8]) -> Result<(), HostError> {
        hostcalls::set_buffer(buffer::RESPONSE_BODY, 0, self.body_size, body)?;
        self.body_size = body.len();
        Ok(())
    }
}

impl Deref for Response<'_> {
    type Target = Stream;
    fn deref(&self) -> &Stream {
        self.stream
    }
}

impl DerefMut for Response<'_> {
    fn deref_mut(&mut self) -> &mut Stream {
        self.stream
    }
}

/// The answer to an `http_call`, read whole before the hook runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallResponse {
    /// Which call.
    pub token: Token,
    /// Its status; `None` when the call failed (no response: timeout, no route).
    pub status: Option<u16>,
    /// Its headers (`:status` included).
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Vec<u8>,
}

impl CallResponse {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}
