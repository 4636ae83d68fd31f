//! The state directory: join tokens, the enrollments they produced and the last good table,
//! so a restart changes nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Writes `bytes` to `path` atomically: a temporary file beside it, created new
/// (`create_new`) with its final mode from the start (0600 when `private`, else 0644), so no
/// other local user can open it even for an instant, then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let (tmp, mut file) = loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(if private { 0o600 } else { 0o644 });
        }
        #[cfg(not(unix))]
        let _ = private;
        match options.open(&tmp) {
            Ok(file) => break (tmp, file),
            // A leftover of an earlier process with the same pid: take the next name.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

/// Makes the state directory 0700 (created if missing): it holds the join tokens' hashes
/// and the enrollments, which no other local user needs to read.
pub fn secure_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

pub use crate::tokens::{token_id, Tokens};

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

    /// Every live enrollment (unexpired), by serial.
    pub fn live(&self) -> Vec<(String, Enrollment)> {
        let now = crate::policy::unix_secs(std::time::SystemTime::now());
        self.lock()
            .iter()
            .filter(|(_, e)| e.expires_at >= now)
            .map(|(s, e)| (s.clone(), e.clone()))
            .collect()
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
    fn private_files_are_never_readable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret.json");
        write_atomic(&path, b"1", true).expect("written");
        write_atomic(&path, b"2", true).expect("replaced");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).expect("read"), b"2");
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
        assert_eq!(left.len(), 1, "no temporary file is left");
    }

    #[test]
    fn enrollments_follow_their_token_and_persist() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = Tokens::load(dir.path()).expect("empty");
        let t = tokens.create("payments").expect("created");
        let id = token_id(&t.token);
        assert_eq!(id, t.stored.sha256);
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
        assert!(tokens.revoke(&t.stored.id).expect("saved"));
        assert!(!tokens.is_live(&id));
        let text = std::fs::read_to_string(dir.path().join("enrollments.json")).expect("read");
        assert!(
            !text.contains(&t.token),
            "the secret is not stored beside serials"
        );
    }
}
