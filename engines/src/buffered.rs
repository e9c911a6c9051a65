//! `buffered`: the paper's in-memory write buffer over a durable engine (section 6.1,
//! Figure 5). Writes land in memory and return; a writer thread flushes them to the durable
//! engine in one atomic batch when the buffer reaches `flush_objects` objects (default 1000,
//! as in the paper) or `flush_bytes`, or `flush_interval` (default 100 ms) after the first
//! unflushed write, whichever comes first. Reads see the buffer first.
//!
//! # What a crash may lose
//! Everything accepted since the last completed flush, and nothing else: at most about
//! `flush_objects` objects or `flush_interval` worth of writes (more while the durable
//! engine is slow, up to the backpressure limit below). Each flush is one atomic batch of
//! the durable engine, applied in write order, so after a crash the durable engine holds
//! exactly the writes up to some point in the write sequence: never part of a batch,
//! never a newer write without the older ones. [`Engine::sync`] flushes and fsyncs, so a
//! write that returned before a `sync` that succeeded survives any crash.
//!
//! # Backpressure and failures
//! When the buffer holds 4× a flush threshold (objects or bytes) while a flush is still
//! running, writers wait for it. If flushing fails, the buffer keeps the writes and the
//! writer thread retries with backoff; once the buffer is full, writes fail with
//! [`ErrorKind::Unavailable`] naming the flush error instead of waiting forever.
//! Dropping the engine flushes what is buffered; call `sync` first to learn of failures.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::engine::{unknown_keyspace, BatchOp, Direction, Engine, KeyRange, ScanIter, WriteBatch};
use crate::error::{EngineError, ErrorKind, Result};
use crate::overlay::OverlayScan;

/// Tuning of the buffered engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BufferOptions {
    /// Flush when this many distinct objects are buffered (paper: 1000).
    pub flush_objects: usize,
    /// Flush when buffered keys and values reach this many bytes (guards large objects).
    pub flush_bytes: usize,
    /// Flush this long after the first unflushed write at the latest.
    pub flush_interval: Duration,
}

impl Default for BufferOptions {
    fn default() -> Self {
        BufferOptions {
            flush_objects: 1000,
            flush_bytes: 64 << 20,
            flush_interval: Duration::from_millis(100),
        }
    }
}

/// Backpressure starts at this multiple of a flush threshold.
const BACKPRESSURE_FACTOR: usize = 4;
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// Pending changes per keyspace: `Some(value)` to put, `None` to delete.
type Pending = HashMap<String, BTreeMap<Vec<u8>, Option<Vec<u8>>>>;

#[derive(Default)]
struct State {
    active: Pending,
    active_objects: usize,
    active_bytes: usize,
    /// The batch the writer thread is writing now; readers look here after `active`.
    flushing: Option<Arc<Pending>>,
    /// Sequence number of the last write accepted.
    accepted_seq: u64,
    /// Every write with a sequence number up to this one is in the durable engine.
    durable_seq: u64,
    flush_requested: bool,
    flush_failures: u64,
    last_flush_error: Option<String>,
    shutdown: bool,
}

impl State {
    fn over_capacity(&self, opts: &BufferOptions) -> bool {
        self.active_objects >= opts.flush_objects.saturating_mul(BACKPRESSURE_FACTOR)
            || self.active_bytes >= opts.flush_bytes.saturating_mul(BACKPRESSURE_FACTOR)
    }

    fn flush_due(&self, opts: &BufferOptions) -> bool {
        self.active_objects >= opts.flush_objects
            || self.active_bytes >= opts.flush_bytes
            || self.flush_requested
            || self.shutdown
    }

    /// Records a change to `key`, keeping the object and byte counts exact.
    fn insert(&mut self, keyspace: &str, key: Vec<u8>, value: Option<Vec<u8>>) {
        let key_len = key.len();
        let value_len = value.as_ref().map_or(0, Vec::len);
        let map = match self.active.get_mut(keyspace) {
            Some(m) => m,
            None => self.active.entry(keyspace.to_owned()).or_default(),
        };
        match map.insert(key, value) {
            // The key was already counted; only the value's size changes.
            Some(old) => {
                self.active_bytes = self.active_bytes - old.as_ref().map_or(0, Vec::len) + value_len
            }
            None => {
                self.active_objects += 1;
                self.active_bytes += key_len + value_len;
            }
        }
    }

