//! Cluster membership (paper section 4.8): a history of administrator changes that every
//! node replays to the same ring ([`history`]). Gossip, admin actions and ownership
//! transfer build on it.

pub mod history;

pub use history::{Change, ChangeId, ChangeKind, History, HistoryError, HistoryOrder, Replay};
