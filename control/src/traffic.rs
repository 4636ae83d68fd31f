//! The proxies' traffic reports, aggregated over the last 30 s per service and route.
//!
//! Each report carries a p50 and a p99 per route; percentiles do not add up, so the
//! aggregate p50 is the request-weighted mean of the reports' p50s and the aggregate p99 is
//! the largest reported p99 (an upper bound of the true p99).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How far back `GET /v1/traffic` looks.
pub const WINDOW: Duration = Duration::from_secs(30);

/// A traffic frame's payload.
#[derive(Debug, Clone, Deserialize)]
pub struct Report {
    /// The period the counts cover, in seconds.
    #[serde(default)]
    pub window_s: f64,
    /// Per route.
    pub routes: Vec<RouteStat>,
}

/// One route's counts in a report.
#[derive(Debug, Clone, Deserialize)]
pub struct RouteStat {
    /// The service called.
    pub service: String,
    /// The route, or none (a service without routes).
    pub route: Option<String>,
    /// Requests.
    pub requests: u64,
    /// Of which failed.
    pub errors: u64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

/// One aggregated line of `GET /v1/traffic`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Aggregate {
    /// The service called.
    pub service: String,
    /// The route.
    pub route: Option<String>,
    /// Requests over the window.
    pub requests: u64,
    /// Errors over the window.
    pub errors: u64,
    /// Requests per second over the window.
    pub rate_rps: f64,
    /// errors / requests.
    pub error_rate: f64,
    /// Request-weighted mean of the reported p50s.
    pub p50_ms: f64,
    /// Largest reported p99.
    pub p99_ms: f64,
    /// How many reports contributed.
    pub reports: u64,
}

/// (service, route).
type RouteKey = (String, Option<String>);
/// requests, errors, Σ p50 × requests, max p99, reports.
type Sums = (u64, u64, f64, f64, u64);

/// The reports of the last [`WINDOW`].
#[derive(Debug, Default)]
pub struct Traffic {
    reports: Mutex<VecDeque<(Instant, Report)>>,
}

impl Traffic {
    /// Keeps a report.
    pub fn record(&self, report: Report) {
        let now = Instant::now();
        let mut reports = self.lock();
        prune(&mut reports, now);
        reports.push_back((now, report));
    }

    /// The aggregates, sorted by service and route.
    pub fn aggregate(&self) -> Vec<Aggregate> {
        let now = Instant::now();
        let mut reports = self.lock();
        prune(&mut reports, now);
        let mut by_key: BTreeMap<RouteKey, Sums> = BTreeMap::new();
        for (_, report) in reports.iter() {
            for r in &report.routes {
                let e = by_key
                    .entry((r.service.clone(), r.route.clone()))
                    .or_insert((0, 0, 0.0, 0.0, 0));
                e.0 += r.requests;
                e.1 += r.errors;
                e.2 += r.p50_ms * r.requests as f64;
                e.3 = e.3.max(r.p99_ms);
                e.4 += 1;
            }
        }
        by_key
            .into_iter()
            .map(
                |((service, route), (requests, errors, p50_sum, p99, n))| Aggregate {
                    service,
                    route,
                    requests,
                    errors,
                    rate_rps: requests as f64 / WINDOW.as_secs_f64(),
                    error_rate: if requests == 0 {
                        0.0
                    } else {
                        errors as f64 / requests as f64
                    },
                    p50_ms: if requests == 0 {
                        0.0
                    } else {
                        p50_sum / requests as f64
                    },
                    p99_ms: p99,
                    reports: n,
                },
            )
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Instant, Report)>> {
        self.reports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn prune(reports: &mut VecDeque<(Instant, Report)>, now: Instant) {
    while reports
        .front()
        .is_some_and(|(at, _)| now.duration_since(*at) > WINDOW)
    {
        reports.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_p50_and_max_p99() {
        let t = Traffic::default();
        let report = |requests, errors, p50_ms, p99_ms| Report {
            window_s: 5.0,
            routes: vec![RouteStat {
                service: "web".into(),
                route: Some("a".into()),
                requests,
                errors,
                p50_ms,
                p99_ms,
            }],
        };
        t.record(report(300, 3, 1.0, 10.0));
        t.record(report(100, 1, 5.0, 20.0));
        let a = t.aggregate();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].requests, 400);
        assert!((a[0].p50_ms - 2.0).abs() < 1e-9, "{a:?}");
        assert!((a[0].p99_ms - 20.0).abs() < 1e-9);
        assert!((a[0].error_rate - 0.01).abs() < 1e-9);
        assert!((a[0].rate_rps - 400.0 / 30.0).abs() < 1e-9);
    }
}
