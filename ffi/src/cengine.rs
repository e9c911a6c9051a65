//! Engines written in C: a host registers a table of callbacks under a name, and store
//! configs, `dynamo_engine_open` and the conformance check can then name it like a
//! built-in engine.
//!
//! The C engine sees one flat, ordered key space per instance; this adapter maps
//! keyspaces onto it by prefixing each key with its keyspace name and a 0 byte
//! (keyspace names never contain 0, so prefixes never overlap and order is kept inside
//! a keyspace), and keeps the list of keyspaces under keys that start with a 0 byte.

use std::collections::HashSet;
use std::ffi::{c_char, c_void, CString};
use std::ops::Bound;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, RwLock};

use dynamo_engines::conformance::{self, Harness};
use dynamo_engines::{
    key_successor, prefix_successor, validate_keyspace_name, Direction, Engine, EngineError,
    EngineOptions, ErrorKind, KeyRange, KvPair, ScanIter, WriteBatch,
};

use crate::args;
use crate::error::{
    boundary, dynamo_status, panic_text, FfiError, DYNAMO_ERR_BAD_REQUEST, DYNAMO_OK,
};

/// Receives a value from a C engine's `get`: call it at most once, with the value's
/// bytes (copied before it returns). `value` may be NULL only when `value_len` is 0.
pub type dynamo_value_sink =
    Option<unsafe extern "C" fn(sink_ctx: *mut c_void, value: *const u8, value_len: usize)>;

/// Receives pairs from a C engine's `scan`, in order: returns `true` to get more, `false`
/// to stop. The bytes are copied before it returns.
pub type dynamo_scan_visitor = Option<
    unsafe extern "C" fn(
        visit_ctx: *mut c_void,
        key: *const u8,
        key_len: usize,
        value: *const u8,
        value_len: usize,
    ) -> bool,
>;

/// One operation of a C engine's batch: a put when `is_delete` is false (with
/// `value`), else a delete.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dynamo_engine_op {
    /// Whether this removes `key` (else it stores `value` under it).
    pub is_delete: bool,
    /// The key's bytes.
    pub key: *const u8,
    /// The key's length.
    pub key_len: usize,
    /// The value's bytes (puts only).
    pub value: *const u8,
    /// The value's length.
    pub value_len: usize,
}

/// An engine written in C: a table of callbacks. Each returns `DYNAMO_OK` or an error
/// code (and may set no message: the library writes one naming the engine and the
/// call). A callback must not unwind: a C++ exception escaping one aborts the process. The library calls them from any thread, concurrently: the engine must be
/// thread-safe. Keys and values are arbitrary bytes (possibly empty) ordered bytewise.
/// Every callback is required except `sync` and `size` (NULL: nothing to sync, size 0).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct dynamo_engine_ops {
    /// Opens an instance with its files in the directory `path` (created by the library);
    /// writes the instance pointer, passed to every other callback, to `*instance`.
    pub open: Option<
        unsafe extern "C-unwind" fn(
            user: *mut c_void,
            path: *const c_char,
            instance: *mut *mut c_void,
        ) -> dynamo_status,
    >,
    /// Looks `key` up; calls `sink` once with its value if present, not at all if absent.
    pub get: Option<
        unsafe extern "C-unwind" fn(
            instance: *mut c_void,
            key: *const u8,
            key_len: usize,
            sink: dynamo_value_sink,
            sink_ctx: *mut c_void,
        ) -> dynamo_status,
    >,
    /// Stores `value` under `key`, replacing any previous value.
    pub put: Option<
        unsafe extern "C-unwind" fn(
            instance: *mut c_void,
            key: *const u8,
            key_len: usize,
            value: *const u8,
            value_len: usize,
        ) -> dynamo_status,
    >,
    /// Removes `key` (absent is not an error).
    pub del: Option<
        unsafe extern "C-unwind" fn(
            instance: *mut c_void,
            key: *const u8,
            key_len: usize,
        ) -> dynamo_status,
    >,
    /// Applies `count` operations atomically: all or none, never seen half done.
    pub batch: Option<
        unsafe extern "C-unwind" fn(
            instance: *mut c_void,
            ops: *const dynamo_engine_op,
            count: usize,
        ) -> dynamo_status,
    >,
    /// Visits the pairs with `start <= key` and, when `has_end`, `key < end`, in
    /// ascending order (descending when `reverse`), until `visit` returns false.
    pub scan: Option<
        unsafe extern "C-unwind" fn(
            instance: *mut c_void,
            start: *const u8,
            start_len: usize,
            end: *const u8,
            end_len: usize,
            has_end: bool,
            reverse: bool,
            visit: dynamo_scan_visitor,
            visit_ctx: *mut c_void,
        ) -> dynamo_status,
    >,
    /// Makes every write that returned before it durable.
    pub sync: Option<unsafe extern "C-unwind" fn(instance: *mut c_void) -> dynamo_status>,
    /// Writes the approximate bytes used to `*bytes`.
    pub size: Option<
        unsafe extern "C-unwind" fn(instance: *mut c_void, bytes: *mut u64) -> dynamo_status,
    >,
    /// Closes the instance; called once, after every other call on it has returned.
    pub close: Option<unsafe extern "C-unwind" fn(instance: *mut c_void)>,
}

