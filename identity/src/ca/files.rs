//! Writing credentials: atomically (a watcher never sees half a file), keys readable by
//! their owner only.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::IdentityError;

/// The mode of private keys.
pub(crate) const PRIVATE: u32 = 0o600;
/// The mode of certificates and bundles.
pub(crate) const PUBLIC: u32 = 0o644;

/// Creates `dir` and its missing parents; with `private`, new directories get mode 0700.
pub(crate) fn create_dir(dir: &Path, private: bool) -> Result<(), IdentityError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    #[cfg(not(unix))]
    let _ = private;
    builder.create(dir).map_err(|source| IdentityError::Write {
        path: dir.to_owned(),
        source,
    })
}

/// Replaces `path` with `bytes`: writes `<path>.tmp` with `mode`, then renames it over.
pub(crate) fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IdentityError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            options.mode(mode);
            let file = options.open(&tmp)?;
            // `mode` applies only when the file is created: a leftover `.tmp` keeps its own.
            file.set_permissions(fs::Permissions::from_mode(mode))?;
            write_all(file, bytes)?;
        }
        #[cfg(not(unix))]
        {
            let _ = mode;
            write_all(options.open(&tmp)?, bytes)?;
        }
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|source| IdentityError::Write {
        path: path.to_owned(),
        source,
    })
}

fn write_all(mut file: fs::File, bytes: &[u8]) -> std::io::Result<()> {
    file.write_all(bytes)?;
    file.sync_all()
}

/// Removes `path` if it exists.
pub(crate) fn remove(path: &Path) -> Result<(), IdentityError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(IdentityError::Write {
            path: path.to_owned(),
            source,
        }),
    }
}
