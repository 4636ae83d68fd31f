//! Compiling the policy directory with the `meshc` library, and the filter modules it pins.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use mesh_table::Table;
use meshc::diag::{render, Diagnostic, Format};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A policy that compiled: the table, its encoding's checksum, the modules it pins.
#[derive(Debug)]
pub struct Compiled {
    /// The whole table.
    pub table: Arc<Table>,
    /// `mesh_table::checksum_hex` of its encoding.
    pub checksum: String,
    /// Its decision engine.
    pub engine: Arc<mesh_engine::Engine>,
    /// Filter modules by SHA-256 hex.
    pub modules: HashMap<String, Bytes>,
    /// The diagnostics (warnings) as `meshc check --format json` renders them.
    pub diagnostics: Value,
}

/// Loads and checks every `.mesh` file of `dir`; filter modules are searched beside the
/// files, then in `module_paths` (as `meshc check --module-path`). `Err` holds the
/// diagnostics document of a policy that does not compile.
pub fn compile(dir: &Path, module_paths: &[PathBuf]) -> Result<Compiled, Value> {
    let files = meshc::load::load(&[dir.to_path_buf()]).map_err(|e| load_error(&e.to_string()))?;
    let options = meshc::CheckOptions {
        module_paths: module_paths.to_vec(),
    };
    let checked = meshc::check(&files, &options);
    let diagnostics = diagnostics_json(&checked.diagnostics);
    if checked.diagnostics.iter().any(Diagnostic::is_error) {
        return Err(diagnostics);
    }
    let Some(table) = checked.table else {
        return Err(load_error("internal: the checker built no table"));
    };
    // A table every proxy would refuse is as bad as a policy error.
    if let Err(e) = mesh_table::validate(&table) {
        return Err(load_error(&format!(
            "internal: the compiled table is invalid: {e}"
        )));
    }
    let mut search = vec![dir.to_path_buf()];
    search.extend(module_paths.iter().cloned());
    let modules = load_modules(&table, &search).map_err(|e| load_error(&e))?;
    let checksum = checksum_of(&table);
    let table = Arc::new(table);
    let engine = mesh_engine::Engine::new(Arc::clone(&table))
        .map_err(|e| load_error(&format!("internal: {e}")))?;
    Ok(Compiled {
        engine: Arc::new(engine),
        table,
        checksum,
        modules,
        diagnostics,
    })
}

/// The checksum a proxy reports for `table`.
pub fn checksum_of(table: &Table) -> String {
    mesh_table::checksum_hex(&mesh_table::encode(table)).unwrap_or_default()
}

/// Reads each filter's module from the first directory that has it, as the compiler found
/// it, and checks it still hashes to the pinned digest.
pub fn load_modules(table: &Table, search: &[PathBuf]) -> Result<HashMap<String, Bytes>, String> {
    let mut modules = HashMap::new();
    for filter in &table.filters {
        let Some(path) = search
            .iter()
            .map(|d| d.join(&filter.module))
            .find(|p| p.is_file())
        else {
            return Err(format!(
                "filter `{}`: module `{}` not found",
                filter.name, filter.module
            ));
        };
        let bytes = std::fs::read(&path).map_err(|e| {
            format!(
                "filter `{}`: cannot read `{}`: {e}",
                filter.name,
                path.display()
            )
        })?;
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        if digest != filter.sha256 {
            return Err(format!(
                "filter `{}`: `{}` changed since it was pinned",
                filter.name,
                path.display()
            ));
        }
        modules.insert(hex(&digest), Bytes::from(bytes));
    }
    Ok(modules)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The `--format json` document of `meshc check`.
pub fn diagnostics_json(diagnostics: &[Diagnostic]) -> Value {
    serde_json::from_str(&render(diagnostics, Format::Json)).unwrap_or(Value::Null)
}

/// A diagnostics document for a policy that could not even be read: no diagnostic, one error.
fn load_error(message: &str) -> Value {
    serde_json::json!({
        "format_version": 1,
        "diagnostics": [],
        "errors": 1,
        "warnings": 0,
        "error": message,
    })
}

/// What the watcher compares between polls: every `.mesh` file's name, size and times.
pub fn fingerprint(dir: &Path) -> Vec<(String, u64, u128, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "mesh"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            Some((
                e.file_name().to_string_lossy().into_owned(),
                meta.len(),
                mtime,
                inode(&meta),
            ))
        })
        .collect();
    out.sort();
    out
}

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode(_: &std::fs::Metadata) -> u64 {
    0
}

/// A plain `*.mesh` file name: no directory part, no hidden file.
pub fn is_policy_file_name(name: &str) -> bool {
    name.len() > 5
        && name.ends_with(".mesh")
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Seconds since the epoch, for JSON.
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_file_names() {
        assert!(is_policy_file_name("shop.mesh"));
        assert!(is_policy_file_name("a-b_c.1.mesh"));
        for bad in [
            "../x.mesh",
            "a/b.mesh",
            ".mesh",
            ".x.mesh",
            "x.txt",
            "x.mesh/",
            "",
        ] {
            assert!(!is_policy_file_name(bad), "{bad}");
        }
    }
}
