//! Reading policy files: a directory is every `.mesh` file in it, in name order.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::source::SourceFile;

/// A policy path that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The path could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not UTF-8.
    #[error("`{path}` is not UTF-8 text (byte {offset} is invalid); policies are UTF-8 only")]
    NotUtf8 {
        /// The path.
        path: PathBuf,
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// No `.mesh` file was found.
    #[error("no `.mesh` files in `{0}`")]
    Empty(PathBuf),
}

/// Reads the policy at each path (a file, or a directory of `.mesh` files). File names in
/// diagnostics and in the table are relative to the directory given, or as given for files.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Arc<SourceFile>>, LoadError> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|source| LoadError::Io {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|source| LoadError::Io {
                    path: path.clone(),
                    source,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "mesh") && p.is_file())
                .collect();
            entries.sort();
            if entries.is_empty() {
                return Err(LoadError::Empty(path.clone()));
            }
            for entry in entries {
                let name = entry.file_name().map_or_else(
                    || entry.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                files.push(read(&entry, name)?);
            }
        } else {
            files.push(read(path, path.display().to_string())?);
        }
    }
    Ok(files)
}

fn read(path: &Path, name: String) -> Result<Arc<SourceFile>, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| LoadError::NotUtf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })?;
    Ok(SourceFile::with_path(name, text, Some(path.to_path_buf())))
}
