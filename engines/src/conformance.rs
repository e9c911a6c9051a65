//! The conformance suite every engine passes: one set of checks, run by one test per
//! backend (and, later, against engines plugged in through the C API).
//!
//! Checks panic with a message naming the engine and what broke, like any test assertion.
//! A harness supplies how to open the engine in a directory; durable engines are also
//! closed and reopened on the same directory, and their files corrupted on purpose.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::engine::{Direction, Engine, KeyRange, WriteBatch};
use crate::error::{ErrorKind, Result};

/// How the suite opens the engine under test.
pub trait Harness: Sync {
    /// Opens the engine with its files in `dir` (the same `dir` again means reopen).
    fn open(&self, dir: &Path) -> Result<Arc<dyn Engine>>;
    /// Whether data survives closing and reopening on the same directory.
    fn durable(&self) -> bool;
}

impl<F> Harness for (F, bool)
where
    F: Fn(&Path) -> Result<Arc<dyn Engine>> + Sync,
{
    fn open(&self, dir: &Path) -> Result<Arc<dyn Engine>> {
        (self.0)(dir)
    }
    fn durable(&self) -> bool {
        self.1
    }
}

/// One named check of the suite.
type Check = (&'static str, fn(&dyn Harness));

/// Runs every check against the engine `harness` opens.
pub fn run_all(harness: &dyn Harness) {
    let checks: &[Check] = &[
        ("round trip", round_trip),
        ("cached reads agree", cached_reads_agree),
        ("overwrite", overwrite),
        ("empty key and value", empty_key_and_value),
        ("binary keys", binary_keys),
        ("large values", large_values),
        ("range scans", range_scans),
        ("batch atomicity", batch_atomicity),
        ("range delete", range_delete),
        ("keyspace isolation", keyspace_isolation),
        (
            "concurrent readers and writers",
            concurrent_readers_and_writers,
        ),
        ("sync and size", sync_and_size),
        ("reopen keeps everything", reopen_keeps_everything),
        ("clear errors", clear_errors),
    ];
    for (name, check) in checks {
        eprintln!("conformance: {name}");
        check(harness);
    }
}

/// `get_cached`, when it answers, answers what `get` does: before and after writes,
/// deletes and a sync (which moves data out of memtables and buffers), for present and
/// absent keys.
fn cached_reads_agree(h: &dyn Harness) {
    let (_dir, e) = fresh(h);
    let check = |e: &dyn Engine, stage: &str| {
        for k in 0..50u32 {
            let key = k.to_be_bytes();
            let want = e.get("data", &key).expect("get");
            if let Some(got) = e.get_cached("data", &key).expect("get_cached") {
                assert_eq!(got, want, "{}: get_cached {k} {stage}", e.name());
            }
        }
    };
    check(&*e, "on an empty keyspace");
    for k in 0..40u32 {
        e.put("data", &k.to_be_bytes(), &k.to_le_bytes())
            .expect("put");
    }
    check(&*e, "after puts");
    for k in 0..10u32 {
        e.delete("data", &k.to_be_bytes()).expect("delete");
    }
    check(&*e, "after deletes");
    e.sync().expect("sync");
    check(&*e, "after a sync");
    assert!(
        !matches!(e.get_cached("missing", b"k"), Ok(Some(_))),
        "{}: a cached read of an unknown keyspace answered",
        e.name()
    );
}

fn fresh(h: &dyn Harness) -> (tempfile::TempDir, Arc<dyn Engine>) {
    let dir = tempfile::tempdir().expect("create temp dir");
    let engine = h.open(dir.path()).expect("open engine");
    engine
        .ensure_keyspace("data")
        .expect("create keyspace data");
    (dir, engine)
}

/// A small deterministic generator so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn collect(
    engine: &dyn Engine,
    ks: &str,
    range: &KeyRange,
    dir: Direction,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    engine
        .scan(ks, range, dir)
        .unwrap_or_else(|e| panic!("{}: scan {range:?}: {e}", engine.name()))
        .map(|r| r.unwrap_or_else(|e| panic!("{}: scan item: {e}", engine.name())))
        .collect()
}

