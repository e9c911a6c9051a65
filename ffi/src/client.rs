//! The client: `dynamo_client` and its results, `dynamo_get_result` and
//! `dynamo_put_result`. Every call has a blocking form and a future form.

use std::ffi::{c_char, CString};
use std::time::Duration;

use dynamo_core::client::{
    BlockingClient, Client, ClientOptions, Coordination, GetResponse, PutResponse,
};

use crate::args;
use crate::error::{boundary, dynamo_status, FfiError};
use crate::future::{self, dynamo_future, Outcome};
use crate::handle::Registry;

/// A connection to a cluster (opaque). Thread-safe: one client may be used by any number
/// of threads at once. Open with `dynamo_client_open`, close with `dynamo_client_close`.
pub struct dynamo_client {
    _opaque: [u8; 0],
}

/// The outcome of a get (opaque): the key's siblings and its context. Read it from any
/// thread; free it once with `dynamo_get_result_free`.
pub struct dynamo_get_result {
    _opaque: [u8; 0],
}

/// The outcome of a put or delete (opaque): the new context. Free it once with
/// `dynamo_put_result_free`.
pub struct dynamo_put_result {
    _opaque: [u8; 0],
}

/// Client-driven coordination (the paper's section 6.4, the default): the client holds
/// the ring, reads a key's replicas itself and sends writes straight to a node in the
/// key's preference list.
pub const DYNAMO_COORDINATION_CLIENT: i32 = 0;
/// Server-driven coordination: requests go to the given nodes in turn, which forward
/// them to a coordinator when they are not one.
pub const DYNAMO_COORDINATION_SERVER: i32 = 1;

/// Client settings. Fill it with `dynamo_client_options_init`, then change fields.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dynamo_client_options {
    /// `DYNAMO_COORDINATION_CLIENT` (default) or `DYNAMO_COORDINATION_SERVER`.
    pub coordination: i32,
    /// Timeout of each call to a node, connecting included, in ms (default 3000).
    pub timeout_ms: u32,
    /// Extra rounds over the nodes after every node failed a request as unreachable or
    /// timed out (default 0). A retried write keeps its request id: applied once.
    pub retries: u32,
    /// How often the client refreshes the ring, in ms (default 10000).
    pub ring_refresh_ms: u32,
}

struct ClientHandle {
    client: Client,
    blocking: BlockingClient,
    /// How long `dynamo_client_close` waits for the connection thread at most.
    close_wait: Duration,
}

static CLIENTS: Registry<ClientHandle> = Registry::new("dynamo_client");

pub(crate) struct GetResultData {
    response: GetResponse,
    context: CString,
    stale: CString,
}

pub(crate) struct PutResultData {
    context: CString,
}

static GET_RESULTS: Registry<GetResultData> = Registry::new("dynamo_get_result");
static PUT_RESULTS: Registry<PutResultData> = Registry::new("dynamo_put_result");

fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

pub(crate) fn new_get_result(response: GetResponse) -> *mut dynamo_get_result {
    let context = c_string(&response.context);
    let stale: String = response
        .stale_replicas
        .iter()
        .map(|n| format!("{n}\n"))
        .collect();
    let stale = c_string(&stale);
    GET_RESULTS.insert(GetResultData {
        response,
        context,
        stale,
    })
}

pub(crate) fn new_put_result(response: PutResponse) -> *mut dynamo_put_result {
    PUT_RESULTS.insert(PutResultData {
        context: c_string(&response.context),
    })
}

/// Fills `*options` with the defaults: client-driven, 3000 ms timeout, 0 retries, ring
/// refreshed every 10 s.
/// The caller owns `*options` (plain data, nothing to free). Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_client_options_init(options: *mut dynamo_client_options) -> dynamo_status {
    boundary("dynamo_client_options_init", || {
        args::out(options, "options")?;
        let d = ClientOptions::default();
        let o = dynamo_client_options {
            coordination: DYNAMO_COORDINATION_CLIENT,
            timeout_ms: d.timeout.as_millis() as u32,
            retries: d.retries,
            ring_refresh_ms: d.ring_refresh.as_millis() as u32,
        };
        // SAFETY: checked non-null above.
        unsafe { args::write(options, o) };
        Ok(())
    })
}

