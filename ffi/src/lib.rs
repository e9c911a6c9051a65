//! libdynamo's C API (`libdynamo.so`, `libdynamo.a`, `include/dynamo.h`).
//!
//! The header is generated from this crate by cbindgen (`cargo run -p xtask -- header`)
//! and its opening conventions block (`ffi/cbindgen.toml`) is the contract: names
//! `dynamo_<object>_<verb>`, a `dynamo_status` from every function, outputs written
//! only on success, handles that are opaque numbers checked on every call, buffers freed
//! with `dynamo_free`, panics caught at the boundary. This crate only wraps the client,
//! the node and the engines of the `dynamo` crate: coordination, encoding and retries
//! live there.

#![allow(non_camel_case_types)]
// Every export checks its pointers itself (NULL → error) and documents what it needs in
// the header; marking them `unsafe fn` would not help C callers.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod args;
mod cengine;
mod client;
mod engine;
mod error;
mod future;
mod handle;
mod keys;
mod node;

use std::ffi::{c_char, c_void};

pub use cengine::*;
pub use client::*;
pub use engine::*;
pub use error::*;
pub use future::*;
pub use keys::*;
pub use node::*;

// The library's own allocations use mimalloc in release builds, as the `dynamo` binary
// does: glibc's malloc was a fifth of a C client's CPU in workload A. Memory handed to C
// is freed by the library (`dynamo_free` and the `_free` functions), never by C's
// `free`, so the two allocators never meet. Debug builds keep the system allocator so
// valgrind's memcheck sees every allocation in the C tests.
#[cfg(not(debug_assertions))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The version of the C API this header describes. It grows by one with every change
/// to the API (a function added, a signature, struct or code changed); compare it with `dynamo_api_version()` to check that
/// the library a program loaded matches the header it was built with.
pub const DYNAMO_API_VERSION: u32 = 2;

/// The library's version, e.g. "0.1.0": a static NUL-terminated string, never freed.
/// Thread-safe.
/// Owned by the library.
#[no_mangle]
pub extern "C" fn dynamo_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The `DYNAMO_API_VERSION` the library was built with. Thread-safe.
/// Nothing to free.
#[no_mangle]
pub extern "C" fn dynamo_api_version() -> u32 {
    DYNAMO_API_VERSION
}

/// The message of the last failed call on this thread ("" if none failed yet), as
/// detailed as the library's own error: it names the function, the store, the nodes and
/// the numbers involved. The string belongs to the library and stays valid until the
/// next failing call on this thread; copy it to keep it. Never NULL.
/// Thread-safe: each thread has its own message.
#[no_mangle]
pub extern "C" fn dynamo_last_error_message() -> *const c_char {
    error::last_error_ptr()
}

/// A short English name of a status code ("ok", "quorum not reached", ...): a static
/// string, never freed, never NULL. Thread-safe.
/// Owned by the library.
#[no_mangle]
pub extern "C" fn dynamo_status_name(status: dynamo_status) -> *const c_char {
    let s: &'static str = match status {
        DYNAMO_OK => "ok\0",
        DYNAMO_ERR_QUORUM => "quorum not reached\0",
        DYNAMO_ERR_UNAVAILABLE => "unavailable\0",
        DYNAMO_ERR_TIMEOUT => "timeout\0",
        DYNAMO_ERR_BAD_REQUEST => "bad request\0",
        DYNAMO_ERR_UNKNOWN_STORE => "unknown store\0",
        DYNAMO_ERR_BAD_CONTEXT => "bad context\0",
        DYNAMO_ERR_TOO_LARGE => "too large\0",
        DYNAMO_ERR_INTERNAL => "internal error\0",
        DYNAMO_ERR_OVERLOADED => "overloaded\0",
        _ => "unknown status code\0",
    };
    s.as_ptr().cast()
}

/// Frees a buffer the library handed out (a value from `dynamo_engine_get`, a JSON
/// string from `dynamo_node_status` ...). NULL is a no-op. Freeing a buffer twice, or one
/// the library did not hand out, returns `DYNAMO_ERR_BAD_REQUEST` and frees nothing.
/// Thread-safe.
/// Ends the caller's ownership of `buffer`.
#[no_mangle]
pub extern "C" fn dynamo_free(buffer: *mut c_void) -> dynamo_status {
    boundary("dynamo_free", || args::free_buffer(buffer))
}

/// For testing a host's error handling: panics inside the library with `message` (or a
/// fixed text when NULL). The panic is caught at the boundary like any other, so this
/// returns `DYNAMO_ERR_INTERNAL` with the panic's message as the last error, and the
/// library stays usable. Thread-safe.
/// The message is copied.
#[no_mangle]
pub extern "C" fn dynamo_debug_panic(message: *const c_char) -> dynamo_status {
    boundary("dynamo_debug_panic", || {
        // SAFETY: NULL or a NUL-terminated string, as documented.
        let text = unsafe { args::opt_text(message, "message") }?.unwrap_or("dynamo_debug_panic");
        panic!("{text}")
    })
}
