//! Helpers shared by the `meshc` command tests: the workspace root, stand-in filter
//! modules, and running the binary.
#![allow(dead_code, unreachable_pub)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

/// The workspace root: example paths are given relative to it, as an operator would.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the compiler crate is in the workspace")
        .to_path_buf()
}

/// A directory holding the shop's filter modules (the smallest valid WebAssembly module).
pub fn modules() -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["ratelimit.wasm", "audit.wasm"] {
        fs::write(dir.path().join(name), b"\0asm\x01\0\0\0").expect("write module");
    }
    dir
}

/// Runs `meshc` from the workspace root, without colour.
pub fn meshc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshc"))
        .args(args)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .output()
        .expect("meshc runs")
}

/// The exit status.
pub fn status(output: &Output) -> i32 {
    output.status.code().expect("meshc exits normally")
}

/// Standard output as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A module holding only a `mesh.config_schema` custom section with `schema`.
pub fn module_with_schema(schema: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { byte } else { byte | 0x80 });
            if n == 0 {
                break;
            }
        }
    }
    let name = meshc::check::schema::SCHEMA_SECTION.as_bytes();
    let mut payload = Vec::new();
    leb(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.extend_from_slice(schema.as_bytes());
    let mut module = b"\0asm\x01\0\0\0\0".to_vec();
    leb(payload.len(), &mut module);
    module.extend(payload);
    module
}

/// The ratelimit example filter's config schema.
pub const RATELIMIT_SCHEMA: &str = r#"{
  "type": "object",
  "properties": {
    "requests_per_second": { "type": "integer", "minimum": 1 },
    "burst": { "type": "integer", "minimum": 1 }
  },
  "required": ["requests_per_second", "burst"],
  "additionalProperties": false
}"#;
