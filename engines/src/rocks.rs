//! `rocksdb`: RocksDB (built from source by the `rocksdb` crate), one column family per
//! keyspace. Suits small objects: an LSM tree with a write-ahead log, cheap writes, and
//! native ordered iteration, range deletes and atomic cross-family batches.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rocksdb::{
    BoundColumnFamily, DBRawIteratorWithThreadMode, Options, ReadOptions, WriteOptions, DB,
};

use crate::engine::{
    key_successor, unknown_keyspace, validate_keyspace_name, BatchOp, Direction, Durability,
    Engine, KeyRange, KvPair, ScanIter, WriteBatch,
};
use crate::error::{EngineError, ErrorKind, Result};

const NAME: &str = "rocksdb";
/// RocksDB's own column family, which always exists and is never a keyspace.
const DEFAULT_CF: &str = crate::engine::RESERVED_KEYSPACE;

/// RocksDB engine. Invariant: every keyspace is a column family of the same database, so
/// a [`WriteBatch`] across keyspaces is one atomic RocksDB write.
pub struct RocksEngine {
    db: DB,
    path: PathBuf,
    write_opts: WriteOptions,
    /// The keyspaces (column families but `default`). Its lock also serialises column
    /// family creation, so two racing `ensure_keyspace` calls both succeed.
    keyspaces: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for RocksEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksEngine")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn map_err(context: impl Into<String>, err: rocksdb::Error) -> EngineError {
    let kind = match err.kind() {
        rocksdb::ErrorKind::Corruption => ErrorKind::Corrupt,
        rocksdb::ErrorKind::InvalidArgument => ErrorKind::InvalidArgument,
        _ => ErrorKind::Backend,
    };
    EngineError::new(NAME, kind, context).with_cause(err.into_string())
}

fn lock_err() -> EngineError {
    EngineError::new(NAME, ErrorKind::Unavailable, "keyspace lock")
        .with_cause("a thread panicked while holding the keyspace lock")
}

/// The RocksDB options every [`RocksEngine`] database and column family opens with
/// (public so benchmarks can compare against the crate used directly, like for like).
pub fn db_options() -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    opts.set_max_background_jobs(2);
    opts
}

impl RocksEngine {
    /// Opens (creating if needed) the database in directory `path`, reopening every
    /// keyspace it already has. Fails with [`ErrorKind::Open`] when the path cannot be used
    /// and [`ErrorKind::Corrupt`] when its files are not a valid database.
    pub fn open(path: &Path, durability: Durability) -> Result<Self> {
        let opts = db_options();
        let context = || format!("open {}", path.display());
        // A database exists once RocksDB wrote its CURRENT file; only then list families.
        let families = if path.join("CURRENT").exists() {
            DB::list_cf(&opts, path).map_err(|e| map_err(context(), e))?
        } else {
            vec![DEFAULT_CF.to_owned()]
        };
        let db = DB::open_cf(&opts, path, &families).map_err(|e| {
            let mapped = map_err(context(), e);
            if mapped.kind() == ErrorKind::Corrupt {
                mapped
            } else {
                EngineError::new(NAME, ErrorKind::Open, context()).with_cause(mapped.to_string())
            }
        })?;
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(durability == Durability::Sync);
        let keyspaces = families.into_iter().filter(|n| n != DEFAULT_CF).collect();
        Ok(RocksEngine {
            db,
            path: path.to_owned(),
            write_opts,
            keyspaces: Mutex::new(keyspaces),
        })
    }

    fn cf(&self, op: &str, keyspace: &str) -> Result<Arc<BoundColumnFamily<'_>>> {
        if keyspace == DEFAULT_CF {
            return Err(unknown_keyspace(NAME, op, keyspace));
        }
        self.db
            .cf_handle(keyspace)
            .ok_or_else(|| unknown_keyspace(NAME, op, keyspace))
    }

    /// Read options that make RocksDB itself enforce `range`'s bounds.
    fn bounded_read_options(range: &KeyRange) -> ReadOptions {
        use std::ops::Bound;
        let mut ro = ReadOptions::default();
        match &range.start {
            Bound::Included(s) => ro.set_iterate_lower_bound(s.clone()),
            Bound::Excluded(s) => ro.set_iterate_lower_bound(key_successor(s)),
            Bound::Unbounded => {}
        }
        match &range.end {
            Bound::Excluded(e) => ro.set_iterate_upper_bound(e.clone()),
            Bound::Included(e) => ro.set_iterate_upper_bound(key_successor(e)),
            Bound::Unbounded => {}
        }
        ro
    }
}

/// A RocksDB iterator bounded by its read options.
struct RocksScan<'a> {
    iter: DBRawIteratorWithThreadMode<'a, DB>,
    direction: Direction,
    done: bool,
    keyspace: String,
}

impl Iterator for RocksScan<'_> {
    type Item = Result<KvPair>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if let Some((k, v)) = self.iter.item() {
            let pair = (k.to_vec(), v.to_vec());
            match self.direction {
                Direction::Forward => self.iter.next(),
                Direction::Reverse => self.iter.prev(),
            }
            return Some(Ok(pair));
        }
        self.done = true;
        match self.iter.status() {
            Ok(()) => None,
            Err(e) => Some(Err(map_err(
                format!("scan keyspace={:?}", self.keyspace),
                e,
            ))),
        }
    }
}

impl Engine for RocksEngine {
    fn name(&self) -> &str {
        NAME
    }

