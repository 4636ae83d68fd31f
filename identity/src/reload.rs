//! `Credentials`: the workload's certificate, key and trust bundle from their files, reloaded
//! when the files change, without restarting and without touching open connections.
//!
//! The configs handed out read the current credentials at each handshake (see
//! `tls::source`), so a reload reaches every new handshake at once, and a connection keeps
//! the session it negotiated. New files that do not load, do not match, do not chain to the
//! new bundle or name another workload are refused with a log line; the old ones stay.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::pki_types::UnixTime;
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, ServerConfig, ServerConnection};

use crate::bundle::TrustBundle;
use crate::cert::{format_utc, CertInfo};
use crate::error::IdentityError;
use crate::identity::Identity;
use crate::refusal::Refusal;
use crate::revoked::RevokedSerials;
use crate::spiffe::{SpiffeId, TrustDomain};
use crate::tls::source::{Material, Source};
use crate::tls::{self, provider, Alpn};

/// Where a workload's credentials live: the proxy config's `[identity]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityPaths {
    /// The workload's certificate, leaf first then the intermediates (`cert.pem`).
    pub cert: PathBuf,
    /// Its private key (`key.pem`).
    pub key: PathBuf,
    /// The trust bundle: the roots (`bundle.pem`).
    pub bundle: PathBuf,
}

impl IdentityPaths {
    /// The three files `meshc ca issue --out DIR` writes.
    pub fn in_dir(dir: &Path) -> IdentityPaths {
        IdentityPaths {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            bundle: dir.join("bundle.pem"),
        }
    }
}

/// The current credentials and the TLS configs over them.
#[derive(Debug)]
pub struct Credentials {
    paths: IdentityPaths,
    source: Source,
    server: Arc<ServerConfig>,
    clients: Mutex<HashMap<(SpiffeId, Alpn), Arc<ClientConfig>>>,
    /// Serials the control plane revoked: refused by every config built here.
    revoked: Arc<RevokedSerials>,
    /// The files' stamps when they were last read.
    stamps: Mutex<Vec<Option<FileStamp>>>,
    /// Credentials applied since start (the first load included).
    pub loads: AtomicU64,
    /// New credentials refused.
    pub failures: AtomicU64,
}

impl Credentials {
    /// Loads the three files; an error here means the proxy cannot start with mTLS.
    pub fn load(paths: IdentityPaths) -> Result<Credentials, IdentityError> {
        let stamps = stamps(&paths);
        let material = load_material(&paths)?;
        let source: Source = Arc::new(ArcSwap::from_pointee(material));
        let revoked = Arc::new(RevokedSerials::default());
        let server = tls::server::build(Arc::clone(&source), Arc::clone(&revoked))?;
        Ok(Credentials {
            paths,
            source,
            server,
            clients: Mutex::new(HashMap::new()),
            revoked,
            stamps: Mutex::new(stamps),
            loads: AtomicU64::new(1),
            failures: AtomicU64::new(0),
        })
    }

    /// The files.
    pub fn paths(&self) -> &IdentityPaths {
        &self.paths
    }

