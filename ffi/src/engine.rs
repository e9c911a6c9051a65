//! The local storage framework on its own: open any engine by spec at a path, with
//! keyspaces, get/put/delete, atomic batches, ordered range iterators, sync, size.

use std::collections::VecDeque;
use std::ffi::c_char;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex};

use dynamo_engines::{
    open_engine, Direction, Engine, EngineOptions, EngineSpec, KeyRange, KvPair, WriteBatch,
};

use crate::args;
use crate::error::{boundary, dynamo_status, FfiError};
use crate::handle::Registry;

/// An open storage engine (opaque). Thread-safe: any thread may call it at once. Open
/// with `dynamo_engine_open`, close with `dynamo_engine_close`.
pub struct dynamo_engine {
    _opaque: [u8; 0],
}

/// A write batch (opaque): puts and deletes applied all or nothing by
/// `dynamo_engine_write`. Not for concurrent use by several threads (calls are
/// serialised, not ordered). Free with `dynamo_batch_free`.
pub struct dynamo_batch {
    _opaque: [u8; 0],
}

/// An ordered range iterator (opaque), from `dynamo_engine_scan`. One thread at a time.
/// Free with `dynamo_iter_free`.
pub struct dynamo_iter {
    _opaque: [u8; 0],
}

/// How one end of a key range bounds it: one of the `DYNAMO_BOUND_*` values.
pub type dynamo_bound = i32;
/// No bound on this side.
pub const DYNAMO_BOUND_UNBOUNDED: dynamo_bound = 0;
/// The key itself is in the range.
pub const DYNAMO_BOUND_INCLUDED: dynamo_bound = 1;
/// The key itself is not in the range.
pub const DYNAMO_BOUND_EXCLUDED: dynamo_bound = 2;

/// A key range for `dynamo_engine_scan` and `dynamo_engine_delete_range`. A side whose
/// bound is `DYNAMO_BOUND_UNBOUNDED` ignores its key.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dynamo_range {
    /// The start key's bytes.
    pub start: *const u8,
    /// The start key's length.
    pub start_len: usize,
    /// How the start key bounds the range.
    pub start_bound: dynamo_bound,
    /// The end key's bytes.
    pub end: *const u8,
    /// The end key's length.
    pub end_len: usize,
    /// How the end key bounds the range.
    pub end_bound: dynamo_bound,
}

pub(crate) struct EngineHandle {
    pub(crate) engine: Arc<dyn Engine>,
}

static ENGINES: Registry<EngineHandle> = Registry::new("dynamo_engine");
static BATCHES: Registry<Mutex<WriteBatch>> = Registry::new("dynamo_batch");
static ITERS: Registry<Mutex<IterState>> = Registry::new("dynamo_iter");

/// How many pairs an iterator reads from the engine at a time.
const CHUNK: usize = 256;
// (C engines are read in chunks of the same size: see cengine::SCAN_CHUNK.)

struct IterState {
    engine: Arc<dyn Engine>,
    keyspace: String,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    direction: Direction,
    buffered: VecDeque<KvPair>,
    current: Option<KvPair>,
    exhausted: bool,
}

impl IterState {
    fn next(&mut self) -> Result<Option<&KvPair>, FfiError> {
        if self.buffered.is_empty() && !self.exhausted {
            let range = KeyRange::new(self.start.clone(), self.end.clone());
            let mut got = Vec::with_capacity(CHUNK);
            for pair in self
                .engine
                .scan(&self.keyspace, &range, self.direction)?
                .take(CHUNK)
            {
                got.push(pair?);
            }
            self.exhausted = got.len() < CHUNK;
            if let Some((last, _)) = got.last() {
                match self.direction {
                    Direction::Forward => self.start = Bound::Excluded(last.clone()),
                    Direction::Reverse => self.end = Bound::Excluded(last.clone()),
                }
            }
            self.buffered.extend(got);
        }
        self.current = self.buffered.pop_front();
        Ok(self.current.as_ref())
    }
}

