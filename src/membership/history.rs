//! Membership as a history of changes, and the ring every node computes from it.
//!
//! A change (create the cluster, join, leave, replace, remove, move to a zone) is made
//! once, at the node where an administrator issued it, and identified there by
//! `(origin, seq)`: the issuing node's id and its own counter. Each change also carries a
//! Lamport timestamp, one above the largest the issuing node had seen, so a change made
//! after seeing another sorts after it.
//!
//! **The CRDT.** A [`History`] is a grow-only set of changes keyed by id; merging two
//! histories is their union. Union is commutative, associative and idempotent, so
//! replicas that have received the same changes, in any order and any number of times,
//! hold the same set.
//!
//! **One ring from one set.** [`History::replay`] takes the changes in the total order
//! `(lamport, origin, seq)` and applies them one by one to an empty ring with the
//! deterministic claim of [`crate::ring`]. A change that does not apply at its place
//! (joining a name already in the ring, leaving a node that is not there, leaving the
//! last member, a second `Create`) is skipped, and the skip is reported. One exception
//! to the order, decided from the set too: a change whose transfer was carried out
//! (every receiver recorded `Settled` from the ring before it) keeps the place it was
//! carried out at, so a change issued from a lagging view never sorts before steps
//! already served (see [`super::sequence`]). The sequence is a pure function of the set,
//! so equal sets give byte-identical rings: whatever order the changes arrived in, and
//! whatever a node's data directory held before.
//!
//! **Proof sketch.** (1) Same set ⇒ same sequence: the order key is total (ids are
//! unique per change and `(lamport, origin, seq)` includes the id), and which changes
//! were carried out where is read from the set's `Settled` records. (2) Same sequence ⇒
//! same ring: every step (`Ring::new`, `join`, `leave`, `replace`, `set_zone`) is
//! deterministic given the ring before it and the change, and skipping is decided from
//! the same two inputs. (3) Convergence: gossip makes every node's set grow towards the
//! union of all changes made; once two nodes hold the same set, (1) and (2) give them
//! the same ring. (4) Causality: a change issued after its origin saw another has a
//! larger Lamport timestamp, so it is replayed after it (a leave never precedes the
//! join it removes). Concurrent changes are ordered by `(lamport, origin)`, the same
//! way everywhere.
//!
//! **Versions.** The ring's version is the number of changes the replay applied plus
//! one, and two views are compared by their histories ([`History::compare`]): one
//! includes the other, or they are concurrent and merging them is the answer. There is
//! no conflict to resolve.

use std::collections::{BTreeMap, BTreeSet};

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::ring::{Member, Ring, RingError, Transfer};

/// Who made a change: the issuing node's id and its own counter. Unique per change.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChangeId {
    /// The node id (per incarnation) of the node where the change was issued.
    pub origin: String,
    /// That node's counter, from 1.
    pub seq: u64,
}

impl std::fmt::Display for ChangeId {
    /// `origin#seq`, as status, logs and admin replies name a change.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.origin, self.seq)
    }
}

/// What a change does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ChangeKind {
    /// Creates the cluster: Q partitions claimed by these members (what a static config
    /// lists). Only the first `Create` in the order applies.
    Create {
        /// Q, a power of two.
        partitions: u32,
        /// The replication factor the claim keeps spread for.
        target_n: usize,
        /// The first members.
        members: Vec<Member>,
    },
    /// A node joins and takes its share of partitions.
    Join {
        /// The new member.
        member: Member,
    },
    /// A node leaves after handing its partitions off.
    Leave {
        /// The member.
        name: String,
    },
    /// `new` takes exactly `old`'s partitions.
    Replace {
        /// The member replaced.
        old: String,
        /// Its replacement.
        new: Member,
    },
    /// A dead node is removed; its partitions are rebuilt from surviving replicas.
    Remove {
        /// The member.
        name: String,
    },
    /// A member moves to another zone (or to none).
    SetZone {
        /// The member.
        name: String,
        /// The zone.
        zone: Option<String>,
    },
    /// A member is now reached at another address (it restarted listening elsewhere).
    /// Placement does not change.
    SetAddress {
        /// The member.
        name: String,
        /// Its new `host:port`.
        address: String,
    },
    /// `node` holds, durably, every version of the partitions the ring `to` gives it
    /// that the ring `from` did not, pulled from the replicas of `from` (issued by `node`
    /// itself when its transfer finished), where `to` is the ring the changes `via` then
    /// `change` lead to from `from`. Not
    /// a ring change: it lets the serving ring move from `from` to `to` (see
    /// [`super::sequence`]), and only there. A step that moves no replica is recorded
    /// the same way by any member.
    Settled {
        /// The placement change whose transfer finished.
        change: ChangeId,
        /// The node that received the data.
        node: String,
        /// The ring the data was pulled from: the hex MD5 of its JSON.
        #[serde(default)]
        from: String,
        /// The changes applied between `from` and `change`, in order (steps never
        /// served: their receivers left before they settled).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        via: Vec<ChangeId>,
        /// The ring the data was pulled for (the ring after `change`): the hex MD5 of
        /// its JSON.
        #[serde(default)]
        to: String,
    },
}

