//! Pluggable local storage engines for libdynamo.
//!
//! Dynamo's local persistence is pluggable so that each store picks the engine that suits
//! its object-size profile (the paper ran BerkeleyDB for objects of tens of kilobytes and
//! MySQL for larger ones). Every engine implements the object-safe [`Engine`] trait, so a
//! node holds an `Arc<dyn Engine>` chosen at run time from a config string with
//! [`open_engine`]:
//!
//! | name | backend | persisted |
//! |---|---|---|
//! | `rocksdb` | RocksDB, one column family per keyspace | yes |
//! | `sqlite` | SQLite in WAL mode, one table per keyspace | yes |
//! | `memory` | ordered in-memory maps | no |
//! | `buffered:rocksdb`, `buffered:sqlite` | an in-memory write buffer flushed to the durable engine by a writer thread | yes, up to the unflushed buffer (see [`buffered`]) |
//!
//! Each backend sits behind a cargo feature of the same name (all on by default). Every
//! backend passes the same [`conformance`] suite.
//!
//! ```
//! use dynamo_engines::{open_engine, EngineOptions, EngineSpec};
//! let dir = tempfile::tempdir().unwrap();
//! let engine = open_engine("memory".parse().unwrap(), dir.path(), &EngineOptions::default()).unwrap();
//! engine.ensure_keyspace("data").unwrap();
//! engine.put("data", b"k", b"v").unwrap();
//! assert_eq!(engine.get("data", b"k").unwrap(), Some(b"v".to_vec()));
//! ```

#![warn(missing_docs)]

mod engine;
mod error;
#[cfg(feature = "buffered")]
mod overlay;
#[cfg(any(feature = "memory", feature = "sqlite"))]
mod scan;
mod spec;

#[cfg(feature = "buffered")]
pub mod buffered;
pub mod conformance;
#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "rocksdb")]
pub mod rocks;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use engine::{
    key_successor, prefix_successor, validate_keyspace_name, BatchOp, Direction, Durability,
    Engine, KeyRange, KvPair, ScanIter, WriteBatch, RESERVED_KEYSPACE,
};
pub use error::{Cause, EngineError, ErrorKind, Result};
pub use spec::{
    open_engine, register_engine, registered_engines, DurableKind, EngineOpener, EngineOptions,
    EngineSpec,
};

/// The name of the database file the SQLite engine keeps in its directory (defined in
/// every build, so callers can recognise a directory's engine).
pub const SQLITE_DB_FILE: &str = "dynamo.sqlite3";