#[derive(Clone, Copy)]
struct Table {
    ops: dynamo_engine_ops,
    user: *mut c_void,
}

// SAFETY: the header requires engines registered from C to be callable from any thread
// with their user pointer.
unsafe impl Send for Table {}
// SAFETY: as above.
unsafe impl Sync for Table {}

struct Instance(*mut c_void);
// SAFETY: as for `Table`: C engine instances are documented as thread-safe.
unsafe impl Send for Instance {}
// SAFETY: as above.
unsafe impl Sync for Instance {}

/// A C engine instance behind the [`Engine`] trait.
struct CEngine {
    name: String,
    table: Table,
    instance: Instance,
    keyspaces: RwLock<HashSet<String>>,
}

const KEYSPACE_LIST: &[u8] = b"\0keyspaces\0";

fn prefixed(keyspace: &str, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(keyspace.len() + 1 + key.len());
    k.extend_from_slice(keyspace.as_bytes());
    k.push(0);
    k.extend_from_slice(key);
    k
}

/// What a callback from C into Rust collected, and whether it panicked.
struct Collected {
    pairs: Vec<KvPair>,
    value: Option<Vec<u8>>,
    fault: Option<String>,
    limit: usize,
}

unsafe extern "C" fn value_sink(ctx: *mut c_void, value: *const u8, len: usize) {
    // A panic must never unwind into the C engine's frames.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `ctx` is the `Collected` this adapter passed to `get`.
        let c = unsafe { &mut *(ctx as *mut Collected) };
        // SAFETY: the engine promises `len` readable bytes (NULL only with 0).
        match unsafe { args::bytes(value, len, "value") } {
            Ok(v) => c.value = Some(v.to_vec()),
            Err(e) => c.fault = Some(e.message),
        }
    }));
}

unsafe extern "C" fn scan_visitor(
    ctx: *mut c_void,
    key: *const u8,
    kl: usize,
    value: *const u8,
    vl: usize,
) -> bool {
    // SAFETY: `ctx` is the `Collected` this adapter passed to `scan`.
    let c = unsafe { &mut *(ctx as *mut Collected) };
    let r = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the engine promises readable bytes for the lengths it gives.
        let k = unsafe { args::bytes(key, kl, "key") }?;
        // SAFETY: as above.
        let v = unsafe { args::bytes(value, vl, "value") }?;
        c.pairs.push((k.to_vec(), v.to_vec()));
        Ok::<bool, FfiError>(c.pairs.len() < c.limit)
    }));
    match r {
        Ok(Ok(more)) => more,
        Ok(Err(e)) => {
            c.fault = Some(e.message);
            false
        }
        Err(p) => {
            c.fault = Some(format!(
                "a panic in the scan visitor: {}",
                panic_text(p.as_ref())
            ));
            false
        }
    }
}

/// How many pairs one call to the C engine's scan collects.
const SCAN_CHUNK: usize = 256;

