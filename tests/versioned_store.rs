//! The versioned store against the paper's Figure 3 and the two cases plain vector
//! clocks get wrong, plus deletes, lww, reaping and bad input.

use std::collections::BTreeSet;
use std::sync::Arc;

use dynamo::context::Context;
use dynamo::dot::Actor;
use dynamo::engines::memory::MemoryEngine;
use dynamo::engines::Engine;
use dynamo::store::reap::{reap_decision, OwnerReport, ReapDecision};
use dynamo::store::registry::StoreRegistry;
use dynamo::store::{StoreConfig, StoreError, VersionedStore};
use dynamo::vclock::VClock;
use dynamo::version::ConflictPolicy;

const Q: u32 = 64;

fn replica() -> VersionedStore {
    VersionedStore::open(Arc::new(MemoryEngine::new()), StoreConfig::new("carts"), Q).unwrap()
}

fn values(s: &VersionedStore, key: &[u8]) -> BTreeSet<String> {
    s.get(key)
        .unwrap()
        .values()
        .into_iter()
        .map(|v| String::from_utf8(v.to_vec()).unwrap())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Sends every version `from` holds for `key` to `to` (what replication does).
fn replicate(from: &VersionedStore, to: &VersionedStore, key: &[u8]) {
    let versions = from.get(key).unwrap().siblings.into_versions();
    to.merge_remote(key, versions).unwrap();
}

#[test]
fn figure_3_version_evolution() {
    let (sx, sy, sz) = (replica(), replica(), replica());
    let k = b"cart:alice";
    // D1 and D2 written by Sx; the second from the first.
    let d1 = sx.put(k, Some(b"D1"), None).unwrap();
    let d2 = sx.put(k, Some(b"D2"), Some(&d1.context)).unwrap();
    assert_eq!(
        values(&sx, k),
        set(&["D2"]),
        "D2 descends D1 and replaces it"
    );
    replicate(&sx, &sy, k);
    replicate(&sx, &sz, k);
    // D3 by Sy and D4 by Sz, both from D2: concurrent.
    let d3 = sy.put(k, Some(b"D3"), Some(&d2.context)).unwrap();
    let d4 = sz.put(k, Some(b"D4"), Some(&d2.context)).unwrap();
    replicate(&sy, &sx, k);
    replicate(&sz, &sx, k);
    let read = sx.get(k).unwrap();
    assert_eq!(
        values(&sx, k),
        set(&["D3", "D4"]),
        "both concurrent versions returned"
    );
    // The context is exactly [Sx,2], [Sy,1], [Sz,1].
    let ax = d2.version.dot.actor;
    let (ay, az) = (d3.version.dot.actor, d4.version.dot.actor);
    assert_eq!(d1.version.dot.actor, ax, "Sx continues its own run");
    assert_eq!(
        (
            d2.version.dot.counter,
            d3.version.dot.counter,
            d4.version.dot.counter
        ),
        (2, 1, 1)
    );
    let mut expected = VClock::new();
    expected.witness(ax, 2, 0);
    expected.witness(ay, 1, 0);
    expected.witness(az, 1, 0);
    let got: Vec<(Actor, u64)> = read
        .context
        .clock()
        .entries()
        .iter()
        .map(|e| (e.actor, e.counter))
        .collect();
    let want: Vec<(Actor, u64)> = expected
        .entries()
        .iter()
        .map(|e| (e.actor, e.counter))
        .collect();
    assert_eq!(got, want);
    assert_eq!(read.context.cloud().count(), 0);
    // D5, written by Sx with that context, replaces both everywhere it travels.
    sx.put(k, Some(b"D5"), Some(&read.context)).unwrap();
    assert_eq!(values(&sx, k), set(&["D5"]));
    replicate(&sx, &sy, k);
    replicate(&sx, &sz, k);
    assert_eq!(values(&sy, k), set(&["D5"]));
    assert_eq!(values(&sz, k), set(&["D5"]));
}

#[test]
fn lost_update_two_writers_from_one_read_both_survive() {
    let sx = replica();
    let k = b"cart:bob";
    sx.put(k, Some(b"v0"), None).unwrap();
    let seen = sx.get(k).unwrap().context;
    // A and B both read v0, then both write through the same coordinator.
    sx.put(k, Some(b"A"), Some(&seen)).unwrap();
    sx.put(k, Some(b"B"), Some(&seen)).unwrap();
    assert_eq!(values(&sx, k), set(&["A", "B"]));
    // A plain coordinator-side vector clock would have given B the clock {Sx:3},
    // which descends A's {Sx:2}: A would be lost. Here B's past does not cover A.
    let versions = sx.get(k).unwrap().siblings.into_versions();
    assert!(!versions[1].past.covers(&versions[0].dot));
}

#[test]
fn sibling_explosion_is_bounded_by_the_number_of_writers() {
    let sx = replica();
    let k = b"cart:carol";
    let (mut ctx_a, mut ctx_b): (Option<Context>, Option<Context>) = (None, None);
    let mut last_b = None;
    let mut max_siblings = 0;
    let mut max_context = 0;
    for i in 0..100 {
        let a = sx
            .put(k, Some(format!("A{i}").as_bytes()), ctx_a.as_ref())
            .unwrap();
        // A's context covers only what A has seen: never B's unseen latest write.
        if let Some(b_dot) = last_b {
            assert!(
                !a.context.covers(&b_dot),
                "round {i}: A's context claims B's write"
            );
        }
        max_siblings = max_siblings.max(a.siblings.len());
        max_context = max_context.max(a.context.len());
        ctx_a = Some(a.context);
        let b = sx
            .put(k, Some(format!("B{i}").as_bytes()), ctx_b.as_ref())
            .unwrap();
        max_siblings = max_siblings.max(b.siblings.len());
        max_context = max_context.max(b.context.len());
        assert!(
            !b.context.covers(&a.version.dot),
            "round {i}: B's context claims A's write"
        );
        last_b = Some(b.version.dot);
        ctx_b = Some(b.context);
        assert!(sx.get(k).unwrap().siblings.len() <= 2, "round {i}");
    }
    assert!(max_siblings <= 2, "{max_siblings} siblings");
    assert_eq!(values(&sx, k), set(&["A99", "B99"]));
    // Contexts stay compact: a vector entry plus at most a couple of dots.
    assert!(max_context <= 3, "context grew to {max_context} entries");
}

#[test]
fn a_put_without_context_never_overwrites_and_a_merged_context_resolves() {
    let s = replica();
    let k = b"k";
    s.put(k, Some(b"one"), None).unwrap();
    s.put(k, Some(b"two"), None).unwrap();
    assert_eq!(values(&s, k), set(&["one", "two"]));
    let ctx = s.get(k).unwrap().context;
    let w = s.put(k, Some(b"merged"), Some(&ctx)).unwrap();
    assert_eq!(values(&s, k), set(&["merged"]));
    assert_eq!(w.siblings.len(), 1);
}

#[test]
fn deletes_are_tombstones_in_the_context_and_reaped_only_when_settled() {
    let (a, b) = (replica(), replica());
    let k = b"gone";
    let w = a.put(k, Some(b"v"), None).unwrap();
    let stale = w.context.clone();
    let del = a.delete(k, Some(&w.context)).unwrap();
    let read = a.get(k).unwrap();
    assert!(read.values().is_empty(), "a deleted key has no values");
    assert_eq!(read.siblings.len(), 1);
    assert!(read.siblings.versions()[0].is_tombstone());
    assert!(read.context.covers(&del.version.dot));

    // Only b is missing the tombstone: not reapable.
    let settled = read.siblings.clone();
    let owners = |b_view| {
        vec![
            OwnerReport {
                node: "a".into(),
                siblings: Some(settled.clone()),
            },
            OwnerReport {
                node: "b".into(),
                siblings: b_view,
            },
        ]
    };
    assert!(matches!(
        reap_decision(
            &settled,
            &owners(Some(b.get(k).unwrap().siblings)),
            false,
            false
        ),
        ReapDecision::Keep(_)
    ));
    replicate(&a, &b, k);
    let evidence = owners(Some(b.get(k).unwrap().siblings));
    assert_eq!(
        reap_decision(&settled, &evidence, false, false),
        ReapDecision::Reap
    );
    assert!(a.reap(k, &settled).unwrap());
    assert!(b.reap(k, &settled).unwrap());
    assert!(a.get(k).unwrap().siblings.is_empty());

    // After the reap a write opens a new epoch: its dot is fresh, so a client holding
    // a context from before the delete cannot supersede it (kv679).
    let fresh = a.put(k, Some(b"reborn"), None).unwrap();
    assert_ne!(fresh.version.dot.actor, w.version.dot.actor);
    assert!(!stale.covers(&fresh.version.dot));
    a.put(k, Some(b"stale-writer"), Some(&stale)).unwrap();
    assert_eq!(values(&a, k), set(&["reborn", "stale-writer"]));
}

#[test]
fn reap_refuses_when_a_write_arrived_since_the_check() {
    let s = replica();
    let k = b"k";
    let w = s.put(k, Some(b"v"), None).unwrap();
    let del = s.delete(k, Some(&w.context)).unwrap();
    let observed = del.siblings.clone();
    s.put(k, Some(b"late"), None).unwrap();
    assert!(!s.reap(k, &observed).unwrap());
    assert_eq!(values(&s, k), set(&["late"]));
}

#[test]
fn lww_keeps_one_version_the_newest() {
    let mut cfg = StoreConfig::new("sessions");
    cfg.policy = ConflictPolicy::Lww;
    let s = VersionedStore::open(Arc::new(MemoryEngine::new()), cfg.clone(), Q)
        .unwrap()
        .with_clock(Arc::new(|| 1_000));
    s.put(b"k", Some(b"first"), None).unwrap();
    // Same wall clock: the coordinator still orders its own writes.
    s.put(b"k", Some(b"second"), None).unwrap();
    assert_eq!(values(&s, b"k"), set(&["second"]));
    let other = VersionedStore::open(Arc::new(MemoryEngine::new()), cfg, Q)
        .unwrap()
        .with_clock(Arc::new(|| 500));
    other.put(b"k", Some(b"older"), None).unwrap();
    replicate(&other, &s, b"k");
    assert_eq!(
        values(&s, b"k"),
        set(&["second"]),
        "an older timestamp loses"
    );
    replicate(&s, &other, b"k");
    assert_eq!(values(&other, b"k"), set(&["second"]));
}

#[test]
fn incarnations_live_with_the_data() {
    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
    let first = VersionedStore::open(Arc::clone(&engine), StoreConfig::new("s"), Q).unwrap();
    let w1 = first.put(b"k", Some(b"1"), None).unwrap();
    drop(first);
    let again = VersionedStore::open(Arc::clone(&engine), StoreConfig::new("s"), Q).unwrap();
    assert_eq!(again.incarnation(), w1.version.dot.actor.incarnation);
    let w2 = again.put(b"k", Some(b"2"), None).unwrap();
    assert_ne!(w2.version.dot, w1.version.dot, "never the same dot twice");
    // A node that lost its data starts a new incarnation.
    let wiped =
        VersionedStore::open(Arc::new(MemoryEngine::new()), StoreConfig::new("s"), Q).unwrap();
    assert_ne!(wiped.incarnation(), again.incarnation());
}

#[test]
fn a_context_claiming_unissued_dots_makes_a_fresh_epoch() {
    let s = replica();
    let w = s.put(b"k", Some(b"1"), None).unwrap();
    // A forged context that claims the next ten dots of this replica's run.
    let mut forged = Context::new();
    forged.cover_through(w.version.dot.actor, 10, 0);
    let next = s.put(b"k", Some(b"2"), Some(&forged)).unwrap();
    assert_ne!(next.version.dot.actor, w.version.dot.actor);
    assert!(!forged.covers(&next.version.dot));
}

#[test]
fn keys_are_laid_out_by_partition() {
    let s = replica();
    let keys: Vec<Vec<u8>> = (0..200).map(|i| format!("key-{i}").into_bytes()).collect();
    for k in &keys {
        s.put(k, Some(b"v"), None).unwrap();
    }
    let mut seen = 0;
    for p in 0..Q {
        let part = s.scan_partition(p).unwrap();
        for (k, siblings) in &part {
            assert_eq!(s.partition_of(k), p);
            assert_eq!(siblings.len(), 1);
        }
        seen += part.len();
    }
    assert_eq!(seen, keys.len());
}

#[test]
fn bad_input_gets_typed_errors_and_changes_nothing() {
    let mut cfg = StoreConfig::new("carts");
    cfg.max_key_size = 16;
    cfg.max_value_size = 8;
    let mut registry = StoreRegistry::new();
    let s = registry
        .insert(VersionedStore::open(Arc::new(MemoryEngine::new()), cfg, Q).unwrap())
        .unwrap();
    let k = b"k";
    let w = s.put(k, Some(b"ok"), None).unwrap();
    let before = s.get(k).unwrap();

    let e = registry.get("nope").unwrap_err();
    assert!(matches!(e, StoreError::UnknownStore { .. }));
    assert_eq!(
        e.to_string(),
        "unknown store \"nope\"; this node has stores: carts"
    );

    let e = s
        .put(k, Some(b"far too long"), Some(&w.context))
        .unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::ValueTooLarge {
                len: 12,
                max: 8,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("12 bytes is over the limit of 8"),
        "{e}"
    );

    let e = s.put(&[b'x'; 17], Some(b"v"), None).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::KeyTooLarge {
                len: 17,
                max: 16,
                ..
            }
        ),
        "{e}"
    );
    assert!(matches!(
        s.get(b"").unwrap_err(),
        StoreError::EmptyKey { .. }
    ));

    let e = s.parse_context(k, "!!garbage!!").unwrap_err();
    assert!(matches!(e, StoreError::BadContext { .. }), "{e}");
    assert!(e.to_string().contains("base64"), "{e}");
    let e = s.parse_context(k, "AQAAAAAB").unwrap_err();
    assert!(
        e.to_string().contains("different key") || e.to_string().contains("decode"),
        "{e}"
    );
    let token_for_other_key = s.context_token(b"other", &w.context);
    let e = s.parse_context(k, &token_for_other_key).unwrap_err();
    assert!(e.to_string().contains("issued for a different key"), "{e}");
    // The right token round-trips.
    let token = s.context_token(k, &w.context);
    assert_eq!(s.parse_context(k, &token).unwrap(), w.context);

    let mut big = w.siblings.clone().into_versions();
    big[0].value = Some(vec![0; 9]);
    let e = s.merge_remote(k, big).unwrap_err();
    assert!(matches!(e, StoreError::BadVersions { .. }), "{e}");

    assert_eq!(s.get(k).unwrap(), before, "nothing stored changed");
}

