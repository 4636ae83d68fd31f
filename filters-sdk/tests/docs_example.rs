//! The filter of `docs/filters.md`, as written there (keep the two in step).

use filters_sdk::testing::{Harness, TestRequest, TestResponse};
use filters_sdk::{Action, Filter, HttpFilter, Request, Response, Stream};

filters_sdk::filter!(Greeter); // exports the ABI's entry points (wasm32 only)

filters_sdk::config_schema!(
    r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "properties": { "greeting": { "type": "string" } },
  "required": ["greeting"],
  "additionalProperties": false
}"#
);

/// The config.
#[derive(serde::Deserialize)]
pub struct Config {
    greeting: String,
}

/// The filter, one per instance.
pub struct Greeter {
    greeting: std::rc::Rc<str>,
}

impl Filter for Greeter {
    type Config = Config; // parsed from the policy's `config` (JSON)
    type Http = Greeting;

    fn configure(config: Config) -> Result<Self, String> {
        Ok(Greeter {
            greeting: config.greeting.into(),
        }) // Err(why) refuses the config
    }

    fn http(&mut self, _stream: &Stream) -> Greeting {
        Greeting {
            greeting: self.greeting.clone(),
        }
    }
}

/// One request.
pub struct Greeting {
    greeting: std::rc::Rc<str>,
}

impl HttpFilter for Greeting {
    fn on_request_headers(&mut self, req: &mut Request<'_>) -> Action {
        if req.headers().get("x-block").ok().flatten().is_some() {
            let _ = req.send_response(403, &[("x-blocked-by", "greeter")], b"no");
            return Action::Pause;
        }
        let _ = req.headers().set("x-greeting", &self.greeting);
        Action::Continue
    }

    fn on_response_headers(&mut self, resp: &mut Response<'_>) -> Action {
        let _ = resp.headers().add("x-greeted", "1");
        Action::Continue
    }
}

#[test]
fn greets() {
    let mut h = Harness::<Greeter>::new(r#"{"greeting": "hi"}"#).expect("accepted");
    let mut ex = h.request(TestRequest::get("/").header("accept", "*/*"));
    assert!(ex.forwarded());
    assert_eq!(ex.request_header("x-greeting").as_deref(), Some("hi"));
    ex.respond(TestResponse::new(200));
    assert_eq!(ex.response_header("x-greeted").as_deref(), Some("1"));
    ex.finish(); // on_done; the next request can start

    let ex = h.request(TestRequest::get("/").header("x-block", "1"));
    assert_eq!(ex.local_response().map(|r| r.status), Some(403));
}
