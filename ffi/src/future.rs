//! `dynamo_future`: the result of a call that has not finished yet. A caller blocks on
//! it, polls it, or gives it a completion callback, as with FoundationDB's `FDBFuture`
//! and the Cassandra driver's `CassFuture`.

use std::ffi::c_void;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use futures::FutureExt;

use dynamo_core::client::{GetResponse, KeyPage, PutResponse};
use dynamo_core::error::DynamoError;

use crate::args;
use crate::client::{new_get_result, new_put_result};
use crate::error::{boundary, dynamo_status, panic_text, FfiError};
use crate::handle::Registry;
use crate::{dynamo_get_result, dynamo_put_result};

/// An operation in progress (opaque). Created by the `_async` functions, freed with
/// `dynamo_future_free`. All its functions are thread-safe.
pub struct dynamo_future {
    _opaque: [u8; 0],
}

/// A completion callback: called exactly once, on a library thread, when `future` is
/// ready, with the `user` pointer given to `dynamo_future_set_callback`. It must return
/// promptly (it runs on a thread that completes other futures) and must not unwind (a
/// C++ exception escaping it aborts the process). It may read the outcome, free its
/// future and start new requests; `dynamo_future_wait` and `dynamo_node_stop` return
/// `DYNAMO_ERR_BAD_REQUEST` there, as they would block the thread.
pub type dynamo_future_callback =
    Option<unsafe extern "C-unwind" fn(future: *mut dynamo_future, user: *mut c_void)>;

pub(crate) enum Outcome {
    Get(Result<GetResponse, DynamoError>),
    Put(Result<PutResponse, DynamoError>),
    Json(Result<String, FfiError>),
    Keys(Result<KeyPage, DynamoError>),
    Failed(FfiError),
}

struct Callback {
    f: unsafe extern "C-unwind" fn(*mut dynamo_future, *mut c_void),
    user: *mut c_void,
}

// SAFETY: the header documents that the callback and its user pointer are called from a
// library thread; the caller promises they may be.
unsafe impl Send for Callback {}

#[derive(Default)]
struct Slot {
    outcome: Option<Arc<Outcome>>,
    callback: Option<Callback>,
    /// A callback was set (it may have run already): only one per future.
    has_callback: bool,
}

pub(crate) struct FutureState {
    slot: Mutex<Slot>,
    ready: Condvar,
    handle: OnceLock<usize>,
}

pub(crate) static FUTURES: Registry<FutureState> = Registry::new("dynamo_future");

thread_local! {
    /// Set while this thread runs a completion callback.
    static IN_CALLBACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the calling thread is running a completion callback.
pub(crate) fn in_callback() -> bool {
    IN_CALLBACK.try_with(|c| c.get()).unwrap_or(false)
}

/// Refuses `what` inside a completion callback: blocking there can stall the threads
/// that complete futures, and with them every future.
pub(crate) fn refuse_in_callback(what: &str) -> Result<(), FfiError> {
    if in_callback() {
        return Err(FfiError::bad_request(format!(
            "{what} cannot be called from a completion callback: it would block a thread \
             that completes futures (start another request with a callback instead)"
        )));
    }
    Ok(())
}

/// The runtime that drives futures and calls completion callbacks: two worker threads.
fn runtime() -> Result<&'static tokio::runtime::Runtime, FfiError> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("dynamo-callbacks")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| FfiError::internal(format!("starting libdynamo's callback threads: {e}")))
}

impl FutureState {
    fn complete(&self, outcome: Outcome) {
        let callback = {
            let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
            slot.outcome = Some(Arc::new(outcome));
            self.ready.notify_all();
            slot.callback.take()
        };
        if let Some(cb) = callback {
            self.call(cb);
        }
    }

    fn call(&self, cb: Callback) {
        let handle = self.handle.get().copied().unwrap_or(0) as *mut dynamo_future;
        IN_CALLBACK.with(|c| c.set(true));
        // SAFETY: a C function pointer the caller registered, with its own user pointer.
        // A foreign exception escaping it aborts the process (the "C-unwind" ABI makes
        // that defined behaviour).
        unsafe { (cb.f)(handle, cb.user) };
        IN_CALLBACK.with(|c| c.set(false));
    }

    fn outcome(&self) -> Option<Arc<Outcome>> {
        self.slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .outcome
            .clone()
    }
}

