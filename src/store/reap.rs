//! When a tombstone may be reaped.
//!
//! A delete is a causal write of a tombstone, and a tombstone can only be forgotten
//! once forgetting it cannot bring the deleted value back. The rule (DESIGN.md):
//! reap a key only when every version is a tombstone, every *current and pending*
//! owner of its partition holds exactly the same tombstones, no hint for it is
//! outstanding, and ownership of the partition is not moving. Anti-entropy gathers
//! that evidence and calls [`reap_decision`]; only on [`ReapDecision::Reap`] does it
//! call [`super::VersionedStore::reap`] on each owner, which removes the record only if
//! it is still exactly what was checked.

use crate::version::Siblings;

/// What one owner of the partition reported for the key.
#[derive(Clone, Debug)]
pub struct OwnerReport {
    /// The owner's name.
    pub node: String,
    /// Its sibling set for the key, or `None` if it could not be asked.
    pub siblings: Option<Siblings>,
}

/// Why a key must be kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeepReason {
    /// Some version is a live value (or there are no versions at all).
    NotAllTombstones,
    /// A hint for the key (or its partition) has not been delivered.
    HintsOutstanding,
    /// The partition is being handed to a new owner.
    OwnershipMoving,
    /// No owners were listed, so nobody can vouch for the tombstone.
    NoOwners,
    /// This owner could not be asked.
    OwnerUnreachable(String),
    /// This owner holds something else (missing the tombstone, or more).
    OwnerDiffers(String),
}

/// The verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReapDecision {
    /// Safe to remove on every owner.
    Reap,
    /// Keep it, for this reason.
    Keep(KeepReason),
}

/// Decides whether `local` (this replica's settled siblings of a key) may be reaped.
/// `owners` must list every current and pending owner of the key's partition,
/// including this replica.
pub fn reap_decision(
    local: &Siblings,
    owners: &[OwnerReport],
    hints_outstanding: bool,
    ownership_moving: bool,
) -> ReapDecision {
    if !local.all_tombstones() {
        return ReapDecision::Keep(KeepReason::NotAllTombstones);
    }
    if hints_outstanding {
        return ReapDecision::Keep(KeepReason::HintsOutstanding);
    }
    if ownership_moving {
        return ReapDecision::Keep(KeepReason::OwnershipMoving);
    }
    if owners.is_empty() {
        return ReapDecision::Keep(KeepReason::NoOwners);
    }
    for owner in owners {
        match &owner.siblings {
            None => return ReapDecision::Keep(KeepReason::OwnerUnreachable(owner.node.clone())),
            Some(s) if s != local => {
                return ReapDecision::Keep(KeepReason::OwnerDiffers(owner.node.clone()))
            }
            Some(_) => {}
        }
    }
    ReapDecision::Reap
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Context;
    use crate::dot::{Actor, Dot};
    use crate::version::{ConflictPolicy, Version};

    fn set(value: Option<&[u8]>, counter: u64) -> Siblings {
        Siblings::from_versions(
            vec![Version {
                dot: Dot::new(Actor::new(1, 1), counter),
                past: Context::new(),
                timestamp_ms: 1,
                value: value.map(<[u8]>::to_vec),
                request_id: None,
            }],
            ConflictPolicy::Siblings,
        )
    }

    fn report(node: &str, s: Option<Siblings>) -> OwnerReport {
        OwnerReport {
            node: node.into(),
            siblings: s,
        }
    }

    #[test]
    fn reaps_only_settled_tombstones_held_by_every_owner() {
        let tomb = set(None, 2);
        let all = |s: &Siblings| {
            vec![
                report("a", Some(s.clone())),
                report("b", Some(s.clone())),
                report("c", Some(s.clone())),
            ]
        };
        assert_eq!(
            reap_decision(&tomb, &all(&tomb), false, false),
            ReapDecision::Reap
        );

        let live = set(Some(b"v"), 2);
        assert_eq!(
            reap_decision(&live, &all(&live), false, false),
            ReapDecision::Keep(KeepReason::NotAllTombstones)
        );
        assert_eq!(
            reap_decision(&tomb, &all(&tomb), true, false),
            ReapDecision::Keep(KeepReason::HintsOutstanding)
        );
        assert_eq!(
            reap_decision(&tomb, &all(&tomb), false, true),
            ReapDecision::Keep(KeepReason::OwnershipMoving)
        );
        assert_eq!(
            reap_decision(&tomb, &[], false, false),
            ReapDecision::Keep(KeepReason::NoOwners)
        );
        let mut lagging = all(&tomb);
        lagging[1].siblings = Some(set(Some(b"old"), 1));
        assert_eq!(
            reap_decision(&tomb, &lagging, false, false),
            ReapDecision::Keep(KeepReason::OwnerDiffers("b".into()))
        );
        let mut pending_unreachable = all(&tomb);
        pending_unreachable.push(report("d-pending", None));
        assert_eq!(
            reap_decision(&tomb, &pending_unreachable, false, false),
            ReapDecision::Keep(KeepReason::OwnerUnreachable("d-pending".into()))
        );
    }
}
