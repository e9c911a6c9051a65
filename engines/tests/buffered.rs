//! Behaviour specific to the buffered engine, observed through a memory engine beneath it.
#![cfg(all(feature = "buffered", feature = "memory"))]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynamo_engines::buffered::{BufferOptions, BufferedEngine};
use dynamo_engines::memory::MemoryEngine;
use dynamo_engines::{
    Direction, Engine, EngineError, ErrorKind, KeyRange, Result, ScanIter, WriteBatch,
};

const LONG: Duration = Duration::from_secs(3600);

fn setup(opts: BufferOptions) -> (Arc<MemoryEngine>, BufferedEngine) {
    let durable = Arc::new(MemoryEngine::new());
    durable.ensure_keyspace("data").unwrap();
    let buffered = BufferedEngine::new(durable.clone(), opts).unwrap();
    (durable, buffered)
}

fn count(e: &dyn Engine) -> usize {
    e.scan("data", &KeyRange::all(), Direction::Forward)
        .unwrap()
        .count()
}

/// Waits for a background flush; the deadline only bounds a hang, it measures nothing.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn reads_see_the_buffer_before_it_is_flushed() {
    let (durable, e) = setup(BufferOptions {
        flush_interval: LONG,
        ..Default::default()
    });
    e.put("data", b"k", b"v1").unwrap();
    e.put("data", b"gone", b"x").unwrap();
    e.delete("data", b"gone").unwrap();
    assert_eq!(durable.get("data", b"k").unwrap(), None, "not flushed yet");
    assert_eq!(e.get("data", b"k").unwrap().as_deref(), Some(&b"v1"[..]));
    assert_eq!(e.get("data", b"gone").unwrap(), None);
    assert_eq!(e.unflushed_objects().unwrap(), 2);
    // A buffered delete hides a durable value in gets and scans.
    durable.put("data", b"old", b"durable").unwrap();
    e.delete("data", b"old").unwrap();
    assert_eq!(e.get("data", b"old").unwrap(), None);
    let keys: Vec<_> = e
        .scan("data", &KeyRange::all(), Direction::Forward)
        .unwrap()
        .map(|r| r.unwrap().0)
        .collect();
    assert_eq!(keys, vec![b"k".to_vec()]);
}

#[test]
fn flushes_when_the_object_threshold_is_reached() {
    let (durable, e) = setup(BufferOptions {
        flush_objects: 10,
        flush_interval: LONG,
        ..Default::default()
    });
    for i in 0..9u8 {
        e.put("data", &[i], b"v").unwrap();
    }
    // Re-writing a buffered key does not count as a new object.
    e.put("data", &[0], b"v2").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        count(&*durable),
        0,
        "9 objects are below the threshold of 10"
    );
    e.put("data", &[9], b"v").unwrap();
    eventually("10 objects flushed", || count(&*durable) == 10);
    assert_eq!(
        durable.get("data", &[0]).unwrap().as_deref(),
        Some(&b"v2"[..])
    );
}

#[test]
fn flushes_after_the_interval() {
    let (durable, e) = setup(BufferOptions {
        flush_interval: Duration::from_millis(20),
        ..Default::default()
    });
    e.put("data", b"k", b"v").unwrap();
    eventually("interval flush", || {
        durable.get("data", b"k").unwrap().is_some()
    });
    eventually("buffer drained", || e.unflushed_objects().unwrap() == 0);
}

#[test]
fn flushes_on_the_byte_threshold() {
    let (durable, e) = setup(BufferOptions {
        flush_bytes: 1000,
        flush_interval: LONG,
        ..Default::default()
    });
    e.put("data", b"big", &[1u8; 1200]).unwrap();
    eventually("byte-threshold flush", || {
        durable.get("data", b"big").unwrap().is_some()
    });
}

#[test]
fn sync_and_drop_flush_everything() {
    let (durable, e) = setup(BufferOptions {
        flush_interval: LONG,
        ..Default::default()
    });
    let mut batch = WriteBatch::new();
    batch.put("data", b"a", b"1").put("data", b"b", b"2");
    e.write_batch(batch).unwrap();
    e.sync().unwrap();
    assert_eq!(count(&*durable), 2, "sync must flush the buffer");
    e.put("data", b"c", b"3").unwrap();
    drop(e);
    assert_eq!(
        durable.get("data", b"c").unwrap().as_deref(),
        Some(&b"3"[..]),
        "drop must flush"
    );
}

