//! `noop`: the smallest filter on the SDK. Its request and response header hooks run on
//! every request and continue, changing nothing, so the host cannot skip them: what it
//! costs is what any filter costs before doing anything (`bench/paired.sh` measures it as
//! variant `filters-noop`). Also a starting point for a filter of one's own.

use filters_sdk::{Action, Filter, HttpFilter, Request, Response, Stream};

filters_sdk::filter!(Noop);

filters_sdk::config_schema!(
    r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "noop",
  "type": "object",
  "additionalProperties": false
}"#
);

/// The config: none (an empty object).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}

/// The filter.
#[derive(Debug)]
pub struct Noop;

impl Filter for Noop {
    type Config = Config;
    type Http = Pass;

    fn configure(_config: Config) -> Result<Self, String> {
        Ok(Noop)
    }

    fn http(&mut self, _stream: &Stream) -> Pass {
        Pass
    }
}

/// One request.
#[derive(Debug)]
pub struct Pass;

impl HttpFilter for Pass {
    fn on_request_headers(&mut self, _req: &mut Request<'_>) -> Action {
        Action::Continue
    }

    fn on_response_headers(&mut self, _resp: &mut Response<'_>) -> Action {
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    use filters_sdk::testing::{Harness, TestRequest, TestResponse};

    use super::Noop;

    #[test]
    fn requests_and_responses_pass_unchanged() {
        let mut h = Harness::<Noop>::new("{}").expect("accepted");
        let mut ex = h.request(TestRequest::get("/a").header("x-in", "1"));
        assert_eq!(ex.request_header("x-in").as_deref(), Some("1"));
        ex.respond(TestResponse::new(201).header("x-out", "2"));
        assert_eq!(ex.response_header("x-out").as_deref(), Some("2"));
    }

    #[test]
    fn a_config_with_fields_is_refused() {
        assert!(Harness::<Noop>::new(r#"{"name": "x"}"#).is_err());
    }
}