/// Starts `work` on the library's runtime and returns the future's handle.
pub(crate) fn spawn<F>(work: F) -> Result<*mut dynamo_future, FfiError>
where
    F: Future<Output = Outcome> + Send + 'static,
{
    let rt = runtime()?;
    let state = FutureState {
        slot: Mutex::new(Slot::default()),
        ready: Condvar::new(),
        handle: OnceLock::new(),
    };
    let handle: *mut dynamo_future = FUTURES.insert(state);
    let state = FUTURES.get(handle)?;
    let _ = state.handle.set(handle as usize);
    rt.spawn(async move {
        let outcome = match AssertUnwindSafe(work).catch_unwind().await {
            Ok(o) => o,
            Err(p) => Outcome::Failed(FfiError::internal(format!(
                "internal error (a panic inside libdynamo, caught): {}",
                panic_text(p.as_ref())
            ))),
        };
        state.complete(outcome);
    });
    Ok(handle)
}

/// Blocks the calling thread until `future` is ready. Returns `DYNAMO_OK` once it is
/// (whatever the operation's own outcome, which `dynamo_future_get_result` /
/// `dynamo_future_put_result` give). Must not be called from a completion callback.
/// Borrows `future`. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_future_wait(future: *mut dynamo_future) -> dynamo_status {
    boundary("dynamo_future_wait", || {
        refuse_in_callback("dynamo_future_wait")?;
        let state = FUTURES.get(future)?;
        let mut slot = state.slot.lock().unwrap_or_else(|p| p.into_inner());
        while slot.outcome.is_none() {
            slot = state.ready.wait(slot).unwrap_or_else(|p| p.into_inner());
        }
        Ok(())
    })
}

/// Writes to `*ready` whether `future` is ready, without blocking.
/// Borrows `future`. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_future_is_ready(
    future: *mut dynamo_future,
    ready: *mut bool,
) -> dynamo_status {
    boundary("dynamo_future_is_ready", || {
        args::out(ready, "ready")?;
        let state = FUTURES.get(future)?;
        let is = state.outcome().is_some();
        // SAFETY: checked non-null above.
        unsafe { args::write(ready, is) };
        Ok(())
    })
}

/// Sets the callback called once when `future` is ready (see `dynamo_future_callback`).
/// If it is ready already, the callback is called soon on a library thread, never on
/// the calling one. One callback per future: a second call returns
/// `DYNAMO_ERR_BAD_REQUEST`. The future stays owned by the caller: free it (in the
/// callback or later) with `dynamo_future_free`.
/// Borrows `future`; `user` stays the caller's. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_future_set_callback(
    future: *mut dynamo_future,
    callback: dynamo_future_callback,
    user: *mut c_void,
) -> dynamo_status {
    boundary("dynamo_future_set_callback", || {
        let Some(f) = callback else {
            return Err(FfiError::bad_request("callback is NULL"));
        };
        let state = FUTURES.get(future)?;
        let mut slot = state.slot.lock().unwrap_or_else(|p| p.into_inner());
        if slot.has_callback {
            return Err(FfiError::bad_request("the future already has a callback"));
        }
        slot.has_callback = true;
        let cb = Callback { f, user };
        if slot.outcome.is_some() {
            // Ready: call it on a library thread, as documented.
            drop(slot);
            let rt = runtime()?;
            let state = state.clone();
            rt.spawn(async move { state.call(cb) });
        } else {
            slot.callback = Some(cb);
        }
        Ok(())
    })
}

/// The outcome of a get future: on `DYNAMO_OK` writes a new result to `*result` (free it
/// with `dynamo_get_result_free`); otherwise returns the operation's status with its
/// message as this thread's last error. The future must be ready
/// (`DYNAMO_ERR_BAD_REQUEST` otherwise) and come from `dynamo_client_get_async`. May be
/// called more than once; each successful call gives a new result.
/// Borrows `future`; the caller owns `*result`. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_future_get_result(
    future: *mut dynamo_future,
    result: *mut *mut dynamo_get_result,
) -> dynamo_status {
    boundary("dynamo_future_get_result", || {
        args::out(result, "result")?;
        match &*ready_outcome(future)? {
            Outcome::Get(Ok(r)) => {
                let h = new_get_result(r.clone());
                // SAFETY: checked non-null above.
                unsafe { args::write(result, h) };
                Ok(())
            }
            Outcome::Get(Err(e)) => Err(e.clone().into()),
            Outcome::Failed(e) => Err(FfiError::new(e.status, e.message.clone())),
            other => Err(wrong_kind(other, "a get")),
        }
    })
}

