//! The example WASM filters (`examples/filters/`), built for `wasm32-unknown-unknown` once
//! per test process, for end-to-end tests that load them into the proxy.
//!
//! They build in their own target directory (`target/wasm-filters`), so the build never
//! waits on the lock of the `cargo test` that runs the tests. The SDK filters are members of
//! the main workspace; the two on the public `proxy-wasm` crate are a workspace of their own
//! (`examples/filters/proxy-wasm/`) built into the same directory, so [`wasm_dir`] holds
//! every module and a policy's `module "ratelimit.wasm"` is found with `--module-path`.
//! `examples/filters/build.sh` runs the same builds for people.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::workspace_root;

/// The filters on our SDK: their module names (`<name>.wasm`).
pub const SDK_FILTERS: [&str; 6] = [
    "ratelimit",
    "audit",
    "auth",
    "misbehave",
    "header_adder",
    "noop",
];

/// The filters on the public `proxy-wasm` crate: their module names.
pub const PROXY_WASM_FILTERS: [&str; 2] = ["pw_header", "pw_authcall"];

/// The SDK filters' packages.
const SDK_PACKAGES: [&str; 6] = [
    "mesh-filter-ratelimit",
    "mesh-filter-audit",
    "mesh-filter-auth",
    "mesh-filter-misbehave",
    "mesh-filter-header-adder",
    "mesh-filter-noop",
];

/// The release profile for modules: small and fast, and a panic is a trap (`unreachable`)
/// instead of unwinding code. Given on the command line because the workspace's profile is
/// shared with the native binaries (and must keep unwinding for them).
pub const PROFILE: [&str; 12] = [
    "--config",
    "profile.release.opt-level=3",
    "--config",
    "profile.release.lto=true",
    "--config",
    "profile.release.codegen-units=1",
    "--config",
    "profile.release.panic=\"abort\"",
    "--config",
    "profile.release.debug=0",
    "--config",
    "profile.release.strip=\"debuginfo\"",
];

/// The directory holding every example module (`ratelimit.wasm`, `pw_header.wasm`, ...),
/// built first (once per process).
pub fn wasm_dir() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BUILT.get_or_init(build) {
        Ok(dir) => dir.clone(),
        Err(why) => panic!("the example filters did not build:\n{why}"),
    }
}

/// The path of module `name` (`ratelimit`, `header-adder`, `pw_authcall.wasm`, ...), built
/// first (once per process). Panics if there is no such module.
pub fn wasm(name: &str) -> PathBuf {
    let stem = name.trim_end_matches(".wasm").replace('-', "_");
    let path = wasm_dir().join(format!("{stem}.wasm"));
    assert!(
        path.is_file(),
        "no filter module {name}: {} does not exist (known: {:?} {:?})",
        path.display(),
        SDK_FILTERS,
        PROXY_WASM_FILTERS
    );
    path
}

/// The target directory of the module builds.
pub fn target_dir() -> PathBuf {
    workspace_root().join("target").join("wasm-filters")
}

fn build() -> Result<PathBuf, String> {
    let root = workspace_root();
    let target = target_dir();
    let mut sdk = cargo(&root, &target);
    for package in SDK_PACKAGES {
        sdk.args(["-p", package]);
    }
    run(sdk)?;
    let pw_root = root.join("examples/filters/proxy-wasm");
    run(cargo(&pw_root, &target))?;
    Ok(target.join("wasm32-unknown-unknown").join("release"))
}

/// `cargo build --release --locked --target wasm32-unknown-unknown` in `dir`'s workspace.
fn cargo(dir: &Path, target: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(dir)
        .args(["build", "--release", "--locked", "--quiet"])
        .args(["--target", "wasm32-unknown-unknown", "--target-dir"])
        .arg(target)
        .args(PROFILE)
        // Flags meant for the outer (native) build do not apply to the modules.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR");
    command
}

fn run(mut command: Command) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|e| format!("{command:?} did not start: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{command:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// What the tests check of a module, read without a WASM library: its export names and
/// custom sections.
#[derive(Debug, Default, Clone)]
pub struct ModuleInfo {
    /// The export names.
    pub exports: Vec<String>,
    /// (name, contents) of each custom section.
    pub custom_sections: Vec<(String, Vec<u8>)>,
}

impl ModuleInfo {
    /// The contents of custom section `name`.
    pub fn custom_section(&self, name: &str) -> Option<&[u8]> {
        self.custom_sections
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, data)| data.as_slice())
    }
}

/// Reads the exports and custom sections of a WASM module; `None` if `bytes` is not one
/// (bad magic or version, or a section that runs past the end).
pub fn module_info(bytes: &[u8]) -> Option<ModuleInfo> {
    if bytes.get(..8)? != b"\0asm\x01\0\0\0" {
        return None;
    }
    let mut info = ModuleInfo::default();
    let mut at = 8;
    while at < bytes.len() {
        let id = bytes[at];
        at += 1;
        let size = leb(bytes, &mut at)? as usize;
        let section = bytes.get(at..at.checked_add(size)?)?;
        at += size;
        let mut p = 0;
        match id {
            0 => {
                let name = name(section, &mut p)?;
                info.custom_sections
                    .push((name, section.get(p..)?.to_vec()));
            }
            7 => {
                for _ in 0..leb(section, &mut p)? {
                    info.exports.push(name(section, &mut p)?);
                    p += 1; // the kind
                    leb(section, &mut p)?; // the index
                }
            }
            _ => {}
        }
    }
    Some(info)
}

fn leb(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn name(bytes: &[u8], at: &mut usize) -> Option<String> {
    let len = leb(bytes, at)? as usize;
    let name = bytes.get(*at..at.checked_add(len)?)?;
    *at += len;
    String::from_utf8(name.to_vec()).ok()
}
