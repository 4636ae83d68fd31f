//! The proxies' traffic reports, aggregated over the last 30 s per service and route.
//!
//! Each report carries a p50 and a p99 per route; percentiles do not add up, so the
//! aggregate p50 is the request-weighted mean of the reports' p50s and the aggregate p99 is
//! the largest reported p99 (an upper bound of the true p99).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
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

/// The most (service, route) lines kept of one report; the rest are dropped. A report has one
/// line per route the proxy called in its window, and a slice has rarely more than a few
/// dozen routes.
pub const MAX_ROUTES_PER_REPORT: usize = 1024;
/// The most reports kept per reporter (a proxy's certificate): a proxy reports every 5 s, so
/// the 30 s window holds 6 or 7; beyond, its oldest are dropped.
pub const MAX_REPORTS_PER_REPORTER: usize = 8;
/// The most route lines kept over all reporters; a report that would go beyond is dropped
/// (and counted) until the window frees room.
pub const MAX_LINES: usize = 500_000;

/// Why a report, or some of its lines, were not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Lines naming a service or route outside the reporter's slice (it cannot have called
    /// them: a forged figure).
    Foreign(usize),
    /// Lines beyond [`MAX_ROUTES_PER_REPORT`].
    TooLong(usize),
    /// The whole report: [`MAX_LINES`] are kept already.
    Full,
}

#[derive(Debug, Default)]
struct Kept {
    /// Per reporter, its reports, oldest first.
    by_reporter: HashMap<String, VecDeque<(Instant, Report)>>,
    /// Route lines kept, all reporters.
    lines: usize,
    /// When stale reports of every reporter were last dropped.
    pruned: Option<Instant>,
}

/// The reports of the last [`WINDOW`], bounded per reporter and in total.
#[derive(Debug, Default)]
pub struct Traffic {
    kept: Mutex<Kept>,
    /// Lines refused as foreign, since the start.
    foreign: AtomicU64,
    /// Reports or lines refused for size or count, since the start.
    over_limit: AtomicU64,
}

impl Traffic {
    /// Keeps a report of `reporter` (the proxy's certificate serial) without checking what it
    /// names: [`Traffic::record_checked`] is what the stream calls.
    pub fn record(&self, reporter: &str, report: Report) -> Vec<Dropped> {
        self.record_checked(reporter, report, |_, _| true)
    }

    /// Keeps the lines of `report` that `allowed(service, route)` admits (those of the
    /// reporter's own slice), at most [`MAX_ROUTES_PER_REPORT`] of them; answers what was
    /// dropped, also counted ([`Traffic::refused`]).
    pub fn record_checked(
        &self,
        reporter: &str,
        mut report: Report,
        allowed: impl Fn(&str, Option<&str>) -> bool,
    ) -> Vec<Dropped> {
        let mut dropped = Vec::new();
        let before = report.routes.len();
        report
            .routes
            .retain(|r| allowed(&r.service, r.route.as_deref()));
        if report.routes.len() < before {
            let n = before - report.routes.len();
            self.foreign.fetch_add(n as u64, Ordering::Relaxed);
            dropped.push(Dropped::Foreign(n));
        }
        if report.routes.len() > MAX_ROUTES_PER_REPORT {
            let n = report.routes.len() - MAX_ROUTES_PER_REPORT;
            report.routes.truncate(MAX_ROUTES_PER_REPORT);
            self.over_limit.fetch_add(n as u64, Ordering::Relaxed);
            dropped.push(Dropped::TooLong(n));
        }
        if report.routes.is_empty() {
            return dropped;
        }
        let now = Instant::now();
        let mut kept = self.lock();
        if kept
            .pruned
            .is_none_or(|at| now.duration_since(at) > Duration::from_secs(1))
        {
            kept.prune_all(now);
        }
        let lines = report.routes.len();
        let Kept {
            by_reporter,
            lines: total,
            ..
        } = &mut *kept;
        let queue = by_reporter.entry(reporter.to_owned()).or_default();
        *total -= prune(queue, now);
        while queue.len() >= MAX_REPORTS_PER_REPORTER {
            if let Some((_, old)) = queue.pop_front() {
                *total -= old.routes.len();
            }
        }
        if *total + lines > MAX_LINES {
            if queue.is_empty() {
                by_reporter.remove(reporter);
            }
            self.over_limit.fetch_add(1, Ordering::Relaxed);
            dropped.push(Dropped::Full);
            return dropped;
        }
        *total += lines;
        queue.push_back((now, report));
        dropped
    }

