//! Join tokens at rest: `tokens.json` in the state directory holds each token's SHA-256,
//! never the secret, which is shown once, when the token is created. Each token has a public
//! id (short random hex) by which it is listed and revoked, an optional expiry and use limit,
//! and counts its uses.
//!
//! A `tokens.json` of the old format (the secrets in plaintext) is migrated at load: every
//! secret is hashed, given an id, and the file rewritten, so the secrets leave the disk
//! (docs/identity.md, Join tokens at rest).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::state::{constant_time_eq, write_atomic};

/// The file format written now (`format` in `tokens.json`).
const FORMAT: u32 = 2;

/// A join token's hash: the SHA-256 of the secret, hex. It is what `tokens.json` keeps and
/// what enrollments record, so the secret itself is never written anywhere.
pub fn token_id(token: &str) -> String {
    use sha2::{Digest, Sha256};
    crate::policy::hex(&Sha256::digest(token.as_bytes()))
}

/// One join token as stored: no secret.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredToken {
    /// The public id (16 hex characters), for listing and revoking.
    pub id: String,
    /// The SHA-256 of the secret, hex ([`token_id`]).
    pub sha256: String,
    /// The service it admits.
    pub service: String,
    /// Creation time, seconds since the epoch.
    pub created_at: u64,
    /// After this (seconds since the epoch) it admits no bootstrap; `None`: never.
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// It admits at most this many bootstraps; `None`: no limit.
    #[serde(default)]
    pub max_uses: Option<u64>,
    /// How many bootstraps it admitted.
    #[serde(default)]
    pub uses: u64,
    /// The last bootstrap it admitted, seconds since the epoch.
    #[serde(default)]
    pub last_used_at: Option<u64>,
}

impl std::fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The hash is not the secret, but it is what a bootstrap is checked against: kept out
        // of logs all the same.
        f.debug_struct("StoredToken")
            .field("id", &self.id)
            .field("service", &self.service)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("max_uses", &self.max_uses)
            .field("uses", &self.uses)
            .finish_non_exhaustive()
    }
}

impl StoredToken {
    /// Why it admits no more bootstraps at `now`, if it does not.
    fn spent(&self, now: u64) -> Option<&'static str> {
        if self.expires_at.is_some_and(|at| now >= at) {
            Some("expired")
        } else if self.max_uses.is_some_and(|max| self.uses >= max) {
            Some("used up")
        } else {
            None
        }
    }
}

/// A token just created: the only time its secret exists outside the caller.
#[derive(Clone)]
pub struct Created {
    /// The secret: 32 random bytes, hex.
    pub token: String,
    /// What is stored.
    pub stored: StoredToken,
}

impl std::fmt::Debug for Created {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Created")
            .field("token", &"<redacted>")
            .field("stored", &self.stored)
            .finish()
    }
}

/// A new token's limits.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// It expires this long after its creation; `None`: never.
    pub ttl: Option<Duration>,
    /// It admits at most this many bootstraps; `None`: no limit.
    pub max_uses: Option<u64>,
}

