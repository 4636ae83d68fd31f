//! Picking with the fallbacks every algorithm shares, and endpoint lists that change.

use std::net::SocketAddr;
use std::sync::Arc;

use mesh_table::{Balance, HealthCheck, Outlier, Ppm};

use super::{Cluster, Policy};
use crate::clock::now_ms;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn cluster(balance: Balance, ports: &[u16]) -> Cluster {
    let c = Cluster::new(
        "web",
        Policy {
            balance,
            health: None,
            outlier: None,
            limits: mesh_table::Limits::DEFAULT,
        },
    );
    c.set_endpoints(ports.iter().map(|&p| addr(p)).collect());
    c
}

#[test]
fn unavailable_endpoints_get_no_traffic_until_none_is_left_then_all_do() {
    let c = cluster(Balance::RoundRobin, &[1, 2, 3]);
    let members = c.members();
    members.endpoints[0].set_healthy(false);
    members.endpoints[1].eject_until(now_ms() + 60_000);
    for _ in 0..30 {
        assert_eq!(c.pick(None, &[]).map(|e| e.addr()), Some(addr(3)));
    }
    assert_eq!(c.panic_picks(), 0);
    // The last one fails too: panic mode spreads over all.
    members.endpoints[2].set_healthy(false);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        seen.insert(c.pick(None, &[]).expect("panic mode still picks").addr());
    }
    assert_eq!(seen.len(), 3);
    assert_eq!(c.panic_picks(), 30);
    members.endpoints[2].set_healthy(true);
    assert_eq!(c.pick(None, &[]).map(|e| e.addr()), Some(addr(3)));
    assert_eq!(c.panic_picks(), 30);
}

#[test]
fn panic_mode_keeps_round_robin_turns() {
    let c = cluster(Balance::RoundRobin, &[1, 2]);
    for e in &c.members().endpoints {
        e.set_healthy(false);
    }
    let picks: Vec<SocketAddr> = (0..4)
        .filter_map(|_| c.pick(None, &[]))
        .map(|e| e.addr())
        .collect();
    assert_eq!(picks, [addr(1), addr(2), addr(1), addr(2)]);
}

#[test]
fn a_retry_goes_to_an_endpoint_not_tried_yet_while_there_is_one() {
    for balance in [
        Balance::RoundRobin,
        Balance::LeastRequest,
        Balance::Ewma,
        Balance::Random,
    ] {
        let c = cluster(balance.clone(), &[1, 2, 3]);
        for _ in 0..50 {
            let e = c.pick(None, &[addr(1), addr(2)]).expect("an endpoint");
            assert_eq!(e.addr(), addr(3), "{balance:?}");
        }
        // All tried: any of them again rather than none.
        assert!(c.pick(None, &[addr(1), addr(2), addr(3)]).is_some());
    }
    // An available endpoint tried already beats an untried unavailable one.
    let c = cluster(Balance::RoundRobin, &[1, 2]);
    c.members().endpoints[1].set_healthy(false);
    assert_eq!(c.pick(None, &[addr(1)]).map(|e| e.addr()), Some(addr(1)));
}

#[test]
fn ring_hash_keys_stick_and_a_retry_walks_on_to_the_next_owner() {
    let c = cluster(
        Balance::RingHash {
            header: "x-user".into(),
        },
        &[1, 2, 3, 4],
    );
    let mut headers = http::HeaderMap::new();
    headers.insert("x-user", http::HeaderValue::from_static("alice"));
    let key = c.hash_key(&headers);
    assert!(key.is_some());
    let first = c.pick(key, &[]).expect("owner").addr();
    for _ in 0..20 {
        assert_eq!(c.pick(key, &[]).map(|e| e.addr()), Some(first));
    }
    let second = c.pick(key, &[first]).expect("next owner").addr();
    assert_ne!(second, first);
    assert_eq!(c.pick(key, &[first]).map(|e| e.addr()), Some(second));
    assert_eq!(c.hash_key(&http::HeaderMap::new()), None);
}

#[test]
fn endpoints_that_stay_keep_their_state_across_list_changes() {
    let c = cluster(Balance::LeastRequest, &[1, 2]);
    let kept = Arc::clone(&c.members().endpoints[1]);
    kept.set_healthy(false);
    let guard = kept.start();
    c.set_endpoints(vec![addr(3), addr(2), addr(2)]);
    let members = c.members();
    assert_eq!(
        members
            .endpoints
            .iter()
            .map(|e| e.addr())
            .collect::<Vec<_>>(),
        [addr(2), addr(3)]
    );
    assert!(Arc::ptr_eq(&members.endpoints[0], &kept));
    assert_eq!(members.endpoints[0].in_flight(), 1);
    drop(guard);
    assert_eq!(kept.in_flight(), 0);
    // The same set again is no change at all.
    c.set_endpoints(vec![addr(2), addr(3)]);
    assert!(Arc::ptr_eq(&c.members(), &members));
}

