//! Hinted handoff records. A stand-in that accepts a write for a down owner merges the
//! versions into its own store (so reads through it see them) and records a hint
//! `(owner, key)` in the store's engine, keyspace `hints`. The handoff loop sends the
//! key's versions to the owner once it answers and removes the hint when acknowledged.
//!
//! Invariant: a hint is only removed if no write re-recorded it since the handoff read
//! the versions (each record carries a random nonce, compared under a lock), so a write
//! that lands during a handoff is never left undelivered.

use std::collections::BTreeMap;
use std::sync::Mutex;

use dynamo_engines::{Direction, KeyRange};

use crate::store::{StoreError, VersionedStore};

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

/// Serialises hint recording against hint removal.
#[derive(Debug, Default)]
pub struct HintLog {
    lock: Mutex<()>,
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

impl HintLog {
    /// Creates the hints keyspace in `store`'s engine.
    pub fn prepare(store: &VersionedStore) -> Result<(), StoreError> {
        store
            .engine()
            .ensure_keyspace(HINTS_KEYSPACE)
            .map_err(engine_err(store, "creating the hints keyspace"))
    }

    /// Records that `key`'s versions in `store` are owed to `owner`.
    pub fn record(
        &self,
        store: &VersionedStore,
        owner: &str,
        key: &[u8],
    ) -> Result<(), StoreError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let nonce: u64 = rand::random();
        store
            .engine()
            .put(HINTS_KEYSPACE, &hint_key(owner, key), &nonce.to_be_bytes())
            .map_err(engine_err(store, "recording a hint"))
    }

    /// Every hint in `store`, in (owner, key) order.
    pub fn list(store: &VersionedStore) -> Result<Vec<Hint>, StoreError> {
        let mut out = Vec::new();
        let iter = store
            .engine()
            .scan(HINTS_KEYSPACE, &KeyRange::all(), Direction::Forward)
            .map_err(engine_err(store, "listing hints"))?;
        for item in iter {
            let (k, v) = item.map_err(engine_err(store, "listing hints"))?;
            let Some(split) = k.iter().position(|&b| b == 0) else {
                continue;
            };
            let Ok(owner) = std::str::from_utf8(&k[..split]) else {
                continue;
            };
            let nonce = <[u8; 8]>::try_from(v.as_slice()).map_or(0, u64::from_be_bytes);
            out.push(Hint {
                owner: owner.to_owned(),
                key: k[split + 1..].to_vec(),
                nonce,
            });
        }
        Ok(out)
    }

    /// Hints per owner in `store`.
    pub fn backlog(store: &VersionedStore) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut counts = BTreeMap::new();
        for h in Self::list(store)? {
            *counts.entry(h.owner).or_insert(0) += 1;
        }
        Ok(counts)
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
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let k = hint_key(&hint.owner, &hint.key);
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
        Ok(true)
    }
}