#[test]
fn range_delete_covers_buffered_and_durable_keys() {
    let (durable, e) = setup(BufferOptions {
        flush_interval: LONG,
        ..Default::default()
    });
    durable.put("data", b"a1", b"durable").unwrap();
    e.put("data", b"a2", b"buffered").unwrap();
    e.put("data", b"b1", b"kept").unwrap();
    e.delete_range("data", &KeyRange::prefix(b"a")).unwrap();
    assert_eq!(e.get("data", b"a1").unwrap(), None);
    assert_eq!(e.get("data", b"a2").unwrap(), None);
    e.sync().unwrap();
    let keys: Vec<_> = durable
        .scan("data", &KeyRange::all(), Direction::Forward)
        .unwrap()
        .map(|r| r.unwrap().0)
        .collect();
    assert_eq!(keys, vec![b"b1".to_vec()]);
    // Emptying the buffer by a range delete must not leave sync waiting for a flush.
    e.put("data", b"c", b"x").unwrap();
    e.delete_range("data", &KeyRange::all()).unwrap();
    e.sync().unwrap();
    assert_eq!(count(&*durable), 0);
}

/// A durable engine whose writes can be made to fail, like a full disk.
struct Flaky {
    inner: MemoryEngine,
    failing: AtomicBool,
}

impl Engine for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }
    fn ensure_keyspace(&self, ks: &str) -> Result<()> {
        self.inner.ensure_keyspace(ks)
    }
    fn keyspaces(&self) -> Result<Vec<String>> {
        self.inner.keyspaces()
    }
    fn get(&self, ks: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(ks, key)
    }
    fn put(&self, ks: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.inner.put(ks, key, value)
    }
    fn delete(&self, ks: &str, key: &[u8]) -> Result<()> {
        self.inner.delete(ks, key)
    }
    fn write_batch(&self, batch: WriteBatch) -> Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(EngineError::new("flaky", ErrorKind::Backend, "write_batch")
                .with_cause("No space left on device"));
        }
        self.inner.write_batch(batch)
    }
    fn scan<'a>(&'a self, ks: &str, range: &KeyRange, d: Direction) -> Result<ScanIter<'a>> {
        self.inner.scan(ks, range, d)
    }
    fn delete_range(&self, ks: &str, range: &KeyRange) -> Result<()> {
        self.inner.delete_range(ks, range)
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
    fn approximate_size(&self) -> Result<u64> {
        self.inner.approximate_size()
    }
}

#[test]
fn flush_failures_are_reported_and_retried_without_losing_writes() {
    let flaky = Arc::new(Flaky {
        inner: MemoryEngine::new(),
        failing: AtomicBool::new(true),
    });
    flaky.ensure_keyspace("data").unwrap();
    let e = BufferedEngine::new(
        flaky.clone(),
        BufferOptions {
            flush_objects: 2,
            flush_interval: Duration::from_millis(5),
            ..Default::default()
        },
    )
    .unwrap();
    e.put("data", b"a", b"1").unwrap();
    let err = e.sync().expect_err("sync must report the failed flush");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.to_string().contains("No space left on device"), "{err}");
    assert!(err.to_string().contains("buffered(flaky)"), "{err}");
    // Writes keep landing until the buffer is full (4 x 2 objects), then fail clearly.
    let mut accepted = 1;
    let full = loop {
        match e.put("data", format!("k{accepted}").as_bytes(), b"v") {
            Ok(()) => accepted += 1,
            Err(err) => break err,
        }
        assert!(
            accepted < 100,
            "a full buffer over a failing engine must refuse writes"
        );
    };
    assert_eq!(full.kind(), ErrorKind::Unavailable);
    assert!(full.to_string().contains("buffer is full"), "{full}");
    assert_eq!(
        e.get("data", b"a").unwrap().as_deref(),
        Some(&b"1"[..]),
        "kept in the buffer"
    );
    // The disk recovers: everything accepted reaches the durable engine.
    flaky.failing.store(false, Ordering::SeqCst);
    eventually("retry succeeds", || e.sync().is_ok());
    assert_eq!(count(&flaky.inner), accepted);
}