#[test]
fn switching_health_checks_off_makes_every_endpoint_fit_again() {
    let health = HealthCheck {
        path: "/healthz".into(),
        interval_ms: 1_000,
        timeout_ms: 100,
        unhealthy_after: 1,
        healthy_after: 1,
    };
    let c = Cluster::new(
        "web",
        Policy {
            balance: Balance::RoundRobin,
            health: Some(health),
            outlier: None,
            limits: mesh_table::Limits::DEFAULT,
        },
    );
    c.set_endpoints(vec![addr(1)]);
    c.members().endpoints[0].set_healthy(false);
    c.set_policy(Policy {
        balance: Balance::Random,
        health: None,
        outlier: None,
        limits: mesh_table::Limits::DEFAULT,
    });
    assert!(c.members().endpoints[0].is_healthy());
    assert!(matches!(
        c.members().balancer,
        crate::balance::Balancer::Random
    ));
}

#[test]
fn outlier_results_eject_through_the_cluster() {
    let c = Cluster::new(
        "web",
        Policy {
            balance: Balance::RoundRobin,
            health: None,
            outlier: Some(Outlier {
                consecutive_5xx: 2,
                eject_for_ms: 60_000,
                max_ejected: Ppm(500_000),
            }),
            limits: mesh_table::Limits::DEFAULT,
        },
    );
    c.set_endpoints(vec![addr(1), addr(2)]);
    let bad = Arc::clone(&c.members().endpoints[0]);
    c.observe(&bad, true);
    assert_eq!(c.ejections(), 0);
    c.observe(&bad, true);
    assert_eq!(c.ejections(), 1);
    for _ in 0..10 {
        assert_eq!(c.pick(None, &[]).map(|e| e.addr()), Some(addr(2)));
    }
}

/// A registry with no DNS, whose health checks would go nowhere (none is configured).
fn registry() -> super::Clusters {
    let tables = Arc::new(crate::table_watch::Tables::default());
    let transport = Arc::new(crate::tls::Transport::insecure_plaintext(tables, "caller"));
    let upstreams = Arc::new(crate::upstream::Upstreams::new(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(60),
        transport,
    ));
    super::Clusters::new(upstreams, Err("no DNS".to_owned()))
}

fn service(name: &str, ports: &[u16]) -> mesh_table::Service {
    mesh_table::Service {
        name: name.to_owned(),
        port: 8080,
        protocol: mesh_table::Protocol::Http1,
        endpoints: mesh_table::Endpoints::Static(
            ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
        ),
        balance: Balance::RoundRobin,
        health: None,
        outlier: None,
        mtls: mesh_table::MtlsMode::Strict,
        filters: vec![],
        limits: mesh_table::Limits::DEFAULT,
        loc: mesh_table::SourceLoc {
            file: 0,
            line: 1,
            column: 1,
        },
    }
}

fn table(mut services: Vec<mesh_table::Service>) -> Arc<mesh_table::Table> {
    let mut table = mesh_table::testing::minimal_table();
    // Tables list services by name (lookups search them).
    services.sort_by(|a, b| a.name.cmp(&b.name));
    table.services = services;
    Arc::new(table)
}

#[tokio::test]
async fn clusters_are_made_at_first_use_sleep_when_idle_and_wake_on_the_next_request() {
    let clusters = registry();
    let (web, api) = (service("web", &[1, 2]), service("api", &[3]));
    clusters.sync(&table(vec![web.clone(), api.clone()]));
    // A table load makes no cluster.
    assert!(clusters.all().is_empty());
    let c = clusters.get(&web);
    assert_eq!(c.members().endpoints.len(), 2);
    assert!(
        c.usage().is_warm(),
        "literal addresses, no health checks: warm at once"
    );
    assert_eq!(
        clusters.all().iter().map(|c| c.name()).collect::<Vec<_>>(),
        ["web"]
    );
    // The same cluster on the next request, with what it learnt.
    c.members().endpoints[0].set_healthy(false);
    let again = clusters.get(&web);
    assert!(Arc::ptr_eq(&c, &again));
    // Used recently: stays awake.
    let now = now_ms();
    assert!(c.usage().touch(now));
    assert_eq!(clusters.sweep(60_000, now), 0);
    // Idle for the period: asleep, endpoints forgotten, not listed.
    assert_eq!(clusters.sweep(1_000, now + 5_000), 1);
    assert!(c.usage().is_asleep());
    assert!(c.members().endpoints.is_empty());
    assert!(clusters.all().is_empty());
    // A request finds it asleep and wakes it: endpoints back (fresh state), warm again.
    assert!(!c.usage().touch(now + 6_000));
    clusters.wake_up(&c, &web);
    assert!(!c.usage().is_asleep());
    assert_eq!(c.members().endpoints.len(), 2);
    assert!(c.members().endpoints.iter().all(|e| e.is_healthy()));
    assert!(c.usage().is_warm());
}

#[tokio::test]
async fn a_request_in_flight_keeps_its_cluster_awake_and_a_new_table_updates_awake_ones() {
    let clusters = registry();
    let web = service("web", &[1]);
    clusters.sync(&table(vec![web.clone()]));
    let c = clusters.get(&web);
    let slot = c.admission().admit().await.expect("a slot");
    assert_eq!(clusters.sweep(0, now_ms() + 60_000), 0, "in flight");
    drop(slot);
    // The new table moves the endpoints of the awake cluster.
    clusters.sync(&table(vec![service("web", &[7, 8])]));
    assert_eq!(
        c.members()
            .endpoints
            .iter()
            .map(|e| e.addr())
            .collect::<Vec<_>>(),
        [addr(7), addr(8)]
    );
    // A table without the service drops its cluster: the next get makes a new one.
    clusters.sync(&table(vec![service("api", &[3])]));
    assert!(clusters.all().is_empty());
}
