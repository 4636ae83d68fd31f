//! `route` declarations: matchers, targets and splits, timeouts, retries and header edits.

use mesh_table::{HeaderEdit, Ppm, RetryOn, RetryPolicy, Route, WeightedTarget};

use super::{Ctx, RouteSources, Sources};
use crate::diag::{Code, Diagnostic};
use crate::source::Spanned;
use crate::syntax::ast::{Clause, Decl, DeclKind, Value};

/// gRPC status names accepted in `retry { on [...] }`, with their codes.
const GRPC_CODES: &[(&str, u8)] = &[
    ("cancelled", 1),
    ("deadline_exceeded", 4),
    ("resource_exhausted", 8),
    ("internal", 13),
    ("unavailable", 14),
];

impl Ctx<'_> {
    /// Every route, ordered by service then name, with its sources.
    pub(super) fn routes(&mut self, decls: &[&Decl], sources: &mut Sources) -> Vec<Route> {
        let mut routes: Vec<(Route, RouteSources)> = decls
            .iter()
            .filter(|d| d.kind == DeclKind::Route)
            .filter_map(|d| self.route(d))
            .collect();
        routes.sort_by(|(a, _), (b, _)| (a.service, &a.name).cmp(&(b.service, &b.name)));
        routes.dedup_by(|(a, _), (b, _)| a.name == b.name && a.service == b.service);
        routes
            .into_iter()
            .map(|(route, src)| {
                sources.routes.push(src);
                route
            })
            .collect()
    }

    fn route(&mut self, decl: &Decl) -> Option<(Route, RouteSources)> {
        let fields = self.fields(&decl.body, "route", &[]);
        let on = decl.on.as_ref()?;
        let service = self.resolve_service(on);
        let matcher_clause = fields.get("match");
        let (matcher, match_sources) = match matcher_clause.and_then(|c| c.block.as_ref()) {
            Some(block) => {
                let known = self.fields(block, "match", &["header"]);
                self.request_match(known.all(), "route's match")
            }
            None => Default::default(),
        };
        let targets = self.targets(fields.get("to"), fields.get("split"), service);
        let timeout = fields.get("timeout").and_then(|c| self.arg(c, 0)).cloned();
        let timeout_ms = timeout.as_ref().and_then(|v| self.positive_duration(v));
        // Body timeouts: without a byte either way (`idle_timeout`), and the whole stream.
        let idle_timeout_ms = fields
            .get("idle_timeout")
            .and_then(|c| self.arg(c, 0))
            .cloned()
            .and_then(|v| self.positive_duration(&v));
        let stream_timeout_ms = fields
            .get("stream_timeout")
            .and_then(|c| self.arg(c, 0))
            .cloned()
            .and_then(|v| {
                let ms = self.positive_duration(&v)?;
                match timeout_ms {
                    Some(head) if ms < head => {
                        self.out_of_range(
                            &v,
                            &format!("at least the route's timeout ({head} ms)"),
                            Some(
                                "the stream includes the response head: lengthen `stream_timeout` or shorten `timeout`"
                                    .into(),
                            ),
                        );
                        None
                    }
                    _ => Some(ms),
                }
            });
        let retry_clause = fields.get("retry");
        let (retry, retry_sources) = match retry_clause {
            Some(c) => {
                let (policy, src) = self.retry(c);
                (Some(policy), src)
            }
            None => (None, RetrySources::default()),
        };
        let request_headers = fields
            .get("request_headers")
            .map(|c| self.header_edits(c, "request_headers"))
            .unwrap_or_default();
        let response_headers = fields
            .get("response_headers")
            .map(|c| self.header_edits(c, "response_headers"))
            .unwrap_or_default();
        let filters = fields
            .get("filters")
            .map(|c| self.filter_list(c))
            .unwrap_or_default();
        let route = Route {
            name: decl.name.node.clone(),
            service: service.unwrap_or(0),
            matcher,
            targets,
            timeout_ms,
            idle_timeout_ms,
            stream_timeout_ms,
            retry,
            request_headers,
            response_headers,
            filters,
            loc: self.table_loc(&decl.name.loc),
        };
        let sources = RouteSources {
            name: decl.name.loc.clone(),
            matcher: matcher_clause.map(|c| c.loc.clone()),
            methods: match_sources.methods,
            timeout: timeout.map(|v| v.loc),
            retry: retry_clause.map(|c| c.loc.clone()),
            retry_on: retry_sources.on,
            attempts: retry_sources.attempts,
            per_try_timeout: retry_sources.per_try_timeout,
        };
        // A route on an unknown service was reported; it has no place in the table.
        service.map(|_| (route, sources))
    }

    /// `to s` or `split { a 90%  b 10% }`; neither means the route's own service.
    fn targets(
        &mut self,
        to: Option<&Clause>,
        split: Option<&Clause>,
        own: Option<u32>,
    ) -> Vec<WeightedTarget> {
        if let (Some(t), Some(s)) = (to, split) {
            self.push(
                Diagnostic::new(
                    Code::ConflictingFields,
                    &s.keyword.loc,
                    "a route has either `to` or `split`, not both",
                )
                .label("split given here")
                .with_label(&t.keyword.loc, "`to` given here")
                .help("use `split` alone, with a weight for every target"),
            );
            return Vec::new();
        }
        if let Some(clause) = to {
            let Some(value) = self.arg(clause, 0) else {
                return Vec::new();
            };
            let Some(name) = self.service_name(value) else {
                return Vec::new();
            };
            return self
                .resolve_service(&name)
                .map(|service| {
                    vec![WeightedTarget {
                        service,
                        weight: Ppm::FULL,
                    }]
                })
                .unwrap_or_default();
        }
        if let Some(clause) = split {
            return self.split(clause);
        }
        own.map(|service| {
            vec![WeightedTarget {
                service,
                weight: Ppm::FULL,
            }]
        })
        .unwrap_or_default()
    }

    fn service_name(&mut self, value: &Spanned<Value>) -> Option<Spanned<String>> {
        match &value.node {
            Value::Word(w) => Some(Spanned {
                node: w.clone(),
                loc: value.loc.clone(),
            }),
            other => {
                let help = match other {
                    Value::Str(s) => format!("name services without quotes: `{s}`"),
                    _ => "write a service name, as in `to payments`".to_string(),
                };
                self.push(
                    Diagnostic::new(
                        Code::TypeMismatch,
                        &value.loc,
                        format!("expected a service name, found {}", other.describe()),
                    )
                    .label("expected a service name")
                    .help(help),
                );
                None
            }
        }
    }

    fn split(&mut self, clause: &Clause) -> Vec<WeightedTarget> {
        let Some(block) = &clause.block else {
            return Vec::new();
        };
        let mut targets: Vec<WeightedTarget> = Vec::new();
        let mut total: u64 = 0;
        let mut complete = true;
        for entry in &block.clauses {
            let service = self.resolve_service(&entry.keyword);
            let weight = entry.args.first().and_then(|v| self.percent(v));
            let (Some(service), Some(weight)) = (service, weight) else {
                complete = false;
                continue;
            };
            if targets.iter().any(|t| t.service == service) {
                self.push(
                    Diagnostic::new(
                        Code::DuplicateField,
                        &entry.keyword.loc,
                        format!("`{}` appears twice in this split", entry.keyword.node),
                    )
                    .label("listed again")
                    .help("give each target one weight"),
                );
                complete = false;
                continue;
            }
            total += u64::from(weight.0);
            targets.push(WeightedTarget { service, weight });
        }
        if block.clauses.is_empty() {
            self.push(
                Diagnostic::new(Code::SplitSum, &clause.loc, "this split has no targets")
                    .label("empty split")
                    .help("list targets with weights that sum to 100%, as in `split { a 90%  b 10% }`"),
            );
        } else if complete && total != u64::from(Ppm::FULL.0) {
            let sum = format_percent(total);
            let missing = if total < u64::from(Ppm::FULL.0) {
                format!(
                    "add {} to one of them",
                    format_percent(u64::from(Ppm::FULL.0) - total)
                )
            } else {
                format!(
                    "remove {} from them",
                    format_percent(total - u64::from(Ppm::FULL.0))
                )
            };
            let mut d = Diagnostic::new(
                Code::SplitSum,
                &clause.keyword.loc,
                format!("split weights sum to {sum}, not 100%"),
            )
            .label(format!("weights sum to {sum}"));
            for entry in &block.clauses {
                if let Some(w) = entry.args.first() {
                    d = d.with_label(&w.loc, format!("`{}`", entry.keyword.node));
                }
            }
            self.push(d.help(missing));
        }
        targets
    }

    fn retry(&mut self, clause: &Clause) -> (RetryPolicy, RetrySources) {
        let mut policy = RetryPolicy {
            attempts: 2,
            per_try_timeout_ms: None,
            on: vec![RetryOn::ConnectFailure, RetryOn::RefusedStream],
            backoff_base_ms: 25,
            backoff_max_ms: 250,
            budget: Ppm(200_000),
            non_idempotent: false,
        };
        let mut sources = RetrySources::default();
        let Some(block) = &clause.block else {
            return (policy, sources);
        };
        let fields = self.fields(block, "retry", &[]);
        match fields.get("attempts").and_then(|c| self.arg(c, 0)).cloned() {
            Some(v) => {
                let zero = matches!(&v.node, Value::Quantity { number, unit } if number == "0" && unit.is_empty());
                policy.attempts = if zero {
                    let help = "`attempts` counts every try, the first included: `attempts 1` means no retries";
                    self.out_of_range(&v, "an integer from 1 to 10", Some(help.into()));
                    2
                } else {
                    self.integer(&v, 1, 10)
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(2)
                };
                sources.attempts = Some(v.loc);
            }
            None => self.missing(&clause.keyword.loc, "retry", "attempts", "attempts 2"),
        }
        if let Some(v) = fields
            .get("per_try_timeout")
            .and_then(|c| self.arg(c, 0))
            .cloned()
        {
            policy.per_try_timeout_ms = self.positive_duration(&v);
            sources.per_try_timeout = Some(v.loc);
        }
        if let Some(v) = fields.get("on").and_then(|c| self.arg(c, 0)).cloned() {
            policy.on = self.retry_conditions(&v);
            sources.on = Some(v.loc);
        }
        if let Some(c) = fields.get("backoff") {
            if let (Some(low), Some(high)) = (c.args.first(), c.args.get(2)) {
                let (low_ms, high_ms) = (self.duration_ms(low), self.duration_ms(high));
                if let (Some(l), Some(h)) = (low_ms, high_ms) {
                    if l > h {
                        self.out_of_range(
                            high,
                            &format!("at least the lower bound ({})", low.loc.text()),
                            Some(format!(
                                "write `backoff {} to {}`",
                                high.loc.text(),
                                low.loc.text()
                            )),
                        );
                    }
                    policy.backoff_base_ms = l;
                    policy.backoff_max_ms = h.max(l);
                }
            }
        }
        if let Some(v) = fields.get("budget").and_then(|c| self.arg(c, 0)).cloned() {
            policy.budget = self.percent(&v).unwrap_or(policy.budget);
        }
        if let Some(v) = fields
            .get("non_idempotent")
            .and_then(|c| self.arg(c, 0))
            .cloned()
        {
            policy.non_idempotent = self.boolean(&v).unwrap_or(false);
        }
        (policy, sources)
    }

    fn retry_conditions(&mut self, value: &Spanned<Value>) -> Vec<RetryOn> {
        let mut conditions = Vec::new();
        for item in self.list(value).to_vec() {
            let condition = match &item.node {
                Value::Quantity { .. } => self.status(&item).map(RetryOn::Status),
                Value::Word(w) => match w.as_str() {
                    "connect_failure" => Some(RetryOn::ConnectFailure),
                    "refused_stream" => Some(RetryOn::RefusedStream),
                    "reset" => Some(RetryOn::Reset),
                    grpc => match GRPC_CODES.iter().find(|(name, _)| *name == grpc) {
                        Some((_, code)) => Some(RetryOn::Grpc(*code)),
                        None => {
                            let mut choices = vec!["connect_failure", "refused_stream", "reset"];
                            choices.extend(GRPC_CODES.iter().map(|(n, _)| *n));
                            self.choice(&item, &choices, "a retry condition");
                            None
                        }
                    },
                },
                _ => {
                    self.push(
                        Diagnostic::new(Code::TypeMismatch, &item.loc, format!("expected a retry condition, found {}", item.node.describe()))
                            .label("expected a retry condition")
                            .help("conditions are connect_failure, refused_stream, reset, a status such as 503 or 5xx, or a gRPC status such as unavailable"),
                    );
                    None
                }
            };
            if let Some(c) = condition {
                if !conditions.contains(&c) {
                    conditions.push(c);
                }
            }
        }
        conditions
    }

    fn header_edits(&mut self, clause: &Clause, kind: &str) -> Vec<HeaderEdit> {
        let Some(block) = &clause.block else {
            return Vec::new();
        };
        let fields = self.fields(block, kind, &["set", "add", "remove"]);
        let mut edits = Vec::new();
        for edit in fields.all() {
            let Some(name) = edit.args.first().and_then(|v| self.header_name(v)) else {
                continue;
            };
            if HOP_BY_HOP.contains(&name.as_str()) {
                self.push(
                    Diagnostic::new(
                        Code::InvalidHeaderName,
                        &edit.args[0].loc,
                        format!("`{name}` is a hop-by-hop header the proxy manages"),
                    )
                    .label("cannot be edited")
                    .help("edit end-to-end headers only"),
                );
                continue;
            }
            let value = match edit.args.get(1) {
                Some(v) => match self.string(v).map(str::to_string) {
                    Some(text) if self.header_value(v, &text).is_some() => Some(text),
                    _ => continue,
                },
                None => None,
            };
            edits.push(match (edit.keyword.node.as_str(), value) {
                ("set", Some(v)) => HeaderEdit::Set(name, v),
                ("add", Some(v)) => HeaderEdit::Add(name, v),
                _ => HeaderEdit::Remove(name),
            });
        }
        edits
    }
}

/// Headers that belong to one connection (RFC 9110 §7.6.1); the proxy owns them.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// Where the pieces of a retry block were written.
#[derive(Debug, Default)]
struct RetrySources {
    on: Option<crate::source::Loc>,
    attempts: Option<crate::source::Loc>,
    per_try_timeout: Option<crate::source::Loc>,
}

/// `ppm` as a percentage for messages: `95%`, `99.5%`.
pub(super) fn format_percent(ppm: u64) -> String {
    let whole = ppm / 10_000;
    let fraction = ppm % 10_000;
    if fraction == 0 {
        format!("{whole}%")
    } else {
        format!(
            "{whole}.{}%",
            format!("{fraction:04}").trim_end_matches('0')
        )
    }
}