fn model_range(
    model: &BTreeMap<Vec<u8>, Vec<u8>>,
    range: &KeyRange,
    dir: Direction,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut v: Vec<_> = model
        .iter()
        .filter(|(k, _)| range.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if dir == Direction::Reverse {
        v.reverse();
    }
    v
}

fn round_trip(h: &dyn Harness) {
    let (_dir, e) = fresh(h);
    let n = e.name().to_owned();
    assert_eq!(e.get("data", b"missing").unwrap(), None, "{n}: absent key");
    e.put("data", b"apple", b"red").unwrap();
    assert_eq!(
        e.get("data", b"apple").unwrap().as_deref(),
        Some(&b"red"[..]),
        "{n}"
    );
    e.delete("data", b"apple").unwrap();
    assert_eq!(e.get("data", b"apple").unwrap(), None, "{n}: after delete");
    e.delete("data", b"never-there")
        .expect("deleting an absent key is not an error");
}

fn overwrite(h: &dyn Harness) {
    let (_dir, e) = fresh(h);
    e.put("data", b"k", b"first value, longer").unwrap();
    e.put("data", b"k", b"second").unwrap();
    assert_eq!(
        e.get("data", b"k").unwrap().as_deref(),
        Some(&b"second"[..]),
        "{}",
        e.name()
    );
    let all = collect(&*e, "data", &KeyRange::all(), Direction::Forward);
    assert_eq!(
        all.len(),
        1,
        "{}: overwrite must not duplicate the key",
        e.name()
    );
}

fn empty_key_and_value(h: &dyn Harness) {
    let (_dir, e) = fresh(h);
    e.put("data", b"k", b"").unwrap();
    assert_eq!(
        e.get("data", b"k").unwrap(),
        Some(Vec::new()),
        "{}: empty value is not absent",
        e.name()
    );
    e.put("data", b"", b"empty key").unwrap();
    assert_eq!(
        e.get("data", b"").unwrap().as_deref(),
        Some(&b"empty key"[..]),
        "{}",
        e.name()
    );
    let keys: Vec<_> = collect(&*e, "data", &KeyRange::all(), Direction::Forward)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        keys,
        vec![b"".to_vec(), b"k".to_vec()],
        "{}: empty key sorts first",
        e.name()
    );
}

fn binary_keys(h: &dyn Harness) {
    let (_dir, e) = fresh(h);
    let keys: Vec<Vec<u8>> = vec![
        vec![0x00],
        vec![0x00, 0x00],
        vec![0x00, 0xFF],
        vec![0x01],
        vec![0x7F, 0x00, 0x80],
        vec![0xFF],
        vec![0xFF, 0x00],
        vec![0xFF, 0xFF, 0xFF],
    ];
    // Insert in a scrambled order; the engine must return bytewise order.
    for i in [5usize, 0, 7, 2, 4, 1, 6, 3] {
        let mut v = keys[i].clone();
        v.extend_from_slice(&[0xAB, 0x00, 0xCD]);
        e.put("data", &keys[i], &v).unwrap();
    }
    for k in &keys {
        let mut want = k.clone();
        want.extend_from_slice(&[0xAB, 0x00, 0xCD]);
        assert_eq!(
            e.get("data", k).unwrap(),
            Some(want),
            "{}: key {k:02x?}",
            e.name()
        );
    }
    let got: Vec<_> = collect(&*e, "data", &KeyRange::all(), Direction::Forward)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(got, keys, "{}: bytewise order", e.name());
    let mut rev = keys.clone();
    rev.reverse();
    let got: Vec<_> = collect(&*e, "data", &KeyRange::all(), Direction::Reverse)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(got, rev, "{}: reverse order", e.name());
}