impl CEngine {
    fn err(&self, op: &str, kind: ErrorKind, why: impl Into<String>) -> EngineError {
        EngineError::new(self.name.clone(), kind, op.to_owned()).with_cause(why.into())
    }

    fn check(&self, op: &str, status: dynamo_status) -> dynamo_engines::Result<()> {
        if status == DYNAMO_OK {
            return Ok(());
        }
        let kind = if status == DYNAMO_ERR_BAD_REQUEST {
            ErrorKind::InvalidArgument
        } else {
            ErrorKind::Backend
        };
        Err(self.err(op, kind, format!("the C engine returned status {status}")))
    }

    fn known(&self, op: &str, keyspace: &str) -> dynamo_engines::Result<()> {
        if self
            .keyspaces
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(keyspace)
        {
            Ok(())
        } else {
            Err(self.err(
                &format!("{op} keyspace={keyspace:?}"),
                ErrorKind::UnknownKeyspace,
                "create it first with ensure_keyspace",
            ))
        }
    }

    /// Up to `limit` raw pairs with `start <= key < end` in `direction` order.
    fn raw_scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> dynamo_engines::Result<Vec<KvPair>> {
        let f = self.table.ops.scan.ok_or_else(|| {
            self.err(
                "scan",
                ErrorKind::Backend,
                "the engine has no scan callback",
            )
        })?;
        let mut c = Collected {
            pairs: Vec::new(),
            value: None,
            fault: None,
            limit,
        };
        let (ep, el) = end.map_or((std::ptr::null(), 0), |e| (e.as_ptr(), e.len()));
        // SAFETY: a callback of a registered C engine with its own instance; the visitor
        // context lives for the call.
        let st = unsafe {
            f(
                self.instance.0,
                start.as_ptr(),
                start.len(),
                ep,
                el,
                end.is_some(),
                reverse,
                Some(scan_visitor),
                &mut c as *mut Collected as *mut c_void,
            )
        };
        self.check("scan", st)?;
        if let Some(f) = c.fault {
            return Err(self.err("scan", ErrorKind::Backend, f));
        }
        Ok(c.pairs)
    }

    fn raw_put(&self, key: &[u8], value: &[u8]) -> dynamo_engines::Result<()> {
        let f =
            self.table.ops.put.ok_or_else(|| {
                self.err("put", ErrorKind::Backend, "the engine has no put callback")
            })?;
        // SAFETY: a callback of a registered C engine with its own instance and buffers
        // that live for the call.
        let st = unsafe {
            f(
                self.instance.0,
                key.as_ptr(),
                key.len(),
                value.as_ptr(),
                value.len(),
            )
        };
        self.check("put", st)
    }
}

impl Drop for CEngine {
    fn drop(&mut self) {
        if let Some(close) = self.table.ops.close {
            // SAFETY: the last use of the instance: every other call has returned.
            unsafe { close(self.instance.0) };
        }
    }
}

impl Engine for CEngine {
    fn name(&self) -> &str {
        &self.name
    }

    fn ensure_keyspace(&self, keyspace: &str) -> dynamo_engines::Result<()> {
        validate_keyspace_name(&self.name, keyspace)?;
        let mut ks = self.keyspaces.write().unwrap_or_else(|p| p.into_inner());
        if !ks.contains(keyspace) {
            let mut k = KEYSPACE_LIST.to_vec();
            k.extend_from_slice(keyspace.as_bytes());
            self.raw_put(&k, b"")?;
            ks.insert(keyspace.to_owned());
        }
        Ok(())
    }

    fn keyspaces(&self) -> dynamo_engines::Result<Vec<String>> {
        Ok(self
            .keyspaces
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect())
    }

