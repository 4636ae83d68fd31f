//! Shared helpers for the end-to-end tests: locating the workspace's binaries, scratch
//! directories and stand-in filter modules; for the proxy's tests, the [`mesh::Mesh`]
//! fixture (real `mesh-proxy` processes on loopback), the application behind the sidecars
//! ([`backend`]), the clients ([`client`], over mTLS with [`tls`]) and the bodies they send ([`body`]).

pub mod addresses;
pub mod backend;
pub mod body;
pub mod client;
pub mod control;
pub mod filters;
pub mod interop;
pub mod mesh;
pub mod metrics;
pub mod raw;
pub mod resilience_support;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The environment variable naming a directory of prebuilt workspace binaries (`.ci/run`
/// builds them once, before the tests, and sets it): the tests run those and build nothing.
pub const BIN_DIR_ENV: &str = "MESH_BIN_DIR";

/// The path of a workspace binary. With [`BIN_DIR_ENV`] set, the prebuilt one there;
/// otherwise every workspace binary is built first (once per test process, so the tests
/// never run a stale one), all in one `cargo build --workspace --bins`: one feature set
/// for every binary and every test process, so no test rebuilds what another built.
pub fn binary(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        let path = PathBuf::from(dir).join(name);
        assert!(
            path.is_file(),
            "{} is not a file: ${BIN_DIR_ENV} names a directory without the binary `{name}` \
             (build them with `cargo build --workspace --bins`)",
            path.display()
        );
        return path;
    }
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--workspace", "--bins"])
            .current_dir(workspace_root())
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "cargo build --workspace --bins failed"
        );
    });
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from);
    target.join("debug").join(name)
}

/// Runs `meshc` with `args` in `dir`.
pub fn meshc(dir: &Path, args: &[&str]) -> Output {
    Command::new(binary("meshc"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run meshc: {e}"))
}

/// The smallest valid WebAssembly module (the header alone): a stand-in for filter modules
/// where a test needs only the module's presence and digest.
pub const EMPTY_WASM: &[u8] = b"\0asm\x01\0\0\0";

/// A scratch directory holding stand-ins for the example policies' filter modules.
pub fn module_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    for name in ["ratelimit.wasm", "audit.wasm"] {
        std::fs::write(dir.path().join(name), EMPTY_WASM)
            .unwrap_or_else(|e| panic!("write {name}: {e}"));
    }
    dir
}

/// The policies under `examples/policies`: each `.mesh` file and each directory.
pub fn example_policies() -> Vec<PathBuf> {
    let dir = workspace_root().join("examples/policies");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() || p.extension().is_some_and(|e| e == "mesh"))
        .collect();
    paths.sort();
    paths
}