/// On durable engines a reopened store keeps its data and incarnation, and never
/// hands out an epoch it may have used before the restart.
#[cfg(any(feature = "rocksdb", feature = "sqlite"))]
#[test]
fn a_reopened_durable_store_keeps_data_and_never_reuses_epochs() {
    use dynamo::engines::{open_engine, Durability, EngineOptions, EngineSpec};
    let spec: EngineSpec = if cfg!(feature = "rocksdb") {
        "rocksdb"
    } else {
        "sqlite"
    }
    .parse()
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = EngineOptions::with_durability(Durability::Os);
    let open = || {
        let engine = open_engine(spec, dir.path(), &opts).unwrap();
        VersionedStore::open(engine, StoreConfig::new("carts"), Q).unwrap()
    };
    let s = open();
    let w = s.put(b"k", Some(b"kept"), None).unwrap();
    let incarnation = s.incarnation();
    s.sync().unwrap();
    drop(s);

    let s = open();
    assert_eq!(s.incarnation(), incarnation);
    assert_eq!(values(&s, b"k"), set(&["kept"]));
    // The same key continues its run; a new key gets an epoch not used before.
    let w2 = s.put(b"k", Some(b"next"), Some(&w.context)).unwrap();
    assert_eq!(w2.version.dot.actor, w.version.dot.actor);
    assert_eq!(w2.version.dot.counter, 2);
    let fresh = s.put(b"other", Some(b"v"), None).unwrap();
    assert!(fresh.version.dot.actor.epoch > w.version.dot.actor.epoch);
}