    fn lookup(&self, keyspace: &str, key: &[u8]) -> Option<Option<Vec<u8>>> {
        if let Some(v) = self.active.get(keyspace).and_then(|m| m.get(key)) {
            return Some(v.clone());
        }
        self.flushing
            .as_ref()
            .and_then(|f| f.get(keyspace))
            .and_then(|m| m.get(key))
            .cloned()
    }
}

struct Shared {
    name: String,
    durable: Arc<dyn Engine>,
    opts: BufferOptions,
    state: Mutex<State>,
    /// Wakes the writer thread: a first write, a threshold reached, a sync, shutdown.
    wake_writer: Condvar,
    /// Signals the end of a flush attempt to writers, `sync` and `delete_range`.
    flushed: Condvar,
    keyspaces: RwLock<HashSet<String>>,
}

impl Shared {
    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| {
            EngineError::new(self.name.clone(), ErrorKind::Unavailable, "lock")
                .with_cause("a thread panicked while holding the buffer lock")
        })
    }

    fn check_keyspace(&self, op: &str, keyspace: &str) -> Result<()> {
        let known = self.keyspaces.read().map_err(|_| {
            EngineError::new(self.name.clone(), ErrorKind::Unavailable, "keyspace lock")
        })?;
        if known.contains(keyspace) {
            Ok(())
        } else {
            Err(unknown_keyspace(&self.name, op, keyspace))
        }
    }

    /// Accepts `changes` as one atomic unit (readers see all or none of them).
    fn accept(&self, op: &str, changes: Vec<(String, Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        for (ks, _, _) in &changes {
            self.check_keyspace(op, ks)?;
        }
        let mut st = self.lock()?;
        loop {
            if st.shutdown {
                return Err(
                    EngineError::new(self.name.clone(), ErrorKind::Unavailable, op)
                        .with_cause("engine is shutting down"),
                );
            }
            if !st.over_capacity(&self.opts) {
                break;
            }
            if let Some(err) = &st.last_flush_error {
                return Err(
                    EngineError::new(self.name.clone(), ErrorKind::Unavailable, op)
                        .with_cause(format!("buffer is full and flushing failed: {err}")),
                );
            }
            st = self
                .flushed
                .wait(st)
                .map_err(|_| EngineError::new(self.name.clone(), ErrorKind::Unavailable, op))?;
        }
        let was_empty = st.active_objects == 0;
        for (ks, key, value) in changes {
            st.insert(&ks, key, value);
        }
        st.accepted_seq += 1;
        if was_empty || st.flush_due(&self.opts) {
            self.wake_writer.notify_one();
        }
        Ok(())
    }

    /// The writer thread: waits until a flush is due, writes the buffer as one batch.
    fn run_writer(&self) {
        let mut backoff = Duration::from_millis(10);
        loop {
            let Ok(mut st) = self.state.lock() else {
                return;
            };
            // Wait for something to flush, then for a threshold or the interval.
            let mut first_write_seen: Option<Instant> = None;
            loop {
                if st.active_objects == 0 {
                    // Nothing buffered and nothing in flight: every accepted write is durable
                    // or was removed by a range delete that is.
                    st.durable_seq = st.accepted_seq;
                    st.flush_requested = false;
                    self.flushed.notify_all();
                    if st.shutdown {
                        return;
                    }
                    first_write_seen = None;
                    match self.wake_writer.wait(st) {
                        Ok(g) => st = g,
                        Err(_) => return,
                    }
                    continue;
                }
                let since = *first_write_seen.get_or_insert_with(Instant::now);
                let elapsed = since.elapsed();
                if st.flush_due(&self.opts) || elapsed >= self.opts.flush_interval {
                    break;
                }
                match self
                    .wake_writer
                    .wait_timeout(st, self.opts.flush_interval - elapsed)
                {
                    Ok((g, _)) => st = g,
                    Err(_) => return,
                }
            }
            let taken = Arc::new(std::mem::take(&mut st.active));
            st.active_objects = 0;
            st.active_bytes = 0;
            st.flush_requested = false;
            let seq = st.accepted_seq;
            st.flushing = Some(Arc::clone(&taken));
            let shutting_down = st.shutdown;
            drop(st);

            let result = self.durable.write_batch(to_batch(&taken));

            let Ok(mut st) = self.state.lock() else {
                return;
            };
            st.flushing = None;
            let failed = match result {
                Ok(()) => {
                    st.durable_seq = seq;
                    st.last_flush_error = None;
                    backoff = Duration::from_millis(10);
                    false
                }
                Err(e) => {
                    // Keep the writes: newer ones already in `active` win over these.
                    for (ks, map) in taken.iter() {
                        for (k, v) in map {
                            let newer = st.active.get(ks).is_some_and(|m| m.contains_key(k));
                            if !newer {
                                st.insert(ks, k.clone(), v.clone());
                            }
                        }
                    }
                    st.flush_failures += 1;
                    st.last_flush_error = Some(e.to_string());
                    true
                }
            };
            self.flushed.notify_all();
            drop(st);
            if failed {
                if shutting_down {
                    // Nothing more can be done: the unflushed writes are lost, as documented.
                    return;
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_RETRY_BACKOFF);
            }
        }
    }
}