    fn ensure_keyspace(&self, keyspace: &str) -> Result<()> {
        validate_keyspace_name(NAME, keyspace)?;
        let mut known = self.keyspaces.lock().map_err(|_| lock_err())?;
        if known.contains(keyspace) {
            return Ok(());
        }
        self.db
            .create_cf(keyspace, &db_options())
            .map_err(|e| map_err(format!("create keyspace={keyspace:?}"), e))?;
        known.insert(keyspace.to_owned());
        Ok(())
    }

    fn keyspaces(&self) -> Result<Vec<String>> {
        Ok(self
            .keyspaces
            .lock()
            .map_err(|_| lock_err())?
            .iter()
            .cloned()
            .collect())
    }

    fn get(&self, keyspace: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let cf = self.cf("get", keyspace)?;
        self.db
            .get_pinned_cf(&cf, key)
            .map(|v| v.map(|p| p.to_vec()))
            .map_err(|e| map_err(format!("get keyspace={keyspace:?}"), e))
    }

    fn get_cached(&self, keyspace: &str, key: &[u8]) -> Result<Option<Option<Vec<u8>>>> {
        let cf = self.cf("get", keyspace)?;
        // Memtables and the block cache only: RocksDB answers Incomplete rather than
        // read a block from a file.
        let mut ro = ReadOptions::default();
        ro.set_read_tier(rocksdb::ReadTier::BlockCache);
        match self.db.get_pinned_cf_opt(&cf, key, &ro) {
            Ok(v) => Ok(Some(v.map(|p| p.to_vec()))),
            Err(e) if e.kind() == rocksdb::ErrorKind::Incomplete => Ok(None),
            Err(e) => Err(map_err(format!("get keyspace={keyspace:?}"), e)),
        }
    }

    fn put(&self, keyspace: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let cf = self.cf("put", keyspace)?;
        self.db
            .put_cf_opt(&cf, key, value, &self.write_opts)
            .map_err(|e| map_err(format!("put keyspace={keyspace:?}"), e))
    }

    fn delete(&self, keyspace: &str, key: &[u8]) -> Result<()> {
        let cf = self.cf("delete", keyspace)?;
        self.db
            .delete_cf_opt(&cf, key, &self.write_opts)
            .map_err(|e| map_err(format!("delete keyspace={keyspace:?}"), e))
    }

    fn write_batch(&self, batch: WriteBatch) -> Result<()> {
        let mut wb = rocksdb::WriteBatch::default();
        for op in batch.ops() {
            let cf = self.cf("write_batch", op.keyspace())?;
            match op {
                BatchOp::Put { key, value, .. } => wb.put_cf(&cf, key, value),
                BatchOp::Delete { key, .. } => wb.delete_cf(&cf, key),
            }
        }
        self.db
            .write_opt(wb, &self.write_opts)
            .map_err(|e| map_err(format!("write_batch of {} ops", batch.len()), e))
    }

    fn scan<'a>(
        &'a self,
        keyspace: &str,
        range: &KeyRange,
        direction: Direction,
    ) -> Result<ScanIter<'a>> {
        let cf = self.cf("scan", keyspace)?;
        if range.is_empty() {
            return Ok(Box::new(std::iter::empty()));
        }
        let mut iter = self
            .db
            .raw_iterator_cf_opt(&cf, Self::bounded_read_options(range));
        match direction {
            Direction::Forward => iter.seek_to_first(),
            Direction::Reverse => iter.seek_to_last(),
        }
        Ok(Box::new(RocksScan {
            iter,
            direction,
            done: false,
            keyspace: keyspace.to_owned(),
        }))
    }

    fn delete_range(&self, keyspace: &str, range: &KeyRange) -> Result<()> {
        use std::ops::Bound;
        let cf = self.cf("delete_range", keyspace)?;
        if range.is_empty() {
            return Ok(());
        }
        let context = || format!("delete_range keyspace={keyspace:?}");
        let from = match &range.start {
            Bound::Included(s) => s.clone(),
            Bound::Excluded(s) => key_successor(s),
            Bound::Unbounded => Vec::new(),
        };
        let to = match &range.end {
            Bound::Excluded(e) => e.clone(),
            Bound::Included(e) => key_successor(e),
            // RocksDB range deletes need an end: use just past the last key present now.
            Bound::Unbounded => {
                let mut it = self
                    .db
                    .raw_iterator_cf_opt(&cf, Self::bounded_read_options(range));
                it.seek_to_last();
                match it.key() {
                    Some(last) => key_successor(last),
                    None => {
                        it.status().map_err(|e| map_err(context(), e))?;
                        return Ok(());
                    }
                }
            }
        };
        if from >= to {
            return Ok(());
        }
        self.db
            .delete_range_cf_opt(&cf, from, to, &self.write_opts)
            .map_err(|e| map_err(context(), e))
    }

    fn sync(&self) -> Result<()> {
        self.db.flush_wal(true).map_err(|e| map_err("sync", e))
    }

    fn approximate_size(&self) -> Result<u64> {
        let mut total = 0;
        for name in self.keyspaces()? {
            let cf = self.cf("approximate_size", &name)?;
            for prop in [
                "rocksdb.total-sst-files-size",
                "rocksdb.cur-size-all-mem-tables",
            ] {
                total += self
                    .db
                    .property_int_value_cf(&cf, prop)
                    .map_err(|e| map_err("approximate_size", e))?
                    .unwrap_or(0);
            }
        }
        Ok(total)
    }
}
