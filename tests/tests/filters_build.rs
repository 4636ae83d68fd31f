//! The example filters build for wasm32 (once, through `mesh_tests::filters`), and each
//! module is a proxy-wasm module: the entry points exported and, for the SDK's, a
//! `mesh.config_schema` section holding a JSON Schema.

use mesh_tests::filters::{module_info, wasm, wasm_dir, PROXY_WASM_FILTERS, SDK_FILTERS};

#[test]
fn every_example_filter_builds_to_a_proxy_wasm_module() {
    for name in SDK_FILTERS.iter().chain(&PROXY_WASM_FILTERS) {
        let path = wasm(name);
        assert_eq!(path.parent(), Some(wasm_dir().as_path()));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(bytes.starts_with(b"\0asm"), "{name}: not WebAssembly");
        let info = module_info(&bytes).unwrap_or_else(|| panic!("{name}: not a module"));
        // The proxy-wasm crate exports its allocator as `malloc` only (as Envoy accepts).
        assert!(
            info.exports
                .iter()
                .any(|e| e == "proxy_on_memory_allocate" || e == "malloc"),
            "{name}: no allocator export"
        );
        for export in [
            "proxy_on_context_create",
            "proxy_on_request_headers",
            "proxy_abi_version_0_2_1",
        ] {
            assert!(
                info.exports.iter().any(|e| e == export),
                "{name} does not export {export}: {:?}",
                info.exports
            );
        }
    }
}

#[test]
fn sdk_filters_declare_their_config_schema() {
    for name in SDK_FILTERS {
        let bytes = std::fs::read(wasm(name)).expect("built");
        let info = module_info(&bytes).expect("a module");
        let section = info
            .custom_section("mesh.config_schema")
            .unwrap_or_else(|| panic!("{name}: no mesh.config_schema section"));
        let schema: serde_json::Value = serde_json::from_slice(section)
            .unwrap_or_else(|e| panic!("{name}: the schema is not JSON: {e}"));
        assert_eq!(schema["type"], "object", "{name}");
        assert_eq!(schema["additionalProperties"], false, "{name}");
    }
    for name in PROXY_WASM_FILTERS {
        let info = module_info(&std::fs::read(wasm(name)).expect("built")).expect("a module");
        assert!(
            info.custom_section("mesh.config_schema").is_none(),
            "{name}"
        );
    }
}

#[test]
fn module_names_are_forgiving_and_unknown_ones_panic() {
    assert_eq!(wasm("header-adder"), wasm("header_adder.wasm"));
    let unknown = std::panic::catch_unwind(|| wasm("no-such-filter"));
    assert!(unknown.is_err());
}

#[test]
fn the_reader_refuses_what_is_not_a_module() {
    assert!(module_info(b"\0asm\x01\0\0").is_none());
    assert!(module_info(b"\x7fELF\x02\x01\x01\0").is_none());
    // A section that claims more bytes than there are.
    assert!(module_info(b"\0asm\x01\0\0\0\x00\x10\x04name").is_none());
}
