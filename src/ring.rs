//! The consistent-hashing ring: Q equal partitions, their owners, preference lists.
//!
//! A key's position is MD5(store name ‖ 0x00 ‖ key) read as a 128-bit big-endian
//! integer (store names cannot contain NUL, so the encoding is unambiguous). The ring
//! is cut into Q equal partitions, Q a power of two fixed when the cluster is created
//! (default 256); partition `i` covers positions `[i·2^128/Q, (i+1)·2^128/Q)`. Each
//! partition has one owner (the paper's strategy 3).
//!
//! Invariants kept by [`Ring`] (property-tested in `tests/ring_props.rs`):
//! - every member owns ⌊Q/S⌋ or ⌈Q/S⌉ partitions, after creation and after any
//!   sequence of joins and leaves;
//! - a join moves exactly ⌊Q/(S+1)⌋ partitions, all to the new member; a leave moves
//!   every partition of the leaving member to the others, plus (to keep replicas
//!   spread) at most two other partitions per partition the leaver owned, swapped
//!   between remaining members. Both say what moved ([`Transfer`]);
//! - the claim tries to give any `target_n` consecutive partitions distinct owners
//!   (so replicas spread evenly): a fresh ring of S ≥ `target_n` + 2 members has no
//!   window with a repeated owner, and a join or leave that leaves S ≥ `target_n` + 2
//!   members does not add such windows (the property tests check exactly this);
//! - a preference list holds min(N, S) distinct members, and members of distinct zones
//!   whenever that many zones exist.
//!
//! The ring is serialisable (JSON via serde) and carries a `version`, bumped on every
//! change, so two views can be compared and later merged by gossip.

mod claim;

use std::collections::BTreeSet;

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Default number of partitions.
pub const DEFAULT_PARTITIONS: u32 = 256;
/// Largest partition count accepted.
pub const MAX_PARTITIONS: u32 = 1 << 20;
/// Default number of consecutive partitions the claim keeps on distinct owners.
pub const DEFAULT_TARGET_N: usize = 3;
/// Format number written into serialised rings.
pub const RING_FORMAT: u32 = 1;

/// Checks a partition count: a power of two between 1 and [`MAX_PARTITIONS`].
pub fn validate_partition_count(q: u32) -> Result<(), String> {
    if q == 0 || !q.is_power_of_two() || q > MAX_PARTITIONS {
        Err(format!(
            "partition count {q} must be a power of two between 1 and {MAX_PARTITIONS}"
        ))
    } else {
        Ok(())
    }
}

/// MD5(store ‖ 0x00 ‖ key) as a 128-bit big-endian integer.
pub fn key_position(store: &str, key: &[u8]) -> u128 {
    let mut h = Md5::new();
    h.update(store.as_bytes());
    h.update([0u8]);
    h.update(key);
    u128::from_be_bytes(h.finalize().into())
}

/// A 32-bit fingerprint of a key (the low bits of its position), used to bind context
/// tokens to the key they were issued for.
pub fn key_fingerprint(store: &str, key: &[u8]) -> u32 {
    key_position(store, key) as u32
}

/// The partition holding `position` in a ring of `q` partitions (`q` a power of two).
pub fn partition_of(position: u128, q: u32) -> u32 {
    debug_assert!(q.is_power_of_two());
    let bits = q.trailing_zeros();
    if bits == 0 {
        0
    } else {
        (position >> (128 - bits)) as u32
    }
}

/// Errors from building or changing a ring.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RingError {
    /// Q is not a power of two in range.
    #[error("{0}")]
    BadPartitionCount(String),
    /// A ring needs at least one member.
    #[error("a ring needs at least one member")]
    NoMembers,
    /// Two members with one name.
    #[error("member {0:?} is already in the ring")]
    DuplicateMember(String),
    /// No such member.
    #[error("member {0:?} is not in the ring (members: {1})")]
    UnknownMember(String, String),
    /// The last member cannot leave.
    #[error("member {0:?} is the last member; a ring cannot be empty")]
    LastMember(String),
    /// A name or zone that cannot be used.
    #[error("invalid member name {0:?}: use 1 to 64 ASCII letters, digits, '.', '_' or '-'")]
    BadName(String),
    /// target_n of zero.
    #[error("target_n must be at least 1")]
    BadTargetN,
    /// A serialised ring that does not hold together.
    #[error("invalid ring: {0}")]
    Invalid(String),
}