    fn get(&self, keyspace: &str, key: &[u8]) -> dynamo_engines::Result<Option<Vec<u8>>> {
        self.known("get", keyspace)?;
        let f =
            self.table.ops.get.ok_or_else(|| {
                self.err("get", ErrorKind::Backend, "the engine has no get callback")
            })?;
        let k = prefixed(keyspace, key);
        let mut c = Collected {
            pairs: Vec::new(),
            value: None,
            fault: None,
            limit: 0,
        };
        // SAFETY: a registered callback, its instance, buffers alive for the call.
        let st = unsafe {
            f(
                self.instance.0,
                k.as_ptr(),
                k.len(),
                Some(value_sink),
                &mut c as *mut Collected as *mut c_void,
            )
        };
        self.check("get", st)?;
        if let Some(f) = c.fault {
            return Err(self.err("get", ErrorKind::Backend, f));
        }
        Ok(c.value)
    }

    fn put(&self, keyspace: &str, key: &[u8], value: &[u8]) -> dynamo_engines::Result<()> {
        self.known("put", keyspace)?;
        self.raw_put(&prefixed(keyspace, key), value)
    }

    fn delete(&self, keyspace: &str, key: &[u8]) -> dynamo_engines::Result<()> {
        self.known("delete", keyspace)?;
        let f = self.table.ops.del.ok_or_else(|| {
            self.err(
                "delete",
                ErrorKind::Backend,
                "the engine has no del callback",
            )
        })?;
        let k = prefixed(keyspace, key);
        // SAFETY: a registered callback, its instance, buffers alive for the call.
        let st = unsafe { f(self.instance.0, k.as_ptr(), k.len()) };
        self.check("delete", st)
    }

    fn write_batch(&self, batch: WriteBatch) -> dynamo_engines::Result<()> {
        for op in batch.ops() {
            self.known("write_batch", op.keyspace())?;
        }
        let f = self.table.ops.batch.ok_or_else(|| {
            self.err(
                "write_batch",
                ErrorKind::Backend,
                "the engine has no batch callback",
            )
        })?;
        let keyed: Vec<(Vec<u8>, Option<Vec<u8>>)> = batch
            .into_ops()
            .into_iter()
            .map(|op| {
                let (keyspace, key, value) = op.into_parts();
                (prefixed(&keyspace, &key), value)
            })
            .collect();
        let ops: Vec<dynamo_engine_op> = keyed
            .iter()
            .map(|(k, v)| dynamo_engine_op {
                is_delete: v.is_none(),
                key: k.as_ptr(),
                key_len: k.len(),
                value: v.as_ref().map_or(std::ptr::null(), |v| v.as_ptr()),
                value_len: v.as_ref().map_or(0, Vec::len),
            })
            .collect();
        // SAFETY: a registered callback, its instance; `ops` and the buffers it points
        // into live for the call.
        let st = unsafe { f(self.instance.0, ops.as_ptr(), ops.len()) };
        self.check("write_batch", st)
    }

    fn scan<'a>(
        &'a self,
        keyspace: &str,
        range: &KeyRange,
        direction: Direction,
    ) -> dynamo_engines::Result<ScanIter<'a>> {
        self.known("scan", keyspace)?;
        // The keyspace's raw key interval [lo, hi), narrowed by the range.
        let prefix = prefixed(keyspace, b"");
        let (start, end) = range.as_bounds();
        let lo = match start {
            Bound::Unbounded => prefix.clone(),
            Bound::Included(k) => prefixed(keyspace, k),
            Bound::Excluded(k) => prefixed(keyspace, &key_successor(k)),
        };
        let hi = match end {
            Bound::Unbounded => prefix_successor(&prefix).unwrap_or_default(),
            Bound::Included(k) => prefixed(keyspace, &key_successor(k)),
            Bound::Excluded(k) => prefixed(keyspace, k),
        };
        Ok(Box::new(CScan {
            engine: self,
            lo,
            hi,
            strip: prefix.len(),
            reverse: direction == Direction::Reverse,
            buffered: std::collections::VecDeque::new(),
            done: false,
        }))
    }

    fn delete_range(&self, keyspace: &str, range: &KeyRange) -> dynamo_engines::Result<()> {
        loop {
            let keys: Vec<Vec<u8>> = self
                .scan(keyspace, range, Direction::Forward)?
                .take(SCAN_CHUNK)
                .map(|r| r.map(|(k, _)| k))
                .collect::<dynamo_engines::Result<_>>()?;
            if keys.is_empty() {
                return Ok(());
            }
            let mut b = WriteBatch::new();
            for k in &keys {
                b.delete(keyspace, k);
            }
            self.write_batch(b)?;
        }
    }

    fn sync(&self) -> dynamo_engines::Result<()> {
        match self.table.ops.sync {
            // SAFETY: a registered callback with its instance.
            Some(f) => self.check("sync", unsafe { f(self.instance.0) }),
            None => Ok(()),
        }
    }

    fn approximate_size(&self) -> dynamo_engines::Result<u64> {
        match self.table.ops.size {
            Some(f) => {
                let mut n = 0u64;
                // SAFETY: a registered callback with its instance and a live output.
                self.check("size", unsafe { f(self.instance.0, &mut n) })?;
                Ok(n)
            }
            None => Ok(0),
        }
    }
}