/// Builds every tree of `s` from its `aae` keyspace (what a restart does).
fn build_all(s: &VersionedStore) {
    for p in 0..s.partitions() {
        while !s.rebuild_tree_page(p, 7).unwrap().0 {}
    }
}

/// The trees follow every kind of change (put, merge, delete, reap, forget) in place,
/// and equal the trees a restart rebuilds from the `aae` keyspace; replicas holding
/// the same sibling sets have the same roots whatever order they saw the writes in.
#[test]
fn trees_follow_every_change_and_match_a_rebuild() {
    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
    let a = VersionedStore::open(engine.clone(), StoreConfig::new("carts"), Q).unwrap();
    let b = replica();
    build_all(&a);
    build_all(&b);
    assert_eq!(a.trees_ready(), Q as usize);
    let roots =
        |s: &VersionedStore| -> Vec<u64> { (0..Q).map(|p| s.tree_root(p).unwrap()).collect() };
    let empty = roots(&a);
    let keys: Vec<Vec<u8>> = (0..200).map(|i| format!("k{i}").into_bytes()).collect();
    for k in &keys {
        a.put(k, Some(b"v"), None).unwrap();
    }
    assert_ne!(roots(&a), empty);
    // b gets the same versions in reverse order.
    for k in keys.iter().rev() {
        replicate(&a, &b, k);
    }
    assert_eq!(roots(&a), roots(&b));
    // A delete, then a reap of it, then a forget.
    let ctx = a.get(&keys[0]).unwrap().context;
    a.delete(&keys[0], Some(&ctx)).unwrap();
    let tomb = a.get(&keys[0]).unwrap().siblings;
    assert!(a.reap(&keys[0], &tomb).unwrap());
    let s1 = a.get(&keys[1]).unwrap().siblings;
    assert!(a.forget(&keys[1], &s1).unwrap());
    // A store opened on the same engine rebuilds the same trees from the index.
    let live = roots(&a);
    drop(a);
    let again = VersionedStore::open(engine, StoreConfig::new("carts"), Q).unwrap();
    assert_eq!(
        again.trees_ready(),
        0,
        "trees are rebuilt in the background"
    );
    build_all(&again);
    assert_eq!(roots(&again), live);
    // The segment listing names exactly the keys left.
    let mut listed = 0;
    for p in 0..Q {
        for seg in 0..=255u8 {
            listed += again.segment_hashes(p, seg, 10_000).unwrap().0.len();
        }
    }
    assert_eq!(listed, keys.len() - 2);
}

