//! Slices: the part of a table one service's sidecar needs (docs/control-protocol.md "Slices").
//!
//! A proxy of service `S` gets `S` itself (authorization, observe block, service filters),
//! every service `S` may call with its routes, route filters and split targets, and the
//! filters those name. Services that only appear as principals of `S`'s rules, or as split
//! targets, come along as bare entries so that every index stays valid. Ids are renumbered;
//! the order of every vector is kept, so the slice passes [`validate`](crate::validate).

use std::collections::BTreeSet;

use crate::model::{Action, Principal, ServiceId, Table};

/// The slice of `table` for the sidecars of `service`, or `None` if the table has no such
/// service.
pub fn slice(table: &Table, service: &str) -> Option<Table> {
    let own = table.service_id(service)?;
    let callees: BTreeSet<ServiceId> = (0..table.services.len())
        .filter_map(|i| u32::try_from(i).ok())
        .filter(|&t| may_call(table, own, t))
        .collect();

    // Every service the slice mentions: own, callees, their routes' split targets, and the
    // principals of own's rules (authorization must keep deciding the same way).
    let mut kept: BTreeSet<ServiceId> = callees.clone();
    kept.insert(own);
    let routes: Vec<usize> = table
        .routes
        .iter()
        .enumerate()
        .filter(|(_, r)| callees.contains(&r.service))
        .map(|(i, _)| i)
        .collect();
    for &r in &routes {
        kept.extend(table.routes[r].targets.iter().map(|t| t.service));
    }
    let authz = table.authorizations.iter().find(|a| a.service == own);
    if let Some(authz) = authz {
        for rule in &authz.rules {
            kept.extend(rule.from.iter().filter_map(|p| match p {
                Principal::Service(id) => Some(*id),
                _ => None,
            }));
        }
    }

    // Filters: own's service filters and the kept routes' filters. Callees' service
    // filters run in their own sidecars, so their entries drop them.
    let mut filters: BTreeSet<u32> = table.services[own as usize]
        .filters
        .iter()
        .copied()
        .collect();
    for &r in &routes {
        filters.extend(table.routes[r].filters.iter().copied());
    }

    let service_map = Renumber::new(&kept);
    let filter_map = Renumber::new(&filters);
    let mut out = Table {
        mesh: table.mesh.clone(),
        files: table.files.clone(),
        services: Vec::with_capacity(kept.len()),
        routes: Vec::with_capacity(routes.len()),
        authorizations: Vec::new(),
        observes: Vec::new(),
        filters: filters
            .iter()
            .map(|&f| table.filters[f as usize].clone())
            .collect(),
    };
    for &id in &kept {
        let mut s = table.services[id as usize].clone();
        s.filters = if id == own {
            s.filters.iter().map(|&f| filter_map.get(f)).collect()
        } else {
            Vec::new()
        };
        out.services.push(s);
    }
    for &r in &routes {
        let mut route = table.routes[r].clone();
        route.service = service_map.get(route.service);
        for target in &mut route.targets {
            target.service = service_map.get(target.service);
        }
        route.filters = route.filters.iter().map(|&f| filter_map.get(f)).collect();
        out.routes.push(route);
    }
    if let Some(authz) = authz {
        let mut authz = authz.clone();
        authz.service = service_map.get(own);
        for rule in &mut authz.rules {
            for p in &mut rule.from {
                if let Principal::Service(id) = p {
                    *id = service_map.get(*id);
                }
            }
        }
        out.authorizations.push(authz);
    }
    if let Some(observe) = table.observes.iter().find(|o| o.service == own) {
        let mut observe = observe.clone();
        observe.service = service_map.get(own);
        out.observes.push(observe);
    }
    Some(out)
}

/// Whether `caller` may call `callee`: the callee has no authorization block (any mesh
/// identity is admitted), its default allows, or an allow rule names `caller`, `any` or
/// `anyone`. Conditions on paths and methods are ignored: some request may pass.
pub fn may_call(table: &Table, caller: ServiceId, callee: ServiceId) -> bool {
    let Some(authz) = table.authorizations.iter().find(|a| a.service == callee) else {
        return true;
    };
    authz.default == Action::Allow
        || authz.rules.iter().any(|rule| {
            rule.action == Action::Allow
                && rule.from.iter().any(|p| match p {
                    Principal::Service(id) => *id == caller,
                    Principal::Any | Principal::Anyone => true,
                })
        })
}

/// Old index → new index, for a sorted set of kept indices.
struct Renumber(Vec<u32>);

impl Renumber {
    fn new(kept: &BTreeSet<u32>) -> Renumber {
        Renumber(kept.iter().copied().collect())
    }

