//! The engine trait and the types it speaks: key ranges, scan direction, write batches.

use std::fmt;
use std::ops::Bound;

use crate::error::{EngineError, ErrorKind, Result};

/// An owned key/value pair, as yielded by scans.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// An ordered scan. Items come in key order (bytewise, as `memcmp`), each owned.
/// A scan is not a point-in-time snapshot unless the engine says so: a key written while
/// the scan runs may or may not be seen, but every key yielded held that value at some
/// moment during the scan.
pub type ScanIter<'a> = Box<dyn Iterator<Item = Result<KvPair>> + 'a>;

/// A range of keys with inclusive, exclusive or open bounds on either side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    /// Lower bound.
    pub start: Bound<Vec<u8>>,
    /// Upper bound.
    pub end: Bound<Vec<u8>>,
}

impl KeyRange {
    /// Every key.
    pub fn all() -> Self {
        KeyRange {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
        }
    }

    /// The keys in `start..end` (start included, end excluded).
    pub fn half_open(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        KeyRange {
            start: Bound::Included(start.into()),
            end: Bound::Excluded(end.into()),
        }
    }

    /// A range with explicit bounds.
    pub fn new(start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Self {
        KeyRange { start, end }
    }

    /// Every key that starts with `prefix` (partition-prefixed engine keys use this).
    pub fn prefix(prefix: &[u8]) -> Self {
        let end = match prefix_successor(prefix) {
            Some(next) => Bound::Excluded(next),
            None => Bound::Unbounded,
        };
        KeyRange {
            start: Bound::Included(prefix.to_vec()),
            end,
        }
    }

    /// Whether `key` is inside the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.above_start(key) && self.below_end(key)
    }

    /// Whether `key` satisfies the lower bound.
    pub fn above_start(&self, key: &[u8]) -> bool {
        match &self.start {
            Bound::Included(s) => key >= s.as_slice(),
            Bound::Excluded(s) => key > s.as_slice(),
            Bound::Unbounded => true,
        }
    }

    /// Whether `key` satisfies the upper bound.
    pub fn below_end(&self, key: &[u8]) -> bool {
        match &self.end {
            Bound::Included(e) => key <= e.as_slice(),
            Bound::Excluded(e) => key < e.as_slice(),
            Bound::Unbounded => true,
        }
    }

    /// Whether no key can be in the range (e.g. start after end).
    pub fn is_empty(&self) -> bool {
        match (&self.start, &self.end) {
            (Bound::Included(s), Bound::Included(e)) => s > e,
            (Bound::Included(s), Bound::Excluded(e)) | (Bound::Excluded(s), Bound::Included(e)) => {
                s >= e
            }
            // (s, e) exclusive on both ends is empty when e is s or s's immediate successor.
            (Bound::Excluded(s), Bound::Excluded(e)) => {
                s >= e || (e.len() == s.len() + 1 && e.starts_with(s) && e[s.len()] == 0)
            }
            _ => false,
        }
    }

    /// The range as borrowed bounds, for `BTreeMap::range`.
    pub fn as_bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (as_ref_bound(&self.start), as_ref_bound(&self.end))
    }
}

fn as_ref_bound(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The smallest key greater than every key starting with `prefix`, if one exists
/// (`None` when the prefix is empty or all 0xFF bytes).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut next = prefix.to_vec();
    while let Some(last) = next.pop() {
        if last < 0xFF {
            next.push(last + 1);
            return Some(next);
        }
    }
    None
}

/// The smallest key strictly greater than `key` (append a zero byte).
pub fn key_successor(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

/// Scan order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Ascending key order.
    Forward,
    /// Descending key order.
    Reverse,
}

/// One operation of a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    /// Set `key` to `value` in `keyspace`.
    Put {
        /// Target keyspace.
        keyspace: String,
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// Remove `key` from `keyspace` (no error if absent).
    Delete {
        /// Target keyspace.
        keyspace: String,
        /// Key.
        key: Vec<u8>,
    },
}