/// The start and end bounds of a range.
type Bounds = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// # Safety
/// `range` is NULL or points to a `dynamo_range` whose keys are readable.
unsafe fn read_range(range: *const dynamo_range) -> Result<Bounds, FfiError> {
    if range.is_null() {
        return Ok((Bound::Unbounded, Bound::Unbounded));
    }
    // SAFETY: non-null and, as documented, a `dynamo_range`.
    let r = unsafe { *range };
    // SAFETY: the range's keys are readable for their lengths, as documented.
    let start = unsafe { bound(r.start_bound, r.start, r.start_len, "range.start") }?;
    // SAFETY: as above.
    let end = unsafe { bound(r.end_bound, r.end, r.end_len, "range.end") }?;
    Ok((start, end))
}

/// # Safety
/// `key` is readable for `len` bytes unless the bound is unbounded.
unsafe fn bound(
    kind: dynamo_bound,
    key: *const u8,
    len: usize,
    what: &str,
) -> Result<Bound<Vec<u8>>, FfiError> {
    match kind {
        DYNAMO_BOUND_UNBOUNDED => Ok(Bound::Unbounded),
        // SAFETY: forwarded from the caller.
        DYNAMO_BOUND_INCLUDED => Ok(Bound::Included(
            unsafe { args::bytes(key, len, what) }?.to_vec(),
        )),
        // SAFETY: forwarded from the caller.
        DYNAMO_BOUND_EXCLUDED => Ok(Bound::Excluded(
            unsafe { args::bytes(key, len, what) }?.to_vec(),
        )),
        other => Err(FfiError::bad_request(format!(
            "{what} bound is {other}: use 0, 1 or 2"
        ))),
    }
}

fn engine_of(engine: *mut dynamo_engine) -> Result<Arc<dyn Engine>, FfiError> {
    Ok(ENGINES.get(engine)?.engine.clone())
}

/// Opens the engine `spec` (`rocksdb`, `sqlite`, `memory`, `buffered:rocksdb`,
/// `buffered:sqlite`, or a name registered with `dynamo_engine_register`) with its files
/// in the directory `path` (created if missing). On `DYNAMO_OK` writes the engine to
/// `*engine`; close it with `dynamo_engine_close`. Thread-safe.
/// Arguments are copied; the caller owns `*engine`.
#[no_mangle]
pub extern "C" fn dynamo_engine_open(
    spec: *const c_char,
    path: *const c_char,
    engine: *mut *mut dynamo_engine,
) -> dynamo_status {
    boundary("dynamo_engine_open", || {
        args::out(engine, "engine")?;
        // SAFETY: NUL-terminated strings, as documented.
        let spec_text = unsafe { args::text(spec, "spec") }?;
        // SAFETY: as above.
        let path = unsafe { args::text(path, "path") }?;
        let spec: EngineSpec = spec_text.parse()?;
        std::fs::create_dir_all(path)
            .map_err(|e| FfiError::internal(format!("creating directory {path}: {e}")))?;
        let e = open_engine(spec, Path::new(path), &EngineOptions::default())?;
        let h = ENGINES.insert(EngineHandle { engine: e });
        // SAFETY: checked non-null above.
        unsafe { args::write(engine, h) };
        Ok(())
    })
}

/// Creates `keyspace` if it does not exist (1 to 64 ASCII letters, digits, `_` or `-`,
/// not "default"). Every other call needs its keyspace created first.
/// Borrows `engine`; the name is copied. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_engine_ensure_keyspace(
    engine: *mut dynamo_engine,
    keyspace: *const c_char,
) -> dynamo_status {
    boundary("dynamo_engine_ensure_keyspace", || {
        let e = engine_of(engine)?;
        // SAFETY: a NUL-terminated string, as documented.
        let ks = unsafe { args::text(keyspace, "keyspace") }?;
        Ok(e.ensure_keyspace(ks)?)
    })
}

