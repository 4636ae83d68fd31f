//! The encoder: per-service histogram buckets in one family, counters' `_total` names.

use std::sync::Arc;

use prometheus_client::registry::Registry;

use super::requests::{buckets_seconds, RequestMetrics, RouteLabels, DEFAULT_BUCKETS};

fn labels(service: &str) -> RouteLabels {
    RouteLabels {
        direction: "outbound",
        service: Arc::from(service),
        route: Arc::from("r"),
        target: Arc::from(service),
    }
}

#[test]
fn each_service_keeps_its_own_buckets_in_one_family() {
    let metrics = RequestMetrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let custom = buckets_seconds(&[1, 50, 2000]);
    assert_eq!(&custom[..], &[0.001, 0.05, 2.0]);
    assert_eq!(&buckets_seconds(&[])[..], &DEFAULT_BUCKETS[..]);
    metrics.durations.get(&labels("a"), &custom).observe(0.01);
    metrics.durations.get(&labels("a"), &custom).observe(3.0);
    metrics
        .durations
        .get(&labels("b"), &DEFAULT_BUCKETS)
        .observe(0.01);
    let _ = metrics
        .requests
        .get_or_create(&super::requests::RequestLabels {
            route: labels("a"),
            peer: Arc::from("c"),
            status: 200,
        });
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).expect("encode");
    assert_eq!(
        text.matches("# TYPE mesh_request_duration_seconds histogram")
            .count(),
        1,
        "{text}"
    );
    assert!(
        text.contains(r#"service="a",route="r",target="a",le="0.05"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"service="a",route="r",target="a",le="+Inf"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"service="b",route="r",target="b",le="10"} 1"#),
        "{text}"
    );
    assert!(
        !text.contains(r#"service="a",route="r",target="a",le="10""#),
        "{text}"
    );
    assert!(text.contains(r#"mesh_requests_total{direction="outbound",service="a",route="r",target="a",peer="c",status="200"} 0"#), "{text}");
}

#[test]
fn query_components_are_percent_decoded() {
    assert_eq!(
        crate::explain::decode("a%20b+c%3A1").as_deref(),
        Ok("a b c:1")
    );
    assert!(crate::explain::decode("%zz").is_err());
}
