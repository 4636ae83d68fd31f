//! The `addresses_file` a process writes once its listeners are bound (listen port 0):
//! TOML, one `key = "IP:PORT"` per listener.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// The addresses under `keys`, in order, if `file` exists. A file that exists but lacks a
/// key or is not TOML fails the test: the process wrote something else than it should.
pub fn read(file: &Path, keys: &[&str]) -> Option<Vec<SocketAddr>> {
    let text = std::fs::read_to_string(file).ok()?;
    let table: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{}: not TOML ({e}):\n{text}", file.display()));
    let addresses = keys
        .iter()
        .map(|key| {
            table
                .get(*key)
                .and_then(toml::Value::as_str)
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("{}: no address `{key}`:\n{text}", file.display()))
        })
        .collect();
    Some(addresses)
}

/// Waits up to `limit` for `file` (written whole, by rename) while `child` runs; `None` if
/// the process exits first or the time runs out.
pub async fn wait(
    file: &Path,
    keys: &[&str],
    child: &mut Child,
    limit: Duration,
) -> Option<Vec<SocketAddr>> {
    let started = Instant::now();
    loop {
        if let Some(addresses) = read(file, keys) {
            return Some(addresses);
        }
        if matches!(child.try_wait(), Ok(Some(_))) || started.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