/// Opens a client for the cluster reachable at any of `nodes` (`count` NUL-terminated
/// `host:port` strings, copied). `options` may be NULL for the defaults. Does not
/// contact the cluster yet: the first request fetches the ring. On `DYNAMO_OK` writes the
/// new client to `*client`; the caller owns it and closes it with `dynamo_client_close`.
/// Thread-safe.
/// The caller owns `*client`.
#[no_mangle]
pub extern "C" fn dynamo_client_open(
    nodes: *const *const c_char,
    count: usize,
    options: *const dynamo_client_options,
    client: *mut *mut dynamo_client,
) -> dynamo_status {
    boundary("dynamo_client_open", || {
        args::out(client, "client")?;
        if nodes.is_null() || count == 0 {
            return Err(FfiError::bad_request(
                "no node addresses given (nodes is NULL or count is 0)",
            ));
        }
        let mut addresses = Vec::with_capacity(count);
        for i in 0..count {
            // SAFETY: `nodes` points to `count` string pointers, as documented.
            let p = unsafe { *nodes.add(i) };
            // SAFETY: each is NULL or a NUL-terminated string.
            let a = unsafe { args::text(p, &format!("nodes[{i}]")) }?;
            addresses.push(a.to_owned());
        }
        let mut opts = ClientOptions::default();
        if !options.is_null() {
            // SAFETY: non-null and, as documented, a `dynamo_client_options`.
            let o = unsafe { *options };
            opts.coordination = match o.coordination {
                DYNAMO_COORDINATION_CLIENT => Coordination::ClientDriven,
                DYNAMO_COORDINATION_SERVER => Coordination::ServerDriven,
                other => {
                    return Err(FfiError::bad_request(format!(
                        "options.coordination is {other}: use DYNAMO_COORDINATION_CLIENT (0) \
                         or DYNAMO_COORDINATION_SERVER (1)"
                    )))
                }
            };
            if o.timeout_ms == 0 {
                return Err(FfiError::bad_request(
                    "options.timeout_ms must be at least 1",
                ));
            }
            opts.timeout = Duration::from_millis(o.timeout_ms.into());
            opts.retries = o.retries;
            opts.ring_refresh = Duration::from_millis(o.ring_refresh_ms.max(1).into());
        }
        // Calls in flight, then the connection thread's own bounded drain.
        let close_wait = opts
            .timeout
            .saturating_mul(opts.retries.saturating_add(2).saturating_mul(4))
            .saturating_add(Duration::from_secs(1));
        let c = Client::connect(&addresses, opts)?;
        let blocking = c.blocking();
        let h = CLIENTS.insert(ClientHandle {
            client: c,
            blocking,
            close_wait,
        });
        // SAFETY: checked non-null above.
        unsafe { args::write(client, h) };
        Ok(())
    })
}

/// Closes `client`: no new call may use it (they return `DYNAMO_ERR_BAD_REQUEST`), calls
/// in progress and futures not yet ready finish first, then the read repairs its reads
/// started, then its connections close. It blocks until then (each step is bounded by
/// the client's timeouts), except inside a completion callback, where it returns at
/// once and the rest happens in the background. Closing twice returns
/// `DYNAMO_ERR_BAD_REQUEST`.
/// Ends the caller's ownership of `client`. Thread-safe: other threads' calls in
/// progress finish first.
#[no_mangle]
pub extern "C" fn dynamo_client_close(client: *mut dynamo_client) -> dynamo_status {
    boundary("dynamo_client_close", || {
        let handle = CLIENTS.remove(client)?;
        let exit = handle.client.exit_signal();
        let limit = handle.close_wait;
        drop(handle);
        // The connection thread ends once calls in progress and futures not yet ready
        // let go of the client, after finishing the read repairs they started. Wait for
        // it (bounded: every call is timed), except in a completion callback, whose
        // thread those futures may need.
        if !future::in_callback() {
            exit.wait(limit);
        }
        Ok(())
    })
}

