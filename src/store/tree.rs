//! The anti-entropy hash tree of one store replica: per partition, a TicTac-style tree
//! over its keys and their sibling sets, kept current on every change of a record.
//!
//! Shape: each partition has [`SEGMENTS`] = 256 leaf *segments* under [`BRANCHES`] = 16
//! branches of 16 leaves each (fan-out 16, depth 2 below the root). A key's segment is
//! the 8 bits of its ring position right after the partition bits, so keys spread
//! evenly over segments (MD5) and a key's segment is known without reading anything.
//! A key contributes the 64-bit *state hash* of its sibling set (the first 8 bytes of
//! MD5 over the key and its versions' dots and tombstone flags: a dot names one write,
//! so equal dot sets are equal sibling sets); a leaf is the XOR of its keys'
//! contributions, a branch the XOR of its leaves, the root the XOR of all leaves.
//!
//! Why XOR: a write changes one key from state hash `old` to `new`, and the tree
//! follows by XOR-ing `old ^ new` into one leaf, its branch and the root, in O(1), with
//! no rescan (Riak's first AAE rebuilt trees by scanning and cost a third of the
//! cluster's throughput, riak_kv#689; TicTac AAE keeps them current this way). Why
//! this size: with Q = 256 partitions a node holds at most 256 × 256 × 8 bytes = 512 KiB
//! of leaves per store; 100,000 keys put about 1.5 keys in each segment, and ten
//! million about 150, so a differing segment lists few keys, and two round trips
//! (branches, then the leaves of differing branches) find the differing segments.
//! 64-bit hashes make an undetected difference (two changes cancelling in a leaf)
//! about a 2^-64 event.
//!
//! The per-key state hashes are also kept on disk (the store's `aae` keyspace, written
//! in the same atomic batch as the record), ordered by (partition, segment, key), so an
//! exchange lists one segment's keys with a range read and a restart rebuilds the
//! leaves from those small entries alone, in the background (see
//! [`super::VersionedStore::rebuild_tree_page`]).
//!
//! Invariant: once a partition is [`TreeState::Ready`], its leaves equal the XOR of the
//! state hashes in the `aae` keyspace for that partition. While it is being built,
//! writes of keys the rebuild has already passed apply their change themselves and the
//! others are left to the rebuild; both run under the partition's lock, so no change is
//! counted twice or missed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use md5::{Digest, Md5};

use crate::version::Siblings;

/// Leaf segments per partition.
pub const SEGMENTS: usize = 256;
/// Branches per partition (each over `SEGMENTS / BRANCHES` leaves).
pub const BRANCHES: usize = 16;
/// Leaves under one branch.
pub const LEAVES_PER_BRANCH: usize = SEGMENTS / BRANCHES;

/// Where a partition's tree is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeState {
    /// Not built since the store opened: leaves mean nothing yet.
    Unbuilt,
    /// Being rebuilt from the `aae` keyspace; every key up to `cursor` (in
    /// (segment, key) order within the partition) is counted.
    Building {
        /// The last (segment, key) counted; `None` before the first.
        cursor: Option<(u8, Vec<u8>)>,
    },
    /// Current.
    Ready,
}

/// One partition's tree.
#[derive(Debug)]
pub struct PartitionTree {
    /// Its state.
    pub state: TreeState,
    leaves: Vec<u64>,
}

impl PartitionTree {
    fn new() -> Self {
        Self {
            state: TreeState::Unbuilt,
            leaves: vec![0; SEGMENTS],
        }
    }

    /// XORs `delta` into `segment` when the change is not left to a running rebuild.
    pub(crate) fn apply(&mut self, segment: u8, key: &[u8], delta: u64) {
        let counted = match &self.state {
            TreeState::Unbuilt => false,
            TreeState::Ready => true,
            TreeState::Building { cursor } => cursor
                .as_ref()
                .is_some_and(|(s, k)| (segment, key) <= (*s, k.as_slice())),
        };
        if counted {
            self.leaves[segment as usize] ^= delta;
        }
    }

    /// The root: the XOR of every leaf.
    pub fn root(&self) -> u64 {
        self.leaves.iter().fold(0, |a, l| a ^ l)
    }

