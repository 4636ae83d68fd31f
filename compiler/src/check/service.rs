//! `service` declarations: port, protocol, endpoints, balancing, health, outliers, mTLS.

use mesh_table::{
    Balance, Endpoints, HealthCheck, Limits, MtlsMode, Outlier, Ppm, Protocol, Service,
};

use super::{Ctx, Sources};
use crate::diag::{Code, Diagnostic};
use crate::source::Spanned;
use crate::syntax::ast::{Clause, Decl, DeclKind, Value};

impl Ctx<'_> {
    /// Every service in id (name) order; a duplicate declaration is skipped (already reported).
    pub(super) fn services(&mut self, decls: &[&Decl], sources: &mut Sources) -> Vec<Service> {
        let mut services: Vec<Option<(Service, crate::source::Loc)>> =
            vec![None; self.names.services.len()];
        for decl in decls.iter().filter(|d| d.kind == DeclKind::Service) {
            let Some((id, first)) = self.names.services.get(&decl.name.node).cloned() else {
                continue;
            };
            if first != decl.name.loc {
                continue;
            }
            let service = self.service(decl);
            services[id as usize] = Some((service, decl.name.loc.clone()));
        }
        services
            .into_iter()
            .flatten()
            .map(|(service, loc)| {
                sources.services.push(loc);
                service
            })
            .collect()
    }

    fn service(&mut self, decl: &Decl) -> Service {
        let fields = self.fields(&decl.body, "service", &[]);
        let port = match fields.get("port") {
            Some(c) => self
                .arg(c, 0)
                .and_then(|v| self.integer(v, 1, 65535))
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(1),
            None => {
                self.missing(&decl.name.loc, "service", "port", "port 8080");
                1
            }
        };
        let protocol = fields
            .get("protocol")
            .and_then(|c| self.arg(c, 0))
            .and_then(|v| self.choice(v, &["http1", "http2", "grpc"], "a protocol"))
            .map_or(Protocol::Http1, |p| match p {
                "http2" => Protocol::Http2,
                "grpc" => Protocol::Grpc,
                _ => Protocol::Http1,
            });
        let endpoints = self.endpoints(fields.get("endpoints"), fields.get("discovery"));
        let balance = fields
            .get("balance")
            .map_or(Balance::RoundRobin, |c| self.balance(c));
        let health = fields.get("health").map(|c| self.health(c));
        let outlier = fields.get("outlier").map(|c| self.outlier(c));
        let mtls = fields
            .get("mtls")
            .and_then(|c| self.arg(c, 0))
            .and_then(|v| self.choice(v, &["strict", "permissive"], "an mTLS mode"))
            .map_or(MtlsMode::Strict, |m| {
                if m == "permissive" {
                    MtlsMode::Permissive
                } else {
                    MtlsMode::Strict
                }
            });
        let filters = fields
            .get("filters")
            .map(|c| self.filter_list(c))
            .unwrap_or_default();
        let limits = fields
            .get("limits")
            .map_or(Limits::DEFAULT, |c| self.limits(c));
        Service {
            name: decl.name.node.clone(),
            port,
            protocol,
            endpoints,
            balance,
            health,
            outlier,
            mtls,
            filters,
            limits,
            loc: self.table_loc(&decl.name.loc),
        }
    }

    /// Resolves a `filters [a, b]` clause.
    pub(super) fn filter_list(&mut self, clause: &Clause) -> Vec<u32> {
        let Some(value) = self.arg(clause, 0) else {
            return Vec::new();
        };
        let mut ids = Vec::new();
        for item in self.list(value).to_vec() {
            let Value::Word(name) = &item.node else {
                self.push(
                    Diagnostic::new(
                        Code::TypeMismatch,
                        &item.loc,
                        format!("expected a filter name, found {}", item.node.describe()),
                    )
                    .label("expected a filter name")
                    .help("name filters without quotes: `filters [ratelimit]`"),
                );
                continue;
            };
            let ident = Spanned {
                node: name.clone(),
                loc: item.loc.clone(),
            };
            if let Some(id) = self.resolve_filter(&ident) {
                if ids.contains(&id) {
                    self.push(
                        Diagnostic::new(
                            Code::DuplicateField,
                            &item.loc,
                            format!("the filter `{name}` is listed twice"),
                        )
                        .label("listed again")
                        .help("a filter runs once per request: list it once"),
                    );
                } else {
                    ids.push(id);
                }
            }
        }
        ids
    }

    fn endpoints(&mut self, endpoints: Option<&Clause>, discovery: Option<&Clause>) -> Endpoints {
        if let (Some(e), Some(d)) = (endpoints, discovery) {
            self.push(
                Diagnostic::new(
                    Code::ConflictingFields,
                    &d.keyword.loc,
                    "a service has either `endpoints` or `discovery`, not both",
                )
                .label("discovery given here")
                .with_label(&e.keyword.loc, "static endpoints given here")
                .help("keep the static list or the DNS discovery"),
            );
        }
        if let Some(clause) = endpoints {
            let Some(value) = self.arg(clause, 0) else {
                return Endpoints::Registry;
            };
            let items = self.list(value).to_vec();
            if items.is_empty() {
                self.out_of_range(
                    value,
                    "at least one address",
                    Some(
                        "remove `endpoints` to take endpoints from the control plane's registry"
                            .into(),
                    ),
                );
            }
            let mut addresses = Vec::new();
            for item in &items {
                if let Some(address) = self.string(item).map(str::to_string) {
                    if self.address(item, &address).is_some() {
                        if addresses.contains(&address) {
                            self.push(
                                Diagnostic::new(
                                    Code::DuplicateField,
                                    &item.loc,
                                    format!("`{address}` is listed twice"),
                                )
                                .label("listed again")
                                .help("list each endpoint once"),
                            );
                        } else {
                            addresses.push(address);
                        }
                    }
                }
            }
            return Endpoints::Static(addresses);
        }
        if let Some(clause) = discovery {
            let (Some(kind), Some(target)) = (clause.args.first(), clause.args.get(1)) else {
                return Endpoints::Registry;
            };
            if self.choice(kind, &["dns"], "a discovery kind").is_none() {
                return Endpoints::Registry;
            }
            if let Some(text) = self.string(target).map(str::to_string) {
                if let Some((host, port)) = self.address(target, &text) {
                    return Endpoints::Dns { host, port };
                }
            }
        }
        Endpoints::Registry
    }

    /// Checks `host:port` (host a name, an IPv4 address or `[IPv6]`).
    pub(super) fn address(&mut self, value: &Spanned<Value>, text: &str) -> Option<(String, u16)> {
        match parse_address(text) {
            Ok(address) => Some(address),
            Err(problem) => {
                self.push(
                    Diagnostic::new(Code::InvalidAddress, &value.loc, format!("`{text}` is not a valid address: {problem}"))
                        .label("expected \"host:port\"")
                        .help("write an address as `\"127.0.0.1:15206\"`, `\"[::1]:15206\"` or `\"payments.internal:9000\"`"),
                );
                None
            }
        }
    }

    fn balance(&mut self, clause: &Clause) -> Balance {
        let Some(value) = self.arg(clause, 0) else {
            return Balance::RoundRobin;
        };
        let header_value = clause.args.get(2);
        let algorithm = self.choice(
            value,
            &[
                "round_robin",
                "least_request",
                "ewma",
                "random",
                "ring_hash",
            ],
            "a balancer",
        );
        match algorithm {
            Some("ring_hash") => match header_value.and_then(|h| self.header_name(h)) {
                Some(header) => Balance::RingHash { header },
                None => {
                    if header_value.is_none() {
                        self.push(
                            Diagnostic::new(
                                Code::MissingField,
                                &value.loc,
                                "`ring_hash` needs the header to hash",
                            )
                            .label("hash on what?")
                            .help("write `balance ring_hash header \"x-user\"`"),
                        );
                    }
                    Balance::RoundRobin
                }
            },
            other => {
                if let Some(h) = header_value {
                    self.push(
                        Diagnostic::new(
                            Code::ConflictingFields,
                            &h.loc,
                            "only `ring_hash` hashes on a header",
                        )
                        .label("ignored by this balancer")
                        .help("remove `header ...` or use `ring_hash`"),
                    );
                }
                match other {
                    Some("least_request") => Balance::LeastRequest,
                    Some("ewma") => Balance::Ewma,
                    Some("random") => Balance::Random,
                    _ => Balance::RoundRobin,
                }
            }
        }
    }

    fn health(&mut self, clause: &Clause) -> HealthCheck {
        let mut health = HealthCheck {
            path: "/healthz".into(),
            interval_ms: 10_000,
            timeout_ms: 1_000,
            unhealthy_after: 3,
            healthy_after: 2,
        };
        let Some(block) = &clause.block else {
            return health;
        };
        let fields = self.fields(block, "health", &[]);
        if let Some(c) = fields.get("path") {
            match c.args.as_slice() {
                [v] => {
                    if let Some(p) = self.string(v) {
                        if p.starts_with('/')
                            && !p.chars().any(|c| c.is_whitespace() || c.is_control())
                        {
                            health.path = p.to_string();
                        } else {
                            self.push(
                                Diagnostic::new(
                                    Code::InvalidPath,
                                    &v.loc,
                                    format!("`{p}` is not a usable health check path"),
                                )
                                .label("expected an absolute path without spaces")
                                .help(format!(
                                    "write `\"/{}\"`",
                                    p.trim_start_matches('/')
                                        .replace(char::is_whitespace, "%20")
                                )),
                            );
                        }
                    }
                }
                [op, ..] => self.push(
                    Diagnostic::new(
                        Code::TypeMismatch,
                        &op.loc,
                        "a health check probes one path: it takes a plain string",
                    )
                    .label("no matcher here")
                    .help("write `path \"/healthz\"`"),
                ),
                [] => {}
            }
        }
        let interval = fields.get("interval").and_then(|c| self.arg(c, 0)).cloned();
        if let Some(v) = &interval {
            health.interval_ms = self.positive_duration(v).unwrap_or(health.interval_ms);
        }
        if let Some(v) = fields.get("timeout").and_then(|c| self.arg(c, 0)).cloned() {
            health.timeout_ms = self.positive_duration(&v).unwrap_or(health.timeout_ms);
            if health.timeout_ms > health.interval_ms {
                self.out_of_range(&v, &format!("at most the interval ({} ms)", health.interval_ms), Some("a probe must finish before the next one starts: shorten the timeout or lengthen the interval".into()));
            }
        }
        if let Some(v) = fields
            .get("unhealthy_after")
            .and_then(|c| self.arg(c, 0))
            .cloned()
        {
            health.unhealthy_after = self
                .integer(&v, 1, 1000)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(3);
        }
        if let Some(v) = fields
            .get("healthy_after")
            .and_then(|c| self.arg(c, 0))
            .cloned()
        {
            health.healthy_after = self
                .integer(&v, 1, 1000)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(2);
        }
        health
    }

    /// `limits { max_requests N  max_pending N }`: circuit breaking in the callers'
    /// sidecars; an omitted clause keeps its default (Envoy's, 1024).
    fn limits(&mut self, clause: &Clause) -> Limits {
        let mut limits = Limits::DEFAULT;
        let Some(block) = &clause.block else {
            return limits;
        };
        let fields = self.fields(block, "limits", &[]);
        if let Some(v) = fields
            .get("max_requests")
            .and_then(|c| self.arg(c, 0))
            .cloned()
        {
            limits.max_requests = self
                .integer(&v, 1, 1_000_000)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(Limits::DEFAULT.max_requests);
        }
        if let Some(v) = fields
            .get("max_pending")
            .and_then(|c| self.arg(c, 0))
            .cloned()
        {
            limits.max_pending = self
                .integer(&v, 0, 1_000_000)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(Limits::DEFAULT.max_pending);
        }
        limits
    }

    fn outlier(&mut self, clause: &Clause) -> Outlier {
        let mut outlier = Outlier {
            consecutive_5xx: 5,
            eject_for_ms: 30_000,
            max_ejected: Ppm(100_000),
        };
        let Some(block) = &clause.block else {
            return outlier;
        };
        let fields = self.fields(block, "outlier", &[]);
        if let Some(v) = fields
            .get("consecutive_5xx")
            .and_then(|c| self.arg(c, 0))
            .cloned()
        {
            outlier.consecutive_5xx = self
                .integer(&v, 1, 1000)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(5);
        }
        if let Some(v) = fields
            .get("eject_for")
            .and_then(|c| self.arg(c, 0))
            .cloned()
        {
            outlier.eject_for_ms = self.positive_duration(&v).unwrap_or(30_000);
        }
        if let Some(v) = fields
            .get("max_ejected")
            .and_then(|c| self.arg(c, 0))
            .cloned()
        {
            outlier.max_ejected = self.percent(&v).unwrap_or(outlier.max_ejected);
        }
        outlier
    }

    /// A duration that must be more than zero.
    pub(super) fn positive_duration(&mut self, value: &Spanned<Value>) -> Option<u64> {
        let ms = self.duration_ms(value)?;
        if ms == 0 {
            self.out_of_range(value, "a duration above zero", None);
            return None;
        }
        Some(ms)
    }
}

/// Splits `host:port`, saying what is wrong when it is not one.
fn parse_address(text: &str) -> Result<(String, u16), String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| "it has no port".to_string())?;
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => host.parse::<std::net::Ipv4Addr>().is_ok() || is_host_name(host),
    };
    if !host_ok {
        return Err(format!("`{host}` is not a host name or IP address"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok((host.to_string(), p)),
        _ => Err(format!("`{port}` is not a port from 1 to 65535")),
    }
}

/// A DNS host name: labels of letters, digits and `-`, separated by dots.
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}