/// The Rust client behind a live `dynamo_client` handle.
pub(crate) fn client_of(client: *mut dynamo_client) -> Result<Client, FfiError> {
    Ok(CLIENTS.get(client)?.client.clone())
}

struct KeyArgs {
    store: String,
    key: Vec<u8>,
}

/// Reads store and key.
///
/// # Safety
/// As the exports document: a NUL-terminated store name and `key_len` readable bytes.
unsafe fn key_args(
    store: *const c_char,
    key: *const u8,
    key_len: usize,
) -> Result<KeyArgs, FfiError> {
    // SAFETY: forwarded from the export's contract.
    let store = unsafe { args::text(store, "store") }?.to_owned();
    // SAFETY: forwarded from the export's contract.
    let key = unsafe { args::bytes(key, key_len, "key") }?.to_vec();
    Ok(KeyArgs { store, key })
}

fn quorum_override(n: u8) -> Option<u8> {
    (n != 0).then_some(n)
}

/// Reads `key` (`key_len` bytes) from `store` with R = `r`, or the store's R when `r` is
/// 0, blocking the calling thread. On `DYNAMO_OK` writes a new result to `*result` (all
/// siblings and the context; free it with `dynamo_get_result_free`). A key with no value
/// gives a result with 0 siblings. Thread-safe.
/// Arguments are copied; the caller owns `*result`.
#[no_mangle]
pub extern "C" fn dynamo_client_get(
    client: *mut dynamo_client,
    store: *const c_char,
    key: *const u8,
    key_len: usize,
    r: u8,
    result: *mut *mut dynamo_get_result,
) -> dynamo_status {
    boundary("dynamo_client_get", || {
        args::out(result, "result")?;
        let c = CLIENTS.get(client)?;
        // SAFETY: the documented argument contract.
        let a = unsafe { key_args(store, key, key_len) }?;
        let resp = c.blocking.get(&a.store, &a.key, quorum_override(r))?;
        // SAFETY: checked non-null above.
        unsafe { args::write(result, new_get_result(resp)) };
        Ok(())
    })
}

/// The future form of `dynamo_client_get`: returns at once with a future (free it with
/// `dynamo_future_free`) whose outcome `dynamo_future_get_result` gives. The arguments
/// are copied. Thread-safe.
/// The caller owns `*future`.
#[no_mangle]
pub extern "C" fn dynamo_client_get_async(
    client: *mut dynamo_client,
    store: *const c_char,
    key: *const u8,
    key_len: usize,
    r: u8,
    future: *mut *mut dynamo_future,
) -> dynamo_status {
    boundary("dynamo_client_get_async", || {
        args::out(future, "future")?;
        let c = CLIENTS.get(client)?.client.clone();
        // SAFETY: the documented argument contract.
        let a = unsafe { key_args(store, key, key_len) }?;
        let f = future::spawn(async move {
            Outcome::Get(c.get(&a.store, &a.key, quorum_override(r)).await)
        })?;
        // SAFETY: checked non-null above.
        unsafe { args::write(future, f) };
        Ok(())
    })
}

struct WriteArgs {
    store: String,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    context: Option<String>,
}

/// # Safety
/// As the exports document.
unsafe fn write_args(
    store: *const c_char,
    key: *const u8,
    key_len: usize,
    value: Option<(*const u8, usize)>,
    context: *const c_char,
) -> Result<WriteArgs, FfiError> {
    // SAFETY: forwarded.
    let k = unsafe { key_args(store, key, key_len) }?;
    let value = match value {
        // SAFETY: forwarded.
        Some((p, n)) => Some(unsafe { args::bytes(p, n, "value") }?.to_vec()),
        None => None,
    };
    // SAFETY: forwarded.
    let context = unsafe { args::opt_text(context, "context") }?.map(str::to_owned);
    Ok(WriteArgs {
        store: k.store,
        key: k.key,
        value,
        context,
    })
}

