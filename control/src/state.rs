//! The state directory: join tokens, the enrollments they produced and the last good table,
//! so a restart changes nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Writes `bytes` to `path` atomically (a temporary file beside it, then a rename).
pub fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = private;
    std::fs::rename(&tmp, path)
}

/// One join token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinToken {
    /// 32 random bytes, hex.
    pub token: String,
    /// The service it admits.
    pub service: String,
    /// Creation time, seconds since the epoch.
    pub created_at: u64,
}

#[derive(Default, Serialize, Deserialize)]
struct TokenFile {
    tokens: Vec<JoinToken>,
}

/// The join tokens, persisted as `tokens.json` in the state directory.
#[derive(Debug)]
pub struct Tokens {
    path: PathBuf,
    tokens: Mutex<Vec<JoinToken>>,
}

impl Tokens {
    /// Loads `dir/tokens.json` (none yet: no token).
    pub fn load(dir: &Path) -> Result<Tokens, String> {
        let path = dir.join("tokens.json");
        let tokens = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<TokenFile>(&bytes)
                    .map_err(|e| format!("`{}`: {e}", path.display()))?
                    .tokens
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("cannot read `{}`: {e}", path.display())),
        };
        Ok(Tokens {
            path,
            tokens: Mutex::new(tokens),
        })
    }

    /// A new token for `service`, saved before it is returned.
    pub fn create(&self, service: &str) -> Result<JoinToken, String> {
        let mut bytes = [0_u8; 32];
        mesh_identity::tls::provider()
            .secure_random
            .fill(&mut bytes)
            .map_err(|_| "no randomness available".to_owned())?;
        let token = JoinToken {
            token: crate::policy::hex(&bytes),
            service: service.to_owned(),
            created_at: crate::policy::unix_secs(std::time::SystemTime::now()),
        };
        let mut tokens = self.lock();
        tokens.push(token.clone());
        self.save(&tokens)?;
        Ok(token)
    }

    /// Revokes `token`; `Ok(false)` when there was no such token.
    pub fn revoke(&self, token: &str) -> Result<bool, String> {
        let mut tokens = self.lock();
        let before = tokens.len();
        tokens.retain(|t| !constant_time_eq(t.token.as_bytes(), token.as_bytes()));
        if tokens.len() == before {
            return Ok(false);
        }
        self.save(&tokens)?;
        Ok(true)
    }

    /// Whether `token` is a live token for `service`. Every token is compared, in
    /// constant time, so the answer's timing says nothing about near misses.
    pub fn admits(&self, service: &str, token: &str) -> bool {
        let tokens = self.lock();
        let mut found = false;
        for t in tokens.iter() {
            found |= constant_time_eq(t.token.as_bytes(), token.as_bytes()) && t.service == service;
        }
        found
    }

    /// Whether a token whose [`token_id`] is `id` is still live (not revoked).
    pub fn is_live(&self, id: &str) -> bool {
        self.lock().iter().any(|t| token_id(&t.token) == id)
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<JoinToken>> {
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn save(&self, tokens: &[JoinToken]) -> Result<(), String> {
        let file = TokenFile {
            tokens: tokens.to_vec(),
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())?;
        write_atomic(&self.path, &json, true)
            .map_err(|e| format!("cannot write `{}`: {e}", self.path.display()))
    }
}

/// A join token's id: the SHA-256 of the secret, hex. It is what enrollments record, so the
/// secret itself is never written beside a certificate's serial.
pub fn token_id(token: &str) -> String {
    use sha2::{Digest, Sha256};
    crate::policy::hex(&Sha256::digest(token.as_bytes()))
}

/// One certificate issued for a join token (at bootstrap, or a renewal of such a certificate).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enrollment {
    /// The [`token_id`] of the join token that produced the identity.
    pub token_id: String,
    /// The service it names.
    pub service: String,
    /// When the certificate expires, seconds since the epoch; the record is dropped after.
    pub expires_at: u64,
}

#[derive(Default, Serialize, Deserialize)]
struct EnrollmentFile {
    /// By certificate serial (lowercase hex, as `CertInfo::serial`).
    certificates: BTreeMap<String, Enrollment>,
}

/// Which join token each issued certificate descends from, persisted as `enrollments.json`,
/// so that revoking the token refuses the renewal and streams of every certificate it
/// produced, across restarts.
#[derive(Debug)]
pub struct Enrollments {
    path: PathBuf,
    by_serial: Mutex<BTreeMap<String, Enrollment>>,
}