fn to_batch(pending: &Pending) -> WriteBatch {
    let mut batch = WriteBatch::new();
    for (ks, map) in pending {
        for (k, v) in map {
            match v {
                Some(v) => batch.put(ks, k, v),
                None => batch.delete(ks, k),
            };
        }
    }
    batch
}

/// The buffered engine. Invariant: the durable engine always holds a prefix of the
/// accepted write sequence, and `buffer ∪ flushing ∪ durable` (newest first) is the
/// current state that reads see.
pub struct BufferedEngine {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for BufferedEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferedEngine")
            .field("name", &self.shared.name)
            .field("opts", &self.shared.opts)
            .finish_non_exhaustive()
    }
}

impl BufferedEngine {
    /// Buffers writes in front of `durable`, starting the writer thread.
    pub fn new(durable: Arc<dyn Engine>, opts: BufferOptions) -> Result<Self> {
        let name = format!("buffered({})", durable.name());
        if opts.flush_objects == 0 || opts.flush_bytes == 0 || opts.flush_interval.is_zero() {
            return Err(
                EngineError::new(name, ErrorKind::InvalidArgument, "buffer options")
                    .with_cause("flush_objects, flush_bytes and flush_interval must be positive"),
            );
        }
        let keyspaces = durable.keyspaces()?.into_iter().collect();
        let shared = Arc::new(Shared {
            name: name.clone(),
            durable,
            opts,
            state: Mutex::new(State::default()),
            wake_writer: Condvar::new(),
            flushed: Condvar::new(),
            keyspaces: RwLock::new(keyspaces),
        });
        let for_thread = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("dynamo-buffer-flush".into())
            .spawn(move || for_thread.run_writer())
            .map_err(|e| {
                EngineError::new(name, ErrorKind::Unavailable, "start writer thread").with_cause(e)
            })?;
        Ok(BufferedEngine {
            shared,
            writer: Some(writer),
        })
    }

    /// The options in force.
    pub fn options(&self) -> &BufferOptions {
        &self.shared.opts
    }

    /// Objects accepted but not yet flushed (buffered or being flushed).
    pub fn unflushed_objects(&self) -> Result<usize> {
        let st = self.shared.lock()?;
        let flushing = st
            .flushing
            .as_ref()
            .map_or(0, |f| f.values().map(BTreeMap::len).sum());
        Ok(st.active_objects + flushing)
    }
}

impl Drop for BufferedEngine {
    fn drop(&mut self) {
        if let Ok(mut st) = self.shared.state.lock() {
            st.shutdown = true;
        }
        self.shared.wake_writer.notify_all();
        if let Some(writer) = self.writer.take() {
            // The writer flushes what is left before it exits; a panic there is not ours to raise.
            let _ = writer.join();
        }
    }
}

impl Engine for BufferedEngine {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn ensure_keyspace(&self, keyspace: &str) -> Result<()> {
        self.shared.durable.ensure_keyspace(keyspace)?;
        self.shared
            .keyspaces
            .write()
            .map_err(|_| {
                EngineError::new(
                    self.shared.name.clone(),
                    ErrorKind::Unavailable,
                    "keyspace lock",
                )
            })?
            .insert(keyspace.to_owned());
        Ok(())
    }

    fn keyspaces(&self) -> Result<Vec<String>> {
        self.shared.durable.keyspaces()
    }

