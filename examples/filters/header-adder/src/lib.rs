//! `header-adder`: sets a configured header on requests, and appends its label to the
//! response's `x-filter-chain` (one comma-separated value), so a chain's order shows.

use filters_sdk::{Action, Filter, HttpFilter, Request, Response, Stream};

filters_sdk::filter!(HeaderAdder);

filters_sdk::config_schema!(
    r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "header-adder",
  "type": "object",
  "properties": {
    "name": { "type": "string", "minLength": 1, "description": "The request header to set." },
    "value": { "type": "string", "description": "Its value." },
    "label": { "type": "string", "minLength": 1, "description": "Appended to x-filter-chain; default: the policy filter's name, else the header name." }
  },
  "required": ["name", "value"],
  "additionalProperties": false
}"#
);

/// The response header that lists the filters a response went through.
pub const CHAIN_HEADER: &str = "x-filter-chain";

/// The config.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The request header to set.
    pub name: String,
    /// Its value.
    pub value: String,
    /// The label appended to `x-filter-chain`.
    #[serde(default)]
    pub label: Option<String>,
}

/// The filter (its config, shared by its requests).
#[derive(Debug)]
pub struct HeaderAdder {
    config: std::rc::Rc<(Config, String)>,
}

impl Filter for HeaderAdder {
    type Config = Config;
    type Http = Adding;

    fn configure(config: Config) -> Result<Self, String> {
        if config.name.is_empty() {
            return Err("name must not be empty".into());
        }
        let label = config.label.clone().unwrap_or_else(|| {
            filters_sdk::property(&["plugin_name"])
                .ok()
                .flatten()
                .map(|n| String::from_utf8_lossy(&n).into_owned())
                .unwrap_or_else(|| config.name.clone())
        });
        Ok(HeaderAdder {
            config: std::rc::Rc::new((config, label)),
        })
    }

    fn http(&mut self, _stream: &Stream) -> Adding {
        Adding {
            config: self.config.clone(),
        }
    }
}

/// One request.
#[derive(Debug)]
pub struct Adding {
    config: std::rc::Rc<(Config, String)>,
}

impl HttpFilter for Adding {
    fn on_request_headers(&mut self, req: &mut Request<'_>) -> Action {
        let (config, _) = &*self.config;
        let _ = req.headers().set(&config.name, &config.value);
        Action::Continue
    }

    fn on_response_headers(&mut self, resp: &mut Response<'_>) -> Action {
        let label = &self.config.1;
        let mut headers = resp.headers();
        // The first filter of a chain sets its label as it is (no copy of it to extend).
        let _ = match headers.get(CHAIN_HEADER) {
            Ok(Some(mut chain)) if !chain.is_empty() => {
                chain.push_str(", ");
                chain.push_str(label);
                headers.set(CHAIN_HEADER, &chain)
            }
            _ => headers.set(CHAIN_HEADER, label),
        };
        Action::Continue
    }
}

#[cfg(test)]
mod tests;