/// A scan over a C engine, read in chunks of [`SCAN_CHUNK`].
struct CScan<'a> {
    engine: &'a CEngine,
    lo: Vec<u8>,
    hi: Vec<u8>,
    strip: usize,
    reverse: bool,
    buffered: std::collections::VecDeque<KvPair>,
    done: bool,
}

impl Iterator for CScan<'_> {
    type Item = dynamo_engines::Result<KvPair>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffered.is_empty() && !self.done {
            if !self.hi.is_empty() && self.lo >= self.hi {
                self.done = true;
                return None;
            }
            let end = (!self.hi.is_empty()).then_some(self.hi.as_slice());
            let scanned = self
                .engine
                .raw_scan(&self.lo, end, self.reverse, SCAN_CHUNK)
                .and_then(|pairs| self.check_order(pairs));
            match scanned {
                Ok(pairs) => {
                    self.done = pairs.len() < SCAN_CHUNK;
                    if let Some((last, _)) = pairs.last() {
                        if self.reverse {
                            self.hi = last.clone();
                        } else {
                            self.lo = key_successor(last);
                        }
                    }
                    self.buffered.extend(pairs);
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        let (k, v) = self.buffered.pop_front()?;
        Some(Ok((k[self.strip..].to_vec(), v)))
    }
}

impl CScan<'_> {
    /// Refuses what a faulty C engine may return: keys outside the range asked for (so
    /// from another keyspace, or too short to hold the prefix) or out of order.
    fn check_order(&self, pairs: Vec<KvPair>) -> dynamo_engines::Result<Vec<KvPair>> {
        let in_range =
            |k: &[u8]| k >= self.lo.as_slice() && (self.hi.is_empty() || k < self.hi.as_slice());
        for (i, (k, _)) in pairs.iter().enumerate() {
            let ordered = i == 0 || {
                let prev = &pairs[i - 1].0;
                if self.reverse {
                    prev > k
                } else {
                    prev < k
                }
            };
            if !in_range(k) || k.len() < self.strip || !ordered {
                return Err(self.engine.err(
                    "scan",
                    ErrorKind::Backend,
                    format!(
                        "the C engine's scan returned key {:?} {}",
                        String::from_utf8_lossy(k),
                        if ordered {
                            "outside the range it was asked for"
                        } else {
                            "out of order"
                        }
                    ),
                ));
            }
        }
        Ok(pairs)
    }
}

fn open_c_engine(name: &str, table: Table, dir: &Path) -> dynamo_engines::Result<Arc<dyn Engine>> {
    let fail =
        |why: String| EngineError::new(name.to_owned(), ErrorKind::Open, "open").with_cause(why);
    let open = table
        .ops
        .open
        .ok_or_else(|| fail("the engine has no open callback".into()))?;
    let path = CString::new(dir.to_string_lossy().into_owned()).map_err(|e| fail(e.to_string()))?;
    let mut instance: *mut c_void = std::ptr::null_mut();
    // SAFETY: a registered callback with its user pointer, a NUL-terminated path and a
    // live output.
    let st = unsafe { open(table.user, path.as_ptr(), &mut instance) };
    if st != DYNAMO_OK {
        return Err(fail(format!(
            "the C engine's open returned status {st} for {}",
            dir.display()
        )));
    }
    let mut engine = CEngine {
        name: name.to_owned(),
        table,
        instance: Instance(instance),
        keyspaces: RwLock::default(),
    };
    let mut end = KEYSPACE_LIST.to_vec();
    end.push(0xff);
    let mut names = HashSet::new();
    for (k, _) in engine.raw_scan(KEYSPACE_LIST, Some(&end), false, usize::MAX)? {
        names.insert(String::from_utf8_lossy(&k[KEYSPACE_LIST.len()..]).into_owned());
    }
    engine.keyspaces = RwLock::new(names);
    Ok(Arc::new(engine))
}

