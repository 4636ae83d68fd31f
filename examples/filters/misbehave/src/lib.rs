//! `misbehave`: for the sandbox's tests. At the phase its config names, it loops forever,
//! allocates without bound, traps (a panic: `unreachable` in a `panic = "abort"` build), or
//! behaves (adds `x-misbehave: ok`).

use std::rc::Rc;

use filters_sdk::{Action, Filter, HttpFilter, Request, Response, Stream};

filters_sdk::filter!(Misbehave);

filters_sdk::config_schema!(
    r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "misbehave",
  "type": "object",
  "properties": {
    "mode": { "enum": ["loop", "grow", "trap", "ok"] },
    "on": { "enum": ["configure", "request_headers", "response_headers"], "default": "request_headers" },
    "path_prefix": { "type": "string", "description": "Only requests whose path starts with this misbehave; the others pass." }
  },
  "required": ["mode"],
  "additionalProperties": false
}"#
);

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Spin forever (the host's CPU time limit must stop it).
    Loop,
    /// Allocate until memory runs out (the host's memory cap must stop it).
    Grow,
    /// Trap.
    Trap,
    /// Add `x-misbehave: ok`.
    Ok,
}

/// When.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum On {
    /// In `proxy_on_configure` (the module fails to load).
    Configure,
    /// In every request's headers phase.
    #[default]
    RequestHeaders,
    /// In every response's headers phase.
    ResponseHeaders,
}

/// The config.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What to do.
    pub mode: Mode,
    /// When.
    #[serde(default)]
    pub on: On,
    /// Only requests whose path starts with this misbehave (all when absent).
    #[serde(default)]
    pub path_prefix: Option<String>,
}

/// The filter.
#[derive(Debug)]
pub struct Misbehave {
    config: Rc<Config>,
}

impl Filter for Misbehave {
    type Config = Config;
    type Http = Misbehaving;

    fn configure(config: Config) -> Result<Self, String> {
        if config.on == On::Configure {
            act(config.mode);
        }
        Ok(Misbehave {
            config: Rc::new(config),
        })
    }

    fn http(&mut self, _stream: &Stream) -> Misbehaving {
        Misbehaving {
            config: self.config.clone(),
            chosen: false,
        }
    }
}

/// One request.
#[derive(Debug)]
pub struct Misbehaving {
    config: Rc<Config>,
    /// Whether this request's path matched `path_prefix` (set in the request phase).
    chosen: bool,
}

/// Misbehaves as `mode` says; returns only for `Mode::Ok`.
fn act(mode: Mode) {
    match mode {
        Mode::Loop => {
            let mut spins: u64 = 0;
            loop {
                spins = std::hint::black_box(spins.wrapping_add(1));
            }
        }
        Mode::Grow => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                // Touch every page so the memory is really used.
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        Mode::Trap => panic!("misbehave: trap"),
        Mode::Ok => {}
    }
}

impl HttpFilter for Misbehaving {
    fn on_request_headers(&mut self, req: &mut Request<'_>) -> Action {
        self.chosen = match &self.config.path_prefix {
            None => true,
            Some(prefix) => req
                .path()
                .ok()
                .flatten()
                .is_some_and(|p| p.starts_with(prefix.as_str())),
        };
        if self.chosen && self.config.on == On::RequestHeaders {
            act(self.config.mode);
            let _ = req.headers().set("x-misbehave", "ok");
        }
        Action::Continue
    }

    fn on_response_headers(&mut self, resp: &mut Response<'_>) -> Action {
        if self.chosen && self.config.on == On::ResponseHeaders {
            act(self.config.mode);
            let _ = resp.headers().set("x-misbehave", "ok");
        }
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    //! Only the modes that return (or panic) can run natively.

    use filters_sdk::testing::{Harness, TestRequest, TestResponse};

    use super::Misbehave;

    #[test]
    fn ok_adds_the_header() {
        let mut h = Harness::<Misbehave>::new(r#"{"mode": "ok"}"#).expect("accepted");
        assert_eq!(
            h.request(TestRequest::get("/"))
                .request_header("x-misbehave")
                .as_deref(),
            Some("ok")
        );
    }

    #[test]
    fn ok_on_responses() {
        let config = r#"{"mode": "ok", "on": "response_headers"}"#;
        let mut h = Harness::<Misbehave>::new(config).expect("accepted");
        let mut ex = h.request(TestRequest::get("/"));
        assert_eq!(ex.request_header("x-misbehave"), None);
        ex.respond(TestResponse::new(200));
        assert_eq!(ex.response_header("x-misbehave").as_deref(), Some("ok"));
    }

    #[test]
    fn only_paths_under_the_prefix_misbehave() {
        let config = r#"{"mode": "ok", "path_prefix": "/x"}"#;
        let mut h = Harness::<Misbehave>::new(config).expect("accepted");
        assert_eq!(
            h.request(TestRequest::get("/y"))
                .request_header("x-misbehave"),
            None
        );
        assert_eq!(
            h.request(TestRequest::get("/x/1"))
                .request_header("x-misbehave")
                .as_deref(),
            Some("ok")
        );
        // A trap elsewhere does not fire for other paths.
        let mut h = Harness::<Misbehave>::new(r#"{"mode": "trap", "path_prefix": "/bad"}"#)
            .expect("accepted");
        drop(h.request(TestRequest::get("/fine")));
    }

    #[test]
    #[should_panic(expected = "misbehave: trap")]
    fn trap_panics() {
        let mut h = Harness::<Misbehave>::new(r#"{"mode": "trap"}"#).expect("accepted");
        drop(h.request(TestRequest::get("/")));
    }

    #[test]
    fn unknown_modes_are_refused() {
        assert!(Harness::<Misbehave>::new(r#"{"mode": "explode"}"#).is_err());
        assert!(Harness::<Misbehave>::new(r#"{"mode": "ok", "on": "never"}"#).is_err());
    }
}