/// The outcome of a put or delete future: as `dynamo_future_get_result`, writing a
/// `dynamo_put_result` (free it with `dynamo_put_result_free`). `result` may be NULL to
/// check the status only.
/// Borrows `future`; the caller owns `*result`. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_future_put_result(
    future: *mut dynamo_future,
    result: *mut *mut dynamo_put_result,
) -> dynamo_status {
    boundary("dynamo_future_put_result", || {
        match &*ready_outcome(future)? {
            Outcome::Put(Ok(r)) => {
                if !result.is_null() {
                    let h = new_put_result(r.clone());
                    // SAFETY: non-null, and C promises it is writable.
                    unsafe { args::write(result, h) };
                }
                Ok(())
            }
            Outcome::Put(Err(e)) => Err(e.clone().into()),
            Outcome::Failed(e) => Err(FfiError::new(e.status, e.message.clone())),
            other => Err(wrong_kind(other, "a put or delete")),
        }
    })
}

/// The outcome of a status future (`dynamo_client_status_async`): on `DYNAMO_OK` writes
/// a new NUL-terminated JSON string to `*json`, which the caller owns and frees with
/// `dynamo_free`; otherwise returns the operation's status with its message. The
/// future must be ready. Borrows `future`. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_future_json_result(
    future: *mut dynamo_future,
    json: *mut *mut std::ffi::c_char,
) -> dynamo_status {
    boundary("dynamo_future_json_result", || {
        args::out(json, "json")?;
        match &*ready_outcome(future)? {
            Outcome::Json(Ok(text)) => {
                // SAFETY: checked non-null above.
                unsafe { args::write(json, args::give_buffer(text.as_bytes()).cast()) };
                Ok(())
            }
            Outcome::Json(Err(e)) | Outcome::Failed(e) => {
                Err(FfiError::new(e.status, e.message.clone()))
            }
            other => Err(wrong_kind(other, "a status")),
        }
    })
}

/// The outcome of a key-listing future (`dynamo_client_list_keys_async`): on
/// `DYNAMO_OK` writes a new page to `*page` (free it with `dynamo_key_page_free`);
/// otherwise returns the operation's status with its message. The future must be ready.
/// Borrows `future`; the caller owns `*page`. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_future_key_page_result(
    future: *mut dynamo_future,
    page: *mut *mut crate::dynamo_key_page,
) -> dynamo_status {
    boundary("dynamo_future_key_page_result", || {
        args::out(page, "page")?;
        match &*ready_outcome(future)? {
            Outcome::Keys(Ok(p)) => {
                let h = crate::keys::new_key_page(p.clone());
                // SAFETY: checked non-null above.
                unsafe { args::write(page, h) };
                Ok(())
            }
            Outcome::Keys(Err(e)) => Err(e.clone().into()),
            Outcome::Failed(e) => Err(FfiError::new(e.status, e.message.clone())),
            other => Err(wrong_kind(other, "a key listing")),
        }
    })
}

/// The error for reading a future's outcome with the wrong function: what the future
/// is and which function reads it.
fn wrong_kind(outcome: &Outcome, wanted: &str) -> FfiError {
    let (is, reader) = match outcome {
        Outcome::Get(_) => ("a get", "dynamo_future_get_result"),
        Outcome::Put(_) => ("a put or delete", "dynamo_future_put_result"),
        Outcome::Json(_) => ("a status", "dynamo_future_json_result"),
        Outcome::Keys(_) => ("a key listing", "dynamo_future_key_page_result"),
        Outcome::Failed(_) => ("failed", "any result function"),
    };
    FfiError::bad_request(format!(
        "this future is {is}, not {wanted}: read it with {reader}"
    ))
}

fn ready_outcome(future: *mut dynamo_future) -> Result<Arc<Outcome>, FfiError> {
    FUTURES.get(future)?.outcome().ok_or_else(|| {
        FfiError::bad_request("the future is not ready yet: wait, poll or use a callback first")
    })
}

/// Frees `future`. Freeing one that is not ready is allowed: the operation still runs to
/// its end, and a callback already set is still called (with a handle no longer live).
/// A second free returns `DYNAMO_ERR_BAD_REQUEST`.
/// Ends the caller's ownership. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_future_free(future: *mut dynamo_future) -> dynamo_status {
    boundary("dynamo_future_free", || FUTURES.remove(future).map(drop))
}
