//! Filter modules the table pins but the module directory lacks: fetched by digest from
//! the control plane (`GET /v1/modules/<sha256>`), checked, and renamed into place.

use std::path::{Path, PathBuf};

use mesh_table::Table;
use sha2::{Digest, Sha256};

use super::client::{self, Sender};

/// Fetches every module of `table` that no directory of `dirs` holds with its pinned
/// digest, into the first directory. `Err` names the module that could not be fetched.
pub(crate) async fn ensure(
    table: &Table,
    dirs: &[PathBuf],
    control: &str,
    sender: &mut Sender,
) -> Result<usize, String> {
    let Some(target) = dirs.first() else {
        return Ok(0);
    };
    let mut fetched = 0;
    for filter in &table.filters {
        if !is_file_name(&filter.module) {
            return Err(format!("module `{}` is not a file name", filter.module));
        }
        if dirs
            .iter()
            .any(|dir| has(&dir.join(&filter.module), &filter.sha256))
        {
            continue;
        }
        let digest = hex(&filter.sha256);
        let request = client::request(
            control,
            http::Method::GET,
            &format!("/v1/modules/{digest}"),
            crate::body::empty(),
        )?;
        let (status, bytes) = client::exchange(sender, request).await?;
        if !status.is_success() {
            return Err(format!(
                "cannot fetch filter module `{}` ({digest}): {status} {}",
                filter.module,
                client::error_text(&bytes)
            ));
        }
        let got: [u8; 32] = Sha256::digest(&bytes).into();
        if got != filter.sha256 {
            return Err(format!(
                "filter module `{}` from the control plane has SHA-256 {}, not the pinned {digest}",
                filter.module,
                hex(&got)
            ));
        }
        std::fs::create_dir_all(target)
            .map_err(|e| format!("cannot create {}: {e}", target.display()))?;
        super::bootstrap::write_atomic(&target.join(&filter.module), &bytes, 0o644)?;
        tracing::info!(module = %filter.module, sha256 = %digest, "filter module fetched from the control plane");
        fetched += 1;
    }
    Ok(fetched)
}

/// Whether `path` holds bytes of digest `sha256`.
fn has(path: &Path, sha256: &[u8; 32]) -> bool {
    std::fs::read(path).is_ok_and(|bytes| <[u8; 32]>::from(Sha256::digest(&bytes)) == *sha256)
}

/// A plain file name: nothing that climbs out of the module directory.
fn is_file_name(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!(components.next(), Some(std::path::Component::Normal(_)))
        && components.next().is_none()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_stay_in_the_directory() {
        assert!(is_file_name("ratelimit.wasm"));
        for bad in ["../x.wasm", "/etc/passwd", "a/b.wasm", "", ".."] {
            assert!(!is_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_file_counts_only_with_the_pinned_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.wasm");
        std::fs::write(&path, b"module").expect("write");
        let digest: [u8; 32] = Sha256::digest(b"module").into();
        assert!(has(&path, &digest));
        assert!(!has(&path, &[0; 32]));
        assert!(!has(&dir.path().join("missing.wasm"), &digest));
    }
}