fn large_values(h: &dyn Harness) {
    let (_dir, e) = fresh(h);
    let mib: Vec<u8> = (0..(1usize << 20)).map(|i| (i * 31 % 251) as u8).collect();
    e.put("data", b"one-mib", &mib).unwrap();
    let mut bigger = mib.clone();
    bigger.extend_from_slice(b"tail");
    e.put("data", b"over-one-mib", &bigger).unwrap();
    assert!(
        e.get("data", b"one-mib").unwrap() == Some(mib.clone()),
        "{}: 1 MiB value",
        e.name()
    );
    assert!(
        e.get("data", b"over-one-mib").unwrap() == Some(bigger),
        "{}: 1 MiB + 4 B",
        e.name()
    );
    let scanned = collect(&*e, "data", &KeyRange::prefix(b"one"), Direction::Forward);
    assert!(
        scanned.len() == 1 && scanned[0].1 == mib,
        "{}: large value via scan",
        e.name()
    );
}

fn bound(rng: &mut Rng, keys: &[Vec<u8>]) -> Bound<Vec<u8>> {
    let k = keys[rng.below(keys.len() as u64) as usize].clone();
    match rng.below(3) {
        0 => Bound::Included(k),
        1 => Bound::Excluded(k),
        _ => Bound::Unbounded,
    }
}

fn range_scans(h: &dyn Harness) {
    let (_dir, e) = fresh(h);
    let mut model = BTreeMap::new();
    for i in 0..600u32 {
        // Keys spread over two lengths so prefixes and successors matter.
        let key = if i % 3 == 0 {
            format!("k{i:04}").into_bytes()
        } else {
            format!("k{i:04}x").into_bytes()
        };
        let value = format!("value-{i}").into_bytes();
        e.put("data", &key, &value).unwrap();
        model.insert(key, value);
    }
    // Bounds drawn from stored keys and from keys that are not stored.
    let mut probes: Vec<Vec<u8>> = model.keys().step_by(7).cloned().collect();
    probes.extend([
        b"a".to_vec(),
        b"k".to_vec(),
        b"k0300".to_vec(),
        b"k9".to_vec(),
        b"z".to_vec(),
    ]);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..200 {
        let range = KeyRange::new(bound(&mut rng, &probes), bound(&mut rng, &probes));
        for dir in [Direction::Forward, Direction::Reverse] {
            assert_eq!(
                collect(&*e, "data", &range, dir),
                model_range(&model, &range, dir),
                "{}: scan {range:?} {dir:?}",
                e.name()
            );
        }
    }
    // Explicitly empty ranges and a prefix range.
    for range in [
        KeyRange::half_open(b"k0100".to_vec(), b"k0100".to_vec()),
        KeyRange::half_open(b"k0200".to_vec(), b"k0100".to_vec()),
        KeyRange::new(
            Bound::Excluded(b"k0003".to_vec()),
            Bound::Excluded(b"k0003\0".to_vec()),
        ),
        KeyRange::prefix(b"nothing"),
    ] {
        assert!(
            collect(&*e, "data", &range, Direction::Forward).is_empty(),
            "{}: empty {range:?}",
            e.name()
        );
        assert!(
            collect(&*e, "data", &range, Direction::Reverse).is_empty(),
            "{}: empty {range:?}",
            e.name()
        );
    }
    let prefix = KeyRange::prefix(b"k012");
    assert_eq!(
        collect(&*e, "data", &prefix, Direction::Forward),
        model_range(&model, &prefix, Direction::Forward)
    );
}

