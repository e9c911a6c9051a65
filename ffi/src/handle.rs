//! Handles given to C: opaque pointers that are never dereferenced. Each is a fresh
//! number (never reused in the life of the process) that keys a registry entry holding
//! the Rust object behind an `Arc`. So a freed, closed or made-up handle is always
//! detected (`DYNAMO_ERR_BAD_REQUEST`) instead of touching freed memory, and a call in
//! progress on one thread keeps its object alive while another thread frees the handle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::FfiError;

/// Handle numbers step by 16 so they look like aligned pointers. On 64-bit targets they
/// live in the kernel half of the address space, where no user-space pointer (a buffer
/// from `dynamo_free`'s registry, a caller's own variable) can ever be, so a buffer
/// passed as a handle or a handle passed as a buffer is always refused.
#[cfg(target_pointer_width = "64")]
static NEXT: AtomicUsize = AtomicUsize::new(0xFFFF_8000_0000_0000);
#[cfg(not(target_pointer_width = "64"))]
static NEXT: AtomicUsize = AtomicUsize::new(0x10_0000);

/// The live objects of one handle type. Invariant: a number is in `live` from `insert`
/// until `remove`, and is never handed out again.
pub(crate) struct Registry<T> {
    what: &'static str,
    live: Mutex<Option<HashMap<usize, Arc<T>>>>,
}

impl<T> Registry<T> {
    pub(crate) const fn new(what: &'static str) -> Self {
        Self {
            what,
            live: Mutex::new(None),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<usize, Arc<T>>) -> R) -> R {
        let mut guard = self.live.lock().unwrap_or_else(|p| p.into_inner());
        f(guard.get_or_insert_with(HashMap::new))
    }

    /// Registers `value` and returns its handle.
    pub(crate) fn insert<P>(&self, value: T) -> *mut P {
        let id = NEXT.fetch_add(16, Ordering::Relaxed);
        self.with(|m| m.insert(id, Arc::new(value)));
        id as *mut P
    }

    /// The object behind `handle`.
    pub(crate) fn get<P>(&self, handle: *const P) -> Result<Arc<T>, FfiError> {
        if handle.is_null() {
            return Err(FfiError::bad_request(format!(
                "{} handle is NULL",
                self.what
            )));
        }
        self.with(|m| m.get(&(handle as usize)).cloned())
            .ok_or_else(|| self.unknown(handle as usize))
    }

    /// Unregisters `handle`; the object is dropped once no call still uses it.
    pub(crate) fn remove<P>(&self, handle: *const P) -> Result<Arc<T>, FfiError> {
        if handle.is_null() {
            return Err(FfiError::bad_request(format!(
                "{} handle is NULL",
                self.what
            )));
        }
        self.with(|m| m.remove(&(handle as usize)))
            .ok_or_else(|| self.unknown(handle as usize))
    }

    fn unknown(&self, id: usize) -> FfiError {
        FfiError::bad_request(format!(
            "{} handle {id:#x} is not live: it was already freed or closed, or did not \
             come from libdynamo",
            self.what
        ))
    }
}