impl BatchOp {
    /// `(keyspace, key, value)`; the value is `None` for a delete.
    pub fn into_parts(self) -> (String, Vec<u8>, Option<Vec<u8>>) {
        match self {
            BatchOp::Put {
                keyspace,
                key,
                value,
            } => (keyspace, key, Some(value)),
            BatchOp::Delete { keyspace, key } => (keyspace, key, None),
        }
    }

    /// The keyspace this operation targets.
    pub fn keyspace(&self) -> &str {
        match self {
            BatchOp::Put { keyspace, .. } | BatchOp::Delete { keyspace, .. } => keyspace,
        }
    }
}

/// Puts and deletes, possibly across keyspaces, applied all-or-nothing by
/// [`Engine::write_batch`]: after a crash either every operation is present or none is,
/// and readers never observe part of a batch. Later operations on the same key win.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, keyspace: &str, key: &[u8], value: &[u8]) -> &mut Self {
        self.ops.push(BatchOp::Put {
            keyspace: keyspace.to_owned(),
            key: key.to_vec(),
            value: value.to_vec(),
        });
        self
    }

    /// Adds a delete.
    pub fn delete(&mut self, keyspace: &str, key: &[u8]) -> &mut Self {
        self.ops.push(BatchOp::Delete {
            keyspace: keyspace.to_owned(),
            key: key.to_vec(),
        });
        self
    }

    /// The operations in order.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    /// Consumes the batch into its operations.
    pub fn into_ops(self) -> Vec<BatchOp> {
        self.ops
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch has no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// When a durable engine makes a write durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// fsync every write and batch before it returns: survives power loss, costs a disk
    /// flush per write.
    Sync,
    /// Write to the OS (RocksDB WAL, SQLite WAL) and let it flush in its own time: survives a
    /// crash of the process, but a machine crash or power loss may lose the last writes not
    /// yet flushed by the OS (typically seconds). This is the default, as in Riak and
    /// Cassandra: Dynamo's durability comes from writing W replicas on distinct machines.
    #[default]
    Os,
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Durability::Sync => "sync",
            Durability::Os => "os",
        })
    }
}

impl std::str::FromStr for Durability {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sync" => Ok(Durability::Sync),
            "os" => Ok(Durability::Os),
            other => Err(EngineError::new(
                "config",
                ErrorKind::InvalidArgument,
                format!("durability {other:?}"),
            )
            .with_cause("expected \"sync\" (fsync every write) or \"os\" (leave it to the OS)")),
        }
    }
}

/// A local persistence engine. Object-safe so a node holds `Arc<dyn Engine>` chosen at run
/// time; `Send + Sync` so any thread may call it. Calls block (they may do disk I/O): async
/// code calls them from a blocking pool, never from an event loop.
///
/// One engine instance hosts several named keyspaces (RocksDB column families, SQLite
/// tables, separate maps), isolated from each other. A keyspace exists once
/// [`ensure_keyspace`](Engine::ensure_keyspace) created it, and persists with the engine.
/// Keys are ordered bytewise; keys and values are arbitrary bytes, possibly empty.
pub trait Engine: Send + Sync {
    /// The engine's name, e.g. `rocksdb` or `buffered(sqlite)`; errors carry it too.
    fn name(&self) -> &str;

    /// Creates `keyspace` if it does not exist. Names are 1 to 64 ASCII letters, digits,
    /// `_` or `-`.
    fn ensure_keyspace(&self, keyspace: &str) -> Result<()>;

    /// The keyspaces that exist, in no particular order.
    fn keyspaces(&self) -> Result<Vec<String>>;

    /// The value stored under `key`, if any.
    fn get(&self, keyspace: &str, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// [`get`](Engine::get), but only if it can answer without disk I/O (from memory:
    /// a memtable, a block cache, a write buffer): `Ok(Some(answer))`, or `Ok(None)`
    /// when it would have to read the disk (then call `get` from a blocking pool). An
    /// event loop may call it. The default never answers.
    fn get_cached(&self, keyspace: &str, key: &[u8]) -> Result<Option<Option<Vec<u8>>>> {
        let _ = (keyspace, key);
        Ok(None)
    }

    /// Stores `value` under `key`, replacing any previous value.
    fn put(&self, keyspace: &str, key: &[u8], value: &[u8]) -> Result<()>;

    /// Removes `key`; removing an absent key is not an error.
    fn delete(&self, keyspace: &str, key: &[u8]) -> Result<()>;

    /// Applies every operation of `batch` atomically (see [`WriteBatch`]).
    fn write_batch(&self, batch: WriteBatch) -> Result<()>;

    /// Iterates the keys of `range` in `direction` order.
    fn scan<'a>(
        &'a self,
        keyspace: &str,
        range: &KeyRange,
        direction: Direction,
    ) -> Result<ScanIter<'a>>;

