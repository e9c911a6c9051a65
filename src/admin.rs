//! Administrator actions on the membership (paper section 4.8: "an administrator uses a
//! command line tool ... to join a node to a ring or remove a node from a ring"), as a
//! node receives them (`Dynamo.admin`, JSON both ways) and `dynamo admin` sends them.
//!
//! Each action is checked against the rules of [`crate::membership::plan`] first, so a
//! change that cannot be made is refused with the reason and never enters the history.
//! Each action takes effect when issued (its change is in the history, gossip spreads
//! it, transfers start); `Plan` is the dry run of any of them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::membership::{ChangeKind, Plan};
use crate::ring::Member;

/// What an administrator asks a node to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum AdminRequest {
    /// Sent to the joining node: join the cluster that the node at `seed` belongs to.
    Join {
        /// Address of any member.
        seed: String,
    },
    /// Sent to the new node: take exactly `old`'s partitions in `seed`'s cluster.
    Replace {
        /// Address of any member.
        seed: String,
        /// The member replaced.
        old: String,
    },
    /// `node` hands its partitions off, then leaves the ring.
    Leave {
        /// The member.
        node: String,
    },
    /// A dead `node` is removed: its partitions are rebuilt on their new owners from
    /// the surviving replicas. Refused without `force`, and while the node answers.
    Remove {
        /// The member.
        node: String,
        /// The administrator confirmed that the node is gone for good.
        force: bool,
    },
    /// The dry run of `change` on this node's membership.
    Plan {
        /// The change (a join or replace names the new member with its address).
        change: ChangeKind,
    },
}

/// One partition replica that a change moves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveSummary {
    /// The partition.
    pub partition: u32,
    /// Where the data comes from.
    pub from: String,
    /// The node that gains the replica.
    pub to: String,
}

/// What a change moves (the dry run, and what an action started).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSummary {
    /// Members before and after.
    pub members_before: Vec<String>,
    /// Members after.
    pub members_after: Vec<String>,
    /// Partitions whose first owner changes.
    pub ownership_moves: usize,
    /// Every replica that moves.
    pub moves: Vec<MoveSummary>,
    /// Per node: replicas gained and given up.
    pub per_node: BTreeMap<String, (usize, usize)>,
    /// Estimated bytes to move: replicas moved times the average bytes per replica
    /// partition of the answering node's stores.
    pub estimated_bytes: u64,
}

impl PlanSummary {
    /// Summarises `plan`, with `bytes_per_replica` the estimated bytes one partition
    /// replica holds.
    pub fn of(plan: &Plan, bytes_per_replica: u64) -> Self {
        let names = |m: &[Member]| m.iter().map(|m| m.name.clone()).collect();
        Self {
            members_before: names(plan.before.members()),
            members_after: names(plan.after.members()),
            ownership_moves: plan.ownership.len(),
            moves: plan
                .replicas
                .iter()
                .map(|m| MoveSummary {
                    partition: m.partition,
                    from: m.from.clone(),
                    to: m.to.clone(),
                })
                .collect(),
            per_node: plan.per_node(),
            estimated_bytes: bytes_per_replica.saturating_mul(plan.replicas.len() as u64),
        }
    }
}

/// A node's answer to an [`AdminRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminReply {
    /// What was done (or would be), e.g. `join node-4`.
    pub action: String,
    /// The change issued, `origin#seq` (`None` for a dry run or when nothing was
    /// needed).
    pub change: Option<String>,
    /// The node that answered.
    pub node: String,
    /// Its serving ring version afterwards.
    pub ring_version: u64,
    /// The version the history leads to once every transfer finished.
    pub target_ring_version: u64,
    /// What the change moves.
    pub plan: PlanSummary,
    /// Anything the administrator should know (e.g. "already a member").
    pub note: Option<String>,
}
