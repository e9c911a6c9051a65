//! Status codes, the per-thread last error message, and the boundary every export runs
//! inside: it catches panics so none ever unwinds into C.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use dynamo_core::error::{DynamoError, ErrorKind};

/// A status code: `DYNAMO_OK` (0) or one of the `DYNAMO_ERR_*` codes. Every function of
/// the C API returns one.
#[allow(non_camel_case_types)]
pub type dynamo_status = i32;

/// Success.
pub const DYNAMO_OK: dynamo_status = 0;
/// Fewer than R (get) or W (put) replicas answered; the message names who did not.
pub const DYNAMO_ERR_QUORUM: dynamo_status = 1;
/// No node could take the request (unreachable, shutting down, not started).
pub const DYNAMO_ERR_UNAVAILABLE: dynamo_status = 2;
/// A node did not answer in time; a write may have been applied (retrying it is safe).
pub const DYNAMO_ERR_TIMEOUT: dynamo_status = 3;
/// The call itself is wrong: NULL or freed handle, bad argument, invalid UTF-8, empty
/// or oversize key, bad R/W, misuse of a closed handle. Retrying will not help.
pub const DYNAMO_ERR_BAD_REQUEST: dynamo_status = 4;
/// The store is not hosted by the cluster.
pub const DYNAMO_ERR_UNKNOWN_STORE: dynamo_status = 5;
/// The context token is malformed or belongs to another key.
pub const DYNAMO_ERR_BAD_CONTEXT: dynamo_status = 6;
/// The key's record with its siblings would grow past the store's record limit: read
/// the key and write back with its context. (A single value over `max_value_size` is
/// `DYNAMO_ERR_BAD_REQUEST`.)
pub const DYNAMO_ERR_TOO_LARGE: dynamo_status = 7;
/// A bug, an engine failure, a protocol error or a caught panic.
pub const DYNAMO_ERR_INTERNAL: dynamo_status = 8;
/// Every node tried was too busy to start the request before its deadline and refused
/// it untouched (nothing was written). Not a failure of the cluster: back off briefly
/// and retry, or shed load.
pub const DYNAMO_ERR_OVERLOADED: dynamo_status = 9;

/// An error on its way to C: its status code and message.
#[derive(Debug)]
pub(crate) struct FfiError {
    pub(crate) status: dynamo_status,
    pub(crate) message: String,
}

impl FfiError {
    pub(crate) fn new(status: dynamo_status, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(DYNAMO_ERR_BAD_REQUEST, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(DYNAMO_ERR_INTERNAL, message)
    }
}

/// The status code of a client error kind.
pub(crate) fn status_of(kind: ErrorKind) -> dynamo_status {
    match kind {
        ErrorKind::Quorum => DYNAMO_ERR_QUORUM,
        ErrorKind::Unavailable => DYNAMO_ERR_UNAVAILABLE,
        ErrorKind::Timeout => DYNAMO_ERR_TIMEOUT,
        ErrorKind::BadRequest => DYNAMO_ERR_BAD_REQUEST,
        ErrorKind::UnknownStore => DYNAMO_ERR_UNKNOWN_STORE,
        ErrorKind::BadContext => DYNAMO_ERR_BAD_CONTEXT,
        ErrorKind::TooLarge => DYNAMO_ERR_TOO_LARGE,
        ErrorKind::Internal | ErrorKind::Protocol => DYNAMO_ERR_INTERNAL,
        ErrorKind::Overloaded => DYNAMO_ERR_OVERLOADED,
    }
}

impl From<DynamoError> for FfiError {
    fn from(e: DynamoError) -> Self {
        Self::new(status_of(e.kind), e.message)
    }
}

impl From<dynamo_engines::EngineError> for FfiError {
    fn from(e: dynamo_engines::EngineError) -> Self {
        use dynamo_engines::ErrorKind as K;
        let status = match e.kind() {
            K::InvalidArgument | K::UnknownKeyspace | K::UnknownEngine => DYNAMO_ERR_BAD_REQUEST,
            _ => DYNAMO_ERR_INTERNAL,
        };
        Self::new(status, e.to_string())
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

pub(crate) fn set_last_error(message: &str) {
    // Interior NULs would cut the message short in C: show them instead.
    let text = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    // During thread exit the thread-local may be gone: the status code still tells.
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = text);
}

pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR
        .try_with(|e| e.borrow().as_ptr())
        .unwrap_or(c"(no message: the thread is exiting)".as_ptr())
}

pub(crate) use dynamo_core::error::panic_message as panic_text;

/// Runs the body of export `name`: returns its status, records the message of a failure
/// as this thread's last error, and turns a panic into `DYNAMO_ERR_INTERNAL`.
pub(crate) fn boundary(name: &str, body: impl FnOnce() -> Result<(), FfiError>) -> dynamo_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => DYNAMO_OK,
        Ok(Err(e)) => {
            set_last_error(&format!("{name}: {}", e.message));
            e.status
        }
        Err(payload) => {
            set_last_error(&format!(
                "{name}: internal error (a panic inside libdynamo, caught at the C \
                 boundary): {}",
                panic_text(payload.as_ref())
            ));
            DYNAMO_ERR_INTERNAL
        }
    }
}
