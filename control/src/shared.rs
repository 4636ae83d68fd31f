//! The state every task shares: the current policy, registry, tokens, slices and the
//! channels that tell subscribers their slice may have changed.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use mesh_engine::Engine;
use mesh_identity::{Ca, TrustDomain};
use mesh_table::Table;
use serde_json::Value;
use tokio::sync::watch;

use crate::config::Config;
use crate::policy::{unix_secs, Compiled};
use crate::registry::Registry;
use crate::slices::SliceCache;
use crate::state::{save_policy, Enrollments, SavedPolicy, Tokens};
use crate::traffic::Traffic;

/// The policy being served.
#[derive(Debug)]
pub struct Current {
    /// Moves by one for every new checksum.
    pub version: u64,
    /// The whole table's checksum.
    pub checksum: String,
    /// The whole table.
    pub table: Arc<Table>,
    /// Its decision engine, for `/v1/explain`.
    pub engine: Arc<Engine>,
    /// Filter modules by SHA-256 hex.
    pub modules: Arc<HashMap<String, Bytes>>,
    /// The warnings of the compile that produced it.
    pub diagnostics: Value,
    /// When it was installed, seconds since the epoch.
    pub installed_at: u64,
}

/// The outcome of the latest compile, good or bad.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Whether it compiled.
    pub ok: bool,
    /// When, seconds since the epoch.
    pub at: u64,
    /// `watch` or `api`.
    pub source: &'static str,
    /// Its diagnostics document.
    pub diagnostics: Value,
}