impl Enrollments {
    /// Loads `dir/enrollments.json` (none yet: no enrollment).
    pub fn load(dir: &Path) -> Result<Enrollments, String> {
        let path = dir.join("enrollments.json");
        let by_serial = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<EnrollmentFile>(&bytes)
                    .map_err(|e| format!("`{}`: {e}", path.display()))?
                    .certificates
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("cannot read `{}`: {e}", path.display())),
        };
        Ok(Enrollments {
            path,
            by_serial: Mutex::new(by_serial),
        })
    }

    /// Records that the certificate `serial` descends from `enrollment.token_id`; expired
    /// records are dropped on the way, so the file holds at most the live certificates.
    pub fn record(&self, serial: &str, enrollment: Enrollment) -> Result<(), String> {
        let now = crate::policy::unix_secs(std::time::SystemTime::now());
        let mut map = self.lock();
        map.retain(|_, e| e.expires_at >= now);
        map.insert(serial.to_owned(), enrollment);
        let json = serde_json::to_vec_pretty(&EnrollmentFile {
            certificates: map.clone(),
        })
        .map_err(|e| e.to_string())?;
        write_atomic(&self.path, &json, true)
            .map_err(|e| format!("cannot write `{}`: {e}", self.path.display()))
    }

    /// The enrollment of the certificate `serial`; `None` for a certificate this control
    /// plane did not issue from a join token (one the operator issued with `meshc ca issue`).
    pub fn of(&self, serial: &str) -> Option<Enrollment> {
        self.lock().get(serial).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Enrollment>> {
        self.by_serial
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Equality whose time depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The last good policy, kept so that a restart serves the same table even if the policy
/// directory is broken by then: `table.bin` (the encoding) and `policy.json` (the version).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedPolicy {
    /// The version counter.
    pub version: u64,
    /// The table checksum.
    pub checksum: String,
}

/// Saves the last good table.
pub fn save_policy(dir: &Path, saved: &SavedPolicy, table_bytes: &[u8]) -> Result<(), String> {
    write_atomic(&dir.join("table.bin"), table_bytes, false)
        .and_then(|()| {
            let json = serde_json::to_vec_pretty(saved).map_err(std::io::Error::other)?;
            write_atomic(&dir.join("policy.json"), &json, false)
        })
        .map_err(|e| format!("cannot save the policy in `{}`: {e}", dir.display()))
}

/// The last good table and its version, if any was saved.
pub fn load_policy(dir: &Path) -> Option<(SavedPolicy, mesh_table::Table)> {
    let saved: SavedPolicy =
        serde_json::from_slice(&std::fs::read(dir.join("policy.json")).ok()?).ok()?;
    let table = mesh_table::decode(&std::fs::read(dir.join("table.bin")).ok()?).ok()?;
    Some((saved, table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_persist_and_revoke() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = Tokens::load(dir.path()).expect("empty");
        let t = tokens.create("payments").expect("created");
        assert_eq!(t.token.len(), 64);
        assert!(tokens.admits("payments", &t.token));
        assert!(!tokens.admits("orders", &t.token));
        let again = Tokens::load(dir.path()).expect("saved");
        assert!(again.admits("payments", &t.token));
        assert!(again.revoke(&t.token).expect("saved"));
        assert!(!again.admits("payments", &t.token));
        assert!(!Tokens::load(dir.path())
            .expect("saved")
            .admits("payments", &t.token));
    }

    #[test]
    fn enrollments_follow_their_token_and_persist() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = Tokens::load(dir.path()).expect("empty");
        let t = tokens.create("payments").expect("created");
        let id = token_id(&t.token);
        assert!(tokens.is_live(&id));
        let enrollments = Enrollments::load(dir.path()).expect("empty");
        let far = crate::policy::unix_secs(std::time::SystemTime::now()) + 3600;
        let e = Enrollment {
            token_id: id.clone(),
            service: "payments".into(),
            expires_at: far,
        };
        enrollments.record("0a1b", e.clone()).expect("saved");
        enrollments
            .record("dead", Enrollment { expires_at: 1, ..e })
            .expect("saved");
        enrollments
            .record(
                "0c2d",
                Enrollment {
                    expires_at: far,
                    token_id: id.clone(),
                    service: "payments".into(),
                },
            )
            .expect("saved");
        let again = Enrollments::load(dir.path()).expect("saved");
        assert_eq!(again.of("0a1b").map(|e| e.token_id), Some(id.clone()));
        assert!(again.of("dead").is_none(), "expired records are dropped");
        assert!(again.of("ffff").is_none());
        assert!(tokens.revoke(&t.token).expect("saved"));
        assert!(!tokens.is_live(&id));
        let text = std::fs::read_to_string(dir.path().join("enrollments.json")).expect("read");
        assert!(
            !text.contains(&t.token),
            "the secret is not stored beside serials"
        );
    }
}
