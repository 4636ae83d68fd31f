//! `auth`: bearer tokens in a request header, each allowed a set of methods, answered by
//! the filter itself: no credential ⇒ 401 with `www-authenticate`; an unknown token or a
//! method the token may not use ⇒ 403; otherwise the request goes on, without the
//! credential header when `strip` says so.

mod config;

use std::rc::Rc;

use filters_sdk::{Action, Filter, HttpFilter, Request, Stream};

pub use config::Config;
use config::Policy;

filters_sdk::filter!(Auth);

filters_sdk::config_schema!(
    r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "auth",
  "type": "object",
  "properties": {
    "header": { "type": "string", "minLength": 1, "description": "The credential header (default authorization)." },
    "scheme": { "type": "string", "description": "The scheme before the token (default Bearer; empty: the whole value is the token)." },
    "realm": { "type": "string", "description": "The realm of the 401's www-authenticate (default mesh)." },
    "strip": { "type": "boolean", "description": "Remove the credential header before forwarding (default true)." },
    "tokens": {
      "type": "object",
      "minProperties": 1,
      "description": "Each token and the methods it may use (\"*\": any).",
      "additionalProperties": {
        "type": "array",
        "minItems": 1,
        "items": { "type": "string", "pattern": "^([A-Z]+|\\*)$" }
      }
    }
  },
  "required": ["tokens"],
  "additionalProperties": false
}"#
);

/// The filter.
#[derive(Debug)]
pub struct Auth {
    policy: Rc<Policy>,
}

impl Filter for Auth {
    type Config = Config;
    type Http = Checked;

    fn configure(config: Config) -> Result<Self, String> {
        Ok(Auth {
            policy: Rc::new(Policy::new(config)?),
        })
    }

    fn http(&mut self, _stream: &Stream) -> Checked {
        Checked {
            policy: self.policy.clone(),
        }
    }
}

/// One request.
#[derive(Debug)]
pub struct Checked {
    policy: Rc<Policy>,
}

impl HttpFilter for Checked {
    fn on_request_headers(&mut self, req: &mut Request<'_>) -> Action {
        let policy = &self.policy;
        let credential = req.headers().get(&policy.header).ok().flatten();
        let Some(credential) = credential.filter(|c| !c.trim().is_empty()) else {
            let challenge = [("www-authenticate", policy.challenge.as_str())];
            let _ = req.send_response(401, &challenge, b"missing credentials");
            return Action::Pause;
        };
        let method = req
            .headers()
            .get(":method")
            .ok()
            .flatten()
            .unwrap_or_default();
        if !policy.allows(&credential, &method) {
            let _ = req.send_response(403, &[], b"forbidden");
            return Action::Pause;
        }
        if policy.strip {
            let _ = req.headers().remove(&policy.header);
        }
        Action::Continue
    }
}

#[cfg(test)]
mod tests;
