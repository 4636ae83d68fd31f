//! WASM filter families, read at scrape time: failures by filter and reason, module loads,
//! and the metrics filters define themselves (`proxy_define_metric`), each as
//! `mesh_filter_<name>` with a `filter` label.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use mesh_wasm::{FilterMetric, MetricKind};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::filters::FilterStore;

/// Reads the filter store and its host on every scrape.
#[derive(Debug)]
pub struct FiltersCollector {
    /// The loaded filters.
    pub store: Arc<FilterStore>,
}

impl Collector for FiltersCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let host = self.store.host();
        {
            let mut metric = encoder.encode_descriptor(
                "mesh_filter_failures",
                "Filter callbacks that failed (trap, timeout, memory, unavailable, paused), by filter and reason; each discarded its instance.",
                None,
                MetricType::Counter,
            )?;
            let mut failures = host.failures();
            failures.sort_by(|a, b| (&a.0, a.1.as_str()).cmp(&(&b.0, b.1.as_str())));
            for (filter, reason, count) in failures {
                let labels = [("filter", &*filter), ("reason", reason.as_str())];
                metric
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
            }
        }
        {
            let mut metric = encoder.encode_descriptor(
                "mesh_filter_loads",
                "Filter modules loaded (swapped in) or refused (missing, digest mismatch, compile or start failure).",
                None,
                MetricType::Counter,
            )?;
            let counts = &self.store.counts;
            for (result, value) in [
                ("loaded", counts.loaded.load(Ordering::Relaxed)),
                ("refused", counts.refused.load(Ordering::Relaxed)),
            ] {
                metric
                    .encode_family(&[("result", result)])?
                    .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
            }
        }
        {
            // A request whose instance another request's failure discarded continues in a
            // fresh instance instead of failing: counted here.
            let mut metric = encoder.encode_descriptor(
                "mesh_filter_streams_rebound",
                "Requests that continued in a fresh filter instance after another request's failure discarded the one they started in.",
                None,
                MetricType::Counter,
            )?;
            metric.encode_counter::<NoLabelSet, _, u64>(&host.streams_rebound(), None)?;
        }
        {
            // What replacing a broken instance costs: the longest instance start so far.
            let mut metric = encoder.encode_descriptor(
                "mesh_filter_instance_start_max_seconds",
                "The longest a filter instance took to make (the bound on replacing one discarded after a trap, timeout or memory failure).",
                None,
                MetricType::Gauge,
            )?;
            let seconds = host.longest_instance_start().as_secs_f64();
            metric.encode_gauge(&seconds)?;
        }
        // Filters' own metrics, grouped into families by name.
        let mut families: BTreeMap<(String, u8), Vec<FilterMetric>> = BTreeMap::new();
        for m in host.metrics() {
            let kind = match m.kind {
                MetricKind::Counter => 0,
                MetricKind::Gauge => 1,
                MetricKind::Histogram => 2,
            };
            families
                .entry((family_name(&m.name), kind))
                .or_default()
                .push(m);
        }
        let mut seen = std::collections::HashSet::new();
        for ((name, _), metrics) in families {
            // Two filters defining one name with different types: the first type wins.
            if !seen.insert(name.clone()) {
                continue;
            }
            encode_family(&mut encoder, &name, &metrics)?;
        }
        Ok(())
    }
}

fn encode_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    metrics: &[FilterMetric],
) -> Result<(), std::fmt::Error> {
    let help = "Defined by a WASM filter (proxy_define_metric).";
    match metrics[0].kind {
        MetricKind::Counter => {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for m in metrics {
                let value = u64::try_from(m.value).unwrap_or(0);
                family
                    .encode_family(&[("filter", &*m.filter)])?
                    .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
            }
        }
        MetricKind::Gauge => {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for m in metrics {
                family
                    .encode_family(&[("filter", &*m.filter)])?
                    .encode_gauge(&m.value)?;
            }
        }
        MetricKind::Histogram => {
            // The host keeps the count and sum of recorded values: two families.
            for (suffix, read) in [
                (
                    "_count",
                    (|m: &FilterMetric| m.value) as fn(&FilterMetric) -> i64,
                ),
                ("_sum", |m: &FilterMetric| {
                    i64::try_from(m.sum).unwrap_or(i64::MAX)
                }),
            ] {
                let family_name = format!("{name}{suffix}");
                let mut family =
                    encoder.encode_descriptor(&family_name, help, None, MetricType::Gauge)?;
                for m in metrics {
                    family
                        .encode_family(&[("filter", &*m.filter)])?
                        .encode_gauge(&read(m))?;
                }
            }
        }
    }
    Ok(())
}

/// `mesh_filter_` and the filter's name with anything outside `[a-zA-Z0-9_]` as `_`.
fn family_name(name: &str) -> String {
    let mut out = String::from("mesh_filter_");
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    // A counter family must not end in `_total`: the encoder adds it.
    if let Some(stripped) = out.strip_suffix("_total") {
        out.truncate(stripped.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::family_name;

    #[test]
    fn family_names_are_prometheus_safe() {
        assert_eq!(
            family_name("ratelimit_rejected"),
            "mesh_filter_ratelimit_rejected"
        );
        assert_eq!(family_name("a.b-c/d"), "mesh_filter_a_b_c_d");
        assert_eq!(family_name("requests_total"), "mesh_filter_requests");
    }
}