    /// Removes every key in `range`.
    fn delete_range(&self, keyspace: &str, range: &KeyRange) -> Result<()>;

    /// Makes every write that returned before this call durable (fsync), whatever the
    /// engine's [`Durability`]. For the buffered engine it first flushes the buffer.
    fn sync(&self) -> Result<()>;

    /// Approximate bytes used by the data (on disk for durable engines, in memory otherwise).
    fn approximate_size(&self) -> Result<u64>;
}

/// A keyspace name no engine accepts: RocksDB's own column family is called this, and
/// reserving it everywhere keeps every engine accepting the same names.
pub const RESERVED_KEYSPACE: &str = "default";

/// Checks a keyspace name: 1 to 64 ASCII letters, digits, `_` or `-` (safe as a RocksDB
/// column family, an SQLite table suffix and a file name), and not [`RESERVED_KEYSPACE`].
pub fn validate_keyspace_name(engine: &str, keyspace: &str) -> Result<()> {
    if keyspace == RESERVED_KEYSPACE {
        return Err(EngineError::new(
            engine,
            ErrorKind::InvalidArgument,
            format!("keyspace name {keyspace:?}"),
        )
        .with_cause("the name is reserved (RocksDB's own column family)"));
    }
    let ok = !keyspace.is_empty()
        && keyspace.len() <= 64
        && keyspace
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(EngineError::new(
            engine,
            ErrorKind::InvalidArgument,
            format!("keyspace name {keyspace:?}"),
        )
        .with_cause("use 1 to 64 ASCII letters, digits, '_' or '-'"))
    }
}

/// The error for an operation on a keyspace that was never created.
pub(crate) fn unknown_keyspace(engine: &str, op: &str, keyspace: &str) -> EngineError {
    EngineError::new(
        engine,
        ErrorKind::UnknownKeyspace,
        format!("{op} keyspace={keyspace:?}"),
    )
    .with_cause("create it first with ensure_keyspace")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_range_covers_exactly_the_prefix() {
        let r = KeyRange::prefix(&[1, 0xFF]);
        assert!(r.contains(&[1, 0xFF]));
        assert!(r.contains(&[1, 0xFF, 0xFF, 7]));
        assert!(!r.contains(&[2]));
        assert!(!r.contains(&[1, 0xFE, 0xFF]));
        assert_eq!(KeyRange::prefix(&[0xFF]).end, Bound::Unbounded);
    }

    #[test]
    fn emptiness_of_ranges() {
        assert!(KeyRange::half_open(b"b".to_vec(), b"b".to_vec()).is_empty());
        assert!(KeyRange::half_open(b"c".to_vec(), b"b".to_vec()).is_empty());
        assert!(!KeyRange::half_open(b"a".to_vec(), b"b".to_vec()).is_empty());
        let adjacent = KeyRange::new(
            Bound::Excluded(b"a".to_vec()),
            Bound::Excluded(b"a\0".to_vec()),
        );
        assert!(adjacent.is_empty());
        assert!(!KeyRange::all().is_empty());
    }

    #[test]
    fn keyspace_names_are_checked() {
        assert!(validate_keyspace_name("memory", "data_1-x").is_ok());
        for bad in ["", "a b", "x;drop", "default", &"k".repeat(65)] {
            let err = validate_keyspace_name("memory", bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        }
    }

    #[test]
    fn durability_parses_and_rejects() {
        assert_eq!("sync".parse::<Durability>().unwrap(), Durability::Sync);
        assert_eq!("os".parse::<Durability>().unwrap(), Durability::Os);
        let err = "always".parse::<Durability>().unwrap_err();
        assert!(err.to_string().contains("\"always\""), "{err}");
    }
}