impl ChangeKind {
    /// Whether the change alters the ring's placement: everything but `Settled` and
    /// `SetAddress` (an address is looked up in the history, never part of a step, so
    /// an address change made late can never reorder the ring's steps).
    pub fn is_ring_change(&self) -> bool {
        !matches!(
            self,
            ChangeKind::Settled { .. } | ChangeKind::SetAddress { .. }
        )
    }

    /// The member names the change is about.
    pub fn names(&self) -> Vec<&str> {
        match self {
            ChangeKind::Create { members, .. } => members.iter().map(|m| m.name.as_str()).collect(),
            ChangeKind::Join { member } => vec![member.name.as_str()],
            ChangeKind::Replace { old, new } => vec![old.as_str(), new.name.as_str()],
            ChangeKind::Leave { name }
            | ChangeKind::Remove { name }
            | ChangeKind::SetZone { name, .. }
            | ChangeKind::SetAddress { name, .. } => vec![name.as_str()],
            ChangeKind::Settled { node, .. } => vec![node.as_str()],
        }
    }
}

/// One change of the membership history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Lamport timestamp: above every timestamp its origin had seen when it was made.
    pub lamport: u64,
    /// Who made it.
    pub id: ChangeId,
    /// What it does.
    pub kind: ChangeKind,
}

impl Change {
    fn order_key(&self) -> OrderKey {
        (self.lamport, self.id.origin.clone(), self.id.seq)
    }
}

/// The total order of replay.
type OrderKey = (u64, String, u64);

/// Why a history could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HistoryError {
    /// Two different changes carry the same id: one of the nodes that sent them is
    /// broken (or two nodes share an id).
    #[error("membership change {origin}#{seq} arrived with two different contents")]
    ConflictingChange {
        /// The origin.
        origin: String,
        /// The sequence number.
        seq: u64,
    },
    /// No `Create` applies: there is no cluster yet.
    #[error("the membership history has no cluster creation: nothing to build a ring from")]
    NoCluster,
    /// The `Create` itself is invalid.
    #[error("the cluster creation is invalid: {0}")]
    BadCreate(RingError),
}

/// How two histories relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryOrder {
    /// The same changes.
    Same,
    /// This one has every change of the other, and more.
    Newer,
    /// The other has every change of this one, and more.
    Older,
    /// Each has changes the other lacks: merge them.
    Concurrent,
}

/// A replayed history: the ring, the moves each applied change caused, and the changes
/// that did not apply, with the reason.
#[derive(Clone, Debug)]
pub struct Replay {
    /// The ring after every applicable change.
    pub ring: Ring,
    /// Per applied change (in order): its id and the partition moves it caused.
    pub applied: Vec<(ChangeId, Vec<Transfer>)>,
    /// Changes skipped, with why.
    pub skipped: Vec<(ChangeId, String)>,
}

/// Applies a change other than `Create` to `ring`, returning the ownership moves it
/// caused. The one definition of what each change does, for replay and for plans.
/// A `Create` on an existing ring is refused.
pub fn apply(kind: &ChangeKind, ring: &mut Ring) -> Result<Vec<Transfer>, RingError> {
    match kind {
        ChangeKind::Create { .. } => {
            Err(RingError::Invalid("the cluster was already created".into()))
        }
        ChangeKind::Join { member } => ring.join(member.clone()),
        // A removed node leaves the ring as a leaving one does; what differs is where
        // its partitions' data comes from (the surviving replicas, not the node).
        ChangeKind::Leave { name } | ChangeKind::Remove { name } => ring.leave(name),
        ChangeKind::Replace { old, new } => ring.replace(old, new.clone()),
        ChangeKind::SetZone { name, zone } => ring.set_zone(name, zone.clone()).map(|_| Vec::new()),
        ChangeKind::SetAddress { name, address } => {
            ring.set_address(name, address.clone()).map(|_| Vec::new())
        }
        ChangeKind::Settled { .. } => Ok(Vec::new()),
    }
}

/// The membership history: a grow-only set of changes (see the module doc).
/// Invariant: at most one change per id, kept in replay order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<Change>", into = "Vec<Change>")]
pub struct History {
    changes: BTreeMap<OrderKey, Change>,
    ids: BTreeSet<ChangeId>,
}