    /// The 16 branch hashes.
    pub fn branches(&self) -> Vec<u64> {
        self.leaves
            .chunks(LEAVES_PER_BRANCH)
            .map(|c| c.iter().fold(0, |a, l| a ^ l))
            .collect()
    }

    /// The leaves under `branch`.
    pub fn leaves_of(&self, branch: usize) -> &[u64] {
        let b = branch.min(BRANCHES - 1);
        &self.leaves[b * LEAVES_PER_BRANCH..(b + 1) * LEAVES_PER_BRANCH]
    }

    /// Whether the tree is current.
    pub fn is_ready(&self) -> bool {
        self.state == TreeState::Ready
    }
}

/// The trees of every partition of one store replica.
#[derive(Debug)]
pub struct HashTree {
    partitions: Vec<Mutex<PartitionTree>>,
    /// How many partitions are ready (read by status without taking their locks).
    ready: AtomicUsize,
    /// Per partition, whether its tree is ready: set once, under its lock, and read
    /// without it, so the event loop never waits on a lock a tree build holds across
    /// an engine write.
    ready_flags: Vec<AtomicBool>,
}

impl HashTree {
    /// `partitions` unbuilt trees.
    pub fn new(partitions: u32) -> Self {
        Self {
            partitions: (0..partitions)
                .map(|_| Mutex::new(PartitionTree::new()))
                .collect(),
            ready: AtomicUsize::new(0),
            ready_flags: (0..partitions).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// Whether partition `p`'s tree is ready, without taking its lock.
    pub fn is_ready(&self, p: u32) -> bool {
        self.ready_flags
            .get(p as usize)
            .is_some_and(|f| f.load(Ordering::Acquire))
    }

    /// The number of partitions.
    pub fn len(&self) -> usize {
        self.partitions.len()
    }

    /// Always false: a ring has at least one partition.
    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    /// Locks partition `p`'s tree (a poisoned lock is taken over: the leaves are only
    /// XORed, and a rebuild repairs them).
    pub fn lock(&self, p: u32) -> MutexGuard<'_, PartitionTree> {
        let i = (p as usize).min(self.partitions.len().saturating_sub(1));
        self.partitions[i]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies a key's change from state hash `old` to `new` (0: absent).
    pub fn apply(&self, p: u32, segment: u8, key: &[u8], old: u64, new: u64) {
        if old != new {
            self.lock(p).apply(segment, key, old ^ new);
        }
    }

    /// How many partitions are ready.
    pub fn ready_count(&self) -> usize {
        self.ready.load(Ordering::Relaxed)
    }

    /// Marks the partition behind `guard` ready (a rebuild reached its end).
    pub(crate) fn finish(&self, p: u32, guard: &mut PartitionTree) {
        if guard.state != TreeState::Ready {
            guard.state = TreeState::Ready;
            self.ready.fetch_add(1, Ordering::Relaxed);
            if let Some(f) = self.ready_flags.get(p as usize) {
                f.store(true, Ordering::Release);
            }
        }
    }

    /// Starts a rebuild of `p` (its leaves cleared), or does nothing when it is
    /// already being built or ready.
    pub(crate) fn begin(guard: &mut PartitionTree) {
        if guard.state == TreeState::Unbuilt {
            guard.leaves.iter_mut().for_each(|l| *l = 0);
            guard.state = TreeState::Building { cursor: None };
        }
    }

    /// Counts one key met by the rebuild, in order.
    pub(crate) fn count(guard: &mut PartitionTree, segment: u8, key: &[u8], hash: u64) {
        guard.leaves[segment as usize] ^= hash;
        guard.state = TreeState::Building {
            cursor: Some((segment, key.to_vec())),
        };
    }
}

/// The segment of a key at ring `position` in a ring of `partitions` partitions.
pub fn segment_of(position: u128, partitions: u32) -> u8 {
    let bits = partitions.trailing_zeros();
    (position >> (120 - bits)) as u8
}

/// The state hash of `key` holding `siblings`: 0 when it holds none.
pub fn state_hash(key: &[u8], siblings: &Siblings) -> u64 {
    if siblings.is_empty() {
        return 0;
    }
    let mut h = Md5::new();
    h.update((key.len() as u64).to_be_bytes());
    h.update(key);
    let mut buf = Vec::with_capacity(32);
    for v in siblings.versions() {
        buf.clear();
        v.dot.encode(&mut buf);
        buf.push(u8::from(v.is_tombstone()));
        h.update(&buf);
    }
    let d: [u8; 16] = h.finalize().into();
    let mut out = [0u8; 8];
    out.copy_from_slice(&d[..8]);
    // 0 means "absent": a real state never hashes to it.
    u64::from_be_bytes(out).max(1)
}

/// The `aae` keyspace key of `key` in `partition` and `segment`.
pub fn index_key(partition: u32, segment: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + key.len());
    k.extend_from_slice(&partition.to_be_bytes());
    k.push(segment);
    k.extend_from_slice(key);
    k
}

/// Splits an `aae` keyspace key into (partition, segment, key).
pub fn split_index_key(k: &[u8]) -> Option<(u32, u8, &[u8])> {
    let (p, rest) = k.split_first_chunk::<4>()?;
    let (s, key) = rest.split_first()?;
    Some((u32::from_be_bytes(*p), *s, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Context;
    use crate::dot::{Actor, Dot};
    use crate::version::{ConflictPolicy, Version};

    fn set(counter: u64, value: Option<&str>) -> Siblings {
        Siblings::from_versions(
            vec![Version {
                dot: Dot::new(Actor::new(1, 1), counter),
                past: Context::new(),
                timestamp_ms: 1,
                value: value.map(|v| v.as_bytes().to_vec()),
                request_id: None,
            }],
            ConflictPolicy::Siblings,
        )
    }

    #[test]
    fn xor_updates_match_a_fresh_build_in_any_order() {
        let t = HashTree::new(4);
        t.lock(0).state = TreeState::Ready;
        let a = state_hash(b"a", &set(1, Some("x")));
        let b = state_hash(b"b", &set(1, Some("y")));
        let a2 = state_hash(b"a", &set(2, None));
        t.apply(0, 3, b"a", 0, a);
        t.apply(0, 7, b"b", 0, b);
        t.apply(0, 3, b"a", a, a2);
        let root = t.lock(0).root();
        assert_eq!(root, a2 ^ b);
        // The other order gives the same tree.
        let u = HashTree::new(4);
        u.lock(0).state = TreeState::Ready;
        u.apply(0, 7, b"b", 0, b);
        u.apply(0, 3, b"a", 0, a2);
        assert_eq!(u.lock(0).root(), root);
        assert_eq!(u.lock(0).branches(), t.lock(0).branches());
        // A removal takes the key out again.
        t.apply(0, 3, b"a", a2, 0);
        assert_eq!(t.lock(0).root(), b);
    }

    #[test]
    fn a_rebuild_counts_each_change_once() {
        let t = HashTree::new(1);
        {
            let mut g = t.lock(0);
            HashTree::begin(&mut g);
            HashTree::count(&mut g, 5, b"m", 0x10);
        }
        // Before the cursor: applied by the writer. After it: left to the rebuild.
        t.apply(0, 5, b"a", 0, 0x1);
        t.apply(0, 5, b"z", 0, 0x2);
        t.apply(0, 9, b"a", 0, 0x4);
        assert_eq!(t.lock(0).root(), 0x11);
        assert!(!t.lock(0).is_ready());
    }

    #[test]
    fn hashes_name_the_dots_and_segments_spread() {
        assert_eq!(state_hash(b"k", &Siblings::new()), 0);
        assert_ne!(
            state_hash(b"k", &set(1, Some("v"))),
            state_hash(b"k", &set(2, Some("v")))
        );
        assert_ne!(
            state_hash(b"k", &set(1, Some("v"))),
            state_hash(b"j", &set(1, Some("v")))
        );
        let mut seen = [0usize; SEGMENTS];
        for i in 0..25_600u32 {
            let pos = crate::ring::key_position("s", &i.to_be_bytes());
            seen[segment_of(pos, 256) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 40), "{seen:?}");
        let k = index_key(7, 3, b"key");
        assert_eq!(split_index_key(&k), Some((7, 3, &b"key"[..])));
    }
}