    /// The new index of a kept old index (every caller passes one that was kept).
    fn get(&self, old: u32) -> u32 {
        let i = self.0.binary_search(&old).unwrap_or_default();
        u32::try_from(i).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{sample_table, API, CHECKOUT, PAYMENTS, WEB};
    use crate::{decode, encode, validate, Endpoints};

    fn names(table: &Table) -> Vec<&str> {
        table.services.iter().map(|s| s.name.as_str()).collect()
    }

    fn route_names(table: &Table) -> Vec<(String, &str)> {
        table
            .routes
            .iter()
            .map(|r| {
                (
                    table.services[r.service as usize].name.clone(),
                    r.name.as_str(),
                )
            })
            .collect()
    }

    #[test]
    fn unknown_service_has_no_slice() {
        assert!(slice(&sample_table(), "nope").is_none());
    }

    #[test]
    fn web_sees_api_routes_but_not_payments() {
        // api admits web; payments admits only checkout and api.
        let table = sample_table();
        assert!(may_call(&table, WEB, API));
        assert!(!may_call(&table, WEB, PAYMENTS));
        let s = slice(&table, "web").expect("web is a service");
        validate(&s).expect("the slice is valid");
        let routes = route_names(&s);
        assert!(routes.contains(&("api".to_owned(), "cart")), "{routes:?}");
        assert!(routes.contains(&("api".to_owned(), "checkout")));
        assert!(
            !routes.iter().any(|(svc, _)| svc == "payments"),
            "web may not call payments: {routes:?}"
        );
        // Split targets of api's routes come along so the indices stay valid.
        assert!(names(&s).contains(&"cart"));
        assert!(names(&s).contains(&"checkout"));
        // payments-canary has no authorize block: any mesh identity may call it.
        assert!(names(&s).contains(&"payments-canary"), "{:?}", names(&s));
        assert!(!names(&s).contains(&"payments"), "{:?}", names(&s));
    }

    #[test]
    fn split_targets_and_filters_are_carried() {
        let table = sample_table();
        assert!(may_call(&table, CHECKOUT, PAYMENTS));
        let s = slice(&table, "checkout").expect("checkout is a service");
        validate(&s).expect("the slice is valid");
        let charge = s
            .routes
            .iter()
            .find(|r| r.name == "charge")
            .expect("checkout may call payments, so it sees charge");
        let targets: Vec<&str> = charge
            .targets
            .iter()
            .map(|t| s.services[t.service as usize].name.as_str())
            .collect();
        assert_eq!(targets, ["payments", "payments-canary"]);
        // api's checkout route pins filter auth-jwt: carried, renumbered.
        let route = s
            .routes
            .iter()
            .find(|r| r.name == "checkout")
            .expect("api's checkout route");
        let filter = &s.filters[route.filters[0] as usize];
        assert_eq!(filter.name, "auth-jwt");
        // Callees' service filters run in their own sidecars: dropped.
        let payments = &s.services[s.service_id("payments").expect("kept") as usize];
        assert!(payments.filters.is_empty());
    }

    #[test]
    fn own_authorization_observe_and_service_filters_are_kept() {
        let table = sample_table();
        let s = slice(&table, "payments").expect("payments is a service");
        validate(&s).expect("the slice is valid");
        let own = s.service_id("payments").expect("own");
        assert_eq!(s.authorizations.len(), 1);
        assert_eq!(s.authorizations[0].service, own);
        // Principals checkout and api are kept so that rule keeps naming them.
        let from = &s.authorizations[0].rules[1].from;
        let principals: Vec<&str> = from
            .iter()
            .filter_map(|p| match p {
                Principal::Service(id) => Some(s.services[*id as usize].name.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(principals, ["checkout", "api"]);
        assert_eq!(s.observes.len(), 1);
        assert_eq!(s.observes[0].service, own);
        let filters: Vec<&str> = s.services[own as usize]
            .filters
            .iter()
            .map(|&f| s.filters[f as usize].name.as_str())
            .collect();
        assert_eq!(filters, ["rate-limit"]);
    }

    #[test]
    fn every_service_slice_is_valid_and_round_trips() {
        let mut table = sample_table();
        table.services[0].endpoints = Endpoints::Static(vec!["127.0.0.1:1".to_owned()]);
        for service in table.services.iter().map(|s| s.name.clone()) {
            let s = slice(&table, &service).expect("service exists");
            validate(&s).unwrap_or_else(|e| panic!("slice of {service}: {e}"));
            let bytes = encode(&s);
            let back = decode(&bytes).expect("the slice decodes");
            assert_eq!(back, s, "slice of {service} round-trips");
        }
    }
}