fn batch_atomicity(h: &dyn Harness) {
    let (_dir, e) = fresh(h);
    e.ensure_keyspace("meta").unwrap();
    e.put("data", b"gone", b"x").unwrap();
    let mut batch = WriteBatch::new();
    batch
        .put("data", b"a", b"1")
        .put("meta", b"m", b"2")
        .delete("data", b"gone")
        .put("data", b"same", b"old")
        .put("data", b"same", b"new");
    e.write_batch(batch).unwrap();
    assert_eq!(
        e.get("data", b"a").unwrap().as_deref(),
        Some(&b"1"[..]),
        "{}",
        e.name()
    );
    assert_eq!(
        e.get("meta", b"m").unwrap().as_deref(),
        Some(&b"2"[..]),
        "{}",
        e.name()
    );
    assert_eq!(e.get("data", b"gone").unwrap(), None, "{}", e.name());
    assert_eq!(
        e.get("data", b"same").unwrap().as_deref(),
        Some(&b"new"[..]),
        "{}: later op wins",
        e.name()
    );

    // A batch that cannot be applied whole changes nothing.
    let mut bad = WriteBatch::new();
    bad.put("data", b"a", b"changed")
        .delete("meta", b"m")
        .put("no-such-keyspace", b"x", b"y");
    let err = e
        .write_batch(bad)
        .expect_err("batch naming an unknown keyspace must fail");
    assert_eq!(err.kind(), ErrorKind::UnknownKeyspace, "{err}");
    assert_eq!(
        e.get("data", b"a").unwrap().as_deref(),
        Some(&b"1"[..]),
        "{}: failed batch leaked",
        e.name()
    );
    assert_eq!(
        e.get("meta", b"m").unwrap().as_deref(),
        Some(&b"2"[..]),
        "{}: failed batch leaked",
        e.name()
    );

    // Readers never see half a batch: `first` and `second` are written together, first
    // before second, so reading `first` then `second` never finds second older.
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for i in 1..=300u64 {
                let mut b = WriteBatch::new();
                b.put("data", b"first", &i.to_be_bytes())
                    .put("data", b"second", &i.to_be_bytes());
                e.write_batch(b).unwrap();
            }
            stop.store(true, Ordering::SeqCst);
        });
        let read = |k: &[u8]| {
            e.get("data", k)
                .unwrap()
                .map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()))
        };
        while !stop.load(Ordering::SeqCst) {
            let first = read(b"first");
            let second = read(b"second");
            assert!(
                second >= first,
                "{}: saw first={first} but second={second}: partial batch",
                e.name()
            );
        }
        writer.join().unwrap();
    });
}

fn range_delete(h: &dyn Harness) {
    let (_dir, e) = fresh(h);
    let mut rng = Rng(42);
    let keys: Vec<Vec<u8>> = (0..200u32)
        .map(|i| format!("r{i:03}").into_bytes())
        .collect();
    for round in 0..12 {
        let mut model = BTreeMap::new();
        e.delete_range("data", &KeyRange::all()).unwrap();
        for k in &keys {
            e.put("data", k, k).unwrap();
            model.insert(k.clone(), k.clone());
        }
        let range = if round == 0 {
            KeyRange::all()
        } else {
            KeyRange::new(bound(&mut rng, &keys), bound(&mut rng, &keys))
        };
        e.delete_range("data", &range).unwrap();
        model.retain(|k, _| !range.contains(k));
        assert_eq!(
            collect(&*e, "data", &KeyRange::all(), Direction::Forward),
            model_range(&model, &KeyRange::all(), Direction::Forward),
            "{}: after delete_range {range:?}",
            e.name()
        );
    }
    // An inverted range deletes nothing rather than failing or deleting everything.
    e.put("data", b"m", b"m").unwrap();
    e.delete_range("data", &KeyRange::half_open(b"z".to_vec(), b"a".to_vec()))
        .unwrap();
    assert!(
        e.get("data", b"m").unwrap().is_some(),
        "{}: inverted range deleted data",
        e.name()
    );
}

