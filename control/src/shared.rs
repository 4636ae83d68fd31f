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
use crate::revocations::Revocations;
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

/// A serial as `CertInfo::serial` prints it: lowercase hex, whole bytes, no leading zero
/// bytes (`0F:A1:02`, `0fa102` and `000fa102` are one serial). `None` when it is not hex.
pub fn canonical_serial(text: &str) -> Option<String> {
    let hex: String = text
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.is_empty() || hex.len() > 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut hex = if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex
    };
    while hex.len() > 2 && hex.starts_with("00") {
        hex.drain(..2);
    }
    Some(hex)
}

/// Why certificates could not be revoked.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// The request names no revocable certificate (400).
    #[error("{0}")]
    BadRequest(String),
    /// No certificate of the service is known (404).
    #[error("{0}")]
    NotFound(String),
    /// The list could not be saved (500).
    #[error("{0}")]
    Internal(String),
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
    /// Certificates revoked one by one (`meshc identity revoke`).
    pub revoked_certificates: Revocations,
    /// Moves by one at every revocation (a token, or certificates): open streams then check
    /// their certificate and send their proxy the new revocation list.
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
    /// modules): it was revoked, or the join token that enrolled it was. `None` when it
    /// may, including a certificate with no enrollment (issued by the operator with `meshc
    /// ca issue`) that was not revoked by serial.
    pub fn revoked(&self, serial: &str) -> Option<String> {
        if let Some(r) = self.revoked_certificates.of(serial) {
            return Some(format!(
                "the certificate (service `{}`, serial {serial}) was revoked",
                r.service
            ));
        }
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

    /// Revokes the certificates of `service`: the one with `serial`, or every live one this
    /// control plane issued for it. Renewal and streams refuse them at once (open streams
    /// end) and every proxy is sent the new list, so that its listeners refuse them before
    /// they expire. The join tokens stay: a proxy holding one can enroll again, so revoke
    /// the token too to keep the service out. Returns the serials revoked.
    pub fn revoke_identity(
        &self,
        service: &str,
        serial: Option<&str>,
    ) -> Result<Vec<String>, RevokeError> {
        let serials: Vec<(String, u64)> = match serial {
            Some(serial) => {
                let Some(serial) = canonical_serial(serial) else {
                    return Err(RevokeError::BadRequest(format!(
                        "`{}` is not a certificate serial (hex digits)",
                        serial.escape_debug()
                    )));
                };
                let expires_at = match self.enrollments.of(&serial) {
                    Some(e) if e.service != service => {
                        return Err(RevokeError::BadRequest(format!(
                            "the certificate with serial {serial} is of service `{}`, not `{service}`",
                            e.service
                        )))
                    }
                    Some(e) => e.expires_at,
                    // Issued elsewhere (`meshc ca issue`): its expiry is unknown here, so the
                    // record stays on the list (docs/identity.md, Revocation).
                    None => u64::MAX,
                };
                vec![(serial, expires_at)]
            }
            None => self
                .enrollments
                .live()
                .into_iter()
                .filter(|(_, e)| e.service == service)
                .map(|(s, e)| (s, e.expires_at))
                .collect(),
        };
        if serials.is_empty() {
            return Err(RevokeError::NotFound(format!(
                "no live certificate of service `{service}` was issued by this control plane (give --serial for one issued elsewhere)"
            )));
        }
        self.revoked_certificates
            .revoke(service, &serials)
            .map_err(RevokeError::Internal)?;
        self.revocations.send_modify(|v| *v += 1);
        Ok(serials.into_iter().map(|(s, _)| s).collect())
    }

    /// The serials every proxy's listeners refuse: certificates revoked one by one, and
    /// those whose join token was revoked, while they have not expired. Sorted.
    pub fn revoked_serials(&self) -> Vec<String> {
        let mut serials: BTreeSet<String> = self.revoked_certificates.live().into_iter().collect();
        for (serial, enrollment) in self.enrollments.live() {
            if !self.tokens.is_live(&enrollment.token_id) {
                serials.insert(serial);
            }
        }
        serials.into_iter().collect()
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

#[cfg(test)]
mod tests {
    use super::canonical_serial;

    #[test]
    fn serials_are_read_as_the_certificate_parser_prints_them() {
        assert_eq!(canonical_serial("0F:A1:02").as_deref(), Some("0fa102"));
        assert_eq!(canonical_serial(" 000fa102 ").as_deref(), Some("0fa102"));
        assert_eq!(canonical_serial("fa102").as_deref(), Some("0fa102"));
        assert_eq!(canonical_serial("00").as_deref(), Some("00"));
        assert_eq!(canonical_serial("serial=1"), None);
        assert_eq!(canonical_serial(""), None);
    }
}
