//! Certificates revoked one by one (`meshc identity revoke`), persisted as
//! `revocations.json` in the state directory; a record is dropped once its certificate has
//! expired, since an expired certificate is refused everywhere anyway.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::policy::unix_secs;
use crate::state::write_atomic;

/// One revoked certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// The service the certificate names.
    pub service: String,
    /// When the certificate expires, seconds since the epoch (the record's end).
    pub expires_at: u64,
    /// When it was revoked, seconds since the epoch.
    pub revoked_at: u64,
}

#[derive(Default, Serialize, Deserialize)]
struct RevocationFile {
    /// By certificate serial (lowercase hex, as `CertInfo::serial`).
    certificates: BTreeMap<String, Revocation>,
}

/// The revoked certificates, by serial.
#[derive(Debug)]
pub struct Revocations {
    path: PathBuf,
    by_serial: Mutex<BTreeMap<String, Revocation>>,
}

impl Revocations {
    /// Loads `dir/revocations.json` (none yet: nothing revoked).
    pub fn load(dir: &Path) -> Result<Revocations, String> {
        let path = dir.join("revocations.json");
        let by_serial = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<RevocationFile>(&bytes)
                    .map_err(|e| format!("`{}`: {e}", path.display()))?
                    .certificates
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("cannot read `{}`: {e}", path.display())),
        };
        Ok(Revocations {
            path,
            by_serial: Mutex::new(by_serial),
        })
    }

    /// Revokes the certificates `serials` of `service`, each with its expiry, and saves
    /// the list before returning; expired records are dropped on the way.
    pub fn revoke(&self, service: &str, serials: &[(String, u64)]) -> Result<(), String> {
        let now = unix_secs(std::time::SystemTime::now());
        let mut map = self.lock();
        map.retain(|_, r| r.expires_at >= now);
        for (serial, expires_at) in serials {
            map.entry(serial.to_ascii_lowercase())
                .or_insert_with(|| Revocation {
                    service: service.to_owned(),
                    expires_at: *expires_at,
                    revoked_at: now,
                });
        }
        let json = serde_json::to_vec_pretty(&RevocationFile {
            certificates: map.clone(),
        })
        .map_err(|e| e.to_string())?;
        write_atomic(&self.path, &json, true)
            .map_err(|e| format!("cannot write `{}`: {e}", self.path.display()))
    }

    /// The revocation of `serial`, if it is revoked.
    pub fn of(&self, serial: &str) -> Option<Revocation> {
        self.lock().get(serial).cloned()
    }

    /// The serials revoked whose certificates have not expired yet.
    pub fn live(&self) -> Vec<String> {
        let now = unix_secs(std::time::SystemTime::now());
        self.lock()
            .iter()
            .filter(|(_, r)| r.expires_at >= now)
            .map(|(s, _)| s.clone())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Revocation>> {
        self.by_serial
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_persist_and_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let revocations = Revocations::load(dir.path()).expect("empty");
        let far = unix_secs(std::time::SystemTime::now()) + 3600;
        revocations
            .revoke("payments", &[("0A1B".into(), far), ("dead".into(), 1)])
            .expect("saved");
        let again = Revocations::load(dir.path()).expect("saved");
        assert_eq!(again.of("0a1b").map(|r| r.service), Some("payments".into()));
        assert_eq!(
            again.live(),
            vec!["0a1b".to_owned()],
            "expired ones are not live"
        );
        again
            .revoke("orders", &[("ffff".into(), far)])
            .expect("saved");
        assert!(
            Revocations::load(dir.path())
                .expect("saved")
                .of("dead")
                .is_none(),
            "expired records are dropped when the list is next written"
        );
    }
}
