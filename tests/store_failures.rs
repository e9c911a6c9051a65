//! One replica under the failures of the failure-paths issue: a crash that rolls back
//! unsynced writes, skewed clocks under last-writer-wins, keys whose siblings pile up,
//! retried requests, and a lowered value limit.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dynamo::engines::memory::MemoryEngine;
use dynamo::engines::{open_engine, Durability, EngineOptions, EngineSpec};
use dynamo::store::{StoreConfig, StoreError, VersionedStore};
use dynamo::version::ConflictPolicy;

const Q: u32 = 64;

fn memory(cfg: StoreConfig) -> VersionedStore {
    VersionedStore::open(Arc::new(MemoryEngine::new()), cfg, Q).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A crash that loses the last write of a key (here: the engine files copied between
/// two puts, as a power loss would leave them) must not make the replica issue that
/// write's dot again: other replicas already hold it for another value.
#[cfg(feature = "rocksdb")]
#[test]
fn a_rolled_back_record_never_reissues_a_dot() {
    let spec: EngineSpec = "rocksdb".parse().unwrap();
    let opts = EngineOptions::with_durability(Durability::Os);
    let original = tempfile::tempdir().unwrap();
    let copy = tempfile::tempdir().unwrap();
    let s = VersionedStore::open(
        open_engine(spec, original.path(), &opts).unwrap(),
        StoreConfig::new("carts"),
        Q,
    )
    .unwrap();
    let first = s.put(b"k", Some(b"one"), None).unwrap();
    s.sync().unwrap();
    copy_dir(original.path(), copy.path());
    let lost = s.put(b"k", Some(b"two"), Some(&first.context)).unwrap();
    assert_eq!(lost.version.dot.actor, first.version.dot.actor);

    // The copy holds the first write only and was never closed: it is a crashed node.
    let rolled_back = VersionedStore::open(
        open_engine(spec, copy.path(), &opts).unwrap(),
        StoreConfig::new("carts"),
        Q,
    )
    .unwrap();
    assert_eq!(rolled_back.incarnation(), s.incarnation());
    assert!(rolled_back.boot() > s.boot(), "a crash starts a new boot");
    let again = rolled_back
        .put(b"k", Some(b"three"), Some(&first.context))
        .unwrap();
    assert_ne!(
        again.version.dot, lost.version.dot,
        "the lost dot was reissued"
    );
    assert_ne!(again.version.dot.actor, lost.version.dot.actor);

    // Both writes survive as siblings once the replicas exchange versions.
    rolled_back
        .merge_remote(b"k", vec![lost.version.clone()])
        .unwrap();
    let mut vals: Vec<Vec<u8>> = rolled_back
        .get(b"k")
        .unwrap()
        .values()
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect();
    vals.sort();
    assert_eq!(vals, vec![b"three".to_vec(), b"two".to_vec()]);
}

fn lww_with_clock(now: Arc<AtomicU64>) -> VersionedStore {
    let mut cfg = StoreConfig::new("lww");
    cfg.policy = ConflictPolicy::Lww;
    memory(cfg).with_clock(Arc::new(move || now.load(Ordering::SeqCst)))
}

#[test]
fn lww_writes_made_after_reading_beat_what_they_read_despite_skew() {
    // Coordinator A's clock runs an hour ahead of B's.
    let (clock_a, clock_b) = (
        Arc::new(AtomicU64::new(1_000_000 + 3_600_000)),
        Arc::new(AtomicU64::new(1_000_000)),
    );
    let (a, b) = (lww_with_clock(clock_a.clone()), lww_with_clock(clock_b));
    let first = a.put(b"k", Some(b"from A"), None).unwrap();
    b.merge_remote(b"k", vec![first.version.clone()]).unwrap();
    let read = b.get(b"k").unwrap();
    let second = b
        .put(b"k", Some(b"from B, after reading"), Some(&read.context))
        .unwrap();
    assert!(second.version.timestamp_ms > first.version.timestamp_ms);
    // Whatever order the replicas see them in, the later write wins.
    a.merge_remote(b"k", vec![second.version.clone()]).unwrap();
    assert_eq!(
        a.get(b"k").unwrap().values(),
        vec![&b"from B, after reading"[..]]
    );

    // The same holds when B never held the first version: the context alone tells.
    let c = lww_with_clock(Arc::new(AtomicU64::new(5)));
    let third = c.put(b"k", Some(b"from C"), Some(&second.context)).unwrap();
    assert!(third.version.timestamp_ms > second.version.timestamp_ms);
    a.merge_remote(b"k", vec![third.version]).unwrap();
    assert_eq!(a.get(b"k").unwrap().values(), vec![&b"from C"[..]]);

    // Two writes in the same millisecond on one clock: the second, made from the
    // first's context, still wins.
    let frozen = Arc::new(AtomicU64::new(42));
    let (d, e) = (lww_with_clock(frozen.clone()), lww_with_clock(frozen));
    let x = d.put(b"same-ms", Some(b"x"), None).unwrap();
    let y = e.put(b"same-ms", Some(b"y"), Some(&x.context)).unwrap();
    assert!(y.version.timestamp_ms > x.version.timestamp_ms);
    d.merge_remote(b"same-ms", vec![y.version]).unwrap();
    assert_eq!(d.get(b"same-ms").unwrap().values(), vec![&b"y"[..]]);
}

#[test]
fn blind_puts_stop_at_the_record_limit_and_the_context_resolves_them() {
    let mut cfg = StoreConfig::new("big");
    cfg.max_value_size = 1000;
    let s = memory(cfg);
    let value = vec![7u8; 1000];
    let mut refused = 0;
    for _ in 0..20 {
        match s.put(b"k", Some(&value), None) {
            Ok(_) => {}
            Err(e @ StoreError::RecordTooLarge { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("4 siblings"), "{msg}");
                assert!(msg.contains("context"), "{msg}");
                refused += 1;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(
        refused, 16,
        "4 x max_value_size is the default record limit"
    );
    let read = s.get(b"k").unwrap();
    assert_eq!(read.siblings.len(), 4);
    // Writing back with the context resolves them, whatever the record's size.
    s.put(b"k", Some(b"merged"), Some(&read.context)).unwrap();
    assert_eq!(s.get(b"k").unwrap().values(), vec![&b"merged"[..]]);
}

#[test]
fn a_retried_request_finds_its_version_instead_of_writing_another() {
    let s = memory(StoreConfig::new("carts"));
    let put = |id| {
        s.put_with(b"k", Some(b"v"), None, Some(id), &mut |_| Ok(()))
            .unwrap()
    };
    let first = put(77);
    assert!(!first.replayed);
    let retry = put(77);
    assert!(retry.replayed);
    assert_eq!(retry.version, first.version);
    assert_eq!(retry.context, first.context);
    assert_eq!(s.get(b"k").unwrap().siblings.len(), 1);
    // Another request is another write.
    assert!(!put(78).replayed);
    assert_eq!(s.get(b"k").unwrap().siblings.len(), 2);
    // The id travels with the version to other replicas.
    let other = memory(StoreConfig::new("carts"));
    other
        .merge_remote(b"k", s.get(b"k").unwrap().siblings.into_versions())
        .unwrap();
    let again = other
        .put_with(b"k", Some(b"v"), None, Some(77), &mut |_| Ok(()))
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.version, first.version);
}

#[test]
fn minted_versions_never_share_a_dot() {
    let s = memory(StoreConfig::new("carts"));
    let a = s.mint(b"k", Some(b"a"), None, None).unwrap();
    let b = s.mint(b"k", Some(b"b"), None, None).unwrap();
    let c = s.put(b"k", Some(b"c"), None).unwrap();
    assert_ne!(a.version.dot, b.version.dot);
    assert_ne!(a.version.dot.actor, c.version.dot.actor);
    assert_ne!(b.version.dot.actor, c.version.dot.actor);
    // Minting stores nothing.
    assert_eq!(s.get(b"k").unwrap().values(), vec![&b"c"[..]]);
}

#[cfg(feature = "sqlite")]
#[test]
fn lowering_max_value_size_keeps_existing_records_readable() {
    let spec: EngineSpec = "sqlite".parse().unwrap();
    let opts = EngineOptions::default();
    let dir = tempfile::tempdir().unwrap();
    let open = |max: usize| {
        let mut cfg = StoreConfig::new("carts");
        cfg.max_value_size = max;
        VersionedStore::open(open_engine(spec, dir.path(), &opts).unwrap(), cfg, Q).unwrap()
    };
    let s = open(1000);
    let w = s.put(b"k", Some(&[1u8; 900]), None).unwrap();
    drop(s);
    let s = open(100);
    assert_eq!(s.get(b"k").unwrap().values(), vec![&[1u8; 900][..]]);
    let e = s
        .put(b"k", Some(&[2u8; 900]), Some(&w.context))
        .unwrap_err();
    assert!(matches!(e, StoreError::ValueTooLarge { .. }), "{e}");
    s.put(b"k", Some(b"small"), Some(&w.context)).unwrap();
    assert_eq!(s.get(b"k").unwrap().values(), vec![&b"small"[..]]);
}

#[test]
fn n_larger_than_the_wire_allows_is_refused() {
    let mut cfg = StoreConfig::new("wide");
    cfg.n = 300;
    let e = cfg.validate().unwrap_err();
    assert!(e.to_string().contains("between 1 and 255"), "{e}");
}
