//! Host-wide tables shared by every instance of a filter: metrics, shared data and shared
//! queues, each scoped by filter name so one filter cannot see another's.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use crate::{FilterMetric, MetricKind};

/// One metric: atomics so that increments from every worker never take a lock.
pub(crate) struct Metric {
    pub(crate) filter: Arc<str>,
    pub(crate) name: String,
    pub(crate) kind: MetricKind,
    pub(crate) value: AtomicI64,
    pub(crate) sum: AtomicU64,
}

impl Metric {
    pub(crate) fn snapshot(&self) -> FilterMetric {
        FilterMetric {
            filter: self.filter.clone(),
            name: self.name.clone(),
            kind: self.kind,
            value: self.value.load(Ordering::Relaxed),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

fn kind_index(kind: MetricKind) -> u8 {
    match kind {
        MetricKind::Counter => 0,
        MetricKind::Gauge => 1,
        MetricKind::Histogram => 2,
    }
}

/// Every metric, by id (index + 1, so 0 is never an id).
#[derive(Default)]
pub(crate) struct MetricTable {
    ids: HashMap<(Arc<str>, String, u8), u32>,
    list: Vec<Arc<Metric>>,
}

/// Metrics any one host keeps at most: a filter defining metrics per request (a bug) must
/// not grow the proxy without bound.
const MAX_METRICS: usize = 10_000;

impl MetricTable {
    /// The id of (filter, name, kind), defining it on first use.
    pub(crate) fn define(
        &mut self,
        filter: &Arc<str>,
        kind: MetricKind,
        name: String,
    ) -> Option<u32> {
        let key = (filter.clone(), name, kind_index(kind));
        if let Some(id) = self.ids.get(&key) {
            return Some(*id);
        }
        if self.list.len() >= MAX_METRICS {
            return None;
        }
        let id = u32::try_from(self.list.len() + 1).ok()?;
        self.list.push(Arc::new(Metric {
            filter: filter.clone(),
            name: key.1.clone(),
            kind,
            value: AtomicI64::new(0),
            sum: AtomicU64::new(0),
        }));
        self.ids.insert(key, id);
        Some(id)
    }

    /// Metric `id` if `filter` defined it.
    pub(crate) fn get(&self, filter: &str, id: u32) -> Option<Arc<Metric>> {
        let m = self.list.get((id as usize).checked_sub(1)?)?;
        (&*m.filter == filter).then(|| m.clone())
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<Metric>> {
        self.list.iter()
    }
}

/// Shared data: (filter, key) → (value, CAS version).
pub(crate) type SharedData = HashMap<(Arc<str>, Vec<u8>), (Vec<u8>, u32)>;

/// Shared queues, by id (index + 1).
#[derive(Default)]
pub(crate) struct QueueTable {
    ids: HashMap<(Arc<str>, String), u32>,
    queues: Vec<(Arc<str>, VecDeque<Vec<u8>>)>,
}

/// Items one queue holds at most; the oldest go first beyond it.
const MAX_QUEUED: usize = 10_000;

impl QueueTable {
    pub(crate) fn register(&mut self, filter: &Arc<str>, name: String) -> Option<u32> {
        if let Some(id) = self.ids.get(&(filter.clone(), name.clone())) {
            return Some(*id);
        }
        if self.queues.len() >= MAX_METRICS {
            return None;
        }
        let id = u32::try_from(self.queues.len() + 1).ok()?;
        self.queues.push((filter.clone(), VecDeque::new()));
        self.ids.insert((filter.clone(), name), id);
        Some(id)
    }

    pub(crate) fn resolve(&self, filter: &Arc<str>, name: String) -> Option<u32> {
        self.ids.get(&(filter.clone(), name)).copied()
    }

    pub(crate) fn queue(&mut self, filter: &str, id: u32) -> Option<&mut VecDeque<Vec<u8>>> {
        let (owner, q) = self.queues.get_mut((id as usize).checked_sub(1)?)?;
        (&**owner == filter).then_some(q)
    }

    pub(crate) fn push(q: &mut VecDeque<Vec<u8>>, item: Vec<u8>) {
        if q.len() >= MAX_QUEUED {
            q.pop_front();
        }
        q.push_back(item);
    }
}
