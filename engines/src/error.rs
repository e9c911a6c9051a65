//! The one error type shared by every engine.

use std::fmt;

/// Boxed underlying cause of an [`EngineError`].
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What kind of failure an [`EngineError`] reports, so callers can react without parsing text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The engine could not be opened at the given path (permissions, missing parent, lock held).
    Open,
    /// Stored data failed an integrity check: the files are not what this engine wrote.
    Corrupt,
    /// The keyspace was never created with [`crate::Engine::ensure_keyspace`].
    UnknownKeyspace,
    /// The caller passed something the engine cannot accept (bad keyspace name, bad spec).
    InvalidArgument,
    /// The engine name in a spec is not one this build knows (or its feature is off).
    UnknownEngine,
    /// A read, write or sync failed in the backend (I/O error, disk full, ...).
    Backend,
    /// The engine refused work because it is shutting down or a background flush failed.
    Unavailable,
}

impl ErrorKind {
    fn describe(self) -> &'static str {
        match self {
            ErrorKind::Open => "cannot open",
            ErrorKind::Corrupt => "data is corrupt",
            ErrorKind::UnknownKeyspace => "unknown keyspace",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::UnknownEngine => "unknown engine",
            ErrorKind::Backend => "backend failure",
            ErrorKind::Unavailable => "unavailable",
        }
    }
}

/// An engine failure. Invariant: it always names the engine (`rocksdb`, `sqlite`, `memory`,
/// `buffered(rocksdb)`, ...) and what was being done, and keeps the backend's own error as
/// its [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[error("{engine} engine: {context}: {}{}", .kind.describe(), CauseSuffix(.cause))]
pub struct EngineError {
    engine: String,
    kind: ErrorKind,
    context: String,
    #[source]
    cause: Option<Cause>,
}

/// Renders `: cause` when there is one, so messages read as one line.
struct CauseSuffix<'a>(&'a Option<Cause>);

impl fmt::Display for CauseSuffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(cause) => write!(f, ": {cause}"),
            None => Ok(()),
        }
    }
}

impl EngineError {
    /// A new error for `engine` while doing `context` (e.g. `put keyspace="data"`).
    pub fn new(engine: impl Into<String>, kind: ErrorKind, context: impl Into<String>) -> Self {
        EngineError {
            engine: engine.into(),
            kind,
            context: context.into(),
            cause: None,
        }
    }

    /// Attaches the backend's error as the cause.
    pub fn with_cause(mut self, cause: impl Into<Cause>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    /// The name of the engine that failed.
    pub fn engine(&self) -> &str {
        &self.engine
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What was being done when it failed.
    pub fn context(&self) -> &str {
        &self.context
    }
}

/// Result alias for engine operations.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_engine_context_and_cause() {
        let err = EngineError::new("sqlite", ErrorKind::Backend, "put keyspace=\"data\"")
            .with_cause(std::io::Error::other("disk full"));
        assert_eq!(
            err.to_string(),
            "sqlite engine: put keyspace=\"data\": backend failure: disk full"
        );
        assert_eq!(err.kind(), ErrorKind::Backend);
        assert!(std::error::Error::source(&err).is_some());
    }
}