fn keyspace_isolation(h: &dyn Harness) {
    let (_dir, e) = fresh(h);
    e.ensure_keyspace("hints").unwrap();
    e.ensure_keyspace("hints")
        .expect("ensure_keyspace is idempotent");
    e.put("data", b"k", b"in data").unwrap();
    e.put("hints", b"k", b"in hints").unwrap();
    e.put("hints", b"only-hints", b"h").unwrap();
    assert_eq!(
        e.get("data", b"k").unwrap().as_deref(),
        Some(&b"in data"[..])
    );
    assert_eq!(
        e.get("hints", b"k").unwrap().as_deref(),
        Some(&b"in hints"[..])
    );
    assert_eq!(
        e.get("data", b"only-hints").unwrap(),
        None,
        "{}: keyspaces leak",
        e.name()
    );
    e.delete("hints", b"k").unwrap();
    assert_eq!(
        e.get("data", b"k").unwrap().as_deref(),
        Some(&b"in data"[..]),
        "{}: delete leaked",
        e.name()
    );
    e.delete_range("hints", &KeyRange::all()).unwrap();
    assert_eq!(
        collect(&*e, "data", &KeyRange::all(), Direction::Forward).len(),
        1,
        "{}: range delete leaked",
        e.name()
    );
    let mut names = e.keyspaces().unwrap();
    names.sort();
    assert_eq!(
        names,
        vec!["data".to_owned(), "hints".to_owned()],
        "{}",
        e.name()
    );

    let err = e.get("nope", b"k").expect_err("unknown keyspace must fail");
    assert_eq!(err.kind(), ErrorKind::UnknownKeyspace);
    assert!(
        err.to_string().contains("nope"),
        "error names the keyspace: {err}"
    );
    assert_eq!(
        e.put("nope", b"k", b"v").unwrap_err().kind(),
        ErrorKind::UnknownKeyspace
    );
    assert!(e
        .scan("nope", &KeyRange::all(), Direction::Forward)
        .is_err());
    for bad in ["bad name!", crate::engine::RESERVED_KEYSPACE] {
        let err = e.ensure_keyspace(bad).expect_err("invalid keyspace name");
        assert_eq!(
            err.kind(),
            ErrorKind::InvalidArgument,
            "{}: {bad:?}",
            e.name()
        );
    }
}

fn value_for(key: &[u8]) -> Vec<u8> {
    let mut v = b"v:".to_vec();
    v.extend_from_slice(key);
    v.extend(std::iter::repeat_n(key.len() as u8, 100));
    v
}

fn concurrent_readers_and_writers(h: &dyn Harness) {
    let (_dir, e) = fresh(h);
    const WRITERS: u32 = 4;
    const PER_WRITER: u32 = 400;
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let e = &e;
                s.spawn(move || {
                    for i in 0..PER_WRITER {
                        let key = format!("w{w}-{i:05}").into_bytes();
                        if i % 10 == 0 {
                            let mut b = WriteBatch::new();
                            b.put("data", &key, &value_for(&key));
                            e.write_batch(b).unwrap();
                        } else {
                            e.put("data", &key, &value_for(&key)).unwrap();
                        }
                    }
                })
            })
            .collect();
        for r in 0..3u64 {
            let (e, done) = (&e, &done);
            s.spawn(move || {
                let mut rng = Rng(r + 7);
                while !done.load(Ordering::SeqCst) {
                    let key = format!(
                        "w{}-{:05}",
                        rng.below(WRITERS.into()),
                        rng.below(PER_WRITER.into())
                    )
                    .into_bytes();
                    if let Some(v) = e.get("data", &key).unwrap() {
                        assert_eq!(v, value_for(&key), "{}: torn or wrong value", e.name());
                    }
                    for item in e
                        .scan("data", &KeyRange::prefix(b"w1-"), Direction::Forward)
                        .unwrap()
                        .take(50)
                    {
                        let (k, v) = item.unwrap();
                        assert_eq!(v, value_for(&k), "{}: scan saw a wrong value", e.name());
                    }
                }
            });
        }
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::SeqCst);
    });
    let all = collect(&*e, "data", &KeyRange::all(), Direction::Forward);
    assert_eq!(
        all.len(),
        (WRITERS * PER_WRITER) as usize,
        "{}: lost concurrent writes",
        e.name()
    );
}