/// A ring member: a physical node, optionally in a zone (rack, datacenter).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Member {
    /// Unique name.
    pub name: String,
    /// Failure zone; members without one count as a zone each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Its RPC address (`host:port`), as the membership history recorded it. Never
    /// used by the claim (names alone decide placement); carried so that every holder
    /// of the ring can reach its members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

impl Member {
    /// A member without a zone.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            zone: None,
            address: None,
        }
    }

    /// A member in `zone`.
    pub fn in_zone(name: impl Into<String>, zone: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            zone: Some(zone.into()),
            address: None,
        }
    }

    /// The same member reachable at `address`.
    pub fn at(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }

    fn zone_key(&self) -> (&str, bool) {
        match &self.zone {
            Some(z) => (z.as_str(), true),
            None => (self.name.as_str(), false),
        }
    }
}

/// A valid member or zone name: 1 to 64 ASCII letters, digits, `.`, `_` or `-`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// One partition changing owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// The partition.
    pub partition: u32,
    /// Its old owner.
    pub from: String,
    /// Its new owner.
    pub to: String,
}

/// How two views of the ring relate (for gossip).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewOrder {
    /// Same version and same content.
    Same,
    /// This view is newer.
    Newer,
    /// This view is older.
    Older,
    /// Same version, different content: two changes raced; gossip must reconcile.
    Conflict,
}

