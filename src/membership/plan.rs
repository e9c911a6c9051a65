//! Dry runs of membership changes: what a change would do to the ring and to the data,
//! and whether it may be made at all. `dynamo admin plan` shows a [`Plan`]; every admin
//! action checks the same rules before it issues its change, so a change that cannot be
//! made is refused with the reason and never enters the history.
//!
//! Rules: the cluster must exist; a joining or replacing node must not be a member and
//! must have a valid name; a leaving, replaced or removed node must be a member; the
//! last member cannot leave or be removed; a remove (of a dead node) is refused when
//! some partition would be left with no replica that is up, as its data could not be
//! rebuilt.

use std::collections::{BTreeMap, BTreeSet};

use super::history::{apply, ChangeKind, History, HistoryError};
use crate::ring::{Ring, RingError, Transfer};

/// One partition's data moving to a node that becomes one of its N replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaMove {
    /// The partition.
    pub partition: u32,
    /// A node that holds it now and stays up: the node giving it up when that one is
    /// up, else another current replica that is up.
    pub from: String,
    /// The node that gains it.
    pub to: String,
}

/// What a change would do (see the module doc).
#[derive(Clone, Debug)]
pub struct Plan {
    /// The change.
    pub change: ChangeKind,
    /// The ring now.
    pub before: Ring,
    /// The ring once the change is made.
    pub after: Ring,
    /// Primary ownership moves (the partition's first owner changes).
    pub ownership: Vec<Transfer>,
    /// Replica moves: for each partition, each node that joins its N replicas and where
    /// its data comes from. This is the data the change moves.
    pub replicas: Vec<ReplicaMove>,
}

impl Plan {
    /// How many partitions each node would gain and give up, by name.
    pub fn per_node(&self) -> BTreeMap<String, (usize, usize)> {
        let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for m in &self.replicas {
            out.entry(m.to.clone()).or_default().0 += 1;
        }
        for (_, lost) in self.lost_replicas() {
            for name in lost {
                out.entry(name).or_default().1 += 1;
            }
        }
        out
    }

    /// Per partition, the nodes that stop being one of its replicas.
    fn lost_replicas(&self) -> Vec<(u32, Vec<String>)> {
        let n = self.before.target_n();
        (0..self.before.partition_count())
            .filter_map(|p| {
                let after: BTreeSet<&str> = names(&self.after, p, n);
                let lost: Vec<String> = names(&self.before, p, n)
                    .into_iter()
                    .filter(|x| !after.contains(x))
                    .map(str::to_owned)
                    .collect();
                (!lost.is_empty()).then_some((p, lost))
            })
            .collect()
    }
}

/// Why a change may not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// The history builds no ring.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The ring refuses the change (unknown member, already a member, last member, bad
    /// name).
    #[error("{0}")]
    Ring(#[from] RingError),
    /// A remove would leave partitions with no replica that is up.
    #[error(
        "removing {node} would leave {count} partition(s) with no replica that is up \
         (first: {first:?}): bring one of their replicas back first, or their data is lost"
    )]
    NoSurvivingReplica {
        /// The node to remove.
        node: String,
        /// How many partitions.
        count: usize,
        /// The first few of them.
        first: Vec<u32>,
    },
}

fn names(ring: &Ring, partition: u32, n: usize) -> BTreeSet<&str> {
    ring.preference_list(partition, n)
        .into_iter()
        .map(|m| m.name.as_str())
        .collect()
}

