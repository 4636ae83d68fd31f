//! The traffic summaries sent every 5 s: per service and route, the window's requests,
//! errors (5xx) and latency quantiles, as differences of the request metrics' counters.

use std::collections::{BTreeMap, HashMap};

use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::metrics::requests::RequestMetrics;

/// How often a summary is sent, in seconds.
pub const WINDOW_S: u64 = 5;

/// One service and route in a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteTraffic {
    /// The destination service.
    pub service: String,
    /// The route's name; `None` for requests no route decided.
    pub route: Option<String>,
    /// Requests answered in the window.
    pub requests: u64,
    /// Of those, answered 5xx.
    pub errors: u64,
    /// Median latency to the response head, in ms (interpolated within buckets).
    pub p50_ms: f64,
    /// 99th percentile, in ms.
    pub p99_ms: f64,
}

/// The `traffic` frame's payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The window, in seconds.
    pub window_s: u64,
    /// Routes with requests in the window.
    pub routes: Vec<RouteTraffic>,
}

type Key = (String, String);

/// Cumulative counts at one moment, by (service, route), outbound requests only (an
/// inbound request was counted as outbound by its caller's sidecar).
#[derive(Debug, Default, Clone)]
struct Totals {
    requests: HashMap<Key, (u64, u64)>,
    /// Upper bound (seconds) → cumulative count, per key.
    buckets: HashMap<Key, BTreeMap<Bound, u64>>,
}

/// A bucket bound that sorts (`+Inf` last).
#[derive(Debug, Clone, Copy)]
struct Bound(f64);
impl PartialEq for Bound {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for Bound {}
impl PartialOrd for Bound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Turns the metrics' running totals into per-window summaries.
#[derive(Debug, Default)]
pub struct Summaries {
    last: Totals,
}

impl Summaries {
    /// Starts from the totals now, so the first window counts only what follows.
    pub fn new(metrics: &RequestMetrics) -> Summaries {
        Summaries {
            last: totals(&encode(metrics)),
        }
    }

    /// What happened since the previous call.
    pub fn sample(&mut self, metrics: &RequestMetrics) -> Report {
        let now = totals(&encode(metrics));
        let report = difference(&self.last, &now);
        self.last = now;
        report
    }
}

/// The request families alone, in the text format (the families expose no iteration).
fn encode(metrics: &RequestMetrics) -> String {
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let mut out = String::new();
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

fn totals(text: &str) -> Totals {
    let mut totals = Totals::default();
    for line in text.lines() {
        let Some((name, labels, value)) = parse_line(line) else {
            continue;
        };
        if label(&labels, "direction") != Some("outbound") {
            continue;
        }
        let (Some(service), Some(route)) = (label(&labels, "service"), label(&labels, "route"))
        else {
            continue;
        };
        let key = (service.to_string(), route.to_string());
        let value = value as u64;
        match name {
            "mesh_requests_total" => {
                let error = label(&labels, "status").is_some_and(|s| s.starts_with('5'));
                let entry = totals.requests.entry(key).or_default();
                entry.0 += value;
                if error {
                    entry.1 += value;
                }
            }
            "mesh_request_duration_seconds_bucket" => {
                let bound = match label(&labels, "le") {
                    Some("+Inf") => f64::INFINITY,
                    Some(le) => match le.parse() {
                        Ok(le) => le,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                *totals
                    .buckets
                    .entry(key)
                    .or_default()
                    .entry(Bound(bound))
                    .or_default() += value;
            }
            _ => {}
        }
    }
    totals
}

fn difference(before: &Totals, now: &Totals) -> Report {
    let mut routes = Vec::new();
    for (key, (requests, errors)) in &now.requests {
        let (old_requests, old_errors) = before.requests.get(key).copied().unwrap_or_default();
        let requests = requests.saturating_sub(old_requests);
        if requests == 0 {
            continue;
        }
        let window: Vec<(f64, u64)> = now
            .buckets
            .get(key)
            .map(|buckets| {
                buckets
                    .iter()
                    .map(|(bound, count)| {
                        let old = before
                            .buckets
                            .get(key)
                            .and_then(|b| b.get(bound))
                            .copied()
                            .unwrap_or_default();
                        (bound.0, count.saturating_sub(old))
                    })
                    .collect()
            })
            .unwrap_or_default();
        routes.push(RouteTraffic {
            service: key.0.clone(),
            route: (key.1 != "none").then(|| key.1.clone()),
            requests,
            errors: errors.saturating_sub(old_errors),
            p50_ms: quantile(&window, 0.5) * 1000.0,
            p99_ms: quantile(&window, 0.99) * 1000.0,
        });
    }
    routes.sort_by(|a, b| (&a.service, &a.route).cmp(&(&b.service, &b.route)));
    Report {
        window_s: WINDOW_S,
        routes,
    }
}

/// The `q` quantile of cumulative buckets `(upper bound, count)`, interpolated linearly
/// within the bucket it falls in (the last finite bound for the `+Inf` bucket).
fn quantile(cumulative: &[(f64, u64)], q: f64) -> f64 {
    let Some(&(_, total)) = cumulative.last() else {
        return 0.0;
    };
    if total == 0 {
        return 0.0;
    }
    let rank = q * total as f64;
    let mut lower = (0.0, 0u64);
    for &(bound, count) in cumulative {
        if count as f64 >= rank {
            if bound.is_infinite() {
                return lower.0;
            }
            let inside = (count - lower.1) as f64;
            let fraction = if inside > 0.0 {
                (rank - lower.1 as f64) / inside
            } else {
                1.0
            };
            return lower.0 + (bound - lower.0) * fraction.clamp(0.0, 1.0);
        }
        lower = (bound, count);
    }
    lower.0
}

/// A sample line's metric name, labels and value.
type Sample<'a> = (&'a str, Vec<(&'a str, String)>, f64);

/// `name{a="b",...} value` → its parts; `None` for comments and other lines.
fn parse_line(line: &str) -> Option<Sample<'_>> {
    if line.starts_with('#') {
        return None;
    }
    let open = line.find('{')?;
    let close = line.rfind('}')?;
    let name = &line[..open];
    let value = line[close + 1..].trim().parse().ok()?;
    let mut labels = Vec::new();
    let mut rest = &line[open + 1..close];
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].trim_start_matches(',').trim();
        let mut value = String::new();
        let mut chars = rest[eq + 2..].char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                }
                '"' => {
                    end = Some(eq + 2 + i + 1);
                    break;
                }
                c => value.push(c),
            }
        }
        labels.push((key, value));
        rest = &rest[end?..];
    }
    Some((name, labels, value))
}

