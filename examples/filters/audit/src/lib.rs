//! `audit`: gives every request an id header (keeps one the caller sent), echoes it on the
//! response, and logs one line per request: id, method, path, peer identity, status.

mod id;

use filters_sdk::{log, Action, Filter, HttpFilter, Request, Response, Stream};

filters_sdk::filter!(Audit);

filters_sdk::config_schema!(
    r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "audit",
  "type": "object",
  "properties": {
    "header": {
      "type": "string",
      "pattern": "^[a-z0-9!#$%&'*+.^_`|~-]+$",
      "description": "The id header (lower-case); default x-audit-id."
    }
  },
  "additionalProperties": false
}"#
);

/// The config.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The id header.
    #[serde(default = "default_header")]
    pub header: String,
}

fn default_header() -> String {
    "x-audit-id".into()
}

/// The filter: the header's name and the id generator.
#[derive(Debug)]
pub struct Audit {
    header: std::rc::Rc<str>,
    ids: id::Ids,
}

impl Filter for Audit {
    type Config = Config;
    type Http = Audited;

    fn configure(config: Config) -> Result<Self, String> {
        let valid = !config.header.is_empty()
            && config.header.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+.^_`|~-".contains(&b)
            });
        if !valid {
            return Err(format!(
                "header {:?} is not a lower-case header name",
                config.header
            ));
        }
        Ok(Audit {
            header: config.header.into(),
            ids: id::Ids::default(),
        })
    }

    fn http(&mut self, stream: &Stream) -> Audited {
        Audited {
            header: self.header.clone(),
            id: String::new(),
            fresh: self.ids.next(stream.id()),
            line: String::new(),
            logged: false,
        }
    }
}

/// One request: its id and the start of its log line.
#[derive(Debug)]
pub struct Audited {
    header: std::rc::Rc<str>,
    id: String,
    /// The id this request gets if it has none.
    fresh: String,
    line: String,
    logged: bool,
}

impl Audited {
    fn log(&mut self, status: &str) {
        if std::mem::replace(&mut self.logged, true) {
            return;
        }
        self.line.push_str(" status=");
        self.line.push_str(status);
        log::info(&self.line);
    }
}

impl HttpFilter for Audited {
    fn on_request_headers(&mut self, req: &mut Request<'_>) -> Action {
        let mut headers = req.headers();
        self.id = match headers.get(&self.header) {
            Ok(Some(id)) if !id.is_empty() => id,
            _ => {
                let id = std::mem::take(&mut self.fresh);
                let _ = headers.set(&self.header, &id);
                id
            }
        };
        let method = headers.get(":method").ok().flatten();
        let path = headers.get(":path").ok().flatten();
        let peer = req.peer_identity().ok().flatten();
        let line = &mut self.line;
        line.push_str("audit id=");
        line.push_str(&self.id);
        for (key, value) in [(" method=", method), (" path=", path), (" peer=", peer)] {
            line.push_str(key);
            line.push_str(value.as_deref().unwrap_or("-"));
        }
        Action::Continue
    }

    fn on_response_headers(&mut self, resp: &mut Response<'_>) -> Action {
        if !self.id.is_empty() {
            let _ = resp.headers().set(&self.header, &self.id);
        }
        let status = resp.headers().get(":status").ok().flatten();
        self.log(status.as_deref().unwrap_or("-"));
        Action::Continue
    }

    fn on_done(&mut self, _stream: &mut Stream) {
        if !self.line.is_empty() {
            self.log("-");
        }
    }
}

#[cfg(test)]
mod tests;