impl From<Vec<Change>> for History {
    fn from(changes: Vec<Change>) -> Self {
        let mut h = History::default();
        for c in changes {
            // A file or message with two contents under one id keeps the first.
            let _ = h.insert(c);
        }
        h
    }
}

impl From<History> for Vec<Change> {
    fn from(h: History) -> Self {
        h.changes.into_values().collect()
    }
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// The history of a cluster created from a static member list: one `Create` with a
    /// fixed id, so every node configured with the same members, Q and N starts from the
    /// same history.
    pub fn created(partitions: u32, target_n: usize, members: Vec<Member>) -> Self {
        let mut members = members;
        members.sort();
        let mut h = History::new();
        let _ = h.insert(Change {
            lamport: 0,
            id: ChangeId {
                origin: "config".into(),
                seq: 0,
            },
            kind: ChangeKind::Create {
                partitions,
                target_n,
                members,
            },
        });
        h
    }

    /// Number of changes.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// Whether there are no changes.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The changes in replay order.
    pub fn changes(&self) -> impl Iterator<Item = &Change> {
        self.changes.values()
    }

    /// Whether the change `id` is known.
    pub fn contains(&self, id: &ChangeId) -> bool {
        self.ids.contains(id)
    }

    /// Adds `change`. Returns whether it was new; a change already held is a no-op, and
    /// a different change under a held id is an error (nothing changes).
    pub fn insert(&mut self, change: Change) -> Result<bool, HistoryError> {
        if self.ids.contains(&change.id) {
            // The same change has the same order key (it includes the id).
            let same = self.changes.get(&change.order_key()) == Some(&change);
            return if same {
                Ok(false)
            } else {
                Err(HistoryError::ConflictingChange {
                    origin: change.id.origin,
                    seq: change.id.seq,
                })
            };
        }
        self.ids.insert(change.id.clone());
        self.changes.insert(change.order_key(), change);
        Ok(true)
    }

    /// Merges `other` in (set union). Returns how many changes were new; conflicting
    /// changes are left out and reported.
    pub fn merge(&mut self, other: &History) -> (usize, Vec<HistoryError>) {
        let mut added = 0;
        let mut errors = Vec::new();
        for c in other.changes.values() {
            match self.insert(c.clone()) {
                Ok(true) => added += 1,
                Ok(false) => {}
                Err(e) => errors.push(e),
            }
        }
        (added, errors)
    }

    /// Makes a new change at node `origin`: its Lamport timestamp is one above every
    /// change held, its sequence one above `origin`'s last. The caller gossips it.
    pub fn issue(&mut self, origin: &str, kind: ChangeKind) -> Change {
        // Saturating: a hostile peer's u64::MAX must not wrap the next change to 0.
        let lamport = self
            .changes
            .keys()
            .map(|k| k.0)
            .max()
            .map_or(1, |m| m.saturating_add(1));
        let seq = self
            .ids
            .iter()
            .filter(|id| id.origin == origin)
            .map(|id| id.seq)
            .max()
            .unwrap_or(0)
            + 1;
        let change = Change {
            lamport,
            id: ChangeId {
                origin: origin.to_owned(),
                seq,
            },
            kind,
        };
        // A fresh (origin, seq) cannot be held yet.
        let _ = self.insert(change.clone());
        change
    }

    /// A digest of the whole set (MD5 over the changes in replay order): equal digests
    /// mean equal histories.
    pub fn digest(&self) -> [u8; 16] {
        let mut h = Md5::new();
        for c in self.changes.values() {
            h.update(serde_json::to_vec(c).unwrap_or_default());
            h.update([0u8]);
        }
        h.finalize().into()
    }

    /// How this history relates to `other`.
    pub fn compare(&self, other: &History) -> HistoryOrder {
        let mine_has_more = self.ids.difference(&other.ids).next().is_some();
        let theirs_has_more = other.ids.difference(&self.ids).next().is_some();
        match (mine_has_more, theirs_has_more) {
            (false, false) => HistoryOrder::Same,
            (true, false) => HistoryOrder::Newer,
            (false, true) => HistoryOrder::Older,
            (true, true) => HistoryOrder::Concurrent,
        }
    }

    /// The ids held.
    pub fn ids(&self) -> &BTreeSet<ChangeId> {
        &self.ids
    }

