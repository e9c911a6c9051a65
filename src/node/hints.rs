//! Hinted handoff records. A stand-in that accepts a write for a down owner merges the
//! versions into its own store (so reads through it see them) and records a hint
//! `(owner, key)` in the store's engine, keyspace `hints`, in the same atomic batch as
//! the versions. The handoff loop sends the key's versions to the owner once it answers
//! and removes the hint when the owner acknowledged them durably.
//!
//! Hints are keyed `owner ‖ 0 ‖ key`, so each owner's hints are one key range: the
//! handoff loop reads only the ranges of owners that are up (hints for a down owner are
//! never scanned, so they cannot hold up anyone else's). How many hints each owner has is
//! counted in memory (one scan when the node starts), so status never scans.
//!
//! Invariant: a hint is only removed if no write re-recorded it since the handoff read
//! the versions (each record carries a random nonce, compared under the key's lock), so
//! a write that lands during a handoff is never left undelivered.

use std::collections::BTreeMap;
use std::sync::Mutex;

use dynamo_engines::{Direction, KeyRange, WriteBatch};

use crate::context::Context;
use crate::store::{StoreError, VersionedStore, WriteResult};
use crate::version::{Siblings, Version};

/// The keyspace holding hints, in each store's engine.
pub const HINTS_KEYSPACE: &str = "hints";

/// One pending hint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    /// The intended owner.
    pub owner: String,
    /// The key (in the store the hint was read from).
    pub key: Vec<u8>,
    /// Identifies this recording of the hint.
    pub nonce: u64,
}

/// The node's hints: per (store, owner), how many keys are owed. Invariant: the counts
/// equal the hints in the engines (every recording and removal goes through here).
#[derive(Debug, Default)]
pub struct HintLog {
    counts: Mutex<BTreeMap<(String, String), u64>>,
}

// Owner names are ring member names (no NUL byte), so `owner ‖ 0 ‖ key` is unambiguous.
fn hint_key(owner: &str, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(owner.len() + 1 + key.len());
    k.extend_from_slice(owner.as_bytes());
    k.push(0);
    k.extend_from_slice(key);
    k
}

fn engine_err(
    store: &VersionedStore,
    op: &'static str,
) -> impl FnOnce(dynamo_engines::EngineError) -> StoreError {
    let store = store.name().to_owned();
    move |source| StoreError::Engine { store, op, source }
}

/// Adds the hint `(owner, key)` with a fresh nonce to `batch`; true if the key had no
/// hint for that owner before (the count grows).
fn add_hint(
    store: &VersionedStore,
    owner: &str,
    key: &[u8],
    batch: &mut WriteBatch,
) -> Result<bool, StoreError> {
    let k = hint_key(owner, key);
    let existed = store
        .engine()
        .get(HINTS_KEYSPACE, &k)
        .map_err(engine_err(store, "reading a hint"))?
        .is_some();
    let nonce: u64 = rand::random();
    batch.put(HINTS_KEYSPACE, &k, &nonce.to_be_bytes());
    Ok(!existed)
}