    /// The inbound config: one for the process's life (build one `TlsAcceptor` from it);
    /// each handshake uses the credentials current at that moment.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.server)
    }

    /// The outbound config for connections to `expected` offering `alpn`, built once per
    /// pair and then shared; like the server config it follows reloads.
    pub fn client_config(
        &self,
        expected: &SpiffeId,
        alpn: Alpn,
    ) -> Result<Arc<ClientConfig>, IdentityError> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(config) = clients.get(&(expected.clone(), alpn)) {
            return Ok(Arc::clone(config));
        }
        let config = tls::client::build(
            Arc::clone(&self.source),
            expected.clone(),
            alpn,
            Arc::clone(&self.revoked),
        )?;
        clients.insert((expected.clone(), alpn), Arc::clone(&config));
        Ok(config)
    }

    /// The serials this workload's handshakes refuse, both ways (the control plane's
    /// revocation list; see `docs/identity.md`).
    pub fn revoked(&self) -> &RevokedSerials {
        &self.revoked
    }

    /// This workload's SPIFFE ID (it cannot change on reload).
    pub fn spiffe_id(&self) -> SpiffeId {
        self.source.load().identity.spiffe_id().clone()
    }

    /// This workload's trust domain: clients must be in it.
    pub fn trust_domain(&self) -> TrustDomain {
        self.source
            .load()
            .identity
            .spiffe_id()
            .trust_domain()
            .clone()
    }

    /// The current certificate's serial, validity and usages (for `/config` and expiry alarms).
    pub fn cert_info(&self) -> CertInfo {
        self.source.load().identity.info().clone()
    }

    /// The number of roots in the current bundle (2 during a root rotation).
    pub fn bundle_roots(&self) -> usize {
        self.source.load().bundle.len()
    }

    /// The SPIFFE ID a client proved on an inbound connection (see [`tls::peer_identity`]).
    pub fn peer_identity(&self, conn: &ServerConnection) -> Result<SpiffeId, Refusal> {
        tls::peer_identity(conn, &self.trust_domain())
    }

    /// Re-reads the files now (SIGHUP). `Ok(true)` when new credentials were applied,
    /// `Ok(false)` when the files hold the same ones; on error (logged and counted) the
    /// previous credentials stay.
    pub fn reload(&self) -> Result<bool, IdentityError> {
        let stamps = stamps(&self.paths);
        *self.stamps.lock().unwrap_or_else(PoisonError::into_inner) = stamps;
        let result = load_material(&self.paths).and_then(|new| self.apply(new));
        match &result {
            Ok(true) => {
                self.loads.fetch_add(1, Ordering::Relaxed);
                let current = self.source.load();
                let info = current.identity.info();
                tracing::info!(
                    spiffe_id = %current.identity.spiffe_id(),
                    serial = %info.serial,
                    not_after = %format_utc(info.not_after),
                    roots = current.bundle.len(),
                    "identity credentials reloaded; new handshakes use them"
                );
            }
            Ok(false) => {}
            Err(error) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    %error,
                    cert = %self.paths.cert.display(),
                    "identity credentials refused; the previous ones stay"
                );
            }
        }
        result
    }

    /// Reloads when any of the three files changed since it was last read; `None` when none
    /// did.
    pub fn reload_if_changed(&self) -> Option<Result<bool, IdentityError>> {
        let now = stamps(&self.paths);
        if *self.stamps.lock().unwrap_or_else(PoisonError::into_inner) == now {
            return None;
        }
        Some(self.reload())
    }

    /// Polls the files every `poll` and reloads on change, until the task is dropped.
    pub async fn watch(self: Arc<Self>, poll: Duration) {
        let mut ticker = tokio::time::interval(poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let credentials = Arc::clone(&self);
            if let Err(error) =
                tokio::task::spawn_blocking(move || credentials.reload_if_changed()).await
            {
                tracing::error!(%error, "identity reload task failed");
            }
        }
    }

    /// Swaps in `new` unless it changes who this workload is; `false` if it is the same.
    fn apply(&self, new: Material) -> Result<bool, IdentityError> {
        let current = self.source.load();
        let (old_id, new_id) = (current.identity.spiffe_id(), new.identity.spiffe_id());
        if old_id != new_id {
            return Err(IdentityError::Certificate(format!(
                "the new certificate is {new_id}, but this workload is {old_id}; restart to change identity"
            ))
            .in_file(&self.paths.cert));
        }
        if current.identity.chain() == new.identity.chain()
            && current.bundle.certificates() == new.bundle.certificates()
        {
            return Ok(false);
        }
        self.source.store(Arc::new(new));
        Ok(true)
    }
}

/// Reads the files and checks that the certificate chains to the bundle: a bundle that
/// does not hold our own root would refuse every peer our CA issued.
fn load_material(paths: &IdentityPaths) -> Result<Material, IdentityError> {
    let identity = Identity::load(&paths.cert, &paths.key)?;
    let bundle = TrustBundle::load(&paths.bundle)?;
    let (leaf, intermediates) = identity
        .chain()
        .split_first()
        .ok_or_else(|| IdentityError::Pem("no certificate found".into()).in_file(&paths.cert))?;
    let leaf = ParsedCertificate::try_from(leaf)?;
    verify_server_cert_signed_by_trust_anchor(
        &leaf,
        bundle.roots(),
        intermediates,
        UnixTime::now(),
        provider().signature_verification_algorithms.all,
    )
    .map_err(|err| {
        IdentityError::Certificate(format!(
            "{} does not verify against the trust bundle `{}`: {}",
            identity.spiffe_id(),
            paths.bundle.display(),
            Refusal::from_rustls(&err).detail
        ))
        .in_file(&paths.cert)
    })?;
    Material::new(identity, bundle)
}

/// What identifies a version of a file cheaply: size and mtime, and on Unix the device,
/// inode and status-change time. Size and mtime alone miss a same-size rewrite whose mtime
/// was kept (`cp -p`, `rsync -t`, reproducible builds); a rename brings a new inode and any
/// write or mtime change moves the ctime. Shared with the proxy's table watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    /// Device, inode, ctime seconds and nanoseconds.
    #[cfg(unix)]
    identity: (u64, u64, i64, i64),
}

impl FileStamp {
    /// The stamp of the file at `path`, or `None` when it cannot be read.
    pub fn of(path: &Path) -> Option<FileStamp> {
        let meta = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            #[cfg(unix)]
            identity: {
                use std::os::unix::fs::MetadataExt;
                (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec())
            },
        })
    }
}

fn stamps(paths: &IdentityPaths) -> Vec<Option<FileStamp>> {
    [&paths.cert, &paths.key, &paths.bundle]
        .into_iter()
        .map(|path| FileStamp::of(path))
        .collect()
}
