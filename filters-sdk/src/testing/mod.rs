//! Run a filter in a plain `#[test]`, without a proxy: [`Harness`] configures it with a
//! JSON config on a mock host, [`Harness::request`] runs a [`TestRequest`] through its
//! phases, and the returned [`Exchange`] shows what the filter did (headers, local
//! response, `http_call`s, which it can answer) and runs the response phases.
//! Logs, metrics and shared data are on the harness. Native targets only.
//!
//! ```text
//! let mut h = Harness::<RateLimit>::new(r#"{"requests_per_second": 1, "burst": 1}"#)?;
//! assert!(h.request(TestRequest::get("/")).forwarded());
//! assert_eq!(h.request(TestRequest::get("/")).local_response().map(|r| r.status), Some(429));
//! ```

mod exchange;
pub(crate) mod host;
mod request;

use std::collections::HashMap;
use std::marker::PhantomData;
use std::time::Duration;

pub use exchange::{Exchange, HttpCall, LocalResponse};
pub use request::{TestRequest, TestResponse};

use crate::abi::buffer;
use crate::codec;
use crate::dispatch;
use crate::filter::Filter;
use crate::log::Level;

/// The root context's id.
const ROOT: u32 = 1;

/// The config was refused (`proxy_on_configure` returned false): the logs say why.
#[derive(Debug, Clone)]
pub struct Refused {
    /// Every line the filter logged while starting.
    pub logs: Vec<String>,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "config refused: {}", self.logs.join("; "))
    }
}

impl std::error::Error for Refused {}

/// One filter instance on the mock host of this thread (one harness per thread at a time).
#[derive(Debug)]
pub struct Harness<F: Filter> {
    next_id: u32,
    /// Properties of every request (a request's own are added over them).
    properties: HashMap<Vec<u8>, Vec<u8>>,
    _filter: PhantomData<F>,
}

impl<F: Filter> Harness<F> {
    /// Starts the filter with `config_json` (the policy's `config` object); `Err` with
    /// its log lines if it refuses the config.
    pub fn new(config_json: &str) -> Result<Harness<F>, Refused> {
        Harness::start(HashMap::new(), config_json)
    }

    /// Like [`Harness::new`], as the policy filter `name` (the `plugin_name` property).
    pub fn named(name: &str, config_json: &str) -> Result<Harness<F>, Refused> {
        let mut properties = HashMap::new();
        properties.insert(
            codec::encode_path(&["plugin_name"]),
            name.as_bytes().to_vec(),
        );
        Harness::start(properties, config_json)
    }

    fn start(properties: HashMap<Vec<u8>, Vec<u8>>, config_json: &str) -> Result<Self, Refused> {
        host::with(|h| {
            *h = host::MockHost::default();
            h.now_nanos = 1_700_000_000_000_000_000;
            h.context = ROOT;
            h.properties = properties.clone();
            h.buffers.insert(
                buffer::PLUGIN_CONFIGURATION,
                config_json.as_bytes().to_vec(),
            );
        });
        dispatch::reset();
        dispatch::on_context_create::<F>(ROOT, 0);
        let size = config_json.len();
        if !(dispatch::on_vm_start::<F>(ROOT, 0) && dispatch::on_configure::<F>(ROOT, size)) {
            return Err(Refused {
                logs: host::with(|h| h.logs.iter().map(|(_, l)| l.clone()).collect()),
            });
        }
        Ok(Harness {
            next_id: ROOT + 1,
            properties,
            _filter: PhantomData,
        })
    }

    /// Runs `request` through the request phases (headers, then body if it has one) until
    /// the filter forwards it, answers it or pauses.
    pub fn request(&mut self, request: TestRequest) -> Exchange<'_, F> {
        let id = self.next_id;
        self.next_id += 1;
        Exchange::start(self, id, request)
    }

    /// Every log line so far, as `LEVEL message`.
    pub fn logs(&self) -> Vec<String> {
        host::with(|h| {
            h.logs
                .iter()
                .map(|(level, line)| format!("{} {line}", Level::from_abi(*level).as_str()))
                .collect()
        })
    }

    /// Every log line so far, messages only.
    pub fn log_messages(&self) -> Vec<String> {
        host::with(|h| h.logs.iter().map(|(_, line)| line.clone()).collect())
    }

    /// The value of metric `name` (for a histogram, how many values were recorded).
    pub fn metric(&self, name: &str) -> Option<i64> {
        host::with(|h| h.metrics.iter().find(|m| m.name == name).map(|m| m.value))
    }

    /// The shared data value of `key`.
    pub fn shared(&self, key: &str) -> Option<Vec<u8>> {
        host::with(|h| h.shared.get(key).map(|(v, _)| v.clone()))
    }

    /// Sets a property for the requests that follow (a request's own override it).
    pub fn set_property(&mut self, path: &[&str], value: &str) {
        let key = codec::encode_path(path);
        self.properties.insert(key, value.as_bytes().to_vec());
    }

    /// The host's clock, in nanoseconds since the epoch.
    pub fn now_nanos(&self) -> u64 {
        host::with(|h| h.now_nanos)
    }

    /// Moves the host's clock forward.
    pub fn advance(&mut self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        host::with(|h| h.now_nanos = h.now_nanos.saturating_add(nanos));
    }

    /// The tick period the filter asked for (0: none).
    pub fn tick_period(&self) -> Duration {
        Duration::from_millis(u64::from(host::with(|h| h.tick_period_ms)))
    }

    /// Calls the filter's `on_tick`.
    pub fn tick(&mut self) {
        host::with(|h| h.context = ROOT);
        dispatch::on_tick::<F>(ROOT);
    }
}