/// The plan of making `change` on the ring `history` builds, replicated `n` times, with
/// the members in `down` taken as unreachable (see the module doc for the rules).
pub fn plan(
    history: &History,
    change: &ChangeKind,
    n: usize,
    down: &BTreeSet<String>,
) -> Result<Plan, PlanError> {
    let before = history.replay()?.ring;
    let mut after = before.clone();
    let ownership = apply(change, &mut after)?;
    if let ChangeKind::Remove { name } = change {
        let orphaned: Vec<u32> = (0..before.partition_count())
            .filter(|&p| {
                let replicas = names(&before, p, n);
                replicas.contains(name.as_str())
                    && replicas
                        .iter()
                        .all(|r| *r == name.as_str() || down.contains(*r))
            })
            .collect();
        if !orphaned.is_empty() {
            return Err(PlanError::NoSurvivingReplica {
                node: name.clone(),
                count: orphaned.len(),
                first: orphaned.iter().copied().take(8).collect(),
            });
        }
    }
    let mut replicas = Vec::new();
    for p in 0..before.partition_count() {
        let old_list: Vec<&str> = before
            .preference_list(p, n)
            .into_iter()
            .map(|m| m.name.as_str())
            .collect();
        let new_set = names(&after, p, n);
        let old_set: BTreeSet<&str> = old_list.iter().copied().collect();
        let mut givers = old_list
            .iter()
            .copied()
            .filter(|x| !new_set.contains(x) && !down.contains(*x));
        let stayer = old_list
            .iter()
            .copied()
            .find(|x| new_set.contains(x) && !down.contains(*x));
        for gained in after.preference_list(p, n) {
            let to = gained.name.as_str();
            if old_set.contains(to) {
                continue;
            }
            let from = givers
                .next()
                .or(stayer)
                .or_else(|| old_list.first().copied())
                .unwrap_or_default();
            replicas.push(ReplicaMove {
                partition: p,
                from: from.to_owned(),
                to: to.to_owned(),
            });
        }
    }
    Ok(Plan {
        change: change.clone(),
        before,
        after,
        ownership,
        replicas,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Member;

    fn cluster(names: &[&str]) -> History {
        History::created(64, 3, names.iter().map(|n| Member::new(*n)).collect())
    }

    fn none() -> BTreeSet<String> {
        BTreeSet::new()
    }

    #[test]
    fn a_join_moves_replicas_to_the_new_node_only() {
        let h = cluster(&["a", "b", "c"]);
        let p = plan(
            &h,
            &ChangeKind::Join {
                member: Member::new("d"),
            },
            3,
            &none(),
        )
        .unwrap();
        assert!(!p.replicas.is_empty());
        assert!(p.replicas.iter().all(|m| m.to == "d" && m.from != "d"));
        // d ends with about a quarter of the replicas: 64 partitions x 3 / 4 members.
        let gained = p.replicas.len();
        assert!((32..=64).contains(&gained), "{gained}");
        assert_eq!(p.after.members().len(), 4);
        let per = p.per_node();
        assert_eq!(per["d"], (gained, 0));
        let given: usize = ["a", "b", "c"].iter().map(|n| per[*n].1).sum();
        assert_eq!(given, gained);
    }

    #[test]
    fn plans_agree_with_what_the_history_will_replay() {
        let mut h = cluster(&["a", "b", "c", "d"]);
        for change in [
            ChangeKind::Join {
                member: Member::new("e"),
            },
            ChangeKind::Leave { name: "b".into() },
            ChangeKind::Replace {
                old: "c".into(),
                new: Member::new("f"),
            },
            ChangeKind::Remove { name: "d".into() },
        ] {
            let p = plan(&h, &change, 3, &none()).unwrap();
            h.issue("admin", change);
            assert_eq!(p.after.to_json(), {
                let mut r = h.replay().unwrap().ring;
                r.set_version(p.after.version());
                r.to_json()
            });
        }
    }

    #[test]
    fn a_replace_moves_exactly_the_old_nodes_replicas() {
        let h = cluster(&["a", "b", "c", "d"]);
        let change = ChangeKind::Replace {
            old: "b".into(),
            new: Member::new("e"),
        };
        let p = plan(&h, &change, 3, &none()).unwrap();
        let held_by_b = (0..64)
            .filter(|&x| names(&p.before, x, 3).contains("b"))
            .count();
        assert_eq!(p.replicas.len(), held_by_b);
        assert!(p.replicas.iter().all(|m| m.from == "b" && m.to == "e"));
    }

    #[test]
    fn impossible_changes_are_refused_with_the_reason() {
        let h = cluster(&["a", "b", "c"]);
        let e = plan(&h, &ChangeKind::Leave { name: "zz".into() }, 3, &none()).unwrap_err();
        assert!(e.to_string().contains("\"zz\" is not in the ring"), "{e}");
        let e = plan(
            &h,
            &ChangeKind::Join {
                member: Member::new("a"),
            },
            3,
            &none(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("already in the ring"), "{e}");
        let solo = cluster(&["a"]);
        let e = plan(&solo, &ChangeKind::Leave { name: "a".into() }, 1, &none()).unwrap_err();
        assert!(e.to_string().contains("last member"), "{e}");
        let e = plan(
            &h,
            &ChangeKind::Create {
                partitions: 64,
                target_n: 3,
                members: vec![],
            },
            3,
            &none(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("already created"), "{e}");
        let e = plan(
            &History::new(),
            &ChangeKind::Leave { name: "a".into() },
            3,
            &none(),
        )
        .unwrap_err();
        assert_eq!(e, PlanError::History(HistoryError::NoCluster));
    }

    #[test]
    fn a_remove_needs_a_surviving_replica_of_every_partition() {
        let h = cluster(&["a", "b", "c", "d"]);
        let remove = ChangeKind::Remove { name: "a".into() };
        // One dead node with N = 3: every partition keeps two replicas.
        let down: BTreeSet<String> = ["a".to_owned()].into();
        let p = plan(&h, &remove, 3, &down).unwrap();
        assert!(
            p.replicas.iter().all(|m| m.from != "a"),
            "data never comes from the dead node"
        );
        // With N = 1 the dead node's partitions have no other replica.
        let e = plan(&h, &remove, 1, &down).unwrap_err();
        assert!(
            matches!(e, PlanError::NoSurvivingReplica { ref node, .. } if node == "a"),
            "{e}"
        );
        assert!(e.to_string().contains("no replica that is up"), "{e}");
        // Three of four down with N = 3: some partition lives only on them.
        let down: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert!(plan(&h, &remove, 3, &down).is_err());
    }
}
