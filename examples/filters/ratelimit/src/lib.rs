//! `ratelimit`: a token bucket (`requests_per_second` refill, `burst` capacity) kept in the
//! host's shared data, so every instance on every worker thread draws from the same bucket
//! (compare-and-swap with retries). Over the limit: 429 `rate limited`, with
//! `x-ratelimit-limit`, and the `ratelimit_rejected` counter goes up.

mod bucket;

use filters_sdk::metrics::Counter;
use filters_sdk::{log, shared, Action, Filter, HttpFilter, Request, Stream};

use bucket::Bucket;

filters_sdk::filter!(RateLimit);

filters_sdk::config_schema!(
    r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "ratelimit",
  "type": "object",
  "properties": {
    "requests_per_second": { "type": "integer", "minimum": 1, "description": "Tokens added per second." },
    "burst": { "type": "integer", "minimum": 1, "description": "Bucket capacity: requests allowed at once." }
  },
  "required": ["requests_per_second", "burst"],
  "additionalProperties": false
}"#
);

/// Updates of the bucket tried before a request is let through unmetered.
const CAS_ATTEMPTS: u32 = 16;

/// The config.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Tokens added per second.
    pub requests_per_second: u32,
    /// Capacity of the bucket.
    pub burst: u32,
}

/// The filter: the bucket's key and parameters.
#[derive(Debug)]
pub struct RateLimit {
    key: String,
    limit: String,
    bucket: Bucket,
    rejected: Option<Counter>,
}

impl Filter for RateLimit {
    type Config = Config;
    type Http = Limited;

    fn configure(config: Config) -> Result<Self, String> {
        if config.requests_per_second == 0 || config.burst == 0 {
            return Err("requests_per_second and burst must be at least 1".into());
        }
        // One bucket per policy filter: the plugin's name when the host says it.
        let name = filters_sdk::property(&["plugin_name"])
            .ok()
            .flatten()
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .unwrap_or_else(|| "ratelimit".into());
        Ok(RateLimit {
            key: format!("ratelimit/{name}"),
            limit: config.requests_per_second.to_string(),
            bucket: Bucket::new(config.requests_per_second, config.burst),
            rejected: Counter::define("ratelimit_rejected").ok(),
        })
    }

    fn http(&mut self, _stream: &Stream) -> Limited {
        Limited {
            key: self.key.clone(),
            limit: self.limit.clone(),
            bucket: self.bucket,
            rejected: self.rejected,
        }
    }
}

/// One request: takes a token or answers 429.
#[derive(Debug)]
pub struct Limited {
    key: String,
    limit: String,
    bucket: Bucket,
    rejected: Option<Counter>,
}

impl HttpFilter for Limited {
    fn on_request_headers(&mut self, req: &mut Request<'_>) -> Action {
        let now = match filters_sdk::time::now_nanos() {
            Ok(now) => now,
            Err(_) => return Action::Continue,
        };
        let bucket = self.bucket;
        let taken = shared::update(&self.key, CAS_ATTEMPTS, |state| bucket.take(state, now));
        match taken {
            Ok(true) => Action::Continue,
            Ok(false) => {
                if let Some(counter) = self.rejected {
                    let _ = counter.increment(1);
                }
                let headers = [("x-ratelimit-limit", self.limit.as_str())];
                if req.send_response(429, &headers, b"rate limited").is_err() {
                    log::warn("ratelimit: could not send the 429");
                }
                Action::Pause
            }
            // Contended past the retries or no shared data: fail open.
            Err(e) => {
                log::warn(&format!(
                    "ratelimit: bucket not updated ({e}); request let through"
                ));
                Action::Continue
            }
        }
    }
}

#[cfg(test)]
mod tests;