/// The keyspaces that exist, in no particular order: on `DYNAMO_OK` writes their number
/// to `*count` and their names, each followed by a newline, to `*names` (a
/// NUL-terminated buffer the caller owns and frees with `dynamo_free`). Borrows
/// `engine`. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_engine_keyspaces(
    engine: *mut dynamo_engine,
    names: *mut *mut c_char,
    count: *mut usize,
) -> dynamo_status {
    boundary("dynamo_engine_keyspaces", || {
        args::out(names, "names")?;
        args::out(count, "count")?;
        let mut list = engine_of(engine)?.keyspaces()?;
        list.sort();
        let text: String = list.iter().map(|k| format!("{k}\n")).collect();
        // SAFETY: both checked non-null above.
        unsafe {
            args::write(names, args::give_buffer(text.as_bytes()).cast());
            args::write(count, list.len());
        }
        Ok(())
    })
}

/// Reads `key` in `keyspace`. On `DYNAMO_OK` writes whether it was found to `*found`,
/// and its value to `*value` / `*value_len` (a buffer the caller frees with
/// `dynamo_free`; NULL and 0 when not found).
/// Arguments are copied; the caller owns `*value`. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_engine_get(
    engine: *mut dynamo_engine,
    keyspace: *const c_char,
    key: *const u8,
    key_len: usize,
    value: *mut *mut u8,
    value_len: *mut usize,
    found: *mut bool,
) -> dynamo_status {
    boundary("dynamo_engine_get", || {
        args::out(value, "value")?;
        args::out(value_len, "value_len")?;
        args::out(found, "found")?;
        let e = engine_of(engine)?;
        // SAFETY: the documented argument contract.
        let ks = unsafe { args::text(keyspace, "keyspace") }?;
        // SAFETY: as above.
        let key = unsafe { args::bytes(key, key_len, "key") }?;
        let got = e.get(ks, key)?;
        let (p, n) = match &got {
            Some(v) => (args::give_buffer(v), v.len()),
            None => (std::ptr::null_mut(), 0),
        };
        // SAFETY: all checked non-null above.
        unsafe {
            args::write(value, p);
            args::write(value_len, n);
            args::write(found, got.is_some());
        }
        Ok(())
    })
}

/// Stores `value` under `key` in `keyspace`, replacing any previous value.
/// Arguments are copied. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_engine_put(
    engine: *mut dynamo_engine,
    keyspace: *const c_char,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
) -> dynamo_status {
    boundary("dynamo_engine_put", || {
        let e = engine_of(engine)?;
        // SAFETY: the documented argument contract.
        let ks = unsafe { args::text(keyspace, "keyspace") }?;
        // SAFETY: as above.
        let key = unsafe { args::bytes(key, key_len, "key") }?;
        // SAFETY: as above.
        let value = unsafe { args::bytes(value, value_len, "value") }?;
        Ok(e.put(ks, key, value)?)
    })
}

/// Removes `key` from `keyspace` (no error if absent).
/// Arguments are copied. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_engine_delete(
    engine: *mut dynamo_engine,
    keyspace: *const c_char,
    key: *const u8,
    key_len: usize,
) -> dynamo_status {
    boundary("dynamo_engine_delete", || {
        let e = engine_of(engine)?;
        // SAFETY: the documented argument contract.
        let ks = unsafe { args::text(keyspace, "keyspace") }?;
        // SAFETY: as above.
        let key = unsafe { args::bytes(key, key_len, "key") }?;
        Ok(e.delete(ks, key)?)
    })
}

/// Removes every key of `range` (NULL: all) from `keyspace`.
/// Arguments are copied. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_engine_delete_range(
    engine: *mut dynamo_engine,
    keyspace: *const c_char,
    range: *const dynamo_range,
) -> dynamo_status {
    boundary("dynamo_engine_delete_range", || {
        let e = engine_of(engine)?;
        // SAFETY: the documented argument contract.
        let ks = unsafe { args::text(keyspace, "keyspace") }?;
        // SAFETY: as above.
        let (start, end) = unsafe { read_range(range) }?;
        Ok(e.delete_range(ks, &KeyRange::new(start, end))?)
    })
}

/// Creates an empty batch; free it with `dynamo_batch_free`.
/// The caller owns `*batch`. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_batch_new(batch: *mut *mut dynamo_batch) -> dynamo_status {
    boundary("dynamo_batch_new", || {
        args::out(batch, "batch")?;
        let h = BATCHES.insert(Mutex::new(WriteBatch::new()));
        // SAFETY: checked non-null above.
        unsafe { args::write(batch, h) };
        Ok(())
    })
}

