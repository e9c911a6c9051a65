//! `memory`: ordered in-memory maps, nothing persisted. For tests and caches.

use std::collections::{BTreeMap, HashMap};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::engine::{
    unknown_keyspace, validate_keyspace_name, BatchOp, Direction, Engine, KeyRange, KvPair,
    ScanIter, WriteBatch,
};
use crate::error::{EngineError, ErrorKind, Result};
use crate::scan::ChunkedScan;

const NAME: &str = "memory";
const SCAN_PAGE: usize = 256;

type Keyspace = BTreeMap<Vec<u8>, Vec<u8>>;

/// In-memory engine: one `BTreeMap` per keyspace behind one lock, so a batch across
/// keyspaces is atomic for readers. Everything is lost when it is dropped.
#[derive(Debug, Default)]
pub struct MemoryEngine {
    keyspaces: RwLock<HashMap<String, Keyspace>>,
}

impl MemoryEngine {
    /// An empty engine with no keyspaces.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> Result<RwLockReadGuard<'_, HashMap<String, Keyspace>>> {
        self.keyspaces.read().map_err(|_| poisoned())
    }

    fn write(&self) -> Result<RwLockWriteGuard<'_, HashMap<String, Keyspace>>> {
        self.keyspaces.write().map_err(|_| poisoned())
    }
}

fn poisoned() -> EngineError {
    EngineError::new(NAME, ErrorKind::Unavailable, "lock")
        .with_cause("a thread panicked while holding the engine lock")
}

fn keyspace_mut<'m>(
    maps: &'m mut HashMap<String, Keyspace>,
    op: &str,
    keyspace: &str,
) -> Result<&'m mut Keyspace> {
    maps.get_mut(keyspace)
        .ok_or_else(|| unknown_keyspace(NAME, op, keyspace))
}

impl Engine for MemoryEngine {
    fn name(&self) -> &str {
        NAME
    }

    fn ensure_keyspace(&self, keyspace: &str) -> Result<()> {
        validate_keyspace_name(NAME, keyspace)?;
        self.write()?.entry(keyspace.to_owned()).or_default();
        Ok(())
    }

    fn keyspaces(&self) -> Result<Vec<String>> {
        Ok(self.read()?.keys().cloned().collect())
    }

    fn get(&self, keyspace: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let maps = self.read()?;
        let map = maps
            .get(keyspace)
            .ok_or_else(|| unknown_keyspace(NAME, "get", keyspace))?;
        Ok(map.get(key).cloned())
    }

    fn get_cached(&self, keyspace: &str, key: &[u8]) -> Result<Option<Option<Vec<u8>>>> {
        // Everything is in memory.
        self.get(keyspace, key).map(Some)
    }

    fn put(&self, keyspace: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let mut maps = self.write()?;
        keyspace_mut(&mut maps, "put", keyspace)?.insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&self, keyspace: &str, key: &[u8]) -> Result<()> {
        let mut maps = self.write()?;
        keyspace_mut(&mut maps, "delete", keyspace)?.remove(key);
        Ok(())
    }

    fn write_batch(&self, batch: WriteBatch) -> Result<()> {
        let mut maps = self.write()?;
        // Check every keyspace first so a bad batch changes nothing.
        for op in batch.ops() {
            if !maps.contains_key(op.keyspace()) {
                return Err(unknown_keyspace(NAME, "write_batch", op.keyspace()));
            }
        }
        for op in batch.into_ops() {
            match op {
                BatchOp::Put {
                    keyspace,
                    key,
                    value,
                } => {
                    keyspace_mut(&mut maps, "write_batch", &keyspace)?.insert(key, value);
                }
                BatchOp::Delete { keyspace, key } => {
                    keyspace_mut(&mut maps, "write_batch", &keyspace)?.remove(&key);
                }
            }
        }
        Ok(())
    }

    fn scan<'a>(
        &'a self,
        keyspace: &str,
        range: &KeyRange,
        direction: Direction,
    ) -> Result<ScanIter<'a>> {
        if !self.read()?.contains_key(keyspace) {
            return Err(unknown_keyspace(NAME, "scan", keyspace));
        }
        let keyspace = keyspace.to_owned();
        let fetch = move |r: &KeyRange, d: Direction, limit: usize| -> Result<Vec<KvPair>> {
            let maps = self.read()?;
            let map = maps
                .get(&keyspace)
                .ok_or_else(|| unknown_keyspace(NAME, "scan", &keyspace))?;
            let iter = map.range::<[u8], _>(r.as_bounds());
            let clone = |(k, v): (&Vec<u8>, &Vec<u8>)| (k.clone(), v.clone());
            Ok(match d {
                Direction::Forward => iter.take(limit).map(clone).collect(),
                Direction::Reverse => iter.rev().take(limit).map(clone).collect(),
            })
        };
        Ok(Box::new(ChunkedScan::new(
            range.clone(),
            direction,
            SCAN_PAGE,
            fetch,
        )))
    }

    fn delete_range(&self, keyspace: &str, range: &KeyRange) -> Result<()> {
        let mut maps = self.write()?;
        let map = keyspace_mut(&mut maps, "delete_range", keyspace)?;
        if range.is_empty() {
            return Ok(());
        }
        let doomed: Vec<Vec<u8>> = map
            .range::<[u8], _>(range.as_bounds())
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            map.remove(&k);
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn approximate_size(&self) -> Result<u64> {
        let maps = self.read()?;
        Ok(maps
            .values()
            .flat_map(|m| m.iter())
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum())
    }
}