fn sync_and_size(h: &dyn Harness) {
    let (_dir, e) = fresh(h);
    let before = e.approximate_size().unwrap();
    for i in 0..200u32 {
        e.put("data", format!("s{i}").as_bytes(), &[7u8; 4096])
            .unwrap();
    }
    e.sync().unwrap();
    let after = e.approximate_size().unwrap();
    assert!(
        after > before,
        "{}: size {before} -> {after} after writing 800 KiB",
        e.name()
    );
}

fn reopen_keeps_everything(h: &dyn Harness) {
    if !h.durable() {
        return; // Nothing to keep: the engine is in-memory by design.
    }
    let dir = tempfile::tempdir().unwrap();
    let mut model = BTreeMap::new();
    {
        let e = h.open(dir.path()).unwrap();
        e.ensure_keyspace("data").unwrap();
        e.ensure_keyspace("meta").unwrap();
        for i in 0..500u32 {
            let k = format!("key{i:04}").into_bytes();
            e.put("data", &k, &value_for(&k)).unwrap();
            model.insert(k.clone(), value_for(&k));
        }
        e.delete("data", b"key0007").unwrap();
        model.remove(&b"key0007"[..]);
        e.delete_range(
            "data",
            &KeyRange::half_open(b"key0100".to_vec(), b"key0110".to_vec()),
        )
        .unwrap();
        model.retain(|k, _| !(k.as_slice() >= &b"key0100"[..] && k.as_slice() < &b"key0110"[..]));
        let mut b = WriteBatch::new();
        b.put("meta", b"ring", b"v1").put("data", b"zz", b"last");
        e.write_batch(b).unwrap();
        model.insert(b"zz".to_vec(), b"last".to_vec());
    }
    let e = h.open(dir.path()).expect("reopen");
    let mut names = e.keyspaces().unwrap();
    names.sort();
    assert_eq!(
        names,
        vec!["data".to_owned(), "meta".to_owned()],
        "{}: keyspaces after reopen",
        e.name()
    );
    assert_eq!(
        collect(&*e, "data", &KeyRange::all(), Direction::Forward),
        model_range(&model, &KeyRange::all(), Direction::Forward),
        "{}: data after reopen",
        e.name()
    );
    assert_eq!(e.get("meta", b"ring").unwrap().as_deref(), Some(&b"v1"[..]));
    e.put("data", b"after-reopen", b"ok")
        .expect("writable after reopen");
}

fn clear_errors(h: &dyn Harness) {
    if !h.durable() {
        return; // No files: nothing to fail to open or to corrupt.
    }
    // A path below a regular file can never be opened.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = match h.open(&file.join("db")) {
        Ok(_) => panic!("opening a path below a regular file must fail"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), ErrorKind::Open, "{err}");
    assert!(
        err.to_string().contains("plain-file"),
        "error names the path: {err}"
    );

    // Files overwritten with garbage: a clear error, not a panic and not an empty database.
    let db = dir.path().join("db");
    {
        let e = h.open(&db).unwrap();
        e.ensure_keyspace("data").unwrap();
        e.put("data", b"k", b"v").unwrap();
        e.sync().unwrap();
    }
    let garbage: Vec<u8> = (0..8192u32)
        .map(|i| (i * 7 + 3) as u8)
        .filter(|b| *b != b'\n')
        .collect();
    for entry in std::fs::read_dir(&db).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::write(&path, &garbage).unwrap();
        }
    }
    match h.open(&db) {
        Ok(e) => panic!("{}: opened a corrupt database without error", e.name()),
        Err(err) => assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}"),
    }
}