/// Per-service change channels: the value only moves, subscribers compare checksums.
#[derive(Debug, Default)]
pub struct Hub {
    channels: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Hub {
    /// A receiver for changes that may affect `service`'s slice.
    pub fn subscribe(&self, service: &str) -> watch::Receiver<u64> {
        let mut channels = self.lock();
        channels
            .entry(service.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Wakes every subscriber (a new policy).
    pub fn notify_all(&self) {
        for tx in self.lock().values() {
            tx.send_modify(|v| *v += 1);
        }
    }

    /// Wakes the subscribers of the services for which `affected` says yes.
    pub fn notify_where(&self, mut affected: impl FnMut(&str) -> bool) {
        let services: Vec<(String, watch::Sender<u64>)> = self
            .lock()
            .iter()
            .filter(|(_, tx)| tx.receiver_count() > 0)
            .map(|(s, tx)| (s.clone(), tx.clone()))
            .collect();
        for (service, tx) in services {
            if affected(&service) {
                tx.send_modify(|v| *v += 1);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<u64>>> {
        self.channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Everything the servers and background tasks share.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// The mesh CA.
    pub ca: Ca,
    /// The trust domain proxies must be in.
    pub trust_domain: TrustDomain,
    /// The policy being served, if one ever compiled.
    pub policy: ArcSwapOption<Current>,
    /// The latest compile.
    pub attempt: Mutex<Option<Attempt>>,
    /// One compile-and-install at a time (the watcher and `PUT /v1/policy`).
    pub compiling: tokio::sync::Mutex<()>,
    /// Connected proxies and their endpoints.
    pub registry: Registry,
    /// Join tokens.
    pub tokens: Tokens,
    /// Which join token each issued certificate descends from.
    pub enrollments: Enrollments,
    /// Moves by one at every token revocation: open streams then check their enrollment.
    pub revocations: watch::Sender<u64>,
    /// Traffic reports.
    pub traffic: Traffic,
    /// Encoded slices.
    pub slices: SliceCache,
    /// Change notifications.
    pub hub: Hub,
    /// The end of the warm-up: start + `registry_grace`. Until then the registry is still
    /// being refilled by reconnecting proxies, so proxies that already run a table are not
    /// sent slices whose registry endpoints may be missing (docs/control.md, Registry).
    pub warm_until: Instant,
}

impl Shared {
    /// Whether the control plane is still warming up after its start.
    pub fn warming_up(&self) -> bool {
        Instant::now() < self.warm_until
    }

    /// Why a client certificate with `serial` may no longer be used here (renewal, stream,
    /// modules): the join token that enrolled it was revoked. `None` when it may, including
    /// a certificate with no enrollment (issued by the operator, not for a join token).
    pub fn revoked(&self, serial: &str) -> Option<String> {
        let enrollment = self.enrollments.of(serial)?;
        if self.tokens.is_live(&enrollment.token_id) {
            return None;
        }
        Some(format!(
            "the join token that enrolled this certificate (service `{}`, serial {serial}) was revoked",
            enrollment.service
        ))
    }

    /// Revokes the join token whose public id is `id` and tells the open streams, which end
    /// if their certificate descends from it; `Ok(false)` when there was no such token.
    pub fn revoke_token(&self, id: &str) -> Result<bool, String> {
        let revoked = self.tokens.revoke(id)?;
        if revoked {
            self.revocations.send_modify(|v| *v += 1);
        }
        Ok(revoked)
    }

    /// Records a failed compile; the served policy stays.
    pub fn reject(&self, source: &'static str, diagnostics: Value) {
        *self
            .attempt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Attempt {
            ok: false,
            at: unix_secs(SystemTime::now()),
            source,
            diagnostics,
        });
    }

    /// Installs a compiled policy. The same checksum as now changes nothing (no new
    /// version, nothing pushed); another one gets the next version and is pushed.
    pub fn install(&self, compiled: Compiled, source: &'static str) -> Arc<Current> {
        *self
            .attempt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Attempt {
            ok: true,
            at: unix_secs(SystemTime::now()),
            source,
            diagnostics: compiled.diagnostics.clone(),
        });
        let old = self.policy.load_full();
        if let Some(old) = old.as_ref().filter(|o| o.checksum == compiled.checksum) {
            return Arc::clone(old);
        }
        let version = old.as_ref().map_or(1, |o| o.version + 1);
        self.install_table(
            version,
            compiled.checksum,
            compiled.table,
            compiled.engine,
            compiled.modules,
            compiled.diagnostics,
        )
    }

    /// Makes `table` current as `version` and tells every subscriber.
    pub fn install_table(
        &self,
        version: u64,
        checksum: String,
        table: Arc<Table>,
        engine: Arc<Engine>,
        modules: HashMap<String, Bytes>,
        diagnostics: Value,
    ) -> Arc<Current> {
        let saved = SavedPolicy {
            version,
            checksum: checksum.clone(),
        };
        if let Err(e) = save_policy(&self.config.state, &saved, &mesh_table::encode(&table)) {
            tracing::warn!(error = %e, "the policy could not be saved; a restart recompiles it");
        }
        let current = Arc::new(Current {
            version,
            checksum,
            table,
            engine,
            modules: Arc::new(modules),
            diagnostics,
            installed_at: unix_secs(SystemTime::now()),
        });
        self.policy.store(Some(Arc::clone(&current)));
        tracing::info!(version, checksum = %current.checksum, services = current.table.services.len(), "policy installed");
        self.hub.notify_all();
        current
    }

    /// Tells the subscribers whose slices contain a service whose endpoints changed.
    pub fn registry_changed(&self, dirty: &BTreeSet<String>) {
        let Some(current) = self.policy.load_full() else {
            return;
        };
        // Only `endpoints registry` services are filled from the registry.
        let relevant: BTreeSet<&String> = dirty
            .iter()
            .filter(|s| {
                current
                    .table
                    .service_id(s)
                    .and_then(|id| current.table.services.get(id as usize))
                    .is_some_and(|svc| svc.endpoints == mesh_table::Endpoints::Registry)
            })
            .collect();
        if relevant.is_empty() {
            return;
        }
        self.hub.notify_where(|service| {
            self.slices
                .members(service, &current, &self.registry)
                .iter()
                .any(|m| relevant.contains(m))
        });
    }
}