/// Registers the C engine `ops` (copied) with `user` under `name` (1 to 64 ASCII
/// letters, digits, `_` or `-`, not a built-in engine's name). From then on `name` is
/// an engine spec like `rocksdb`: for `dynamo_engine_open`, `dynamo_engine_check`, and
/// the `engine` of a store of a node embedded in this process. `user` is passed to
/// `open` and must stay valid for the life of the process. Registering a name again
/// replaces its table for later opens. Thread-safe.
/// The name and table are copied.
#[no_mangle]
pub extern "C" fn dynamo_engine_register(
    name: *const c_char,
    ops: *const dynamo_engine_ops,
    user: *mut c_void,
) -> dynamo_status {
    boundary("dynamo_engine_register", || {
        // SAFETY: a NUL-terminated string, as documented.
        let name = unsafe { args::text(name, "name") }?.to_owned();
        if ops.is_null() {
            return Err(FfiError::bad_request("ops is NULL"));
        }
        // SAFETY: non-null and, as documented, a `dynamo_engine_ops`.
        let table = Table {
            ops: unsafe { *ops },
            user,
        };
        let o = &table.ops;
        let missing: Vec<&str> = [
            ("open", o.open.is_none()),
            ("get", o.get.is_none()),
            ("put", o.put.is_none()),
            ("del", o.del.is_none()),
            ("batch", o.batch.is_none()),
            ("scan", o.scan.is_none()),
            ("close", o.close.is_none()),
        ]
        .iter()
        .filter(|(_, m)| *m)
        .map(|(n, _)| *n)
        .collect();
        if !missing.is_empty() {
            return Err(FfiError::bad_request(format!(
                "engine {name:?} has no {} callback (required)",
                missing.join(", ")
            )));
        }
        let engine_name = name.clone();
        dynamo_engines::register_engine(
            &name,
            Arc::new(move |dir: &Path, _: &EngineOptions| open_c_engine(&engine_name, table, dir)),
        )?;
        Ok(())
    })
}

/// Runs libdynamo's engine conformance suite (the checks every built-in engine passes:
/// round trips, binary and empty keys, large values, range scans both ways, batch
/// atomicity, keyspace isolation, concurrency, errors) against the engine `spec`, each
/// check on a fresh instance in a new temporary directory. `durable`: whether data must
/// survive closing and reopening (the reopen checks run only then). Returns `DYNAMO_OK`
/// when every check passes, else `DYNAMO_ERR_INTERNAL` with what broke in the last
/// error message. Blocks; prints each check's name to stderr.
/// Takes no ownership; creates and removes its own temporary directories. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_engine_check(spec: *const c_char, durable: bool) -> dynamo_status {
    boundary("dynamo_engine_check", || {
        // SAFETY: a NUL-terminated string, as documented.
        let spec = unsafe { args::text(spec, "spec") }?;
        let spec: dynamo_engines::EngineSpec = spec.parse()?;
        let harness = (
            move |d: &Path| dynamo_engines::open_engine(spec, d, &EngineOptions::default()),
            durable,
        );
        catch_unwind(AssertUnwindSafe(|| {
            conformance::run_all(&harness as &dyn Harness)
        }))
        .map_err(|p| {
            FfiError::internal(format!(
                "engine {spec} failed the conformance suite: {}",
                panic_text(p.as_ref())
            ))
        })
    })
}