async fn run_write(
    c: Client,
    a: WriteArgs,
    w: u8,
) -> Result<PutResponse, dynamo_core::error::DynamoError> {
    let w = quorum_override(w);
    match &a.value {
        Some(v) => c.put(&a.store, &a.key, v, a.context.as_deref(), w).await,
        None => c.delete(&a.store, &a.key, a.context.as_deref(), w).await,
    }
}

fn blocking_write(
    c: &ClientHandle,
    a: WriteArgs,
    w: u8,
    result: *mut *mut dynamo_put_result,
) -> Result<(), FfiError> {
    let w = quorum_override(w);
    let resp = match &a.value {
        Some(v) => c.blocking.put(&a.store, &a.key, v, a.context.as_deref(), w),
        None => c.blocking.delete(&a.store, &a.key, a.context.as_deref(), w),
    }?;
    if !result.is_null() {
        // SAFETY: non-null, and C promises it is writable.
        unsafe { args::write(result, new_put_result(resp)) };
    }
    Ok(())
}

/// Writes `value` (`value_len` bytes) under `key` in `store`, superseding what `context`
/// covers (a token from an earlier get or put; NULL: none, so the write becomes a
/// sibling of what is there), with W = `w`, or the store's W when `w` is 0. Blocks the
/// calling thread. On `DYNAMO_OK`, if `result` is not NULL, writes a new result holding
/// the new context (free it with `dynamo_put_result_free`). Thread-safe.
/// Arguments are copied.
#[no_mangle]
pub extern "C" fn dynamo_client_put(
    client: *mut dynamo_client,
    store: *const c_char,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    context: *const c_char,
    w: u8,
    result: *mut *mut dynamo_put_result,
) -> dynamo_status {
    boundary("dynamo_client_put", || {
        let c = CLIENTS.get(client)?;
        // SAFETY: the documented argument contract.
        let a = unsafe { write_args(store, key, key_len, Some((value, value_len)), context) }?;
        blocking_write(&c, a, w, result)
    })
}

/// The future form of `dynamo_client_put` (outcome from `dynamo_future_put_result`).
/// The arguments are copied. Thread-safe.
/// The caller owns `*future`.
#[no_mangle]
pub extern "C" fn dynamo_client_put_async(
    client: *mut dynamo_client,
    store: *const c_char,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    context: *const c_char,
    w: u8,
    future: *mut *mut dynamo_future,
) -> dynamo_status {
    boundary("dynamo_client_put_async", || {
        args::out(future, "future")?;
        let c = CLIENTS.get(client)?.client.clone();
        // SAFETY: the documented argument contract.
        let a = unsafe { write_args(store, key, key_len, Some((value, value_len)), context) }?;
        let f = future::spawn(async move { Outcome::Put(run_write(c, a, w).await) })?;
        // SAFETY: checked non-null above.
        unsafe { args::write(future, f) };
        Ok(())
    })
}

/// Deletes `key` from `store`: a causal tombstone superseding what `context` covers
/// (NULL: none). As `dynamo_client_put` otherwise. Thread-safe.
/// Arguments are copied; the caller owns `*result`.
#[no_mangle]
pub extern "C" fn dynamo_client_delete(
    client: *mut dynamo_client,
    store: *const c_char,
    key: *const u8,
    key_len: usize,
    context: *const c_char,
    w: u8,
    result: *mut *mut dynamo_put_result,
) -> dynamo_status {
    boundary("dynamo_client_delete", || {
        let c = CLIENTS.get(client)?;
        // SAFETY: the documented argument contract.
        let a = unsafe { write_args(store, key, key_len, None, context) }?;
        blocking_write(&c, a, w, result)
    })
}

