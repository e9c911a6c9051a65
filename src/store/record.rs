//! The on-disk record of one key at one replica, and the engine key it lives under.
//!
//! Engine key: the partition index (4 bytes, big-endian) then the user's key, so one
//! partition is one contiguous key range (anti-entropy and handoff scan it alone).
//!
//! Record: format byte [`RECORD_FORMAT`], a flags byte, the coordinator state (when
//! this replica has coordinated writes for the key: its epoch and last counter), the
//! reaped context (when the key was reaped before and written again: the dots that
//! are dead for ever), then the sibling versions. The coordinator state is local: it
//! is never replicated.

use crate::codec::{put_bytes, put_varint, DecodeError, Reader};
use crate::context::Context;
use crate::version::{ConflictPolicy, Siblings, Version};

/// Format byte of a stored record. A record with another byte is refused as corrupt
/// (or written by a newer build) rather than misread.
pub const RECORD_FORMAT: u8 = 1;

const FLAG_COORDINATED: u8 = 1;
/// The coordinator state carries the boot it was written in (records written before
/// boots were tracked lack it and read as boot 0, which no running store has).
const FLAG_BOOT: u8 = 2;
/// A reaped context follows the coordinator state.
const FLAG_REAPED: u8 = 4;
/// Largest encoded reaped context a record may hold (guards against corrupt lengths).
const MAX_REAPED_BYTES: u64 = 1 << 20;

/// Most siblings a record may hold when decoded (guards against corrupt counts).
const MAX_SIBLINGS: u64 = 1 << 16;

/// This replica's run of dots for a key: `counter` is the last it issued in `epoch`,
/// in the store's boot `boot`.
///
/// Invariant: it exists only while the replica has held the record continuously since
/// it opened the epoch, so every dot of the epoch was written into this record and the
/// next counter is fresh. That holds only within one boot: a crash may roll an unsynced
/// record back to an older counter that other replicas already saw, so a state from an
/// earlier boot is never continued (the store opens a new epoch instead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoordinatorState {
    /// The epoch of this replica's actor for the key.
    pub epoch: u64,
    /// The last counter issued in that epoch.
    pub counter: u64,
    /// The store boot that wrote this state (0: written before boots were recorded).
    pub boot: u64,
}

/// What one replica stores for one key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// Set once this replica has coordinated a write for the key.
    pub coordinator: Option<CoordinatorState>,
    /// The versions.
    pub siblings: Siblings,
    /// The dots of tombstones reaped from this key (and everything they superseded):
    /// dead for ever, so a version they cover is never taken in again. Kept in the
    /// record once the key is written again after a reap, else in the store's
    /// `reaped` keyspace (see [`super::VersionedStore::reap`]).
    pub reaped: Option<Context>,
    /// Not stored: the record was loaded from the `reaped` keyspace (the key holds no
    /// versions), so saving it with versions moves the reaped context into the record.
    pub in_graveyard: bool,
}

impl Record {
    /// Encodes the record (format byte first).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![RECORD_FORMAT];
        let reaped = self.reaped.as_ref().filter(|c| !c.is_empty());
        let flag = if reaped.is_some() { FLAG_REAPED } else { 0 };
        match self.coordinator {
            Some(c) => {
                out.push(FLAG_COORDINATED | FLAG_BOOT | flag);
                put_varint(&mut out, c.epoch);
                put_varint(&mut out, c.counter);
                put_varint(&mut out, c.boot);
            }
            None => out.push(flag),
        }
        if let Some(c) = reaped {
            put_bytes(&mut out, &c.encode());
        }
        put_varint(&mut out, self.siblings.len() as u64);
        for v in self.siblings.versions() {
            v.encode_into(&mut out);
        }
        out
    }

    /// Decodes a record; values longer than `max_value` are refused.
    pub fn decode(
        bytes: &[u8],
        max_value: u64,
        policy: ConflictPolicy,
    ) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, "stored record");
        let format = r.u8()?;
        if format != RECORD_FORMAT {
            return Err(r.error(format!(
                "record format byte {format}; this build reads format {RECORD_FORMAT}"
            )));
        }
        let flags = r.u8()?;
        if flags & !(FLAG_COORDINATED | FLAG_BOOT | FLAG_REAPED) != 0 {
            return Err(r.error(format!("unknown record flags {flags:#04x}")));
        }
        let coordinator = if flags & FLAG_COORDINATED != 0 {
            Some(CoordinatorState {
                epoch: r.varint()?,
                counter: r.varint()?,
                boot: if flags & FLAG_BOOT != 0 {
                    r.varint()?
                } else {
                    0
                },
            })
        } else {
            None
        };
        let reaped = if flags & FLAG_REAPED != 0 {
            let bytes = r.bytes(MAX_REAPED_BYTES, "reaped context length")?;
            Some(Context::decode(bytes).map_err(|e| r.error(format!("reaped context: {e}")))?)
        } else {
            None
        };
        let n = r.bounded(MAX_SIBLINGS, "sibling count")?;
        let mut versions: Vec<Version> = Vec::with_capacity(n.min(16));
        for _ in 0..n {
            versions.push(Version::decode_from(&mut r, max_value)?);
        }
        r.finish()?;
        Ok(Self {
            coordinator,
            siblings: Siblings::from_versions(versions, policy),
            reaped,
            in_graveyard: false,
        })
    }
}

/// The engine key of `key` in `partition`.
pub fn engine_key(partition: u32, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + key.len());
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// Splits an engine key back into (partition, user key).
pub fn split_engine_key(engine_key: &[u8]) -> Option<(u32, &[u8])> {
    let (p, key) = engine_key.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*p), key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dot::{Actor, Dot};

    #[test]
    fn records_round_trip_and_reject_other_formats() {
        let v = Version {
            dot: Dot::new(Actor::new(1, 2), 3),
            past: Context::new(),
            timestamp_ms: 9,
            value: Some(b"v".to_vec()),
            request_id: None,
        };
        let rec = Record {
            coordinator: Some(CoordinatorState {
                epoch: 2,
                counter: 3,
                boot: 4,
            }),
            siblings: Siblings::from_versions(vec![v], ConflictPolicy::Siblings),
            reaped: Some({
                let mut c = Context::new();
                c.add(Dot::new(Actor::new(5, 6), 7), 8);
                c
            }),
            in_graveyard: false,
        };
        let bytes = rec.encode();
        assert_eq!(bytes[0], RECORD_FORMAT);
        assert_eq!(
            Record::decode(&bytes, 100, ConflictPolicy::Siblings).unwrap(),
            rec
        );
        let mut future = bytes.clone();
        future[0] = 2;
        let e = Record::decode(&future, 100, ConflictPolicy::Siblings).unwrap_err();
        assert!(e.reason.contains("format byte 2"), "{e}");
        let e =
            Record::decode(&bytes[..bytes.len() - 1], 100, ConflictPolicy::Siblings).unwrap_err();
        assert!(
            e.reason.contains("end of input") || e.reason.contains("more bytes"),
            "{e}"
        );
    }

    #[test]
    fn engine_keys_sort_by_partition_first() {
        let a = engine_key(1, b"zzz");
        let b = engine_key(2, b"aaa");
        assert!(a < b);
        assert_eq!(split_engine_key(&b), Some((2, &b"aaa"[..])));
        assert_eq!(split_engine_key(b"ab"), None);
    }
}
