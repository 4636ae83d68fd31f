//! Renewal: when two thirds of the certificate's lifetime has passed, a new key and CSR
//! over mTLS with the current certificate (`POST /v1/renew`); on failure, again with
//! backoff while the current one is still valid.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_identity::{Credentials, IdentityPaths};

use super::backoff::Backoff;
use super::bootstrap::{key_and_csr, request_certificate, Issued};
use super::client;

/// Renews the credentials in `dir` before they expire, until the process ends.
pub(crate) async fn run(control: String, credentials: Arc<Credentials>, dir: PathBuf) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        let wait = due(&credentials, &dir)
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        tokio::time::sleep(wait).await;
        match once(&control, &credentials, &dir).await {
            Ok(issued) => {
                backoff.reset();
                let reloaded = {
                    let credentials = Arc::clone(&credentials);
                    tokio::task::spawn_blocking(move || credentials.reload()).await
                };
                match reloaded {
                    Ok(Ok(_)) => {
                        tracing::info!(expires_at = %issued.expires_at, "workload certificate renewed")
                    }
                    // `reload` logged why; try again rather than wait for the old expiry.
                    _ => tokio::time::sleep(backoff.next_delay()).await,
                }
            }
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::error!(%error, retry_in_ms = delay.as_millis() as u64, "certificate renewal failed; the current certificate keeps serving");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// When the current certificate is two thirds through its life. Its life starts when it was
/// written here (the certificate's `notBefore` is backdated for clock skew).
fn due(credentials: &Credentials, dir: &std::path::Path) -> SystemTime {
    let info = credentials.cert_info();
    let written = std::fs::metadata(IdentityPaths::in_dir(dir).cert)
        .and_then(|m| m.modified())
        .unwrap_or(info.not_before);
    renew_at(info.not_before.max(written), info.not_after)
}

/// Two thirds of the way from `start` to `end`.
fn renew_at(start: SystemTime, end: SystemTime) -> SystemTime {
    let life = end.duration_since(start).unwrap_or_default();
    start + life * 2 / 3
}

async fn once(
    control: &str,
    credentials: &Credentials,
    dir: &std::path::Path,
) -> Result<Issued, String> {
    let expected = credentials
        .trust_domain()
        .service(client::CONTROL_SERVICE)
        .map_err(|e| e.to_string())?;
    let tls = credentials
        .client_config(&expected, mesh_identity::tls::Alpn::H2)
        .map_err(|e| e.to_string())?;
    let mut sender = client::connect(control, tls).await?;
    let (key_pem, csr_pem) = key_and_csr(&credentials.spiffe_id())?;
    let body = serde_json::json!({ "csr_pem": csr_pem });
    request_certificate(&mut sender, control, "/v1/renew", &body, &key_pem, dir).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_at_two_thirds() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let end = start + Duration::from_secs(30);
        assert_eq!(renew_at(start, end), start + Duration::from_secs(20));
        assert_eq!(renew_at(end, start), end);
    }
}
