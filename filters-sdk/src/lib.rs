//! `filters-sdk`: write mesh WASM filters in Rust against the proxy-wasm ABI 0.2.1.
//!
//! Three layers: the raw imports ([`abi`](crate::abi), private) each with a safe wrapper
//! returning [`HostError`]; a dispatcher from the exported entry points to the filter's
//! objects; and the traits a filter implements, [`Filter`] and [`HttpFilter`]. A filter
//! crate (`crate-type = ["cdylib", "rlib"]`) says `filters_sdk::filter!(MyFilter);` once,
//! and `filters_sdk::config_schema!(r#"{...}"#);` to declare its config's JSON Schema in
//! the module's `mesh.config_schema` custom section.
//!
//! On other targets than `wasm32` the ABI is a mock host, so filters build and unit-test
//! natively with [`testing::Harness`]. See `docs/filters.md`.

mod abi;
mod codec;
mod contexts;
mod dispatch;
mod error;
mod filter;
mod headers;
mod hostcalls;
pub mod log;
mod memory;
pub mod metrics;
pub mod shared;
mod stream;
pub mod time;

#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use error::HostError;
pub use filter::{Action, Filter, HttpFilter};
pub use headers::Headers;
pub use stream::{CallResponse, Request, Response, Stream, Token};

/// A property of the plugin or of the current request (`["plugin_name"]`,
/// `["source", "principal"]`), `None` if the host has no such property. Requests have the
/// same through [`Stream::property`].
pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
    hostcalls::property(path)
}

/// The name of the custom section that carries a filter's config schema.
pub const CONFIG_SCHEMA_SECTION: &str = "mesh.config_schema";

/// What the macros expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::dispatch::*;
    pub use crate::memory::allocate;

    /// `schema`'s bytes as an array (for the custom section's static).
    pub const fn schema_bytes<const N: usize>(schema: &str) -> [u8; N] {
        let bytes = schema.as_bytes();
        let mut out = [0u8; N];
        let mut i = 0;
        while i < N {
            out[i] = bytes[i];
            i += 1;
        }
        out
    }
}

/// Exports the proxy-wasm ABI 0.2.1 entry points for filter type `$filter` (a [`Filter`]).
/// Invoke once, in the filter crate's root. The exports exist on `wasm32` only; natively
/// the [`testing`] harness calls the dispatcher directly.
#[macro_export]
macro_rules! filter {
    ($filter:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::__private as d;

            #[no_mangle]
            pub extern "C" fn proxy_abi_version_0_2_1() {}

            #[no_mangle]
            pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
                d::allocate(size)
            }

            #[no_mangle]
            pub extern "C" fn malloc(size: usize) -> *mut u8 {
                d::allocate(size)
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_context_create(id: u32, parent: u32) {
                d::on_context_create::<$filter>(id, parent)
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_vm_start(id: u32, size: usize) -> bool {
                d::on_vm_start::<$filter>(id, size)
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_configure(id: u32, size: usize) -> bool {
                d::on_configure::<$filter>(id, size)
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_request_headers(id: u32, n: usize, eos: bool) -> u32 {
                d::on_request_headers::<$filter>(id, n, eos)
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_request_body(id: u32, size: usize, eos: bool) -> u32 {
                d::on_request_body::<$filter>(id, size, eos)
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_request_trailers(id: u32, n: usize) -> u32 {
                d::on_request_trailers::<$filter>(id, n)
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_response_headers(id: u32, n: usize, flags: u32) -> u32 {
                d::on_response_headers::<$filter>(id, n, flags)
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_response_body(id: u32, size: usize, eos: bool) -> u32 {
                d::on_response_body::<$filter>(id, size, eos)
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_response_trailers(id: u32, n: usize) -> u32 {
                d::on_response_trailers::<$filter>(id, n)
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_http_call_response(
                id: u32,
                token: u32,
                headers: usize,
                body: usize,
                trailers: usize,
            ) {
                d::on_http_call_response::<$filter>(id, token, headers, body, trailers)
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_tick(id: u32) {
                d::on_tick::<$filter>(id)
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_log(id: u32) {
                d::on_log::<$filter>(id)
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_done(id: u32) -> bool {
                d::on_done::<$filter>(id)
            }

            #[no_mangle]
            pub extern "C" fn proxy_on_delete(id: u32) {
                d::on_delete::<$filter>(id)
            }
        };
    };
}

/// Declares the JSON Schema (draft 2020-12) of the filter's config: the bytes go into the
/// module's `mesh.config_schema` custom section, where `meshc check` finds them and checks
/// a policy's `config` against them. Also defines `pub const CONFIG_SCHEMA: &str`.
#[macro_export]
macro_rules! config_schema {
    ($schema:expr) => {
        /// The JSON Schema of this filter's config (also the module's `mesh.config_schema`
        /// custom section).
        pub const CONFIG_SCHEMA: &str = $schema;

        const _: () = {
            #[cfg_attr(target_arch = "wasm32", link_section = "mesh.config_schema")]
            #[used]
            static MESH_CONFIG_SCHEMA: [u8; CONFIG_SCHEMA.len()] =
                $crate::__private::schema_bytes(CONFIG_SCHEMA);
        };
    };
}
