//! Structural validation of a [`Table`]: indices in range, orders, names, weights, regexes, headers.
//!
//! [`decode`](crate::decode) runs this on every table it reads, so a proxy never sees a table
//! whose cross references dangle. The checks are grouped by table section, one method each;
//! checks of self-contained parts of services and routes live in `parts`, string-level
//! checks in `strings`.

mod parts;
mod strings;

pub use strings::{MAX_REGEX_COMPILED, MAX_REGEX_LEN};

use std::cmp::Ordering;
use std::fmt;

use crate::model::{AuthzRule, Balance, Ppm, Principal, Route, Service, SourceLoc, Table};

/// A broken table invariant: where it is broken and how.
///
/// Displays as `<place>: <problem>`, e.g.
/// ``route #3 (`charge`): target #0: service index 17 out of range (table has 5 services)``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {problem}")]
pub struct ValidationError {
    place: String,
    problem: String,
}

impl ValidationError {
    /// The part of the table at fault, e.g. ``route #3 (`charge`)`` or `mesh`.
    pub fn place(&self) -> &str {
        &self.place
    }

    /// What is wrong there.
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

/// Checks every invariant of `table` that the codec cannot express in types.
///
/// Returns the first violation found, sections in table order: mesh, files, services, routes,
/// authorizations, observes, filters.
pub fn validate(table: &Table) -> Result<(), ValidationError> {
    let v = Validator { table };
    v.mesh()?;
    v.files()?;
    v.services()?;
    v.routes()?;
    v.authorizations()?;
    v.observes()?;
    v.filters()?;
    Ok(())
}

/// The outcome of a check below the section level: the problem, without the place.
type Check = Result<(), String>;

/// Prefixes a nested check's problem with what was being checked.
fn within(what: impl fmt::Display, check: Check) -> Check {
    check.map_err(|problem| format!("{what}: {problem}"))
}

/// Checks an index into one of the table's vectors.
fn index(what: &str, idx: u32, len: usize, noun: &str) -> Check {
    if usize::try_from(idx).is_ok_and(|i| i < len) {
        return Ok(());
    }
    let plural = if len == 1 { "" } else { "s" };
    Err(format!(
        "{what} index {idx} out of range (table has {len} {noun}{plural})"
    ))
}

/// Checks that a share is at most 100%.
fn ppm(what: &str, value: Ppm) -> Check {
    if value <= Ppm::FULL {
        Ok(())
    } else {
        Err(format!(
            "{what} is {} ppm, more than 100% ({} ppm)",
            value.0,
            Ppm::FULL.0
        ))
    }
}

/// Checks that a count or duration is not zero.
fn positive(what: &str, value: u64) -> Check {
    if value > 0 {
        Ok(())
    } else {
        Err(format!("{what} must be greater than 0"))
    }
}

/// Describes an item for a place: `route #3 (`charge`)`.
fn item(kind: &str, i: usize, name: &str) -> String {
    format!("{kind} #{i} ({})", strings::quote(name))
}

/// Builds [`ValidationError`]s and holds the table for the range checks.
struct Validator<'t> {
    table: &'t Table,
}