/// Adds a put of `value` under `key` in `keyspace` to `batch` (copied).
/// Arguments are copied into the batch. One thread at a time per batch.
#[no_mangle]
pub extern "C" fn dynamo_batch_put(
    batch: *mut dynamo_batch,
    keyspace: *const c_char,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
) -> dynamo_status {
    boundary("dynamo_batch_put", || {
        let b = BATCHES.get(batch)?;
        // SAFETY: the documented argument contract.
        let ks = unsafe { args::text(keyspace, "keyspace") }?;
        // SAFETY: as above.
        let key = unsafe { args::bytes(key, key_len, "key") }?;
        // SAFETY: as above.
        let value = unsafe { args::bytes(value, value_len, "value") }?;
        b.lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(ks, key, value);
        Ok(())
    })
}

/// Adds a delete of `key` in `keyspace` to `batch`.
/// Arguments are copied into the batch. One thread at a time per batch.
#[no_mangle]
pub extern "C" fn dynamo_batch_delete(
    batch: *mut dynamo_batch,
    keyspace: *const c_char,
    key: *const u8,
    key_len: usize,
) -> dynamo_status {
    boundary("dynamo_batch_delete", || {
        let b = BATCHES.get(batch)?;
        // SAFETY: the documented argument contract.
        let ks = unsafe { args::text(keyspace, "keyspace") }?;
        // SAFETY: as above.
        let key = unsafe { args::bytes(key, key_len, "key") }?;
        b.lock().unwrap_or_else(|p| p.into_inner()).delete(ks, key);
        Ok(())
    })
}

/// Writes the number of operations in `batch` to `*count`.
/// Borrows `batch`. One thread at a time per batch.
#[no_mangle]
pub extern "C" fn dynamo_batch_count(batch: *mut dynamo_batch, count: *mut usize) -> dynamo_status {
    boundary("dynamo_batch_count", || {
        args::out(count, "count")?;
        let n = BATCHES
            .get(batch)?
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        // SAFETY: checked non-null above.
        unsafe { args::write(count, n) };
        Ok(())
    })
}

/// Removes every operation from `batch`, so it can be filled again.
/// Borrows `batch`. One thread at a time per batch.
#[no_mangle]
pub extern "C" fn dynamo_batch_clear(batch: *mut dynamo_batch) -> dynamo_status {
    boundary("dynamo_batch_clear", || {
        *BATCHES
            .get(batch)?
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = WriteBatch::new();
        Ok(())
    })
}

/// Frees `batch`. A second free returns `DYNAMO_ERR_BAD_REQUEST`.
/// Ends the caller's ownership. One thread at a time per batch.
#[no_mangle]
pub extern "C" fn dynamo_batch_free(batch: *mut dynamo_batch) -> dynamo_status {
    boundary("dynamo_batch_free", || BATCHES.remove(batch).map(drop))
}

/// Applies every operation of `batch` atomically: after a crash all of them are present
/// or none is, and readers never see part of it. The batch is left as it was (clear it
/// or free it).
/// Borrows both; the batch stays the caller's. Thread-safe for the engine; one thread
/// at a time per batch.
#[no_mangle]
pub extern "C" fn dynamo_engine_write(
    engine: *mut dynamo_engine,
    batch: *const dynamo_batch,
) -> dynamo_status {
    boundary("dynamo_engine_write", || {
        let e = engine_of(engine)?;
        let b = BATCHES.get(batch)?;
        let ops = b.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(e.write_batch(ops)?)
    })
}