    /// Replays the history into a ring: the target of its sequence (see the module
    /// doc and [`super::sequence`]). The ring's version is one plus the number of
    /// changes applied after the creation.
    pub fn replay(&self) -> Result<Replay, HistoryError> {
        let seq = super::sequence::sequence(self)?;
        let applied = seq
            .steps
            .iter()
            .map(|s| (s.change.clone(), s.moves.clone()))
            .collect();
        let ring = seq
            .steps
            .last()
            .map(|s| s.ring.clone())
            .ok_or(HistoryError::NoCluster)?;
        Ok(Replay {
            ring,
            applied,
            skipped: seq.skipped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[&str]) -> Vec<Member> {
        names.iter().map(|n| Member::new(*n)).collect()
    }

    #[test]
    fn a_created_history_replays_to_the_static_ring() {
        let h = History::created(64, 3, members(&["c", "a", "b"]));
        let replay = h.replay().unwrap();
        let fresh = Ring::new(64, 3, members(&["a", "b", "c"])).unwrap();
        assert_eq!(replay.ring.to_json(), fresh.to_json());
        assert_eq!(replay.ring.version(), 1);
        assert!(replay.skipped.is_empty());
    }

    #[test]
    fn a_leave_issued_after_a_join_replays_after_it() {
        let mut h = History::created(64, 3, members(&["a", "b", "c"]));
        let join = h.issue(
            "node-a-1",
            ChangeKind::Join {
                member: Member::new("d"),
            },
        );
        let leave = h.issue("node-b-1", ChangeKind::Leave { name: "d".into() });
        assert!(leave.lamport > join.lamport);
        let r = h.replay().unwrap();
        assert!(r.ring.member("d").is_none());
        assert_eq!(r.applied.len(), 3);
        assert_eq!(r.ring.version(), 3);
    }

    #[test]
    fn changes_that_do_not_apply_are_skipped_with_the_reason() {
        let mut h = History::created(16, 3, members(&["a", "b", "c"]));
        h.issue(
            "x",
            ChangeKind::Leave {
                name: "nobody".into(),
            },
        );
        h.issue(
            "x",
            ChangeKind::Join {
                member: Member::new("a"),
            },
        );
        let r = h.replay().unwrap();
        assert_eq!(r.skipped.len(), 2, "{:?}", r.skipped);
        assert!(r.skipped[0].1.contains("nobody"), "{:?}", r.skipped);
        assert_eq!(r.ring.version(), 1);
    }

    #[test]
    fn replace_hands_exactly_the_old_partitions_to_the_new_member() {
        let mut h = History::created(64, 3, members(&["a", "b", "c", "d"]));
        let before = h.replay().unwrap().ring;
        h.issue(
            "x",
            ChangeKind::Replace {
                old: "b".into(),
                new: Member::new("e"),
            },
        );
        let after = h.replay().unwrap().ring;
        assert_eq!(after.partitions_of("e"), before.partitions_of("b"));
        for m in ["a", "c", "d"] {
            assert_eq!(after.partitions_of(m), before.partitions_of(m));
        }
        assert!(after.member("b").is_none());
    }

    #[test]
    fn the_same_id_with_other_content_is_refused() {
        let mut h = History::new();
        let c = Change {
            lamport: 1,
            id: ChangeId {
                origin: "o".into(),
                seq: 1,
            },
            kind: ChangeKind::Leave { name: "a".into() },
        };
        assert_eq!(h.insert(c.clone()), Ok(true));
        assert_eq!(h.insert(c.clone()), Ok(false));
        let mut other = c;
        other.kind = ChangeKind::Leave { name: "b".into() };
        assert!(matches!(
            h.insert(other),
            Err(HistoryError::ConflictingChange { .. })
        ));
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn histories_compare_by_inclusion() {
        let base = History::created(16, 3, members(&["a", "b", "c"]));
        let mut x = base.clone();
        let mut y = base.clone();
        assert_eq!(x.compare(&y), HistoryOrder::Same);
        x.issue(
            "nx",
            ChangeKind::Join {
                member: Member::new("d"),
            },
        );
        assert_eq!(x.compare(&y), HistoryOrder::Newer);
        assert_eq!(y.compare(&x), HistoryOrder::Older);
        y.issue(
            "ny",
            ChangeKind::Join {
                member: Member::new("e"),
            },
        );
        assert_eq!(x.compare(&y), HistoryOrder::Concurrent);
        let (added, errors) = x.merge(&y);
        assert_eq!((added, errors.len()), (1, 0));
        let (_, _) = y.merge(&x);
        assert_eq!(x.compare(&y), HistoryOrder::Same);
        assert_eq!(x.digest(), y.digest());
        assert_eq!(
            x.replay().unwrap().ring.to_json(),
            y.replay().unwrap().ring.to_json()
        );
    }

    #[test]
    fn json_round_trips() {
        let mut h = History::created(16, 3, members(&["a", "b", "c"]));
        h.issue(
            "n",
            ChangeKind::SetZone {
                name: "a".into(),
                zone: Some("z1".into()),
            },
        );
        let text = serde_json::to_string(&h).unwrap();
        let back: History = serde_json::from_str(&text).unwrap();
        assert_eq!(back, h);
    }
}
