//! Cluster membership (paper section 4.8): a history of administrator changes that every
//! node replays to the same ring ([`history`]) through the same steps ([`sequence`]), kept on disk by [`store`]; [`plan`] dry-runs a change
//! and refuses one that cannot be made. Gossip, admin
//! actions and ownership transfer build on it.

pub mod history;
pub mod plan;
pub mod sequence;
pub mod store;

pub use history::{
    apply, Change, ChangeId, ChangeKind, History, HistoryError, HistoryOrder, Replay,
};
pub use plan::{plan, Plan, PlanError, ReplicaMove};
pub use sequence::{receivers, ring_digest, sequence, Sequence, Step};
pub use store::{HistoryFile, HistoryFileError};
