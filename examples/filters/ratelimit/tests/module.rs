//! The module itself: builds `ratelimit.wasm` for `wasm32-unknown-unknown` (release, as
//! `examples/filters/build.sh` and the end-to-end tests build it, into the same
//! `target/wasm-filters`) and reads it with `wasmparser`: valid, the ABI's entry points
//! exported, the config's JSON Schema in the `mesh.config_schema` custom section.

use std::path::PathBuf;
use std::process::Command;

use wasmparser::{Parser, Payload, Validator};

fn build() -> Vec<u8> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../..");
    let target = root.join("target/wasm-filters");
    let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "mesh-filter-ratelimit",
        ])
        .args(["--target", "wasm32-unknown-unknown", "--target-dir"])
        .arg(&target)
        .args(["--config", "profile.release.opt-level=3"])
        .args(["--config", "profile.release.lto=true"])
        .args(["--config", "profile.release.codegen-units=1"])
        .args(["--config", "profile.release.panic=\"abort\""])
        .args(["--config", "profile.release.debug=0"])
        .args(["--config", "profile.release.strip=\"debuginfo\""])
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "the wasm build failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let module = target.join("wasm32-unknown-unknown/release/ratelimit.wasm");
    std::fs::read(&module).unwrap_or_else(|e| panic!("{}: {e}", module.display()))
}

#[test]
fn the_module_exports_the_abi_and_declares_its_schema() {
    let bytes = build();
    Validator::new()
        .validate_all(&bytes)
        .expect("wasmparser validates the module");
    let mut exports = Vec::new();
    let mut schema = None;
    let mut imports = Vec::new();
    for payload in Parser::new(0).parse_all(&bytes) {
        match payload.expect("parses") {
            Payload::ExportSection(section) => {
                for export in section {
                    exports.push(export.expect("an export").name.to_owned());
                }
            }
            Payload::ImportSection(section) => {
                for import in section {
                    let import = import.expect("an import");
                    imports.push((import.module.to_owned(), import.name.to_owned()));
                }
            }
            Payload::CustomSection(section) if section.name() == "mesh.config_schema" => {
                assert!(schema.is_none(), "one schema section");
                schema = Some(section.data().to_vec());
            }
            _ => {}
        }
    }
    for export in [
        "proxy_abi_version_0_2_1",
        "proxy_on_memory_allocate",
        "proxy_on_context_create",
        "proxy_on_vm_start",
        "proxy_on_configure",
        "proxy_on_request_headers",
        "proxy_on_response_headers",
        "proxy_on_http_call_response",
        "proxy_on_done",
        "proxy_on_delete",
        "memory",
    ] {
        assert!(
            exports.iter().any(|e| e == export),
            "{export} not in {exports:?}"
        );
    }
    assert!(
        imports
            .iter()
            .all(|(module, name)| module == "env" && name.starts_with("proxy_")),
        "only the ABI's imports: {imports:?}"
    );
    let schema = schema.expect("a mesh.config_schema section");
    assert_eq!(schema, ratelimit::CONFIG_SCHEMA.as_bytes());
    let schema: serde_json::Value = serde_json::from_slice(&schema).expect("JSON");
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
}