fn label<'a>(labels: &'a [(&str, String)], key: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::metrics::requests::{RequestLabels, RouteLabels};

    fn record(metrics: &RequestMetrics, route: &str, status: u16, seconds: f64) {
        let labels = RouteLabels {
            direction: "outbound",
            service: Arc::from("web"),
            route: Arc::from(route),
            target: Arc::from("web"),
        };
        metrics
            .durations
            .get(&labels, &crate::metrics::requests::DEFAULT_BUCKETS)
            .observe(seconds);
        metrics
            .requests
            .get_or_create(&RequestLabels {
                route: labels,
                peer: Arc::from("frontend"),
                status,
            })
            .inc();
    }

    #[test]
    fn windows_count_what_happened_since_the_last() {
        let metrics = RequestMetrics::default();
        record(&metrics, "old", 200, 0.001);
        let mut summaries = Summaries::new(&metrics);
        for _ in 0..98 {
            record(&metrics, "a", 200, 0.003);
        }
        record(&metrics, "a", 503, 0.003);
        record(&metrics, "a", 200, 2.0);
        record(&metrics, "none", 404, 0.001);
        let report = summaries.sample(&metrics);
        assert_eq!(report.window_s, 5);
        assert_eq!(report.routes.len(), 2, "{report:?}");
        let a = &report.routes[1];
        assert_eq!(
            (a.route.as_deref(), a.requests, a.errors),
            (Some("a"), 100, 1)
        );
        assert!(a.p50_ms > 0.0 && a.p50_ms <= 5.0, "{a:?}");
        // 99 of 100 took 3 ms: the 99th percentile is still in the 5 ms bucket.
        assert!(a.p99_ms >= a.p50_ms && a.p99_ms <= 5.0, "{a:?}");
        assert_eq!(report.routes[0].route, None);
        assert!(summaries.sample(&metrics).routes.is_empty());
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let buckets = [(0.01, 50), (0.1, 100), (f64::INFINITY, 100)];
        assert!((quantile(&buckets, 0.5) - 0.01).abs() < 1e-9);
        assert!((quantile(&buckets, 0.75) - 0.055).abs() < 1e-9);
        assert_eq!(quantile(&[(f64::INFINITY, 3)], 0.5), 0.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn label_values_are_unescaped() {
        let (name, labels, value) =
            parse_line(r#"m_total{a="x\"y",b="z"} 3"#).expect("a sample line");
        assert_eq!((name, value), ("m_total", 3.0));
        assert_eq!(label(&labels, "a"), Some("x\"y"));
        assert_eq!(label(&labels, "b"), Some("z"));
        assert!(parse_line("# HELP m x").is_none());
    }
}
