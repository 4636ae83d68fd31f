//! The first certificate: a join token and a CSR (`POST /v1/bootstrap`), answered with a
//! short-lived workload certificate written into the state directory, where the ordinary
//! file-based `Credentials` load (and later reload) it. The private key never leaves.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use mesh_identity::{Credentials, IdentityPaths, SpiffeId, TrustBundle};
use serde::Deserialize;

use super::backoff::Backoff;
use super::client;
use crate::config::Config;

/// What the control plane answers to a bootstrap or a renewal.
#[derive(Debug, Deserialize)]
pub(crate) struct Issued {
    /// The leaf, then the intermediates.
    pub(crate) cert_pem: String,
    /// The roots.
    pub(crate) bundle_pem: String,
    /// When the leaf expires (for the log).
    #[serde(default)]
    pub(crate) expires_at: String,
}

/// With `[identity] token_file`: makes sure the state directory holds usable credentials,
/// bootstrapping them (with backoff, logging every refusal) until it does. Returns `false`
/// when SIGTERM or Ctrl-C came first: the proxy then exits without starting.
pub async fn ensure(config: &Config) -> bool {
    let Some(identity) = &config.identity else {
        return true;
    };
    let (Some(token_file), Some(bundle), Some(control)) =
        (&identity.token_file, &identity.bundle, &config.control)
    else {
        return true;
    };
    let dir = config.state_dir();
    if let Ok(credentials) = Credentials::load(IdentityPaths::in_dir(&dir)) {
        if credentials.spiffe_id().path().trim_start_matches('/') == config.service {
            tracing::info!(dir = %dir.display(), "bootstrapped credentials found; not bootstrapping again");
            return true;
        }
    }
    let mut backoff = Backoff::new(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(10),
    );
    let bootstrap = async {
        loop {
            match once(control, &config.service, token_file, bundle, &dir).await {
                Ok(issued) => {
                    tracing::info!(expires_at = %issued.expires_at, dir = %dir.display(), "workload certificate bootstrapped with the join token");
                    return;
                }
                Err(error) => {
                    tracing::error!(%error, control = %control, "bootstrap with the join token failed; not ready until it succeeds; retrying");
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    };
    tokio::select! {
        () = bootstrap => true,
        () = terminated() => {
            tracing::info!("stopped while bootstrapping");
            false
        }
    }
}

/// SIGTERM or Ctrl-C.
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// One bootstrap attempt.
async fn once(
    control: &str,
    service: &str,
    token_file: &Path,
    bundle: &Path,
    dir: &Path,
) -> Result<Issued, String> {
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| format!("cannot read the join token {}: {e}", token_file.display()))?;
    let bundle = TrustBundle::load(bundle).map_err(|e| e.to_string())?;
    let seen = Arc::new(Mutex::new(None));
    let tls = client::bootstrap_tls(&bundle, Arc::clone(&seen))?;
    let mut sender = client::connect(control, tls).await?;
    let control_id = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
        .ok_or("the control plane's identity was not seen")?;
    let id = control_id
        .trust_domain()
        .service(service)
        .map_err(|e| e.to_string())?;
    let (key_pem, csr_pem) = key_and_csr(&id)?;
    let body = serde_json::json!({ "service": service, "token": token.trim(), "csr_pem": csr_pem });
    request_certificate(&mut sender, control, "/v1/bootstrap", &body, &key_pem, dir).await
}

/// Sends a CSR request (`/v1/bootstrap` or `/v1/renew`), and writes the certificate the
/// control plane answers with beside `key_pem`.
pub(crate) async fn request_certificate(
    sender: &mut client::Sender,
    control: &str,
    path: &str,
    body: &serde_json::Value,
    key_pem: &str,
    dir: &Path,
) -> Result<Issued, String> {
    let request = client::request(
        control,
        http::Method::POST,
        path,
        crate::body::full(Bytes::from(body.to_string())),
    )?;
    let (status, answer) = client::exchange(sender, request).await?;
    if !status.is_success() {
        return Err(format!(
            "the control plane refused ({status}): {}",
            client::error_text(&answer)
        ));
    }
    let issued: Issued = serde_json::from_slice(&answer)
        .map_err(|e| format!("the control plane's answer is not a certificate: {e}"))?;
    write_credentials(dir, &issued, key_pem)?;
    Ok(issued)
}

/// A new ECDSA P-256 key (PKCS#8 PEM) and a CSR asking for exactly the URI SAN `id`.
pub(crate) fn key_and_csr(id: &SpiffeId) -> Result<(String, String), String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        rcgen::string::Ia5String::try_from(id.to_string()).map_err(|e| e.to_string())?,
    )];
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| e.to_string())?;
    Ok((key.serialize_pem(), csr))
}

/// Checks that the certificate matches the key, then writes the bundle, the key (0600) and
/// the certificate, each atomically, in the order the credential watcher expects.
pub(crate) fn write_credentials(dir: &Path, issued: &Issued, key_pem: &str) -> Result<(), String> {
    mesh_identity::Identity::from_pem(issued.cert_pem.as_bytes(), key_pem.as_bytes())
        .map_err(|e| format!("the certificate from the control plane is unusable: {e}"))?;
    TrustBundle::from_pem(issued.bundle_pem.as_bytes())
        .map_err(|e| format!("the bundle from the control plane is unusable: {e}"))?;
    create_private_dir(dir)?;
    let paths = IdentityPaths::in_dir(dir);
    write_atomic(&paths.bundle, issued.bundle_pem.as_bytes(), 0o644)?;
    write_atomic(&paths.key, key_pem.as_bytes(), 0o600)?;
    write_atomic(&paths.cert, issued.cert_pem.as_bytes(), 0o644)
}

fn create_private_dir(dir: &Path) -> Result<(), String> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// Writes `bytes` beside `path` with `mode`, then renames it over `path`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let result = (|| {
        let _ = std::fs::remove_file(&tmp);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        #[cfg(not(unix))]
        let _ = mode;
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csr_asks_for_the_spiffe_id_and_the_key_stays_private() {
        let id = SpiffeId::parse("spiffe://shop.example/payments").expect("id");
        let (key, csr) = key_and_csr(&id).expect("csr");
        assert!(key.contains("PRIVATE KEY") && csr.contains("CERTIFICATE REQUEST"));
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&csr).expect("parse");
        assert!(matches!(
            parsed.params.subject_alt_names.as_slice(),
            [rcgen::SanType::URI(uri)] if uri.as_str() == "spiffe://shop.example/payments"
        ));
    }

    #[test]
    fn keys_are_written_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.pem");
        write_atomic(&path, b"one", 0o600).expect("write");
        write_atomic(&path, b"two", 0o600).expect("replace");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