/// A reaped key's dots are dead for ever: a stale replica's old value, a late hint and
/// a transfer page (all merges) never bring it back; the reaped context travels with
/// reads, and a replica that takes it in drops what it covers; a write after the reap
/// gets a fresh dot and survives.
#[test]
fn a_reaped_key_never_comes_back() {
    let (a, stale) = (replica(), replica());
    let k = b"gone";
    let w = a.put(k, Some(b"old"), None).unwrap();
    replicate(&a, &stale, k);
    let old_versions = a.get(k).unwrap().siblings.into_versions();
    a.delete(k, Some(&w.context)).unwrap();
    let tomb = a.get(k).unwrap().siblings;
    assert!(a.reap(k, &tomb).unwrap());
    let read = a.get(k).unwrap();
    assert!(read.siblings.is_empty());
    let dead = read.reaped.clone().expect("a reaped context");
    assert!(dead.covers(&old_versions[0].dot));
    // The stale replica's value (and the tombstone, late) are refused.
    let (after, changed) = a.merge_remote(k, old_versions.clone()).unwrap();
    assert!(after.is_empty() && !changed);
    a.merge_remote(k, tomb.into_versions()).unwrap();
    assert!(a.get(k).unwrap().siblings.is_empty());
    assert_eq!(a.tombstone_count(a.partition_of(k)).unwrap(), 0);
    // The stale replica takes the reaped context in and drops its old value.
    stale
        .merge_remote_full(k, Vec::new(), Some(&dead), &mut |_| Ok(()))
        .unwrap();
    assert!(stale.get(k).unwrap().siblings.is_empty());
    let (after, _) = stale.merge_remote(k, old_versions.clone()).unwrap();
    assert!(after.is_empty());
    // A new write, even from the old context, is a new value that stays.
    let new = a.put(k, Some(b"new"), Some(&w.context)).unwrap();
    assert!(!dead.covers(&new.version.dot));
    assert_eq!(values(&a, k), set(&["new"]));
    replicate(&a, &stale, k);
    assert_eq!(values(&stale, k), set(&["new"]));
    // The reaped context moved into the record: the old value is still refused.
    a.merge_remote(k, old_versions).unwrap();
    assert_eq!(values(&a, k), set(&["new"]));
    assert!(a
        .get(k)
        .unwrap()
        .reaped
        .is_some_and(|r| r.covers(&w.version.dot)));
}

