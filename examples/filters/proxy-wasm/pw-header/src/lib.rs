//! `pw-header`, on the public `proxy-wasm` crate: adds `x-pw-header: <value>` (config
//! `{"value": "..."}`, default `hello`) to every request and every response, and
//! `x-pw-request-id: <the request's x-request-id>` to the response. The id is read in the
//! request phase (the proxy sets it before the filters run): the proxy-wasm ABI lets a
//! filter read request headers only there, and Envoy refuses them in the response phase.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { value: "hello".into() })
    });
}}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    value: Option<String>,
}

struct Root {
    value: String,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(bytes) = self.get_plugin_configuration() else {
            return true;
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return true;
        }
        match serde_json::from_slice::<Config>(&bytes) {
            Ok(config) => {
                if let Some(value) = config.value {
                    self.value = value;
                }
                true
            }
            Err(e) => {
                log::error!("pw-header: config refused: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(AddHeader {
            value: self.value.clone(),
            request_id: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct AddHeader {
    value: String,
    /// The request's `x-request-id`, read in the request phase.
    request_id: Option<String>,
}

impl Context for AddHeader {}

impl HttpContext for AddHeader {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        self.set_http_request_header("x-pw-header", Some(&self.value));
        self.request_id = self.get_http_request_header("x-request-id");
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        self.set_http_response_header("x-pw-header", Some(&self.value));
        if let Some(id) = &self.request_id {
            self.set_http_response_header("x-pw-request-id", Some(id));
        }
        Action::Continue
    }
}