    fn get(&self, keyspace: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.shared.check_keyspace("get", keyspace)?;
        if let Some(hit) = self.shared.lock()?.lookup(keyspace, key) {
            return Ok(hit);
        }
        // Not buffered: the durable engine has the newest value (a flush only adds newer ones).
        self.shared.durable.get(keyspace, key)
    }

    fn get_cached(&self, keyspace: &str, key: &[u8]) -> Result<Option<Option<Vec<u8>>>> {
        self.shared.check_keyspace("get", keyspace)?;
        if let Some(hit) = self.shared.lock()?.lookup(keyspace, key) {
            return Ok(Some(hit));
        }
        self.shared.durable.get_cached(keyspace, key)
    }

    fn put(&self, keyspace: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.shared.accept(
            "put",
            vec![(keyspace.to_owned(), key.to_vec(), Some(value.to_vec()))],
        )
    }

    fn delete(&self, keyspace: &str, key: &[u8]) -> Result<()> {
        self.shared
            .accept("delete", vec![(keyspace.to_owned(), key.to_vec(), None)])
    }

    fn write_batch(&self, batch: WriteBatch) -> Result<()> {
        let changes = batch
            .into_ops()
            .into_iter()
            .map(BatchOp::into_parts)
            .collect();
        self.shared.accept("write_batch", changes)
    }

    fn scan<'a>(
        &'a self,
        keyspace: &str,
        range: &KeyRange,
        direction: Direction,
    ) -> Result<ScanIter<'a>> {
        self.shared.check_keyspace("scan", keyspace)?;
        if range.is_empty() {
            return Ok(Box::new(std::iter::empty()));
        }
        let mut overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        {
            let st = self.shared.lock()?;
            let flushing = st.flushing.as_ref().and_then(|f| f.get(keyspace));
            for map in flushing.into_iter().chain(st.active.get(keyspace)) {
                for (k, v) in map.range::<[u8], _>(range.as_bounds()) {
                    overlay.insert(k.clone(), v.clone());
                }
            }
        }
        let mut overlay: Vec<_> = overlay.into_iter().collect();
        if direction == Direction::Reverse {
            overlay.reverse();
        }
        let base = self.shared.durable.scan(keyspace, range, direction)?;
        Ok(Box::new(OverlayScan::new(base, overlay, direction)))
    }

    fn delete_range(&self, keyspace: &str, range: &KeyRange) -> Result<()> {
        self.shared.check_keyspace("delete_range", keyspace)?;
        if range.is_empty() {
            return Ok(());
        }
        let mut st = self.shared.lock()?;
        // The durable delete must not race a flush of older writes to the same keys.
        while st.flushing.is_some() {
            st = self.shared.flushed.wait(st).map_err(|_| {
                EngineError::new(
                    self.shared.name.clone(),
                    ErrorKind::Unavailable,
                    "delete_range",
                )
            })?;
        }
        let doomed: Vec<Vec<u8>> = st
            .active
            .get(keyspace)
            .map(|m| {
                m.range::<[u8], _>(range.as_bounds())
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        for k in doomed {
            if let Some(v) = st.active.get_mut(keyspace).and_then(|m| m.remove(&k)) {
                st.active_objects -= 1;
                st.active_bytes -= k.len() + v.as_ref().map_or(0, Vec::len);
            }
        }
        // Held across the durable call so no write to the range slips in between.
        self.shared.durable.delete_range(keyspace, range)
    }

    fn sync(&self) -> Result<()> {
        let shared = &self.shared;
        let mut st = shared.lock()?;
        let target = st.accepted_seq;
        let failures_before = st.flush_failures;
        if st.durable_seq < target {
            st.flush_requested = true;
            shared.wake_writer.notify_one();
        }
        while st.durable_seq < target {
            if st.flush_failures > failures_before {
                let cause = st.last_flush_error.clone().unwrap_or_default();
                return Err(
                    EngineError::new(shared.name.clone(), ErrorKind::Unavailable, "sync")
                        .with_cause(format!("flushing the buffer failed: {cause}")),
                );
            }
            st = shared.flushed.wait(st).map_err(|_| {
                EngineError::new(shared.name.clone(), ErrorKind::Unavailable, "sync")
            })?;
        }
        drop(st);
        shared.durable.sync()
    }

    fn approximate_size(&self) -> Result<u64> {
        let buffered = self.shared.lock()?.active_bytes as u64;
        Ok(self.shared.durable.approximate_size()? + buffered)
    }
}
