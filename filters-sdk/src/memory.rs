//! Guest memory the host writes into: `proxy_on_memory_allocate` hands out buffers, and
//! the wrappers take back what the host returned in them.

// The allocation entry point and the hand-back are raw pointers by nature of the ABI.
#![allow(unsafe_code)]

use std::alloc::Layout;
use std::ptr::NonNull;

/// Allocates `size` bytes for the host (the body of `proxy_on_memory_allocate`/`malloc`).
/// Zero bytes get a dangling non-null pointer; a failed allocation returns null.
pub fn allocate(size: usize) -> *mut u8 {
    if size == 0 {
        return NonNull::<u8>::dangling().as_ptr();
    }
    match Layout::array::<u8>(size) {
        // SAFETY: the layout has a non-zero size.
        Ok(layout) => unsafe { std::alloc::alloc(layout) },
        Err(_) => std::ptr::null_mut(),
    }
}

/// Takes ownership of a buffer the host returned: `size` bytes at `data`, allocated
/// by [`allocate`] (on `wasm32`, through `proxy_on_memory_allocate`).
pub(crate) fn take(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() || size == 0 {
        return Vec::new();
    }
    // SAFETY: the ABI says the host allocated exactly `size` bytes with
    // `proxy_on_memory_allocate`, i.e. `allocate(size)`: the global allocator with the
    // layout of `[u8; size]`, which is what `Vec<u8>` with capacity `size` frees with.
    unsafe { Vec::from_raw_parts(data, size, size) }
}
