//! `pw-authcall`, on the public `proxy-wasm` crate: on each request's headers, asks the
//! service `upstream` (config `{"upstream": "authz", "path": "/check"}`) with
//! `dispatch_http_call` and pauses; a 200 resumes the request, anything else (or a failed
//! call) answers 403. With `"phase": "response"` it asks on the response's headers instead,
//! and marks the responses it let through with `x-pw-authcall: checked`. The request's
//! method and path are read in the request phase either way: the proxy-wasm ABI lets a
//! filter read request headers only there (Envoy refuses them in the response phase).

use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { config: None })
    });
}}

#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    upstream: String,
    #[serde(default = "default_path")]
    path: String,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    #[serde(default)]
    phase: Phase,
}

/// The phase the filter asks in.
#[derive(Clone, Copy, Default, PartialEq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Phase {
    #[default]
    Request,
    Response,
}

fn default_path() -> String {
    "/check".into()
}

fn default_timeout_ms() -> u64 {
    1000
}

struct Root {
    config: Option<Config>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match serde_json::from_slice::<Config>(&bytes) {
            Ok(config) => {
                self.config = Some(config);
                true
            }
            Err(e) => {
                log::error!("pw-authcall: config refused: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let config = self.config.clone()?;
        Some(Box::new(AuthCall {
            config,
            method: String::new(),
            path: String::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct AuthCall {
    config: Config,
    /// The request's method and path, read in the request phase.
    method: String,
    path: String,
}

impl Context for AuthCall {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        _headers: usize,
        _body: usize,
        _trailers: usize,
    ) {
        match self.get_http_call_response_header(":status").as_deref() {
            Some("200") if self.config.phase == Phase::Response => {
                self.set_http_response_header("x-pw-authcall", Some("checked"));
                self.resume_http_response();
            }
            Some("200") => self.resume_http_request(),
            status => {
                log::info!("pw-authcall: denied ({})", status.unwrap_or("no response"));
                self.send_http_response(403, vec![("x-pw-authcall", "denied")], Some(b"denied"));
            }
        }
    }
}

impl HttpContext for AuthCall {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        self.method = self.get_http_request_header(":method").unwrap_or_default();
        self.path = self.get_http_request_header(":path").unwrap_or_default();
        match self.config.phase {
            Phase::Request => self.ask(),
            Phase::Response => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        match self.config.phase {
            Phase::Request => Action::Continue,
            Phase::Response => self.ask(),
        }
    }
}

impl AuthCall {
    /// Asks `upstream` about the request, and pauses until it answers.
    fn ask(&mut self) -> Action {
        let headers = vec![
            (":method", "GET"),
            (":path", self.config.path.as_str()),
            (":authority", self.config.upstream.as_str()),
            ("x-original-method", self.method.as_str()),
            ("x-original-path", self.path.as_str()),
        ];
        let timeout = Duration::from_millis(self.config.timeout_ms);
        match self.dispatch_http_call(&self.config.upstream, headers, None, vec![], timeout) {
            Ok(_) => Action::Pause,
            Err(status) => {
                log::warn!("pw-authcall: the call could not be made: {status:?}");
                self.send_http_response(
                    403,
                    vec![("x-pw-authcall", "unavailable")],
                    Some(b"denied"),
                );
                Action::Pause
            }
        }
    }
}