/// Why a bootstrap's token is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No live token has this secret for this service (wrong, another service's, revoked).
    Unknown,
    /// The token `id` is past its expiry.
    Expired(String),
    /// The token `id` has admitted its `max_uses` bootstraps.
    UsedUp(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Unknown => f.write_str("invalid or revoked join token"),
            Refused::Expired(id) => write!(f, "join token {id} has expired"),
            Refused::UsedUp(id) => {
                write!(f, "join token {id} has reached its maximum number of uses")
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
struct TokenFile {
    format: u32,
    tokens: Vec<StoredToken>,
}

/// The first format: `{"tokens": [{"token": "<secret>", "service", "created_at"}]}`.
#[derive(Deserialize)]
struct LegacyFile {
    tokens: Vec<LegacyToken>,
}

#[derive(Deserialize)]
struct LegacyToken {
    token: String,
    service: String,
    created_at: u64,
}

/// The join tokens, persisted as `tokens.json` in the state directory.
#[derive(Debug)]
pub struct Tokens {
    path: PathBuf,
    tokens: Mutex<Vec<StoredToken>>,
}

fn now() -> u64 {
    crate::policy::unix_secs(std::time::SystemTime::now())
}

fn random_hex(n: usize) -> Result<String, String> {
    let mut bytes = vec![0_u8; n];
    mesh_identity::tls::provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| "no randomness available".to_owned())?;
    Ok(crate::policy::hex(&bytes))
}

impl Tokens {
    /// Loads `dir/tokens.json` (none yet: no token). A file of the old plaintext format is
    /// migrated: its secrets are hashed and the file is rewritten at once.
    pub fn load(dir: &Path) -> Result<Tokens, String> {
        let path = dir.join("tokens.json");
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("cannot read `{}`: {e}", path.display())),
        };
        let Some(bytes) = bytes else {
            return Ok(Tokens {
                path,
                tokens: Mutex::new(Vec::new()),
            });
        };
        let bad = |e: serde_json::Error| format!("`{}`: {e}", path.display());
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(bad)?;
        match value.get("format").and_then(serde_json::Value::as_u64) {
            Some(f) if f == u64::from(FORMAT) => {
                let file: TokenFile = serde_json::from_value(value).map_err(bad)?;
                Ok(Tokens {
                    path,
                    tokens: Mutex::new(file.tokens),
                })
            }
            Some(f) => Err(format!(
                "`{}`: format {f} is newer than this mesh-control knows ({FORMAT})",
                path.display()
            )),
            None => {
                let legacy: LegacyFile = serde_json::from_value(value).map_err(bad)?;
                let mut tokens = Vec::with_capacity(legacy.tokens.len());
                for t in legacy.tokens {
                    tokens.push(StoredToken {
                        id: random_hex(8)?,
                        sha256: token_id(&t.token),
                        service: t.service,
                        created_at: t.created_at,
                        expires_at: None,
                        max_uses: None,
                        uses: 0,
                        last_used_at: None,
                    });
                }
                let loaded = Tokens {
                    path,
                    tokens: Mutex::new(Vec::new()),
                };
                loaded.save(&tokens)?;
                tracing::warn!(
                    tokens = tokens.len(),
                    file = %loaded.path.display(),
                    "join tokens were stored in plaintext (an older format); they are hashed now and the file rewritten"
                );
                *loaded.lock() = tokens;
                Ok(loaded)
            }
        }
    }

    /// A new token for `service` with no expiry and no use limit, saved before it is
    /// returned.
    pub fn create(&self, service: &str) -> Result<Created, String> {
        self.create_with(service, Limits::default())
    }

    /// A new token for `service` with `limits`, saved (its hash) before it is returned.
    pub fn create_with(&self, service: &str, limits: Limits) -> Result<Created, String> {
        let token = random_hex(32)?;
        let created_at = now();
        let mut tokens = self.lock();
        let mut id = random_hex(8)?;
        while tokens.iter().any(|t| t.id == id) {
            id = random_hex(8)?;
        }
        let stored = StoredToken {
            id,
            sha256: token_id(&token),
            service: service.to_owned(),
            created_at,
            expires_at: limits
                .ttl
                .map(|ttl| created_at.saturating_add(ttl.as_secs())),
            max_uses: limits.max_uses,
            uses: 0,
            last_used_at: None,
        };
        let mut next = tokens.clone();
        next.push(stored.clone());
        self.save(&next)?;
        *tokens = next;
        Ok(Created { token, stored })
    }

    /// Revokes the token whose public id is `id`; `Ok(false)` when there is none.
    pub fn revoke(&self, id: &str) -> Result<bool, String> {
        let mut tokens = self.lock();
        let next: Vec<StoredToken> = tokens.iter().filter(|t| t.id != id).cloned().collect();
        if next.len() == tokens.len() {
            return Ok(false);
        }
        self.save(&next)?;
        *tokens = next;
        Ok(true)
    }

    /// Checks `token` for a bootstrap of `service` and counts the use: the token's hash
    /// (its [`token_id`], which the enrollment records) when admitted. Every stored hash is
    /// compared, in constant time, so the timing says nothing about near misses. The
    /// refusal is logged with the token's id (never the secret) and the service escaped.
    pub fn redeem(&self, service: &str, token: &str) -> Result<String, Refused> {
        let hash = token_id(token);
        let now = now();
        let mut tokens = self.lock();
        let mut found = None;
        for (i, t) in tokens.iter().enumerate() {
            if constant_time_eq(t.sha256.as_bytes(), hash.as_bytes()) && t.service == service {
                found = Some(i);
            }
        }
        let Some(i) = found else {
            tracing::warn!(service = ?service, "join token refused: invalid or revoked");
            return Err(Refused::Unknown);
        };
        let t = &tokens[i];
        if let Some(why) = t.spent(now) {
            tracing::warn!(id = %t.id, service = ?service, reason = why, "join token refused");
            return Err(if why == "expired" {
                Refused::Expired(t.id.clone())
            } else {
                Refused::UsedUp(t.id.clone())
            });
        }
        let mut next = tokens.clone();
        next[i].uses += 1;
        next[i].last_used_at = Some(now);
        if let Err(e) = self.save(&next) {
            // The count is kept in memory all the same: a use limit holds until a restart.
            tracing::error!(error = %e, "cannot save the join tokens' use counts");
        }
        *tokens = next;
        Ok(hash)
    }

    /// Whether `token` admits a bootstrap of `service` now; a yes counts as one use (see
    /// [`Tokens::redeem`], which also says why not).
    pub fn admits(&self, service: &str, token: &str) -> bool {
        self.redeem(service, token).is_ok()
    }

    /// Whether a token whose hash ([`token_id`]) is `hash` is still there (not revoked).
    /// An expired or used-up token is: it admits no new bootstrap, but the certificates it
    /// enrolled keep renewing until it is revoked.
    pub fn is_live(&self, hash: &str) -> bool {
        self.lock().iter().any(|t| t.sha256 == hash)
    }

    /// Every token, oldest first.
    pub fn list(&self) -> Vec<StoredToken> {
        self.lock().clone()
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<StoredToken>> {
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn save(&self, tokens: &[StoredToken]) -> Result<(), String> {
        let file = TokenFile {
            format: FORMAT,
            tokens: tokens.to_vec(),
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())?;
        write_atomic(&self.path, &json, true)
            .map_err(|e| format!("cannot write `{}`: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_persist_as_hashes_and_revoke_by_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = Tokens::load(dir.path()).expect("empty");
        let t = tokens.create("payments").expect("created");
        assert_eq!(t.token.len(), 64);
        assert_eq!(t.stored.id.len(), 16);
        assert!(tokens.admits("payments", &t.token));
        assert!(!tokens.admits("orders", &t.token));
        let text = std::fs::read_to_string(dir.path().join("tokens.json")).expect("read");
        assert!(!text.contains(&t.token), "the secret is not stored: {text}");
        assert!(text.contains(&token_id(&t.token)));
        let again = Tokens::load(dir.path()).expect("saved");
        assert!(again.admits("payments", &t.token));
        assert_eq!(again.list()[0].uses, 2, "uses are counted and saved");
        assert!(
            !again.revoke(&t.token).expect("no such id"),
            "not by the secret"
        );
        assert!(again.revoke(&t.stored.id).expect("saved"));
        assert_eq!(again.redeem("payments", &t.token), Err(Refused::Unknown));
        assert!(!Tokens::load(dir.path())
            .expect("saved")
            .admits("payments", &t.token));
        assert!(
            !format!("{t:?}").contains(&t.token),
            "Debug hides the secret"
        );
    }

    #[test]
    fn expiry_and_use_limits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = Tokens::load(dir.path()).expect("empty");
        let twice = tokens
            .create_with(
                "web",
                Limits {
                    ttl: None,
                    max_uses: Some(2),
                },
            )
            .expect("created");
        assert!(tokens.redeem("web", &twice.token).is_ok());
        assert!(tokens.redeem("web", &twice.token).is_ok());
        assert_eq!(
            tokens.redeem("web", &twice.token),
            Err(Refused::UsedUp(twice.stored.id.clone()))
        );
        assert!(
            tokens.is_live(&token_id(&twice.token)),
            "used up is not revoked"
        );
        let gone = tokens
            .create_with(
                "web",
                Limits {
                    ttl: Some(Duration::ZERO),
                    max_uses: None,
                },
            )
            .expect("created");
        assert_eq!(
            tokens.redeem("web", &gone.token),
            Err(Refused::Expired(gone.stored.id.clone()))
        );
    }

    #[test]
    fn a_plaintext_file_is_migrated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = "ab".repeat(32);
        std::fs::write(
            dir.path().join("tokens.json"),
            format!(r#"{{"tokens":[{{"token":"{secret}","service":"web","created_at":5}}]}}"#),
        )
        .expect("write");
        let tokens = Tokens::load(dir.path()).expect("migrated");
        assert!(tokens.is_live(&token_id(&secret)));
        let text = std::fs::read_to_string(dir.path().join("tokens.json")).expect("read");
        assert!(!text.contains(&secret), "{text}");
        assert!(Tokens::load(dir.path())
            .expect("new format")
            .admits("web", &secret));
    }
}
