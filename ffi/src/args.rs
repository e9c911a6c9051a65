//! Reading arguments from C and writing results back, with the checks the C API
//! promises: NULL pointers and invalid UTF-8 are errors, outputs are written only on
//! success, buffers handed to C are freed by `dynamo_free` only.

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr};
use std::sync::Mutex;

use crate::error::FfiError;

/// A NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that outlives the call.
pub(crate) unsafe fn text<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, FfiError> {
    if ptr.is_null() {
        return Err(FfiError::bad_request(format!("{what} is NULL")));
    }
    // SAFETY: non-null, and the caller promises a NUL-terminated string alive for the call.
    let c = unsafe { CStr::from_ptr(ptr) };
    c.to_str()
        .map_err(|e| FfiError::bad_request(format!("{what} is not valid UTF-8: {e}")))
}

/// An optional string argument: NULL means absent.
///
/// # Safety
/// As [`text`].
pub(crate) unsafe fn opt_text<'a>(
    ptr: *const c_char,
    what: &str,
) -> Result<Option<&'a str>, FfiError> {
    if ptr.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded from the caller.
        unsafe { text(ptr, what) }.map(Some)
    }
}

/// A byte-buffer argument (`ptr` may be NULL when `len` is 0).
///
/// # Safety
/// `ptr` is NULL or points to `len` readable bytes that outlive the call.
pub(crate) unsafe fn bytes<'a>(
    ptr: *const u8,
    len: usize,
    what: &str,
) -> Result<&'a [u8], FfiError> {
    if ptr.is_null() {
        if len == 0 {
            return Ok(&[]);
        }
        return Err(FfiError::bad_request(format!(
            "{what} is NULL but its length is {len}"
        )));
    }
    if len > isize::MAX as usize {
        return Err(FfiError::bad_request(format!(
            "{what} length {len} is too large"
        )));
    }
    // SAFETY: non-null, and the caller promises `len` readable bytes alive for the call.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A pointer to `bytes` for C: a valid one even when empty (`Vec::as_ptr` of an empty
/// vector dangles, and C's `memcpy(dst, p, 0)` needs a valid `p`).
pub(crate) fn c_ptr(bytes: &[u8]) -> *const u8 {
    static EMPTY: u8 = 0;
    if bytes.is_empty() {
        &EMPTY
    } else {
        bytes.as_ptr()
    }
}

/// Checks an output pointer before any work is done.
pub(crate) fn out<T>(ptr: *mut T, what: &str) -> Result<(), FfiError> {
    if ptr.is_null() {
        Err(FfiError::bad_request(format!("output {what} is NULL")))
    } else {
        Ok(())
    }
}

/// Writes an output (only ever called on success, after [`out`] checked the pointer).
///
/// # Safety
/// `ptr` is non-null, aligned and writable.
pub(crate) unsafe fn write<T>(ptr: *mut T, value: T) {
    // SAFETY: the caller checked `ptr` with `out` and C promises it is writable.
    unsafe { ptr.write(value) }
}

/// Buffers handed to C, by address. Each holds at least one byte (a NUL after the
/// data), so every live buffer has a distinct address.
static BUFFERS: Mutex<Option<HashMap<usize, Vec<u8>>>> = Mutex::new(None);

/// Hands `data` to C as a buffer it frees with `dynamo_free`; it is NUL-terminated, so
/// text can be used as a C string.
pub(crate) fn give_buffer(data: &[u8]) -> *mut u8 {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.extend_from_slice(data);
    v.push(0);
    let ptr = v.as_mut_ptr();
    BUFFERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(ptr as usize, v);
    ptr
}

/// Frees a buffer from [`give_buffer`].
pub(crate) fn free_buffer(ptr: *mut c_void) -> Result<(), FfiError> {
    if ptr.is_null() {
        return Ok(());
    }
    BUFFERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashMap::new)
        .remove(&(ptr as usize))
        .map(drop)
        .ok_or_else(|| {
            FfiError::bad_request(format!(
                "buffer {ptr:p} is not live: it was already freed, or did not come from \
                 libdynamo"
            ))
        })
}