/// The future form of `dynamo_client_delete` (outcome from `dynamo_future_put_result`).
/// Thread-safe.
/// Arguments are copied; the caller owns `*future`.
#[no_mangle]
pub extern "C" fn dynamo_client_delete_async(
    client: *mut dynamo_client,
    store: *const c_char,
    key: *const u8,
    key_len: usize,
    context: *const c_char,
    w: u8,
    future: *mut *mut dynamo_future,
) -> dynamo_status {
    boundary("dynamo_client_delete_async", || {
        args::out(future, "future")?;
        let c = CLIENTS.get(client)?.client.clone();
        // SAFETY: the documented argument contract.
        let a = unsafe { write_args(store, key, key_len, None, context) }?;
        let f = future::spawn(async move { Outcome::Put(run_write(c, a, w).await) })?;
        // SAFETY: checked non-null above.
        unsafe { args::write(future, f) };
        Ok(())
    })
}

fn status_json(status: &dynamo_core::client::NodeStatus) -> Result<String, FfiError> {
    serde_json::to_string(status)
        .map_err(|e| FfiError::internal(format!("encoding the status: {e}")))
}

/// The status of the node at `address` (NULL: the first node given that answers) as a
/// JSON object (name, members and their health, hints, stores, ...). On `DYNAMO_OK`
/// writes a NUL-terminated string to `*json` that the caller owns and frees with
/// `dynamo_free`. Blocks. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_client_status(
    client: *mut dynamo_client,
    address: *const c_char,
    json: *mut *mut c_char,
) -> dynamo_status {
    boundary("dynamo_client_status", || {
        args::out(json, "json")?;
        let c = CLIENTS.get(client)?;
        // SAFETY: NULL or a NUL-terminated string.
        let address = unsafe { args::opt_text(address, "address") }?;
        let text = status_json(&c.blocking.status(address)?)?;
        // SAFETY: checked non-null above.
        unsafe { args::write(json, args::give_buffer(text.as_bytes()).cast()) };
        Ok(())
    })
}

/// The future form of `dynamo_client_status` (outcome from `dynamo_future_json_result`).
/// The address is copied; the caller owns `*future`. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_client_status_async(
    client: *mut dynamo_client,
    address: *const c_char,
    future: *mut *mut dynamo_future,
) -> dynamo_status {
    boundary("dynamo_client_status_async", || {
        args::out(future, "future")?;
        let c = CLIENTS.get(client)?.client.clone();
        // SAFETY: NULL or a NUL-terminated string.
        let address = unsafe { args::opt_text(address, "address") }?.map(str::to_owned);
        let f = future::spawn(async move {
            Outcome::Json(
                c.status(address.as_deref())
                    .await
                    .map_err(FfiError::from)
                    .and_then(|s| status_json(&s)),
            )
        })?;
        // SAFETY: checked non-null above.
        unsafe { args::write(future, f) };
        Ok(())
    })
}

/// Writes the number of siblings of `result` to `*count` (0 when the key has no value).
/// Borrows `result`. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_get_result_count(
    result: *const dynamo_get_result,
    count: *mut usize,
) -> dynamo_status {
    boundary("dynamo_get_result_count", || {
        args::out(count, "count")?;
        let r = GET_RESULTS.get(result)?;
        // SAFETY: checked non-null above.
        unsafe { args::write(count, r.response.siblings.len()) };
        Ok(())
    })
}