/// Starts an iterator over the keys of `range` (NULL: all) in `keyspace`, in ascending
/// order, or descending when `reverse`. It reads the engine in chunks, so it is not a
/// snapshot: writes made while it runs may or may not be seen. It keeps the engine open
/// until freed with `dynamo_iter_free`.
/// Arguments are copied; the caller owns `*iter`. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_engine_scan(
    engine: *mut dynamo_engine,
    keyspace: *const c_char,
    range: *const dynamo_range,
    reverse: bool,
    iter: *mut *mut dynamo_iter,
) -> dynamo_status {
    boundary("dynamo_engine_scan", || {
        args::out(iter, "iter")?;
        let e = engine_of(engine)?;
        // SAFETY: the documented argument contract.
        let ks = unsafe { args::text(keyspace, "keyspace") }?.to_owned();
        // SAFETY: as above.
        let (start, end) = unsafe { read_range(range) }?;
        // Fail now on an unknown keyspace rather than at the first next.
        drop(e.scan(
            &ks,
            &KeyRange::new(start.clone(), end.clone()),
            Direction::Forward,
        )?);
        let h = ITERS.insert(Mutex::new(IterState {
            engine: e,
            keyspace: ks,
            start,
            end,
            direction: if reverse {
                Direction::Reverse
            } else {
                Direction::Forward
            },
            buffered: VecDeque::new(),
            current: None,
            exhausted: false,
        }));
        // SAFETY: checked non-null above.
        unsafe { args::write(iter, h) };
        Ok(())
    })
}

/// Moves `iter` to its next pair. On `DYNAMO_OK` writes whether there was one to
/// `*has_pair`, and if so its key and value to the other outputs (NULL and 0 at the
/// end). The bytes belong to the iterator and stay valid until the next call on it or
/// its free.
/// Borrows `iter`. One thread at a time per iterator.
#[no_mangle]
pub extern "C" fn dynamo_iter_next(
    iter: *mut dynamo_iter,
    has_pair: *mut bool,
    key: *mut *const u8,
    key_len: *mut usize,
    value: *mut *const u8,
    value_len: *mut usize,
) -> dynamo_status {
    boundary("dynamo_iter_next", || {
        args::out(has_pair, "has_pair")?;
        args::out(key, "key")?;
        args::out(key_len, "key_len")?;
        args::out(value, "value")?;
        args::out(value_len, "value_len")?;
        let it = ITERS.get(iter)?;
        let mut state = it.lock().unwrap_or_else(|p| p.into_inner());
        let pair = state.next()?;
        let (k, kl, v, vl) = match pair {
            Some((k, v)) => (args::c_ptr(k), k.len(), args::c_ptr(v), v.len()),
            None => (std::ptr::null(), 0, std::ptr::null(), 0),
        };
        // SAFETY: all checked non-null above; the bytes live in the iterator's current
        // pair until the next call or free.
        unsafe {
            args::write(has_pair, pair.is_some());
            args::write(key, k);
            args::write(key_len, kl);
            args::write(value, v);
            args::write(value_len, vl);
        }
        Ok(())
    })
}

/// Frees `iter`. A second free returns `DYNAMO_ERR_BAD_REQUEST`.
/// Ends the caller's ownership. One thread at a time per iterator.
#[no_mangle]
pub extern "C" fn dynamo_iter_free(iter: *mut dynamo_iter) -> dynamo_status {
    boundary("dynamo_iter_free", || ITERS.remove(iter).map(drop))
}

/// Makes every write that returned before this call durable (fsync).
/// Borrows `engine`. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_engine_sync(engine: *mut dynamo_engine) -> dynamo_status {
    boundary("dynamo_engine_sync", || Ok(engine_of(engine)?.sync()?))
}

/// Writes the approximate bytes the data uses (on disk, or in memory) to `*bytes`.
/// Borrows `engine`. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_engine_approximate_size(
    engine: *mut dynamo_engine,
    bytes: *mut u64,
) -> dynamo_status {
    boundary("dynamo_engine_approximate_size", || {
        args::out(bytes, "bytes")?;
        let n = engine_of(engine)?.approximate_size()?;
        // SAFETY: checked non-null above.
        unsafe { args::write(bytes, n) };
        Ok(())
    })
}

/// Closes `engine` after a final sync. The handle is gone even when that sync fails (the
/// error is returned). The engine itself closes once calls in progress on other
/// threads and iterators still open let go of it (so reopen the same path only after
/// freeing its iterators). A second close returns `DYNAMO_ERR_BAD_REQUEST`.
/// Ends the caller's ownership. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_engine_close(engine: *mut dynamo_engine) -> dynamo_status {
    boundary("dynamo_engine_close", || {
        let h = ENGINES.remove(engine)?;
        Ok(h.engine.sync()?)
    })
}
