//! Cluster membership (paper section 4.8): a history of administrator changes that every
//! node replays to the same ring ([`history`]), kept on disk by [`store`]. Gossip, admin
//! actions and ownership transfer build on it.

pub mod history;
pub mod store;

pub use history::{Change, ChangeId, ChangeKind, History, HistoryError, HistoryOrder, Replay};
pub use store::{HistoryFile, HistoryFileError};
