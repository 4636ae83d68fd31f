//! The traits a filter implements: [`Filter`] (one per instance, from its config) and
//! [`HttpFilter`] (one per request), every hook defaulting to [`Action::Continue`].

use serde::de::DeserializeOwned;

use crate::stream::{CallResponse, Request, Response, Stream};

/// What a phase wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Go on (to the next filter, the upstream, the client).
    Continue,
    /// Stop here: wait for an `http_call` (then resume), or, in a body phase, buffer more.
    /// After [`Stream::send_response`] the phase pauses whatever the hook returns.
    Pause,
}

/// A filter: made once per instance from the policy's `config`, it makes one
/// [`HttpFilter`] per request.
pub trait Filter: Sized + 'static {
    /// The config, parsed from the policy's `config` object (JSON).
    type Config: DeserializeOwned;
    /// The per-request part.
    type Http: HttpFilter;

    /// Makes the filter from its config. An `Err` refuses the config (the host refuses the
    /// module and logs why).
    fn configure(config: Self::Config) -> Result<Self, String>;

    /// Makes the per-request part for a new request.
    fn http(&mut self, stream: &Stream) -> Self::Http;

    /// Called every tick period (see [`crate::time::set_tick_period`]).
    fn on_tick(&mut self) {}
}

/// One request through a filter. Every hook defaults to continuing; a hook left at its
/// default does nothing, so the mesh's host stops calling it after the first request
/// (other hosts keep calling it).
pub trait HttpFilter: 'static {
    /// The request's headers arrived.
    fn on_request_headers(&mut self, req: &mut Request<'_>) -> Action {
        let _ = req;
        crate::dispatch::defaulted();
        Action::Continue
    }

    /// Request body bytes arrived ([`Request::body`] has all of them so far).
    fn on_request_body(&mut self, req: &mut Request<'_>) -> Action {
        let _ = req;
        crate::dispatch::defaulted();
        Action::Continue
    }

    /// The request's trailers arrived.
    fn on_request_trailers(&mut self, req: &mut Request<'_>) -> Action {
        let _ = req;
        crate::dispatch::defaulted();
        Action::Continue
    }

    /// The response's headers arrived.
    fn on_response_headers(&mut self, resp: &mut Response<'_>) -> Action {
        let _ = resp;
        crate::dispatch::defaulted();
        Action::Continue
    }

    /// Response body bytes arrived.
    fn on_response_body(&mut self, resp: &mut Response<'_>) -> Action {
        let _ = resp;
        crate::dispatch::defaulted();
        Action::Continue
    }

    /// The response's trailers arrived.
    fn on_response_trailers(&mut self, resp: &mut Response<'_>) -> Action {
        let _ = resp;
        crate::dispatch::defaulted();
        Action::Continue
    }

    /// An `http_call` this request made was answered (or failed). `Continue` resumes the
    /// paused phase; `Pause` keeps waiting (another call, or a local response was sent).
    fn on_http_call_response(&mut self, stream: &mut Stream, response: &CallResponse) -> Action {
        let _ = (stream, response);
        Action::Continue
    }

    /// The request is over (after the response, or when it was reset).
    fn on_done(&mut self, stream: &mut Stream) {
        let _ = stream;
        crate::dispatch::defaulted();
    }
}