impl Validator<'_> {
    /// Attaches a place to a check's problem.
    fn at(&self, place: impl FnOnce() -> String, check: Check) -> Result<(), ValidationError> {
        check.map_err(|problem| ValidationError {
            place: place(),
            problem,
        })
    }

    fn loc(&self, loc: SourceLoc) -> Check {
        let check = index("source file", loc.file, self.table.files.len(), "file").and_then(|()| {
            match (loc.line, loc.column) {
                (0, _) => Err("line is 0 (lines are 1-based)".to_owned()),
                (_, 0) => Err("column is 0 (columns are 1-based)".to_owned()),
                _ => Ok(()),
            }
        });
        within("source location", check)
    }

    fn service_ref(&self, what: &str, id: u32) -> Check {
        index(what, id, self.table.services.len(), "service")
    }

    fn filter_refs(&self, filters: &[u32]) -> Check {
        for (i, &id) in filters.iter().enumerate() {
            within(
                format_args!("filter #{i}"),
                index("filter", id, self.table.filters.len(), "filter"),
            )?;
        }
        Ok(())
    }

    fn mesh(&self) -> Result<(), ValidationError> {
        let mesh = &self.table.mesh;
        let place = || "mesh".to_owned();
        self.at(place, within("name", strings::mesh_name(&mesh.name)))?;
        self.at(
            place,
            within("trust domain", strings::trust_domain(&mesh.trust_domain)),
        )?;
        self.at(place, self.loc(mesh.loc))
    }

    fn files(&self) -> Result<(), ValidationError> {
        for (i, file) in self.table.files.iter().enumerate() {
            self.at(|| format!("file #{i}"), strings::file_name(file))?;
        }
        Ok(())
    }

    fn services(&self) -> Result<(), ValidationError> {
        let services = &self.table.services;
        for (i, service) in services.iter().enumerate() {
            let place = || item("service", i, &service.name);
            self.at(place, self.service(service))?;
            if let Some(prev) = i.checked_sub(1).and_then(|p| services.get(p)) {
                self.at(
                    place,
                    strings::sorted_after("service", &prev.name, &service.name),
                )?;
            }
        }
        Ok(())
    }

    fn service(&self, service: &Service) -> Check {
        within("name", strings::dns_label(&service.name))?;
        if service.port == 0 {
            return Err("port is 0".to_owned());
        }
        within("endpoints", parts::endpoints(&service.endpoints))?;
        if let Balance::RingHash { header } = &service.balance {
            within("ring hash", strings::header_name(header))?;
        }
        if let Some(health) = &service.health {
            let check = strings::absolute_path(&health.path)
                .and_then(|()| positive("interval", health.interval_ms))
                .and_then(|()| positive("timeout", health.timeout_ms))
                .and_then(|()| positive("unhealthy threshold", health.unhealthy_after.into()))
                .and_then(|()| positive("healthy threshold", health.healthy_after.into()));
            within("health check", check)?;
        }
        if let Some(outlier) = &service.outlier {
            let check = positive("consecutive 5xx", outlier.consecutive_5xx.into())
                .and_then(|()| positive("ejection time", outlier.eject_for_ms))
                .and_then(|()| ppm("max ejected", outlier.max_ejected));
            within("outlier detection", check)?;
        }
        within(
            "limits",
            positive("max requests", service.limits.max_requests.into()),
        )?;
        self.filter_refs(&service.filters)?;
        self.loc(service.loc)
    }

    fn routes(&self) -> Result<(), ValidationError> {
        let routes = &self.table.routes;
        for (i, route) in routes.iter().enumerate() {
            let place = || item("route", i, &route.name);
            self.at(place, self.route(route))?;
            if let Some(prev) = i.checked_sub(1).and_then(|p| routes.get(p)) {
                self.at(place, self.route_order(prev, route))?;
            }
        }
        Ok(())
    }

    /// Routes are grouped by service (ascending) and sorted by name within it, so a name
    /// appears once per service.
    fn route_order(&self, prev: &Route, route: &Route) -> Check {
        let service = self.service_name(route.service);
        match (prev.service, &prev.name).cmp(&(route.service, &route.name)) {
            Ordering::Less => Ok(()),
            Ordering::Equal => Err(format!(
                "service {service} has two routes named {}",
                strings::quote(&route.name)
            )),
            Ordering::Greater if prev.service != route.service => Err(format!(
                "routes are not grouped by service: a route of service {service} comes after \
                 one of service {}",
                self.service_name(prev.service)
            )),
            Ordering::Greater => Err(format!(
                "routes of service {service} are not sorted by name: {} comes after {}",
                strings::quote(&route.name),
                strings::quote(&prev.name)
            )),
        }
    }

    /// A service's quoted name, for messages; only call with an index already checked.
    fn service_name(&self, id: u32) -> String {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.table.services.get(i))
            .map_or_else(|| format!("#{id}"), |s| strings::quote(&s.name))
    }

    fn route(&self, route: &Route) -> Check {
        within("name", strings::dns_label(&route.name))?;
        self.service_ref("service", route.service)?;
        within("match", parts::request_match(&route.matcher))?;
        self.targets(route)?;
        if let Some(timeout) = route.timeout_ms {
            positive("timeout", timeout)?;
        }
        if let Some(idle) = route.idle_timeout_ms {
            positive("idle timeout", idle)?;
        }
        if let Some(stream) = route.stream_timeout_ms {
            positive("stream timeout", stream)?;
        }
        if let Some(retry) = &route.retry {
            within("retry", parts::retry_policy(retry))?;
        }
        within(
            "request headers",
            parts::header_edits(&route.request_headers),
        )?;
        within(
            "response headers",
            parts::header_edits(&route.response_headers),
        )?;
        self.filter_refs(&route.filters)?;
        self.loc(route.loc)
    }

    fn targets(&self, route: &Route) -> Check {
        if route.targets.is_empty() {
            return Err("no targets".to_owned());
        }
        let mut sum = 0_u64;
        for (i, target) in route.targets.iter().enumerate() {
            let check = self
                .service_ref("service", target.service)
                .and_then(|()| ppm("weight", target.weight));
            within(format_args!("target #{i}"), check)?;
            sum += u64::from(target.weight.0);
        }
        if sum != u64::from(Ppm::FULL.0) {
            return Err(format!(
                "target weights sum to {sum} ppm, not 100% ({} ppm)",
                Ppm::FULL.0
            ));
        }
        Ok(())
    }

    fn authorizations(&self) -> Result<(), ValidationError> {
        for (i, authz) in self.table.authorizations.iter().enumerate() {
            let place = || format!("authorization #{i}");
            self.at(place, self.service_ref("service", authz.service))?;
            let place = || {
                format!(
                    "authorization #{i} (service {})",
                    self.service_name(authz.service)
                )
            };
            if let Some(prev) = i
                .checked_sub(1)
                .and_then(|p| self.table.authorizations.get(p))
            {
                self.at(
                    place,
                    self.by_service("authorization", prev.service, authz.service),
                )?;
            }
            for (r, rule) in authz.rules.iter().enumerate() {
                self.at(place, within(format_args!("rule #{r}"), self.rule(rule)))?;
            }
            self.at(place, within("default", self.loc(authz.default_loc)))?;
            self.at(place, self.loc(authz.loc))?;
        }
        Ok(())
    }

    /// Per-service blocks are sorted by service, at most one each.
    fn by_service(&self, kind: &str, prev: u32, service: u32) -> Check {
        match prev.cmp(&service) {
            Ordering::Less => Ok(()),
            Ordering::Equal => Err(format!("second {kind} for this service")),
            Ordering::Greater => Err(format!(
                "{kind}s are not sorted by service: service {} comes after service {}",
                self.service_name(service),
                self.service_name(prev)
            )),
        }
    }

    fn rule(&self, rule: &AuthzRule) -> Check {
        for (p, principal) in rule.from.iter().enumerate() {
            if let Principal::Service(id) = principal {
                within(
                    format_args!("principal #{p}"),
                    self.service_ref("service", *id),
                )?;
            }
        }
        within("match", parts::request_match(&rule.to))?;
        self.loc(rule.loc)
    }

    fn observes(&self) -> Result<(), ValidationError> {
        for (i, observe) in self.table.observes.iter().enumerate() {
            let place = || format!("observe #{i}");
            self.at(place, self.service_ref("service", observe.service))?;
            let place = || {
                format!(
                    "observe #{i} (service {})",
                    self.service_name(observe.service)
                )
            };
            if let Some(prev) = i.checked_sub(1).and_then(|p| self.table.observes.get(p)) {
                self.at(
                    place,
                    self.by_service("observe block", prev.service, observe.service),
                )?;
            }
            if let Some(log) = &observe.access_log {
                self.at(place, within("access log", ppm("sample", log.sample)))?;
            }
            if let Some(sample) = observe.trace_sample {
                self.at(place, ppm("trace sample", sample))?;
            }
            self.at(place, parts::ascending_buckets(&observe.latency_buckets_ms))?;
            self.at(place, self.loc(observe.loc))?;
        }
        Ok(())
    }

    fn filters(&self) -> Result<(), ValidationError> {
        let filters = &self.table.filters;
        for (i, filter) in filters.iter().enumerate() {
            let place = || item("filter", i, &filter.name);
            let check = within("name", strings::dns_label(&filter.name))
                .and_then(|()| within("module", strings::file_name(&filter.module)))
                .and_then(|()| within("config", strings::json_object(&filter.config_json)))
                .and_then(|()| positive("memory limit", filter.memory_bytes))
                .and_then(|()| positive("time limit", filter.time_limit_ms))
                .and_then(|()| self.loc(filter.loc));
            self.at(place, check)?;
            if let Some(prev) = i.checked_sub(1).and_then(|p| filters.get(p)) {
                self.at(
                    place,
                    strings::sorted_after("filter", &prev.name, &filter.name),
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