    /// Route lines refused since the start: (naming services or routes outside the
    /// reporter's slice, beyond the size and count limits).
    pub fn refused(&self) -> (u64, u64) {
        (
            self.foreign.load(Ordering::Relaxed),
            self.over_limit.load(Ordering::Relaxed),
        )
    }

    /// The aggregates, sorted by service and route.
    pub fn aggregate(&self) -> Vec<Aggregate> {
        let now = Instant::now();
        let mut kept = self.lock();
        kept.prune_all(now);
        let mut by_key: BTreeMap<RouteKey, Sums> = BTreeMap::new();
        for (_, report) in kept.by_reporter.values().flatten() {
            for r in &report.routes {
                let e = by_key
                    .entry((r.service.clone(), r.route.clone()))
                    .or_insert((0, 0, 0.0, 0.0, 0));
                e.0 = e.0.saturating_add(r.requests);
                e.1 = e.1.saturating_add(r.errors);
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Kept {
    fn prune_all(&mut self, now: Instant) {
        let mut freed = 0;
        self.by_reporter.retain(|_, queue| {
            freed += prune(queue, now);
            !queue.is_empty()
        });
        self.lines -= freed;
        self.pruned = Some(now);
    }
}

/// Drops the reports older than the window; answers the route lines freed.
fn prune(reports: &mut VecDeque<(Instant, Report)>, now: Instant) -> usize {
    let mut freed = 0;
    while reports
        .front()
        .is_some_and(|(at, _)| now.duration_since(*at) > WINDOW)
    {
        if let Some((_, r)) = reports.pop_front() {
            freed += r.routes.len();
        }
    }
    freed
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
        t.record("a", report(300, 3, 1.0, 10.0));
        t.record("b", report(100, 1, 5.0, 20.0));
        let a = t.aggregate();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].requests, 400);
        assert!((a[0].p50_ms - 2.0).abs() < 1e-9, "{a:?}");
        assert!((a[0].p99_ms - 20.0).abs() < 1e-9);
        assert!((a[0].error_rate - 0.01).abs() < 1e-9);
        assert!((a[0].rate_rps - 400.0 / 30.0).abs() < 1e-9);
    }

    fn line(service: &str, route: Option<&str>) -> RouteStat {
        RouteStat {
            service: service.into(),
            route: route.map(Into::into),
            requests: 10,
            errors: 0,
            p50_ms: 1.0,
            p99_ms: 2.0,
        }
    }

    #[test]
    fn foreign_lines_are_dropped_and_counted() {
        let t = Traffic::default();
        let report = Report {
            window_s: 5.0,
            routes: vec![line("web", Some("a")), line("secret", None)],
        };
        let dropped = t.record_checked("r1", report, |s, _| s == "web");
        assert_eq!(dropped, vec![Dropped::Foreign(1)]);
        let a = t.aggregate();
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].service, "web");
        assert_eq!(t.refused(), (1, 0));
    }

    #[test]
    fn reports_are_bounded_per_reporter_and_in_lines() {
        let t = Traffic::default();
        for _ in 0..100 {
            t.record(
                "r1",
                Report {
                    window_s: 5.0,
                    routes: vec![line("web", None)],
                },
            );
        }
        assert_eq!(
            t.aggregate()[0].reports,
            MAX_REPORTS_PER_REPORTER as u64,
            "a reporter's oldest reports make room"
        );
        let long = Report {
            window_s: 5.0,
            routes: (0..MAX_ROUTES_PER_REPORT + 5)
                .map(|i| line("web", Some(&format!("r{i}"))))
                .collect(),
        };
        assert_eq!(t.record("r2", long), vec![Dropped::TooLong(5)]);
        assert_eq!(
            t.lock().lines,
            MAX_REPORTS_PER_REPORTER + MAX_ROUTES_PER_REPORT
        );
        // Fill up to the total: further reports are refused, not kept.
        let mut reporter = 0;
        let mut refused = false;
        while reporter < MAX_LINES {
            let dropped = t.record(
                &format!("x{reporter}"),
                Report {
                    window_s: 5.0,
                    routes: (0..MAX_ROUTES_PER_REPORT)
                        .map(|i| line("web", Some(&format!("r{i}"))))
                        .collect(),
                },
            );
            if dropped == vec![Dropped::Full] {
                refused = true;
                break;
            }
            reporter += 1;
        }
        assert!(refused);
        assert!(t.lock().lines <= MAX_LINES);
    }
}
