//! Metrics: `proxy_define_metric` and friends over the host's metric table.

use std::sync::atomic::Ordering;

use wasmtime::{Caller, Linker};

use super::{code, read_str, status, write};
use crate::state::HostState;
use crate::MetricKind;

type C<'a> = Caller<'a, HostState>;

fn metric(c: &C<'_>, id: i32) -> Option<std::sync::Arc<crate::tables::Metric>> {
    let state = c.data();
    let table = state.host.metrics.read().unwrap_or_else(|e| e.into_inner());
    table.get(&state.filter, id as u32)
}

pub(super) fn define(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: C<'_>, kind: i32, ptr: i32, len: i32, ret: i32| {
            code((|| {
                let kind = match kind {
                    0 => MetricKind::Counter,
                    1 => MetricKind::Gauge,
                    2 => MetricKind::Histogram,
                    _ => return Err(status::BAD_ARGUMENT),
                };
                let name = read_str(&c, ptr, len)?;
                let id = {
                    let state = c.data();
                    let mut table = state
                        .host
                        .metrics
                        .write()
                        .unwrap_or_else(|e| e.into_inner());
                    table.define(&state.filter, kind, name)
                }
                .ok_or(status::INTERNAL_FAILURE)?;
                write(&mut c, ret, &id.to_le_bytes())?;
                Ok(status::OK)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |c: C<'_>, id: i32, offset: i64| {
            let Some(m) = metric(&c, id) else {
                return status::NOT_FOUND;
            };
            match m.kind {
                MetricKind::Counter if offset < 0 => status::BAD_ARGUMENT,
                MetricKind::Counter | MetricKind::Gauge => {
                    m.value.fetch_add(offset, Ordering::Relaxed);
                    status::OK
                }
                MetricKind::Histogram => status::BAD_ARGUMENT,
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |c: C<'_>, id: i32, value: i64| {
            let Some(m) = metric(&c, id) else {
                return status::NOT_FOUND;
            };
            match m.kind {
                MetricKind::Counter | MetricKind::Gauge => m.value.store(value, Ordering::Relaxed),
                MetricKind::Histogram => {
                    m.value.fetch_add(1, Ordering::Relaxed);
                    m.sum.fetch_add(value as u64, Ordering::Relaxed);
                }
            }
            status::OK
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: C<'_>, id: i32, ret: i32| {
            let Some(m) = metric(&c, id) else {
                return status::NOT_FOUND;
            };
            let v = m.value.load(Ordering::Relaxed) as u64;
            code(write(&mut c, ret, &v.to_le_bytes()).map(|()| status::OK))
        },
    )?;
    Ok(())
}