/// A transfer carries reaped contexts: the reaped keys without a record page out of
/// `reaped_after`, a rewritten key's context with its record out of `records_after`,
/// and a new owner that merges both pages refuses a stale replica's old value.
#[test]
fn a_transfer_carries_reaped_contexts_to_the_new_owner() {
    let (old_owner, new_owner) = (replica(), replica());
    let (gone, back) = (b"gone".as_slice(), b"back".as_slice());
    let mut stale_versions = Vec::new();
    for k in [gone, back] {
        let w = old_owner.put(k, Some(b"old"), None).unwrap();
        stale_versions.push(old_owner.get(k).unwrap().siblings.into_versions());
        old_owner.delete(k, Some(&w.context)).unwrap();
        let tomb = old_owner.get(k).unwrap().siblings;
        assert!(old_owner.reap(k, &tomb).unwrap());
    }
    old_owner.put(back, Some(b"new"), None).unwrap();
    let p = old_owner.partition_of(gone);
    let q = old_owner.partition_of(back);
    // The pages a transfer pulls, merged the way it merges them.
    let mut pages = Vec::new();
    for part in BTreeSet::from([p, q]) {
        pages.extend(old_owner.records_after(part, &[], 100, 1 << 20).unwrap().0);
        let (graveyard, more) = old_owner.reaped_after(part, &[], 100).unwrap();
        assert!(!more);
        assert!(graveyard
            .iter()
            .all(|r| r.versions.is_empty() && r.reaped.is_some()));
        pages.extend(graveyard);
    }
    assert!(pages.iter().any(|r| r.key == gone && r.versions.is_empty()));
    assert!(pages
        .iter()
        .any(|r| r.key == back && !r.versions.is_empty() && r.reaped.is_some()));
    for r in pages {
        new_owner
            .merge_remote_full(&r.key, r.versions, r.reaped.as_ref(), &mut |_| Ok(()))
            .unwrap();
    }
    // A stale replica's old values never come back on the new owner.
    for (k, old) in [gone, back].into_iter().zip(stale_versions) {
        new_owner.merge_remote(k, old).unwrap();
    }
    assert!(new_owner.get(gone).unwrap().siblings.is_empty());
    assert!(new_owner.get(gone).unwrap().reaped.is_some());
    assert_eq!(values(&new_owner, back), set(&["new"]));
}

/// Tombstones are listed for reaping once older than the delay, and not before.
#[test]
fn tombstones_are_listed_by_age() {
    let s = replica();
    let k = b"t";
    let w = s.put(k, Some(b"v"), None).unwrap();
    let p = s.partition_of(k);
    assert!(s
        .tombstones_before(p, &[], u64::MAX, 10)
        .unwrap()
        .0
        .is_empty());
    s.delete(k, Some(&w.context)).unwrap();
    let ts = s.get(k).unwrap().siblings.versions()[0].timestamp_ms;
    assert!(s.tombstones_before(p, &[], ts, 10).unwrap().0.is_empty());
    assert_eq!(
        s.tombstones_before(p, &[], ts + 1, 10).unwrap().0,
        vec![k.to_vec()]
    );
    // Written again: no longer a tombstone.
    let ctx = s.get(k).unwrap().context;
    s.put(k, Some(b"back"), Some(&ctx)).unwrap();
    assert!(s
        .tombstones_before(p, &[], u64::MAX, 10)
        .unwrap()
        .0
        .is_empty());
}