/// The ring: members and the owner of each of Q partitions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RingFile", into = "RingFile")]
pub struct Ring {
    version: u64,
    target_n: usize,
    /// Sorted by name.
    members: Vec<Member>,
    /// Index into `members`, per partition.
    owners: Vec<u32>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RingFile {
    format: u32,
    version: u64,
    partitions: u32,
    target_n: usize,
    members: Vec<Member>,
    owners: Vec<String>,
}

impl From<Ring> for RingFile {
    fn from(r: Ring) -> Self {
        RingFile {
            format: RING_FORMAT,
            version: r.version,
            partitions: r.owners.len() as u32,
            target_n: r.target_n,
            owners: r
                .owners
                .iter()
                .map(|&i| r.members[i as usize].name.clone())
                .collect(),
            members: r.members,
        }
    }
}

impl TryFrom<RingFile> for Ring {
    type Error = RingError;
    fn try_from(f: RingFile) -> Result<Self, RingError> {
        if f.format != RING_FORMAT {
            return Err(RingError::Invalid(format!(
                "format {} (this build reads {RING_FORMAT})",
                f.format
            )));
        }
        validate_partition_count(f.partitions).map_err(RingError::BadPartitionCount)?;
        if f.owners.len() != f.partitions as usize {
            return Err(RingError::Invalid(format!(
                "{} owners for {} partitions",
                f.owners.len(),
                f.partitions
            )));
        }
        if f.target_n == 0 {
            return Err(RingError::BadTargetN);
        }
        let mut members = f.members;
        check_members(&members)?;
        members.sort();
        let owners = f
            .owners
            .iter()
            .map(|name| {
                members
                    .iter()
                    .position(|m| &m.name == name)
                    .map(|i| i as u32)
                    .ok_or_else(|| {
                        RingError::Invalid(format!("partition owner {name:?} is not a member"))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Ring {
            version: f.version,
            target_n: f.target_n,
            members,
            owners,
        })
    }
}

fn check_members(members: &[Member]) -> Result<(), RingError> {
    if members.is_empty() {
        return Err(RingError::NoMembers);
    }
    let mut seen = BTreeSet::new();
    for m in members {
        if !valid_name(&m.name) {
            return Err(RingError::BadName(m.name.clone()));
        }
        if let Some(z) = &m.zone {
            if !valid_name(z) {
                return Err(RingError::BadName(z.clone()));
            }
        }
        if !seen.insert(&m.name) {
            return Err(RingError::DuplicateMember(m.name.clone()));
        }
    }
    Ok(())
}

impl Ring {
    /// A fresh ring of `partitions` partitions claimed by `members`, keeping
    /// `target_n` consecutive partitions on distinct owners where possible.
    pub fn new(partitions: u32, target_n: usize, members: Vec<Member>) -> Result<Self, RingError> {
        validate_partition_count(partitions).map_err(RingError::BadPartitionCount)?;
        if target_n == 0 {
            return Err(RingError::BadTargetN);
        }
        let mut members = members;
        check_members(&members)?;
        members.sort();
        let owners = claim::fresh(partitions as usize, members.len(), target_n);
        Ok(Ring {
            version: 1,
            target_n,
            members,
            owners,
        })
    }

    /// Q.
    pub fn partition_count(&self) -> u32 {
        self.owners.len() as u32
    }

    /// The spread target of the claim.
    pub fn target_n(&self) -> usize {
        self.target_n
    }

    /// Bumped on every change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Members, sorted by name.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member called `name`.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// Owner of `partition`.
    pub fn owner(&self, partition: u32) -> &Member {
        &self.members[self.owners[partition as usize] as usize]
    }

    /// Partitions owned by `name`, ascending.
    pub fn partitions_of(&self, name: &str) -> Vec<u32> {
        let Some(i) = self.index_of(name) else {
            return Vec::new();
        };
        (0..self.owners.len() as u32)
            .filter(|&p| self.owners[p as usize] == i)
            .collect()
    }

    /// (member name, partitions owned), sorted by name.
    pub fn ownership_counts(&self) -> Vec<(String, usize)> {
        let mut counts = vec![0usize; self.members.len()];
        for &o in &self.owners {
            counts[o as usize] += 1;
        }
        self.members
            .iter()
            .map(|m| m.name.clone())
            .zip(counts)
            .collect()
    }

    fn index_of(&self, name: &str) -> Option<u32> {
        self.members
            .iter()
            .position(|m| m.name == name)
            .map(|i| i as u32)
    }

    fn member_list(&self) -> String {
        self.members
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The partition of `key` in `store`.
    pub fn partition_for_key(&self, store: &str, key: &[u8]) -> u32 {
        partition_of(key_position(store, key), self.partition_count())
    }

    /// Every member once, in the order a request for `partition` tries them: first the
    /// preference list for `n` (see [`Ring::preference_list`]), then the remaining
    /// members in clockwise order (the stand-ins of a sloppy quorum).
    pub fn walk(&self, partition: u32, n: usize) -> Vec<&Member> {
        let q = self.owners.len();
        let mut order: Vec<u32> = Vec::with_capacity(self.members.len());
        for step in 0..q {
            let o = self.owners[(partition as usize + step) % q];
            if !order.contains(&o) {
                order.push(o);
                if order.len() == self.members.len() {
                    break;
                }
            }
        }
        // With more members than partitions some own nothing; they come last.
        for i in 0..self.members.len() as u32 {
            if !order.contains(&i) {
                order.push(i);
            }
        }
        let n = n.min(order.len());
        // Prefer distinct zones: first pass takes members whose zone is new, second
        // pass fills up in clockwise order.
        let mut chosen: Vec<u32> = Vec::with_capacity(n);
        let mut zones: Vec<(&str, bool)> = Vec::new();
        for &o in &order {
            if chosen.len() == n {
                break;
            }
            let z = self.members[o as usize].zone_key();
            if !zones.contains(&z) {
                zones.push(z);
                chosen.push(o);
            }
        }
        for &o in &order {
            if chosen.len() == n {
                break;
            }
            if !chosen.contains(&o) {
                chosen.push(o);
            }
        }
        let rank = |o: &u32| order.iter().position(|x| x == o).unwrap_or(usize::MAX);
        chosen.sort_by_key(rank);
        let rest = order.iter().filter(|o| !chosen.contains(o));
        chosen
            .iter()
            .chain(rest)
            .map(|&o| &self.members[o as usize])
            .collect()
    }

    /// The first `n` distinct members clockwise from `partition` (members of distinct
    /// zones preferred when zones are set), in clockwise order.
    pub fn preference_list(&self, partition: u32, n: usize) -> Vec<&Member> {
        let mut w = self.walk(partition, n);
        w.truncate(n.min(self.members.len()));
        w
    }

    /// The preference list of `key` in `store`.
    pub fn key_preference_list(&self, store: &str, key: &[u8], n: usize) -> Vec<&Member> {
        self.preference_list(self.partition_for_key(store, key), n)
    }

    /// Number of windows of `target_n` consecutive partitions (cyclic) in which some
    /// owner appears twice. Zero means replicas are spread on distinct members.
    pub fn spread_violations(&self) -> usize {
        claim::violations(&self.owners, self.target_n)
    }

    /// Adds `member`, which takes ⌊Q/(S+1)⌋ partitions from the others. Returns the
    /// moves; the version is bumped.
    pub fn join(&mut self, member: Member) -> Result<Vec<Transfer>, RingError> {
        if self.index_of(&member.name).is_some() {
            return Err(RingError::DuplicateMember(member.name));
        }
        let mut all = self.members.clone();
        all.push(member.clone());
        check_members(&all)?;
        let old_names: Vec<String> = self.members.iter().map(|m| m.name.clone()).collect();
        // Claim with the newcomer as the last index, then re-sort members by name.
        let new_idx = self.members.len() as u32;
        let moved = claim::join(&mut self.owners, self.members.len(), new_idx, self.target_n);
        self.members.push(member);
        let transfers = moved
            .into_iter()
            .map(|(p, from)| Transfer {
                partition: p,
                from: old_names[from as usize].clone(),
                to: self.members[new_idx as usize].name.clone(),
            })
            .collect();
        self.resort();
        self.version += 1;
        Ok(transfers)
    }

    /// Removes `name`; its partitions go to the least-loaded members that keep the
    /// spread, and at most one owner swap per such partition repairs the spread where
    /// balance forbids a clean receiver. Returns the moves; the version is bumped.
    pub fn leave(&mut self, name: &str) -> Result<Vec<Transfer>, RingError> {
        let Some(idx) = self.index_of(name) else {
            return Err(RingError::UnknownMember(
                name.to_owned(),
                self.member_list(),
            ));
        };
        if self.members.len() == 1 {
            return Err(RingError::LastMember(name.to_owned()));
        }
        let before = self.clone();
        claim::leave(&mut self.owners, self.members.len(), idx, self.target_n);
        let transfers = (0..self.owners.len())
            .filter(|&p| self.owners[p] != before.owners[p])
            .map(|p| Transfer {
                partition: p as u32,
                from: before.members[before.owners[p] as usize].name.clone(),
                to: self.members[self.owners[p] as usize].name.clone(),
            })
            .collect();
        // Drop the member and shift the indices above it.
        self.members.remove(idx as usize);
        for o in &mut self.owners {
            debug_assert_ne!(*o, idx);
            if *o > idx {
                *o -= 1;
            }
        }
        self.version += 1;
        Ok(transfers)
    }

    /// Puts `new` in place of `old`: `new` takes exactly `old`'s partitions (every other
    /// owner stays). Returns the moves (all from `old` to `new`); the version is bumped.
    pub fn replace(&mut self, old: &str, new: Member) -> Result<Vec<Transfer>, RingError> {
        let Some(idx) = self.index_of(old) else {
            return Err(RingError::UnknownMember(old.to_owned(), self.member_list()));
        };
        if self.index_of(&new.name).is_some() {
            return Err(RingError::DuplicateMember(new.name));
        }
        let mut all: Vec<Member> = self
            .members
            .iter()
            .filter(|m| m.name != old)
            .cloned()
            .collect();
        all.push(new.clone());
        check_members(&all)?;
        let transfers = (0..self.owners.len() as u32)
            .filter(|&p| self.owners[p as usize] == idx)
            .map(|p| Transfer {
                partition: p,
                from: old.to_owned(),
                to: new.name.clone(),
            })
            .collect();
        self.members[idx as usize] = new;
        self.resort();
        self.version += 1;
        Ok(transfers)
    }

    /// Moves member `name` to `zone` (`None`: no zone). Partition owners stay; only
    /// preference lists change. The version is bumped.
    pub fn set_zone(&mut self, name: &str, zone: Option<String>) -> Result<(), RingError> {
        let Some(idx) = self.index_of(name) else {
            return Err(RingError::UnknownMember(
                name.to_owned(),
                self.member_list(),
            ));
        };
        if let Some(z) = &zone {
            if !valid_name(z) {
                return Err(RingError::BadName(z.clone()));
            }
        }
        self.members[idx as usize].zone = zone;
        self.resort();
        self.version += 1;
        Ok(())
    }

    /// Records that member `name` is reached at `address`. Placement does not change;
    /// the version is bumped.
    pub fn set_address(&mut self, name: &str, address: String) -> Result<(), RingError> {
        let Some(idx) = self.index_of(name) else {
            return Err(RingError::UnknownMember(
                name.to_owned(),
                self.member_list(),
            ));
        };
        self.members[idx as usize].address = Some(address);
        self.version += 1;
        Ok(())
    }

    /// Sets the version (a ring replayed from a membership history takes the version
    /// the history gives it).
    pub fn set_version(&mut self, version: u64) {
        self.version = version;
    }

    fn resort(&mut self) {
        let mut order: Vec<u32> = (0..self.members.len() as u32).collect();
        order.sort_by(|&a, &b| self.members[a as usize].cmp(&self.members[b as usize]));
        let mut new_index = vec![0u32; order.len()];
        for (new, &old) in order.iter().enumerate() {
            new_index[old as usize] = new as u32;
        }
        for o in &mut self.owners {
            *o = new_index[*o as usize];
        }
        self.members.sort();
    }

    /// Partitions whose owner differs between `self` (old) and `other` (new).
    pub fn diff(&self, other: &Ring) -> Vec<Transfer> {
        if self.owners.len() != other.owners.len() {
            return Vec::new();
        }
        (0..self.owners.len() as u32)
            .filter_map(|p| {
                let (a, b) = (self.owner(p), other.owner(p));
                (a.name != b.name).then(|| Transfer {
                    partition: p,
                    from: a.name.clone(),
                    to: b.name.clone(),
                })
            })
            .collect()
    }

    /// How this view relates to `other`: by version, and by content at equal versions.
    pub fn compare_view(&self, other: &Ring) -> ViewOrder {
        use std::cmp::Ordering::*;
        match self.version.cmp(&other.version) {
            Greater => ViewOrder::Newer,
            Less => ViewOrder::Older,
            Equal if self == other => ViewOrder::Same,
            Equal => ViewOrder::Conflict,
        }
    }

    /// Serialises to pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// Parses [`Ring::to_json`]'s output, checking it holds together.
    pub fn from_json(s: &str) -> Result<Self, RingError> {
        serde_json::from_str(s).map_err(|e| RingError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<Member> {
        (0..n)
            .map(|i| Member::new(format!("node-{i:02}")))
            .collect()
    }

    #[test]
    fn positions_are_md5_big_endian() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e; here the input is "" ‖ 0x00 ‖ "".
        let p = key_position("", b"");
        let mut h = Md5::new();
        h.update([0u8]);
        let expect = u128::from_be_bytes(h.finalize().into());
        assert_eq!(p, expect);
        assert_eq!(partition_of(u128::MAX, 256), 255);
        assert_eq!(partition_of(0, 256), 0);
        assert_eq!(partition_of(1u128 << 120, 256), 1);
        assert_eq!(partition_of(u128::MAX, 1), 0);
        // The store name separates key spaces.
        assert_ne!(key_position("a", b"bc"), key_position("ab", b"c"));
    }

    #[test]
    fn fresh_ring_is_balanced_and_spread() {
        let r = Ring::new(256, 3, members(5)).unwrap();
        let counts: Vec<usize> = r.ownership_counts().into_iter().map(|(_, c)| c).collect();
        assert!(counts.iter().all(|&c| c == 51 || c == 52), "{counts:?}");
        assert_eq!(r.spread_violations(), 0);
        let pl = r.preference_list(0, 3);
        assert_eq!(pl.len(), 3);
    }

    #[test]
    fn zones_are_preferred_in_preference_lists() {
        let ms = vec![
            Member::in_zone("a1", "a"),
            Member::in_zone("a2", "a"),
            Member::in_zone("a3", "a"),
            Member::in_zone("b1", "b"),
            Member::in_zone("c1", "c"),
        ];
        let r = Ring::new(64, 3, ms).unwrap();
        for p in 0..64 {
            let zones: BTreeSet<_> = r
                .preference_list(p, 3)
                .iter()
                .map(|m| m.zone.clone())
                .collect();
            assert_eq!(zones.len(), 3, "partition {p}");
        }
    }

    #[test]
    fn json_round_trips_and_rejects_nonsense() {
        let mut r = Ring::new(16, 3, members(4)).unwrap();
        r.join(Member::in_zone("late", "z9")).unwrap();
        let back = Ring::from_json(&r.to_json()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.compare_view(&r), ViewOrder::Same);
        let mut other = r.clone();
        other.leave("node-00").unwrap();
        assert_eq!(other.compare_view(&r), ViewOrder::Newer);
        assert_eq!(r.compare_view(&other), ViewOrder::Older);
        let mut v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        v["owners"][0] = "ghost".into();
        let e = Ring::from_json(&v.to_string()).unwrap_err();
        assert!(e.to_string().contains("\"ghost\" is not a member"), "{e}");
        assert!(matches!(
            Ring::new(100, 3, members(3)),
            Err(RingError::BadPartitionCount(_))
        ));
        assert!(matches!(
            Ring::new(16, 3, vec![Member::new("a"), Member::new("a")]),
            Err(RingError::DuplicateMember(_))
        ));
        let mut one = Ring::new(16, 3, members(1)).unwrap();
        assert!(matches!(
            one.leave("node-00"),
            Err(RingError::LastMember(_))
        ));
        assert!(matches!(
            one.leave("nope"),
            Err(RingError::UnknownMember(..))
        ));
    }
}
