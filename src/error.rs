//! The error a client request can end in, shared by the coordinator, the RPC layer and
//! [`crate::client::Client`]. Its `kind` travels on the wire (`Failure.Kind` in the
//! schema), its message is complete on its own: it names the store, the key, the nodes
//! and the numbers involved.

use std::fmt;

/// What kind of failure a request met; lets callers decide whether to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// A bug or an engine failure on a node.
    Internal,
    /// The request itself is wrong (empty or oversize key or value, bad R/W, bad
    /// argument): retrying will not help.
    BadRequest,
    /// The store is not hosted by the cluster.
    UnknownStore,
    /// The context token is malformed or belongs to another key.
    BadContext,
    /// Fewer than R (get) or W (put) replicas answered.
    Quorum,
    /// No node could serve the request (unreachable, shutting down).
    Unavailable,
    /// A node did not answer in time, or the request's deadline passed on the way (a
    /// node that finds it passed drops the work): a write may or may not have been
    /// applied; retrying it (the client keeps its request id) is safe.
    Timeout,
    /// The key's record would grow past its size limit: read the key and write back
    /// with its context to resolve its siblings.
    TooLarge,
    /// A peer sent something that does not follow the protocol.
    Protocol,
    /// The node is too busy to start the request before its deadline (its in-flight
    /// limit or engine queue is full) and refused it at once, untouched: try another
    /// coordinator after a short backoff. Never a sign that the node is down.
    Overloaded,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Internal => "internal error",
            ErrorKind::BadRequest => "bad request",
            ErrorKind::UnknownStore => "unknown store",
            ErrorKind::BadContext => "bad context",
            ErrorKind::Quorum => "quorum not reached",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::TooLarge => "too large",
            ErrorKind::Protocol => "protocol error",
            ErrorKind::Overloaded => "overloaded",
        })
    }
}

/// A failed request. Invariant: `message` is non-empty and self-explanatory.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DynamoError {
    /// The category, for programs.
    pub kind: ErrorKind,
    /// The explanation, for people.
    pub message: String,
}

impl DynamoError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The error for a failed call to the node at `address` (timeouts, refused
    /// connections, broken connections).
    pub fn unreachable(address: &str, what: impl fmt::Display) -> Self {
        Self::new(
            ErrorKind::Unavailable,
            format!("node {address} is unreachable: {what}"),
        )
    }
}

impl From<crate::store::StoreError> for DynamoError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError as S;
        let kind = match &e {
            S::UnknownStore { .. } => ErrorKind::UnknownStore,
            S::EmptyKey { .. } | S::KeyTooLarge { .. } | S::ValueTooLarge { .. } => {
                ErrorKind::BadRequest
            }
            S::RecordTooLarge { .. } => ErrorKind::TooLarge,
            S::BadContext { .. } => ErrorKind::BadContext,
            S::BadVersions { .. } => ErrorKind::Protocol,
            _ => ErrorKind::Internal,
        };
        Self::new(kind, e.to_string())
    }
}

/// The text of a caught panic's payload (`&str` or `String` panics; a fixed text
/// otherwise).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".into()
    }
}

/// Shorthand for results of client requests.
pub type Result<T, E = DynamoError> = std::result::Result<T, E>;