impl HintLog {
    /// Creates the hints keyspace in `store`'s engine and counts the hints it holds.
    pub fn prepare(&self, store: &VersionedStore) -> Result<(), StoreError> {
        store
            .engine()
            .ensure_keyspace(HINTS_KEYSPACE)
            .map_err(engine_err(store, "creating the hints keyspace"))?;
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let iter = store
            .engine()
            .scan(HINTS_KEYSPACE, &KeyRange::all(), Direction::Forward)
            .map_err(engine_err(store, "counting hints"))?;
        for item in iter {
            let (k, _) = item.map_err(engine_err(store, "counting hints"))?;
            if let Some(owner) = split_owner(&k) {
                *counts.entry(owner.to_owned()).or_insert(0) += 1;
            }
        }
        let mut all = self.lock();
        for (owner, n) in counts {
            all.insert((store.name().to_owned(), owner), n);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), u64>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `n` (±1) to the count of `owner`'s hints in `store`.
    fn count(&self, store: &VersionedStore, owner: &str, n: i64) {
        let mut all = self.lock();
        let c = all
            .entry((store.name().to_owned(), owner.to_owned()))
            .or_insert(0);
        *c = c.saturating_add_signed(n);
    }

    /// Adds the hint to `batch` and counts it if it is new. Runs under the key's lock
    /// (as an attachment of the record's batch), so [`HintLog::clear`] of the same key
    /// cannot slip between counting and writing.
    fn attach_hint(
        &self,
        store: &VersionedStore,
        owner: &str,
        key: &[u8],
        batch: &mut WriteBatch,
        new: &mut bool,
    ) -> Result<(), StoreError> {
        *new = add_hint(store, owner, key, batch)?;
        if *new {
            self.count(store, owner, 1);
        }
        Ok(())
    }

    /// Takes back the count of a new hint whose batch was not written.
    fn uncount_failed<T>(
        &self,
        store: &VersionedStore,
        owner: Option<&str>,
        new: bool,
        result: &Result<T, StoreError>,
    ) {
        if let (Some(owner), true, Err(_)) = (owner, new, result) {
            self.count(store, owner, -1);
        }
    }

    /// Merges versions from a peer; with `hint_for` the versions and the hint for that
    /// owner land in one atomic batch.
    pub fn merge(
        &self,
        store: &VersionedStore,
        key: &[u8],
        versions: Vec<Version>,
        hint_for: Option<&str>,
    ) -> Result<(Siblings, bool), StoreError> {
        self.merge_with_reaped(store, key, versions, None, hint_for)
    }

    /// [`HintLog::merge`] with a reaped context from the peer (see
    /// [`VersionedStore::merge_remote_full`]).
    pub fn merge_with_reaped(
        &self,
        store: &VersionedStore,
        key: &[u8],
        versions: Vec<Version>,
        reaped: Option<&Context>,
        hint_for: Option<&str>,
    ) -> Result<(Siblings, bool), StoreError> {
        let Some(owner) = hint_for else {
            return store.merge_remote_full(key, versions, reaped, &mut |_| Ok(()));
        };
        let mut new = false;
        let out = store.merge_remote_full(key, versions, reaped, &mut |b| {
            self.attach_hint(store, owner, key, b, &mut new)
        });
        self.uncount_failed(store, Some(owner), new, &out);
        out
    }

    /// A coordinated put on this replica (see [`VersionedStore::put_with`]); with
    /// `hint_for` the version and the hint land in one atomic batch.
    pub fn put(
        &self,
        store: &VersionedStore,
        key: &[u8],
        value: Option<&[u8]>,
        context: Option<&Context>,
        request_id: Option<u64>,
        hint_for: Option<&str>,
    ) -> Result<WriteResult, StoreError> {
        let mut new = false;
        let out = store.put_with(key, value, context, request_id, &mut |b| match hint_for {
            Some(owner) => self.attach_hint(store, owner, key, b, &mut new),
            None => Ok(()),
        });
        self.uncount_failed(store, hint_for, new, &out);
        out
    }

    /// Up to `limit` hints for `owner` in `store` for keys after `after` (from the
    /// first when empty), in key order. Reads only that owner's range.
    pub fn list_for(
        store: &VersionedStore,
        owner: &str,
        after: &[u8],
        limit: usize,
    ) -> Result<Vec<Hint>, StoreError> {
        let mut out = Vec::new();
        let prefix = hint_key(owner, b"");
        let range = if after.is_empty() {
            KeyRange::prefix(&prefix)
        } else {
            let end = match dynamo_engines::prefix_successor(&prefix) {
                Some(e) => std::ops::Bound::Excluded(e),
                None => std::ops::Bound::Unbounded,
            };
            KeyRange::new(std::ops::Bound::Excluded(hint_key(owner, after)), end)
        };
        let iter = store
            .engine()
            .scan(HINTS_KEYSPACE, &range, Direction::Forward)
            .map_err(engine_err(store, "listing hints"))?;
        for item in iter.take(limit) {
            let (k, v) = item.map_err(engine_err(store, "listing hints"))?;
            let nonce = <[u8; 8]>::try_from(v.as_slice()).map_or(0, u64::from_be_bytes);
            out.push(Hint {
                owner: owner.to_owned(),
                key: k[owner.len() + 1..].to_vec(),
                nonce,
            });
        }
        Ok(out)
    }

    /// Owners that `store` holds hints for, with their counts (no engine access).
    pub fn backlog(&self, store: &str) -> BTreeMap<String, u64> {
        self.lock()
            .iter()
            .filter(|((s, _), n)| s == store && **n > 0)
            .map(|((_, owner), n)| (owner.clone(), *n))
            .collect()
    }

    /// Is any hint for `key` still pending (for any of `owners`)?
    pub fn pending_for_key(
        store: &VersionedStore,
        owners: &[String],
        key: &[u8],
    ) -> Result<bool, StoreError> {
        for o in owners {
            if store
                .engine()
                .get(HINTS_KEYSPACE, &hint_key(o, key))
                .map_err(engine_err(store, "reading a hint"))?
                .is_some()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Removes `hint` if it was not recorded again since it was listed. Returns true
    /// if removed.
    pub fn clear(&self, store: &VersionedStore, hint: &Hint) -> Result<bool, StoreError> {
        let k = hint_key(&hint.owner, &hint.key);
        let removed = store.with_key_lock(&hint.key, || {
            let current = store
                .engine()
                .get(HINTS_KEYSPACE, &k)
                .map_err(engine_err(store, "reading a hint"))?;
            if current.as_deref() != Some(&hint.nonce.to_be_bytes()[..]) {
                return Ok(false);
            }
            store
                .engine()
                .delete(HINTS_KEYSPACE, &k)
                .map_err(engine_err(store, "removing a hint"))?;
            Ok::<_, StoreError>(true)
        })?;
        if removed {
            self.count(store, &hint.owner, -1);
        }
        Ok(removed)
    }
}

fn split_owner(k: &[u8]) -> Option<&str> {
    let split = k.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&k[..split]).ok()
}