/// Sibling `index` (from 0) of `result`: writes its value's bytes and length to
/// `*value` / `*value_len` and whether it is a tombstone (a delete concurrent with a
/// write) to `*deleted`; a tombstone has `*value` NULL and length 0. The bytes belong to
/// the result and stay valid until it is freed. An index out of range returns
/// `DYNAMO_ERR_BAD_REQUEST`.
/// Borrows `result`. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_get_result_sibling(
    result: *const dynamo_get_result,
    index: usize,
    value: *mut *const u8,
    value_len: *mut usize,
    deleted: *mut bool,
) -> dynamo_status {
    boundary("dynamo_get_result_sibling", || {
        args::out(value, "value")?;
        args::out(value_len, "value_len")?;
        args::out(deleted, "deleted")?;
        let r = GET_RESULTS.get(result)?;
        let siblings = &r.response.siblings;
        let s = siblings.get(index).ok_or_else(|| {
            FfiError::bad_request(format!(
                "sibling index {index} is out of range: the result has {}",
                siblings.len()
            ))
        })?;
        let (p, n) = match &s.value {
            Some(v) => (args::c_ptr(v), v.len()),
            None => (std::ptr::null(), 0),
        };
        // SAFETY: all three checked non-null above; the bytes live in the registry's
        // object until the result is freed.
        unsafe {
            args::write(value, p);
            args::write(value_len, n);
            args::write(deleted, s.value.is_none());
        }
        Ok(())
    })
}

/// Writes `result`'s context token (a NUL-terminated string; pass it to the put or
/// delete that follows this read) to `*context`. It belongs to the result and stays
/// valid until the result is freed.
/// Borrows `result`. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_get_result_context(
    result: *const dynamo_get_result,
    context: *mut *const c_char,
) -> dynamo_status {
    boundary("dynamo_get_result_context", || {
        args::out(context, "context")?;
        let r = GET_RESULTS.get(result)?;
        // SAFETY: checked non-null above; the string lives until the result is freed.
        unsafe { args::write(context, r.context.as_ptr()) };
        Ok(())
    })
}

/// The replicas whose answer lacked some of `result`'s siblings (read repair updates
/// them after the read): writes their number to `*count` and their member names, each
/// followed by a newline, to `*names` (a NUL-terminated string that belongs to the
/// result, empty when they all agreed). Known for client-driven reads only (always 0
/// server-driven); with R = N every owner's answer is compared.
/// Borrows `result`. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_get_result_stale_replicas(
    result: *const dynamo_get_result,
    names: *mut *const c_char,
    count: *mut usize,
) -> dynamo_status {
    boundary("dynamo_get_result_stale_replicas", || {
        args::out(names, "names")?;
        args::out(count, "count")?;
        let r = GET_RESULTS.get(result)?;
        // SAFETY: both checked non-null above; the string lives until the result is freed.
        unsafe {
            args::write(names, r.stale.as_ptr());
            args::write(count, r.response.stale_replicas.len());
        }
        Ok(())
    })
}

/// Frees `result` (and every pointer read from it). A second free returns
/// `DYNAMO_ERR_BAD_REQUEST`.
/// Ends the caller's ownership. Thread-safe, but no other thread may still read
/// pointers from the result.
#[no_mangle]
pub extern "C" fn dynamo_get_result_free(result: *mut dynamo_get_result) -> dynamo_status {
    boundary("dynamo_get_result_free", || {
        GET_RESULTS.remove(result).map(drop)
    })
}

/// Writes the context of a put or delete (covering what it wrote) to `*context`; it
/// belongs to the result and stays valid until the result is freed.
/// Borrows `result`. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_put_result_context(
    result: *const dynamo_put_result,
    context: *mut *const c_char,
) -> dynamo_status {
    boundary("dynamo_put_result_context", || {
        args::out(context, "context")?;
        let r = PUT_RESULTS.get(result)?;
        // SAFETY: checked non-null above; the string lives until the result is freed.
        unsafe { args::write(context, r.context.as_ptr()) };
        Ok(())
    })
}

/// Frees `result`. A second free returns `DYNAMO_ERR_BAD_REQUEST`.
/// Ends the caller's ownership. Thread-safe, but no other thread may still read
/// pointers from the result.
#[no_mangle]
pub extern "C" fn dynamo_put_result_free(result: *mut dynamo_put_result) -> dynamo_status {
    boundary("dynamo_put_result_free", || {
        PUT_RESULTS.remove(result).map(drop)
    })
}
