//! `observe` blocks: access logging, trace sampling and latency histogram buckets.

use mesh_table::{AccessLog, AccessLogFormat, Observe, Ppm};

use super::Ctx;
use crate::syntax::ast::{Decl, DeclKind};

impl Ctx<'_> {
    /// Every observe block, ordered by service.
    pub(super) fn observes(&mut self, decls: &[&Decl]) -> Vec<Observe> {
        let mut seen = std::collections::BTreeSet::new();
        let mut observes = Vec::new();
        for decl in decls.iter().filter(|d| d.kind == DeclKind::Observe) {
            let Some(service) = self.resolve_service(&decl.name) else {
                continue;
            };
            if seen.insert(service) {
                observes.push(self.observe(decl, service));
            }
        }
        observes.sort_by_key(|o| o.service);
        observes
    }

    fn observe(&mut self, decl: &Decl, service: u32) -> Observe {
        let fields = self.fields(&decl.body, "observe", &[]);
        let access_log = fields.get("access_log").and_then(|c| {
            let format = self
                .arg(c, 0)
                .and_then(|v| self.choice(v, &["json"], "an access-log format"))?;
            let sample = match c.args.get(2) {
                Some(v) => self.percent(v)?,
                None => Ppm::FULL,
            };
            let _ = format;
            Some(AccessLog {
                format: AccessLogFormat::Json,
                sample,
            })
        });
        let trace_sample = fields
            .get("trace")
            .and_then(|c| c.args.get(1))
            .and_then(|v| {
                let v = v.clone();
                self.percent(&v)
            });
        let mut latency_buckets_ms = Vec::new();
        if let Some(value) = fields
            .get("latency_buckets")
            .and_then(|c| self.arg(c, 0))
            .cloned()
        {
            let items = self.list(&value).to_vec();
            if items.is_empty() {
                self.out_of_range(
                    &value,
                    "at least one bucket",
                    Some("remove `latency_buckets` to use the default buckets".into()),
                );
            }
            for item in &items {
                let Some(ms) = self.positive_duration(item) else {
                    continue;
                };
                if latency_buckets_ms.last().is_some_and(|last| *last >= ms) {
                    self.out_of_range(
                        item,
                        "a bound above the previous one",
                        Some("list bucket bounds in ascending order, each once".into()),
                    );
                    continue;
                }
                latency_buckets_ms.push(ms);
            }
        }
        Observe {
            service,
            access_log,
            trace_sample,
            latency_buckets_ms,
            loc: self.table_loc(&decl.name.loc),
        }
    }
}
