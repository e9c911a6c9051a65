//! The versioned store: one replica's copy of one named store, over an [`Engine`].
//!
//! Per (store, key) it keeps the sibling [`Version`]s (values or tombstones, each with
//! its dot and causal past) in one record under an engine key prefixed by the key's
//! partition. It is the node-local half of Dynamo's versioning:
//!
//! - [`VersionedStore::get`] returns the siblings and a context covering exactly them.
//! - [`VersionedStore::put`] writes a version with a fresh dot of this replica (the
//!   coordinator) whose past is the caller's context; it drops exactly the siblings
//!   that context covers and returns a context covering only what the caller had seen
//!   plus the new version (and versions already superseded by surviving siblings).
//!   Under `siblings`, a put without a context on a key with versions makes a sibling.
//! - [`VersionedStore::merge_remote`] folds in versions from other replicas
//!   (replication, handoff, read repair, anti-entropy); it is idempotent, commutative
//!   and order-independent.
//! - [`VersionedStore::reap`] removes a key whose tombstones anti-entropy has proven
//!   settled (see [`reap`]); the reaped dots are remembered (the `reaped` keyspace, or
//!   the record once the key is written again), and no merge ever takes a version they
//!   cover back in, so a reaped key never comes back.
//! - Every change of a record also updates, in the same atomic batch, the key's state
//!   hash in the `aae` keyspace and its entry in the `tombstones` keyspace, and then
//!   the partition's anti-entropy [`tree`].
//!
//! The actor that issues dots is this store's *incarnation* (random, created with the
//! data and kept in it) plus a per-key *epoch* (see [`crate::dot`]). Invariant: no dot
//! is ever issued twice, even after the key is reaped, moves away and back, or a client
//! sends a context claiming more than this replica issued.
//!
//! Bad input (oversize key or value, malformed context, a context issued for another
//! key) is refused with a [`StoreError`] before anything is written.

pub mod group_commit;
pub mod reap;
pub mod record;
pub mod registry;
pub mod tree;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use dynamo_engines::{Engine, EngineError, KeyRange, WriteBatch};
use thiserror::Error;

use crate::codec::DecodeError;
use crate::context::{Context, ContextError};
use crate::dot::{Actor, Dot};
use crate::ring::{key_fingerprint, key_position, partition_of, validate_partition_count};
use crate::vclock::DEFAULT_PRUNE_THRESHOLD;
use crate::version::{ConflictPolicy, Siblings, Version};

/// A key and its anti-entropy state hash (see [`tree::state_hash`]).
pub type KeyHash = (Vec<u8>, u64);

/// A key, every version a replica holds of it, and its reaped context there: what
/// anti-entropy exchanges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyState {
    /// The key.
    pub key: Vec<u8>,
    /// Its versions.
    pub versions: Vec<Version>,
    /// The dots reaped from it (versions they cover are dead).
    pub reaped: Option<Context>,
}

impl KeyState {
    /// About how many bytes the state takes on the wire: its key and values, and a
    /// generous allowance per version for its causal past (what replies are capped by).
    pub fn approx_bytes(&self) -> usize {
        let values: usize = self
            .versions
            .iter()
            .map(|v| v.value.as_ref().map_or(0, Vec::len))
            .sum();
        self.key
            .len()
            .saturating_add(values)
            .saturating_add(256usize.saturating_mul(self.versions.len() + 1))
    }
}

/// Splits `states` into runs of at most `budget` approximate bytes (a state larger than
/// the budget goes alone), in order.
pub fn chunk_by_bytes(states: Vec<KeyState>, budget: usize) -> Vec<Vec<KeyState>> {
    let mut out: Vec<Vec<KeyState>> = Vec::new();
    let mut bytes = 0usize;
    for s in states {
        let b = s.approx_bytes();
        match out.last_mut() {
            Some(run) if !run.is_empty() && bytes.saturating_add(b) <= budget => {
                bytes += b;
                run.push(s);
            }
            _ => {
                bytes = b;
                out.push(vec![s]);
            }
        }
    }
    out
}
use record::{engine_key, split_engine_key, CoordinatorState, Record};
use tree::HashTree;

/// Keyspace of the per-key anti-entropy state hashes: (partition, segment, key) → hash.
pub const AAE_KEYSPACE: &str = "aae";
/// Keyspace of keys whose versions are all tombstones: (partition, key) → the newest
/// tombstone's timestamp (what reaping looks at, without scanning the records).
pub const TOMBSTONES_KEYSPACE: &str = "tombstones";
/// Keyspace of reaped keys: (partition, key) → reap time and the reaped context.
pub const REAPED_KEYSPACE: &str = "reaped";

/// Largest N a store may have: N, R and W travel as 8-bit numbers on the wire.
pub const MAX_REPLICAS: usize = u8::MAX as usize;
/// Default largest key, in bytes.
pub const DEFAULT_MAX_KEY_SIZE: usize = 4 * 1024;
/// Default largest value, in bytes (the paper's objects are under 1 MB).
pub const DEFAULT_MAX_VALUE_SIZE: usize = 1024 * 1024;
/// Engine keyspace holding per-store metadata (incarnation, epoch reservations).
pub const META_KEYSPACE: &str = "dynamo-meta";
/// Epochs are reserved on disk in blocks this large, so opening an epoch rarely
/// costs a synced write. Every key's first write through a replica opens an epoch, and
/// a sync can take 100 ms on a busy disk, so blocks are large: a crash skips at most
/// one block of a 64-bit counter.
const EPOCH_BLOCK: u64 = 1 << 20;
const STRIPES: usize = 256;
/// A key's record may hold at most this many siblings after a coordinated write (the
/// decoder refuses far more, see `record::MAX_SIBLINGS`): past it, clients must resolve.
pub const MAX_SIBLINGS_PER_KEY: usize = 1000;
/// The default record size limit is this many times the store's max value size.
pub const DEFAULT_RECORD_VALUES: usize = 4;
/// Replica merges (replication, hints, repair) accept records up to this many times the
/// record limit: concurrent coordinators may each add a version before they see each
/// other's, and refusing a replica write there would only make replicas diverge.
pub const REPLICA_RECORD_SLACK: usize = 2;

/// The settings of one store, as written in a node's config (`[[stores]]`). Defaults:
/// the best engine built in, N=3, R=2, W=2, `siblings`, 4 KiB keys, 1 MiB values, clocks
/// pruned beyond 10 entries.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The store's name: 1 to 60 ASCII letters, digits, '_' or '-'.
    pub name: String,
    /// Engine the node opens for it: rocksdb, sqlite, memory, buffered:rocksdb,
    /// buffered:sqlite, an engine registered through the C API, or `auto` (chosen from
    /// `object_size` by [`auto_engine`]). (A [`VersionedStore`] is handed its engine
    /// already open.)
    pub engine: String,
    /// The store's object-size profile: `"small"`, `"large"`, or the expected value size
    /// in bytes. Used by `engine = "auto"`; absent means small.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_size: Option<ObjectSize>,
    /// Replicas per key.
    pub n: usize,
    /// Replies a get waits for.
    pub r: usize,
    /// Acknowledgements a put waits for.
    pub w: usize,
    /// How concurrent versions are reconciled.
    pub policy: ConflictPolicy,
    /// Largest key accepted, in bytes.
    pub max_key_size: usize,
    /// Largest value accepted, in bytes.
    pub max_value_size: usize,
    /// Causal pasts keep at most this many entries (oldest dropped first).
    pub prune_threshold: usize,
    /// Largest total of one key's sibling values, in bytes: a put that would grow a
    /// record past it is refused (read, then write back with the context to resolve).
    /// Default: 4 × `max_value_size`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_record_size: Option<usize>,
    /// `os` (the default: the write-ahead log is written before a write is
    /// acknowledged, flushed by the OS) or `sync` (flushed to disk first, with group
    /// commit: concurrent writers share one flush).
    pub durability: group_commit::StoreDurability,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            name: "default".into(),
            engine: default_engine().into(),
            n: 3,
            r: 2,
            w: 2,
            policy: ConflictPolicy::Siblings,
            max_key_size: DEFAULT_MAX_KEY_SIZE,
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            prune_threshold: DEFAULT_PRUNE_THRESHOLD,
            max_record_size: None,
            object_size: None,
            durability: group_commit::StoreDurability::Os,
        }
    }
}

/// A store's object-size profile, for `engine = "auto"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged, try_from = "ObjectSizeText")]
pub enum ObjectSize {
    /// The expected value size in bytes.
    Bytes(u64),
    /// A size class.
    Class(SizeClass),
}

/// `object_size` as written in a config, before it is checked.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum ObjectSizeText {
    Bytes(u64),
    Text(String),
}

impl TryFrom<ObjectSizeText> for ObjectSize {
    type Error = String;
    fn try_from(t: ObjectSizeText) -> Result<Self, String> {
        match t {
            ObjectSizeText::Bytes(b) => Ok(ObjectSize::Bytes(b)),
            ObjectSizeText::Text(s) => match s.trim().to_ascii_lowercase().as_str() {
                "small" => Ok(ObjectSize::Class(SizeClass::Small)),
                "large" => Ok(ObjectSize::Class(SizeClass::Large)),
                _ => Err(format!(
                    "object_size {s:?}: use \"small\", \"large\", or the expected value \
                     size in bytes (a number)"
                )),
            },
        }
    }
}

/// Size classes of [`ObjectSize`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SizeClass {
    /// Values of up to a few KiB (counted as 1 KiB).
    Small,
    /// Values of tens of KiB to 1 MiB (counted as 256 KiB).
    Large,
}

impl ObjectSize {
    /// What `small` (and an absent profile) counts as, in bytes.
    pub const SMALL_BYTES: u64 = 1 << 10;

    /// The expected value size in bytes.
    pub fn bytes(self) -> u64 {
        match self {
            ObjectSize::Bytes(b) => b,
            ObjectSize::Class(SizeClass::Small) => Self::SMALL_BYTES,
            ObjectSize::Class(SizeClass::Large) => 256 << 10,
        }
    }
}

/// `engine = "auto"` picks SQLite for stores whose expected value size is at least this,
/// RocksDB below it. From `dynamo bench engines --advise` on the project's 2-core VM
/// (docs/storage-engines.md): on a 50/50 put/get mix RocksDB leads at 1 KiB (238k against 80k ops/s) and
/// 4 KiB (119k against 115k), SQLite from 16 KiB on (90k against 45k at 16 KiB, 2.2k
/// against 917 at 1 MiB); 8 KiB is the midpoint on a log scale between the last size
/// RocksDB won and the first SQLite won. `--advise` measures the machine at hand.
pub const AUTO_SQLITE_FROM: u64 = 8 << 10;

/// The engine `engine = "auto"` gives a store whose values are expected to be `size`
/// bytes: `rocksdb` below [`AUTO_SQLITE_FROM`], `sqlite` from it on, falling back to
/// whichever of the two is built in; `None` when neither is (`auto` never picks an
/// engine that keeps nothing across restarts).
pub fn auto_engine(size: ObjectSize) -> Option<&'static str> {
    let large = size.bytes() >= AUTO_SQLITE_FROM;
    match (large, cfg!(feature = "rocksdb"), cfg!(feature = "sqlite")) {
        (true, _, true) | (false, false, true) => Some("sqlite"),
        (_, true, _) => Some("rocksdb"),
        _ => None,
    }
}

impl StoreConfig {
    /// A store called `name` with the defaults.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Checks every field; the error names the field and the rule it breaks.
    pub fn validate(&self) -> Result<(), StoreError> {
        let bad = |field: &'static str, reason: String| StoreError::InvalidConfig {
            store: self.name.clone(),
            field,
            reason,
        };
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 60
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(bad(
                "name",
                "use 1 to 60 ASCII letters, digits, '_' or '-'".into(),
            ));
        }
        self.engine_spec()?;
        if self.n == 0 || self.n > MAX_REPLICAS {
            return Err(bad("n", format!("must be between 1 and {MAX_REPLICAS}")));
        }
        if self.r == 0 || self.r > self.n {
            return Err(bad("r", format!("must be between 1 and n={}", self.n)));
        }
        if self.w == 0 || self.w > self.n {
            return Err(bad("w", format!("must be between 1 and n={}", self.n)));
        }
        if self.max_key_size == 0 {
            return Err(bad("max_key_size", "must be at least 1".into()));
        }
        if self.max_value_size == 0 {
            return Err(bad("max_value_size", "must be at least 1".into()));
        }
        if self.prune_threshold == 0 {
            return Err(bad("prune_threshold", "must be at least 1".into()));
        }
        if let Some(limit) = self.max_record_size {
            if limit < self.max_value_size {
                return Err(bad(
                    "max_record_size",
                    format!("must be at least max_value_size ({})", self.max_value_size),
                ));
            }
        }
        Ok(())
    }

    /// The record size limit in effect (see [`StoreConfig::max_record_size`]).
    pub fn record_limit(&self) -> usize {
        self.max_record_size
            .unwrap_or(self.max_value_size.saturating_mul(DEFAULT_RECORD_VALUES))
    }

    /// The largest record a replica accepts from a peer, and so the largest any read
    /// ever returns: what message size limits must allow.
    pub fn replica_record_limit(&self) -> usize {
        self.record_limit().saturating_mul(REPLICA_RECORD_SLACK)
    }

    /// The engine to open for this store (`auto` resolved by [`auto_engine`]).
    pub fn engine_spec(&self) -> Result<dynamo_engines::EngineSpec, StoreError> {
        self.resolved_engine()?
            .parse()
            .map_err(|e: EngineError| StoreError::InvalidConfig {
                store: self.name.clone(),
                field: "engine",
                reason: e.to_string(),
            })
    }

    /// Whether the store asks for `engine = "auto"`.
    pub fn is_auto(&self) -> bool {
        self.engine.trim().eq_ignore_ascii_case("auto")
    }

    /// The engine name, with `auto` resolved from the object-size profile.
    pub fn resolved_engine(&self) -> Result<&str, StoreError> {
        if !self.is_auto() {
            return Ok(&self.engine);
        }
        let size = self
            .object_size
            .unwrap_or(ObjectSize::Bytes(ObjectSize::SMALL_BYTES));
        auto_engine(size).ok_or_else(|| StoreError::InvalidConfig {
            store: self.name.clone(),
            field: "engine",
            reason: "\"auto\" chooses between RocksDB and SQLite, and this build has neither: \
                     name an engine"
                .into(),
        })
    }

    fn data_keyspace(&self) -> String {
        format!("kv-{}", self.name)
    }
}

/// The engine a store gets when none is named: RocksDB when built in, else SQLite,
/// else the in-memory engine.
pub fn default_engine() -> &'static str {
    if cfg!(feature = "rocksdb") {
        "rocksdb"
    } else if cfg!(feature = "sqlite") {
        "sqlite"
    } else {
        "memory"
    }
}

/// Everything that can go wrong in a store operation. Each message names the store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// No store of that name on this node.
    #[error("unknown store {store:?}; this node has {}", known_list(known))]
    UnknownStore {
        /// The name asked for.
        store: String,
        /// The stores that exist.
        known: Vec<String>,
    },
    /// A config field is invalid.
    #[error("invalid config for store {store:?}: field {field}: {reason}")]
    InvalidConfig {
        /// The store.
        store: String,
        /// The field.
        field: &'static str,
        /// The rule it breaks.
        reason: String,
    },
    /// The key is empty.
    #[error("empty key in store {store:?}; keys must be 1 to {max} bytes")]
    EmptyKey {
        /// The store.
        store: String,
        /// The limit.
        max: usize,
    },
    /// The key is too long.
    #[error("key of {len} bytes is over the limit of {max} bytes in store {store:?}")]
    KeyTooLarge {
        /// The store.
        store: String,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value is too long.
    #[error(
        "value of {len} bytes is over the limit of {max} bytes in store {store:?} (max_value_size)"
    )]
    ValueTooLarge {
        /// The store.
        store: String,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The write would grow the key's record past its limit.
    #[error(
        "key {key} in store {store:?} has {siblings} siblings holding {bytes} bytes; \
         this put would make it {after_siblings} siblings and {after_bytes} bytes, over the \
         {what}. Read the key and write back with its context to resolve the siblings"
    )]
    RecordTooLarge {
        /// The store.
        store: String,
        /// The key, printable.
        key: String,
        /// Siblings before the write.
        siblings: usize,
        /// Their value bytes.
        bytes: usize,
        /// Siblings after it.
        after_siblings: usize,
        /// Value bytes after it.
        after_bytes: usize,
        /// Which limit, with its value.
        what: String,
    },
    /// The context could not be used.
    #[error("bad context for key {key} in store {store:?}: {source}")]
    BadContext {
        /// The store.
        store: String,
        /// The key, printable.
        key: String,
        /// Why.
        #[source]
        source: ContextError,
    },
    /// Versions from a peer were malformed.
    #[error("refused versions for key {key} in store {store:?}: {reason}")]
    BadVersions {
        /// The store.
        store: String,
        /// The key, printable.
        key: String,
        /// Why.
        reason: String,
    },
    /// A stored record (or metadata) failed to decode.
    #[error("corrupt record for key {key} in store {store:?}: {source}")]
    Corrupt {
        /// The store.
        store: String,
        /// The key, printable.
        key: String,
        /// The decoding failure.
        #[source]
        source: DecodeError,
    },
    /// The engine failed.
    #[error("store {store:?}: {op} failed: {source}")]
    Engine {
        /// The store.
        store: String,
        /// What the store was doing.
        op: &'static str,
        /// The engine's error.
        #[source]
        source: EngineError,
    },
    /// A `durability = "sync"` store could not make a write durable: it was written
    /// but may not survive a power loss, and is not acknowledged.
    #[error("store {store:?}: the write is not known to be on disk: {reason}")]
    Durability {
        /// The store.
        store: String,
        /// Why.
        reason: String,
    },
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        "no stores".into()
    } else {
        format!("stores: {}", known.join(", "))
    }
}

/// A key made printable for messages: escaped, cut at 64 bytes.
pub fn printable_key(key: &[u8]) -> String {
    let shown = &key[..key.len().min(64)];
    let mut s = format!("\"{}\"", shown.escape_ascii());
    if key.len() > 64 {
        s.push_str(&format!("... ({} bytes)", key.len()));
    }
    s
}

/// What a get returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadResult {
    /// The sibling versions (tombstones included, flagged by `value == None`).
    pub siblings: Siblings,
    /// A context covering exactly those versions; pass it to the next put.
    pub context: Context,
    /// The dots reaped from this key, if it was ever reaped here: versions they cover
    /// are dead (a reader drops them from what other replicas return).
    pub reaped: Option<Context>,
}

impl ReadResult {
    /// The live values (tombstones left out).
    pub fn values(&self) -> Vec<&[u8]> {
        self.siblings
            .versions()
            .iter()
            .filter_map(|v| v.value.as_deref())
            .collect()
    }
}

/// What a put returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteResult {
    /// The version written.
    pub version: Version,
    /// Context covering the written version and what the caller's context covered.
    pub context: Context,
    /// The key's sibling set after the write.
    pub siblings: Siblings,
    /// True when the request id named a version already written: nothing new was
    /// written and `version` is that earlier version (a retried request).
    pub replayed: bool,
}

/// Extra engine writes that must land atomically with a key's record (a hint), added
/// to the record's batch while the key's lock is held.
pub type Attach<'a> = &'a mut dyn FnMut(&mut WriteBatch) -> Result<(), StoreError>;

fn attach_nothing(_: &mut WriteBatch) -> Result<(), StoreError> {
    Ok(())
}

/// Source of wall-clock milliseconds (replaceable in tests).
pub type ClockFn = Arc<dyn Fn() -> u64 + Send + Sync>;

/// One replica of one store. `Send + Sync`; operations on one key are serialised,
/// operations on different keys run in parallel. Calls block on the engine: call them
/// off any async event loop.
pub struct VersionedStore {
    config: StoreConfig,
    engine: Arc<dyn Engine>,
    keyspace: String,
    partitions: u32,
    incarnation: u64,
    boot: u64,
    epochs: Mutex<EpochAllocator>,
    stripes: Vec<Mutex<()>>,
    clock: ClockFn,
    tree: HashTree,
    /// The incarnation was created by this open: the store's data is new (or was lost).
    fresh: bool,
    /// Whether the `aae` keyspace holds a state hash for every record (false only
    /// while a store written before it existed is being indexed).
    indexed: AtomicBool,
    /// With `durability = "sync"`: the syncer every record write waits for (see
    /// [`VersionedStore::durable`]).
    group: Option<group_commit::GroupCommit>,
}

impl fmt::Debug for VersionedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VersionedStore")
            .field("store", &self.config.name)
            .field("engine", &self.engine.name())
            .field("partitions", &self.partitions)
            .field("incarnation", &format_args!("{:016x}", self.incarnation))
            .finish()
    }
}

struct EpochAllocator {
    next: u64,
    reserved_until: u64,
}

fn system_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl VersionedStore {
    /// Opens (creating if needed) the store `config.name` in `engine`, for a ring of
    /// `partitions` partitions. The first open creates the incarnation id in the
    /// engine, so data and incarnation live and die together.
    pub fn open(
        engine: Arc<dyn Engine>,
        config: StoreConfig,
        partitions: u32,
    ) -> Result<Self, StoreError> {
        config.validate()?;
        validate_partition_count(partitions).map_err(|reason| StoreError::InvalidConfig {
            store: config.name.clone(),
            field: "partitions",
            reason,
        })?;
        let keyspace = config.data_keyspace();
        let eng = |op: &'static str| {
            let store = config.name.clone();
            move |source| StoreError::Engine { store, op, source }
        };
        engine
            .ensure_keyspace(&keyspace)
            .map_err(eng("creating the data keyspace"))?;
        engine
            .ensure_keyspace(META_KEYSPACE)
            .map_err(eng("creating the metadata keyspace"))?;
        for ks in [AAE_KEYSPACE, TOMBSTONES_KEYSPACE, REAPED_KEYSPACE] {
            engine
                .ensure_keyspace(ks)
                .map_err(eng("creating the anti-entropy keyspaces"))?;
        }
        let meta_key = |what: &str| format!("store/{}/{what}", config.name).into_bytes();
        let read_u64 = |what: &str| -> Result<Option<u64>, StoreError> {
            let raw = engine
                .get(META_KEYSPACE, &meta_key(what))
                .map_err(eng("reading store metadata"))?;
            raw.map(|b| {
                <[u8; 8]>::try_from(b.as_slice())
                    .map(u64::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        store: config.name.clone(),
                        key: format!("(metadata {what})"),
                        source: DecodeError {
                            what: "store metadata",
                            reason: format!("{} bytes, expected 8", b.len()),
                            offset: 0,
                        },
                    })
            })
            .transpose()
        };
        let fresh = read_u64("incarnation")?.is_none();
        let incarnation = match read_u64("incarnation")? {
            Some(i) => i,
            None => {
                let fresh: u64 = rand::random();
                engine
                    .put(
                        META_KEYSPACE,
                        &meta_key("incarnation"),
                        &fresh.to_be_bytes(),
                    )
                    .map_err(eng("creating the incarnation id"))?;
                engine.sync().map_err(eng("syncing the incarnation id"))?;
                fresh
            }
        };
        // After a crash, records written in the last boot may have been rolled back
        // (unsynced writes lost), so this open is a new boot and no record of an
        // earlier one continues its run of dots. After a clean close everything was
        // synced, so the boot carries on. Either way the store is marked open (not
        // clean), durably, before any dot is issued.
        let last = read_u64("boot")?.unwrap_or(0);
        let clean = read_u64("clean")? == Some(last) && last > 0;
        let boot = if clean { last } else { last + 1 };
        let mut batch = WriteBatch::new();
        batch.put(META_KEYSPACE, &meta_key("boot"), &boot.to_be_bytes());
        batch.delete(META_KEYSPACE, &meta_key("clean"));
        engine
            .write_batch(batch)
            .map_err(eng("recording the boot"))?;
        engine.sync().map_err(eng("syncing the boot"))?;
        let reserved = read_u64("epochs")?.unwrap_or(1);
        // A store with records but no index marker was written before the `aae`
        // keyspace existed: it is indexed in the background (see `index_page`).
        let indexed = match read_u64("aae-index")? {
            Some(_) => true,
            None => {
                let empty = engine
                    .scan(
                        &keyspace,
                        &KeyRange::all(),
                        dynamo_engines::Direction::Forward,
                    )
                    .map_err(eng("looking for records"))?
                    .next()
                    .is_none();
                if empty {
                    engine
                        .put(META_KEYSPACE, &meta_key("aae-index"), &1u64.to_be_bytes())
                        .map_err(eng("marking the anti-entropy index"))?;
                }
                empty
            }
        };
        let group = (config.durability == group_commit::StoreDurability::Sync)
            .then(|| group_commit::GroupCommit::start(&config.name, engine.clone()));
        Ok(Self {
            group,
            fresh,
            tree: HashTree::new(partitions),
            indexed: AtomicBool::new(indexed),
            keyspace,
            partitions,
            incarnation,
            boot,
            epochs: Mutex::new(EpochAllocator {
                next: reserved,
                reserved_until: reserved,
            }),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            clock: Arc::new(system_now_ms),
            engine,
            config,
        })
    }

    /// Replaces the wall clock (tests use this to control timestamps).
    pub fn with_clock(mut self, clock: ClockFn) -> Self {
        self.clock = clock;
        self
    }

    /// The store's settings.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The store's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The incarnation id this replica issues dots under.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Whether this open created the store's incarnation: its data is new, or was lost.
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// The store's metadata entry `what` (node bookkeeping kept with the data, so it
    /// lives and dies with it).
    pub fn read_meta(&self, what: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = format!("store/{}/{what}", self.config.name).into_bytes();
        self.engine
            .get(META_KEYSPACE, &key)
            .map_err(self.engine_err("reading store metadata"))
    }

    /// Writes the metadata entry `what` durably (synced before it returns).
    pub fn write_meta(&self, what: &str, value: &[u8]) -> Result<(), StoreError> {
        let key = format!("store/{}/{what}", self.config.name).into_bytes();
        self.engine
            .put(META_KEYSPACE, &key, value)
            .map_err(self.engine_err("writing store metadata"))?;
        self.engine
            .sync()
            .map_err(self.engine_err("syncing store metadata"))
    }

    /// This store's boot: 1 for the first open of its data, one more after each open
    /// that followed a crash (an open after a clean close continues the boot).
    pub fn boot(&self) -> u64 {
        self.boot
    }

    /// The ring's partition count this store lays its keys out for.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The partition `key` belongs to.
    pub fn partition_of(&self, key: &[u8]) -> u32 {
        partition_of(key_position(&self.config.name, key), self.partitions)
    }

    /// The fingerprint that binds context tokens to `key`.
    pub fn key_fingerprint(&self, key: &[u8]) -> u32 {
        key_fingerprint(&self.config.name, key)
    }

    /// The printable token of `context` for `key`.
    pub fn context_token(&self, key: &[u8], context: &Context) -> String {
        context.to_token(self.key_fingerprint(key))
    }

    /// Parses a token a client got for `key`; a token for another key is refused.
    pub fn parse_context(&self, key: &[u8], token: &str) -> Result<Context, StoreError> {
        self.check_key(key)?;
        Context::from_token(token, self.key_fingerprint(key)).map_err(|source| {
            StoreError::BadContext {
                store: self.config.name.clone(),
                key: printable_key(key),
                source,
            }
        })
    }

    /// Refuses an empty key or one over `max_key_size` (no engine access).
    pub fn check_key(&self, key: &[u8]) -> Result<(), StoreError> {
        if key.is_empty() {
            return Err(StoreError::EmptyKey {
                store: self.config.name.clone(),
                max: self.config.max_key_size,
            });
        }
        if key.len() > self.config.max_key_size {
            return Err(StoreError::KeyTooLarge {
                store: self.config.name.clone(),
                len: key.len(),
                max: self.config.max_key_size,
            });
        }
        Ok(())
    }

    /// Refuses a value over `max_value_size` (no engine access).
    pub fn check_value(&self, value: Option<&[u8]>) -> Result<(), StoreError> {
        match value {
            Some(v) if v.len() > self.config.max_value_size => Err(StoreError::ValueTooLarge {
                store: self.config.name.clone(),
                len: v.len(),
                max: self.config.max_value_size,
            }),
            _ => Ok(()),
        }
    }

    fn lock(&self, key: &[u8]) -> MutexGuard<'_, ()> {
        let stripe = self.key_fingerprint(key) as usize % STRIPES;
        // A poisoned stripe only means another thread panicked while holding it; the
        // record on disk is the state of truth, so carry on.
        self.stripes[stripe]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn engine_err(&self, op: &'static str) -> impl FnOnce(EngineError) -> StoreError + '_ {
        move |source| StoreError::Engine {
            store: self.config.name.clone(),
            op,
            source,
        }
    }

    /// The engine range of `partition`'s keys after `after` (from its first when empty).
    fn partition_range(partition: u32, after: &[u8]) -> KeyRange {
        let prefix = partition.to_be_bytes();
        let start = if after.is_empty() {
            std::ops::Bound::Included(prefix.to_vec())
        } else {
            std::ops::Bound::Excluded(engine_key(partition, after))
        };
        let end = match dynamo_engines::prefix_successor(&prefix) {
            Some(e) => std::ops::Bound::Excluded(e),
            None => std::ops::Bound::Unbounded,
        };
        KeyRange::new(start, end)
    }

    fn engine_key(&self, key: &[u8]) -> Vec<u8> {
        engine_key(self.partition_of(key), key)
    }

    fn load(&self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        let ek = self.engine_key(key);
        let raw = self
            .engine
            .get(&self.keyspace, &ek)
            .map_err(self.engine_err("reading a record"))?;
        if let Some(bytes) = raw {
            return self.decode_record(key, &bytes).map(Some);
        }
        let grave = self
            .engine
            .get(REAPED_KEYSPACE, &ek)
            .map_err(self.engine_err("reading a reaped key"))?;
        grave
            .map(|bytes| self.graveyard_record(key, &bytes))
            .transpose()
    }

    /// The record of a reaped key with no versions, from its `reaped` keyspace entry.
    fn graveyard_record(&self, key: &[u8], bytes: &[u8]) -> Result<Record, StoreError> {
        let (_, reaped) = decode_reaped(bytes).map_err(|source| StoreError::Corrupt {
            store: self.config.name.clone(),
            key: printable_key(key),
            source,
        })?;
        Ok(Record {
            reaped: Some(reaped),
            in_graveyard: true,
            ..Record::default()
        })
    }

    /// [`VersionedStore::load`] if the engine can answer from memory (see
    /// `Engine::get_cached`); `Ok(None)`: it would block on the disk.
    fn load_cached(&self, key: &[u8]) -> Result<Option<Option<Record>>, StoreError> {
        let ek = self.engine_key(key);
        let raw = self
            .engine
            .get_cached(&self.keyspace, &ek)
            .map_err(self.engine_err("reading a record"))?;
        match raw {
            None => Ok(None),
            Some(Some(bytes)) => self.decode_record(key, &bytes).map(|r| Some(Some(r))),
            // No record: a reaped key's graveyard entry needs a read of its own.
            Some(None) => match self
                .engine
                .get_cached(REAPED_KEYSPACE, &ek)
                .map_err(self.engine_err("reading a reaped key"))?
            {
                None => Ok(None),
                Some(None) => Ok(Some(None)),
                Some(Some(bytes)) => self.graveyard_record(key, &bytes).map(|r| Some(Some(r))),
            },
        }
    }

    /// The segment of `key` in its partition's tree.
    pub fn segment_of(&self, key: &[u8]) -> u8 {
        tree::segment_of(key_position(&self.config.name, key), self.partitions)
    }

    /// Writes `key`'s state `after` (no versions: the record goes, and its reaped
    /// context, if any, is kept in the `reaped` keyspace) together with its state hash,
    /// its tombstone entry and whatever `attach` adds, in one atomic batch, then brings
    /// the partition's tree up to date. `before` is what [`Self::load`] gave. The
    /// caller holds the key's lock.
    fn commit(
        &self,
        key: &[u8],
        before: &Record,
        after: &Record,
        attach: Attach<'_>,
    ) -> Result<(), StoreError> {
        let p = self.partition_of(key);
        let segment = self.segment_of(key);
        let ek = engine_key(p, key);
        let old_hash = tree::state_hash(key, &before.siblings);
        let new_hash = tree::state_hash(key, &after.siblings);
        let mut batch = WriteBatch::new();
        // A write whose version was born superseded (its context's writer had seen
        // another attempt of its request) leaves the siblings as they were, but the
        // dot it took must still be remembered, or the next write would issue it again.
        let unchanged = before.siblings == after.siblings
            && before.reaped == after.reaped
            && (before.coordinator == after.coordinator || after.siblings.is_empty());
        if !unchanged {
            let had_record = !before.in_graveyard && !before.siblings.is_empty();
            let reaped = after.reaped.as_ref().filter(|c| !c.is_empty());
            if !after.siblings.is_empty() {
                batch.put(&self.keyspace, &ek, &after.encode());
                if before.in_graveyard {
                    batch.delete(REAPED_KEYSPACE, &ek);
                }
            } else {
                if had_record {
                    batch.delete(&self.keyspace, &ek);
                }
                match reaped {
                    Some(r) => {
                        batch.put(REAPED_KEYSPACE, &ek, &encode_reaped((self.clock)(), r));
                    }
                    None if before.in_graveyard => {
                        batch.delete(REAPED_KEYSPACE, &ek);
                    }
                    None => {}
                }
            }
            if old_hash != new_hash {
                let ik = tree::index_key(p, segment, key);
                if new_hash == 0 {
                    batch.delete(AAE_KEYSPACE, &ik);
                } else {
                    batch.put(AAE_KEYSPACE, &ik, &new_hash.to_be_bytes());
                }
                let was = before.siblings.all_tombstones();
                if after.siblings.all_tombstones() {
                    let newest = after
                        .siblings
                        .versions()
                        .iter()
                        .map(|v| v.timestamp_ms)
                        .max()
                        .unwrap_or(0);
                    batch.put(TOMBSTONES_KEYSPACE, &ek, &newest.to_be_bytes());
                } else if was {
                    batch.delete(TOMBSTONES_KEYSPACE, &ek);
                }
            }
        }
        attach(&mut batch)?;
        if batch.is_empty() {
            return Ok(());
        }
        // A ready tree is ready for good: the write and the XOR need not be one step.
        // Otherwise a rebuild may be listing this partition, and the partition's lock
        // makes the write and its XOR one step with respect to it.
        let mut guard = self.tree.lock(p);
        if guard.is_ready() {
            drop(guard);
            self.engine
                .write_batch(batch)
                .map_err(self.engine_err("writing a record"))?;
            self.tree.apply(p, segment, key, old_hash, new_hash);
        } else {
            self.engine
                .write_batch(batch)
                .map_err(self.engine_err("writing a record"))?;
            if old_hash != new_hash {
                guard.apply(segment, key, old_hash ^ new_hash);
            }
        }
        if let Some(g) = &self.group {
            g.note_write();
        }
        Ok(())
    }

    /// The point every record write made so far must reach to be durable: pass it to
    /// [`VersionedStore::durable`] once the write returned (`None`: the store's
    /// durability is `os`, nothing to wait for).
    pub fn durability_mark(&self) -> Option<u64> {
        self.group.as_ref().map(|g| g.written())
    }

    /// Waits, without blocking a thread, until every record write up to `mark` (from
    /// [`VersionedStore::durability_mark`]) is on disk: with `durability = "sync"` a
    /// write is acknowledged only after this. Many writers share one flush (group
    /// commit).
    pub async fn durable(&self, mark: Option<u64>) -> Result<(), StoreError> {
        match (&self.group, mark) {
            (Some(g), Some(seq)) => g
                .durable(seq)
                .await
                .map_err(|reason| StoreError::Durability {
                    store: self.config.name.clone(),
                    reason,
                }),
            _ => Ok(()),
        }
    }

    fn decode_record(&self, key: &[u8], bytes: &[u8]) -> Result<Record, StoreError> {
        // Stored values are read whatever today's max_value_size says: lowering it must
        // not make existing records unreadable (it only refuses new oversize writes).
        Record::decode(bytes, u64::from(u32::MAX), self.config.policy).map_err(|source| {
            StoreError::Corrupt {
                store: self.config.name.clone(),
                key: printable_key(key),
                source,
            }
        })
    }

    /// Runs `f` holding `key`'s lock: writes of the key (and their attachments) do not
    /// interleave with it.
    pub fn with_key_lock<T>(&self, key: &[u8], f: impl FnOnce() -> T) -> T {
        let _guard = self.lock(key);
        f()
    }

    /// The siblings of `key` and a context covering exactly them (empty if none).
    pub fn get(&self, key: &[u8]) -> Result<ReadResult, StoreError> {
        self.check_key(key)?;
        let record = self.load(key)?.unwrap_or_default();
        let context = record.siblings.context();
        Ok(ReadResult {
            siblings: record.siblings,
            context,
            reaped: record.reaped,
        })
    }

    /// [`VersionedStore::get`] if the engine can answer from memory, without disk I/O
    /// (so an event loop may call it); `Ok(None)`: call `get` from the engine pool.
    pub fn get_cached(&self, key: &[u8]) -> Result<Option<ReadResult>, StoreError> {
        self.check_key(key)?;
        Ok(self.load_cached(key)?.map(|record| {
            let record = record.unwrap_or_default();
            let context = record.siblings.context();
            ReadResult {
                siblings: record.siblings,
                context,
                reaped: record.reaped,
            }
        }))
    }

    /// Writes `value` (`None` writes a tombstone: a delete) as a new version
    /// coordinated by this replica, superseding exactly the versions `context` covers.
    /// With no context the write supersedes nothing.
    pub fn put(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        context: Option<&Context>,
    ) -> Result<WriteResult, StoreError> {
        self.put_with(key, value, context, None, &mut attach_nothing)
    }

    /// [`VersionedStore::put`] with a client request id and extra writes. If a version
    /// written by `request_id` is still here, nothing is written and that version is
    /// returned (`replayed`): a retry never makes a second sibling. `attach` adds
    /// writes that land atomically with the record.
    pub fn put_with(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        context: Option<&Context>,
        request_id: Option<u64>,
        attach: Attach<'_>,
    ) -> Result<WriteResult, StoreError> {
        self.check_key(key)?;
        self.check_value(value)?;
        let empty = Context::new();
        let ctx = context.unwrap_or(&empty);
        let _guard = self.lock(key);
        let mut record = self.load(key)?.unwrap_or_default();
        let before = record.clone();
        if let Some(done) = request_id.and_then(|id| record.siblings.written_by(id)) {
            let version = done.clone();
            let mut context = self.context_after(&record.siblings, &version, ctx);
            // Attempts of one request through different coordinators can each have
            // made a version: the answer covers all of them, so a write made with it
            // supersedes every one.
            for v in record.siblings.versions() {
                if v.request_id == version.request_id {
                    context.add(v.dot, v.timestamp_ms);
                }
            }
            self.commit(key, &before, &record, attach)?;
            return Ok(WriteResult {
                version,
                context,
                siblings: record.siblings,
                replayed: true,
            });
        }
        let dot = self.next_dot(&record, ctx)?;
        let version = self.new_version(dot, value, ctx, &record.siblings, request_id);
        let size = (record.siblings.len(), record.siblings.value_bytes());
        record.siblings.merge([version.clone()], self.config.policy);
        self.check_record(key, size, &record.siblings, self.config.record_limit())?;
        record.coordinator = Some(CoordinatorState {
            epoch: dot.actor.epoch,
            counter: dot.counter,
            boot: self.boot,
        });
        self.commit(key, &before, &record, attach)?;
        let context = self.context_after(&record.siblings, &version, ctx);
        Ok(WriteResult {
            version,
            context,
            siblings: record.siblings,
            replayed: false,
        })
    }

    /// A new version of `key` with a dot from a fresh epoch, written nowhere: a node
    /// that coordinates a write for a key it does not hold (all owners reachable, but
    /// forwarding to them failed) sends this to the owners. Fresh epochs never collide
    /// with any other dot, so no record is needed to issue it.
    pub fn mint(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        context: Option<&Context>,
        request_id: Option<u64>,
    ) -> Result<WriteResult, StoreError> {
        self.check_key(key)?;
        self.check_value(value)?;
        let empty = Context::new();
        let ctx = context.unwrap_or(&empty);
        let dot = Dot::new(Actor::new(self.incarnation, self.open_epoch()?), 1);
        let version = self.new_version(dot, value, ctx, &Siblings::new(), request_id);
        let siblings = Siblings::from_versions(vec![version.clone()], self.config.policy);
        let context = self.context_after(&siblings, &version, ctx);
        Ok(WriteResult {
            version,
            context,
            siblings,
            replayed: false,
        })
    }

    /// The answer to a retried write whose earlier attempts' versions (`found`, all of
    /// one request id, non-empty) a coordinator that holds no record of the key found on
    /// its replicas: the first by dot is sent again instead of a new one, and the context
    /// covers every one of them and what `context` covered.
    pub fn replay(&self, found: Vec<Version>, context: Option<&Context>) -> Option<WriteResult> {
        let empty = Context::new();
        let ctx = context.unwrap_or(&empty);
        let version = found.iter().min_by_key(|v| v.dot)?.clone();
        let siblings = Siblings::from_versions(vec![version.clone()], self.config.policy);
        let mut context = self.context_after(&siblings, &version, ctx);
        for v in &found {
            context.add(v.dot, v.timestamp_ms);
        }
        Some(WriteResult {
            version,
            context,
            siblings,
            replayed: true,
        })
    }

    fn new_version(
        &self,
        dot: Dot,
        value: Option<&[u8]>,
        ctx: &Context,
        local: &Siblings,
        request_id: Option<u64>,
    ) -> Version {
        let mut timestamp_ms = (self.clock)();
        if self.config.policy == ConflictPolicy::Lww {
            // A write must beat what its writer had seen and what this replica holds,
            // whatever this node's wall clock says (skew, or the same millisecond).
            let newest = local.versions().iter().map(|v| v.timestamp_ms).max();
            let seen = newest.unwrap_or(0).max(ctx.max_timestamp());
            if seen > 0 {
                timestamp_ms = timestamp_ms.max(seen.saturating_add(1));
            }
        }
        let mut past = ctx.clone();
        past.prune(self.config.prune_threshold);
        Version {
            dot,
            past,
            timestamp_ms,
            value: value.map(<[u8]>::to_vec),
            request_id,
        }
    }

    fn context_after(&self, siblings: &Siblings, version: &Version, ctx: &Context) -> Context {
        match self.config.policy {
            ConflictPolicy::Siblings => siblings.context_after_write(version, ctx),
            ConflictPolicy::Lww => siblings.context(),
        }
    }

    /// Refuses a record that a write grew past `limit` bytes of values or past
    /// [`MAX_SIBLINGS_PER_KEY`]. A write that does not grow the record is always let
    /// through, so resolving siblings is always possible.
    fn check_record(
        &self,
        key: &[u8],
        (siblings, bytes): (usize, usize),
        after: &Siblings,
        limit: usize,
    ) -> Result<(), StoreError> {
        let (after_siblings, after_bytes) = (after.len(), after.value_bytes());
        let what = if after_bytes > limit && after_bytes > bytes {
            format!("record size limit of {limit} bytes (max_record_size)")
        } else if after_siblings > MAX_SIBLINGS_PER_KEY && after_siblings > siblings {
            format!("limit of {MAX_SIBLINGS_PER_KEY} siblings per key")
        } else {
            return Ok(());
        };
        Err(StoreError::RecordTooLarge {
            store: self.config.name.clone(),
            key: printable_key(key),
            siblings,
            bytes,
            after_siblings,
            after_bytes,
            what,
        })
    }

    /// Writes a tombstone; same as `put(key, None, context)`.
    pub fn delete(&self, key: &[u8], context: Option<&Context>) -> Result<WriteResult, StoreError> {
        self.put(key, None, context)
    }

    /// Chooses the dot for a new write: continue this replica's run for the key when
    /// that is provably fresh, otherwise open a new epoch.
    fn next_dot(&self, record: &Record, ctx: &Context) -> Result<Dot, StoreError> {
        // A state from an earlier boot may have been rolled back by a crash (unsynced
        // writes lost) after its newer dots reached other replicas: never continue it.
        if let Some(state) = record.coordinator.filter(|c| c.boot == self.boot) {
            let actor = Actor::new(self.incarnation, state.epoch);
            let candidate = Dot::new(actor, state.counter + 1);
            // A context (or a stored past) that already claims the candidate came from
            // somewhere this run cannot account for; never issue a dot someone claims.
            let claimed = ctx.max_counter(&actor) >= candidate.counter
                || record.siblings.context().max_counter(&actor) >= candidate.counter;
            if !claimed {
                return Ok(candidate);
            }
        }
        let epoch = self.open_epoch()?;
        Ok(Dot::new(Actor::new(self.incarnation, epoch), 1))
    }

    fn open_epoch(&self) -> Result<u64, StoreError> {
        let mut alloc = self
            .epochs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if alloc.next >= alloc.reserved_until {
            let until = alloc.next + EPOCH_BLOCK;
            let key = format!("store/{}/epochs", self.config.name).into_bytes();
            self.engine
                .put(META_KEYSPACE, &key, &until.to_be_bytes())
                .map_err(self.engine_err("reserving epochs"))?;
            // Durable before use: after a crash no reserved epoch is handed out again.
            self.engine
                .sync()
                .map_err(self.engine_err("syncing the epoch reservation"))?;
            alloc.reserved_until = until;
        }
        let epoch = alloc.next;
        alloc.next += 1;
        Ok(epoch)
    }

    /// Merges versions that came from another replica. Idempotent, commutative and
    /// order-independent; returns the key's sibling set afterwards and whether it
    /// changed.
    pub fn merge_remote(
        &self,
        key: &[u8],
        versions: Vec<Version>,
    ) -> Result<(Siblings, bool), StoreError> {
        self.merge_remote_with(key, versions, &mut attach_nothing)
    }

    /// [`VersionedStore::merge_remote`] plus writes that land atomically with the
    /// record (a stand-in's hint); they are written even if the versions were known.
    pub fn merge_remote_with(
        &self,
        key: &[u8],
        versions: Vec<Version>,
        attach: Attach<'_>,
    ) -> Result<(Siblings, bool), StoreError> {
        self.merge_remote_full(key, versions, None, attach)
    }

    /// [`VersionedStore::merge_remote_with`] plus a reaped context from another
    /// replica: the dots it covers are dead, so local versions it covers go and are
    /// remembered as reaped here too. Versions covered by what this replica knows to
    /// be reaped are never taken in.
    pub fn merge_remote_full(
        &self,
        key: &[u8],
        versions: Vec<Version>,
        reaped: Option<&Context>,
        attach: Attach<'_>,
    ) -> Result<(Siblings, bool), StoreError> {
        self.check_key(key)?;
        for v in &versions {
            if let Some(val) = &v.value {
                if val.len() > self.config.max_value_size {
                    return Err(StoreError::BadVersions {
                        store: self.config.name.clone(),
                        key: printable_key(key),
                        reason: format!(
                            "version {} has a value of {} bytes, over max_value_size {}",
                            v.dot,
                            val.len(),
                            self.config.max_value_size
                        ),
                    });
                }
            }
        }
        let _guard = self.lock(key);
        let mut record = self.load(key)?.unwrap_or_default();
        let before = record.clone();
        let size = (record.siblings.len(), record.siblings.value_bytes());
        if let Some(incoming) = reaped.filter(|c| !c.is_empty()) {
            let mut all = record.reaped.take().unwrap_or_default();
            all.merge(incoming);
            let kept: Vec<Version> = record
                .siblings
                .versions()
                .iter()
                .filter(|v| !all.covers_write(&v.dot, v.request_id))
                .cloned()
                .collect();
            if kept.len() != record.siblings.len() {
                record.siblings = Siblings::from_versions(kept, self.config.policy);
            }
            record.reaped = Some(all);
        }
        let mut versions = versions;
        if let Some(dead) = &record.reaped {
            versions.retain(|v| !dead.covers_write(&v.dot, v.request_id));
        }
        let changed = record.siblings.merge(versions, self.config.policy);
        if changed {
            self.check_record(
                key,
                size,
                &record.siblings,
                self.config.replica_record_limit(),
            )?;
        }
        self.commit(key, &before, &record, attach)?;
        let changed = record != before;
        Ok((record.siblings, changed))
    }

    /// Deletes `key`'s record if it still holds exactly `observed` (the settled
    /// tombstones anti-entropy checked with [`reap::reap_decision`]). Returns true if
    /// it was removed; false if a write arrived in between (then nothing changes).
    ///
    /// The reaped context (the tombstones' context: their dots and everything they
    /// superseded) is kept in the `reaped` keyspace, so that no replica, hint or
    /// transfer can bring a covered version back here.
    pub fn reap(&self, key: &[u8], observed: &Siblings) -> Result<bool, StoreError> {
        self.check_key(key)?;
        if !observed.all_tombstones() {
            return Ok(false);
        }
        let _guard = self.lock(key);
        let Some(record) = self.load(key)? else {
            return Ok(false);
        };
        if &record.siblings != observed {
            return Ok(false);
        }
        let mut dead = record.reaped.clone().unwrap_or_default();
        dead.merge(&observed.context());
        let after = Record {
            reaped: Some(dead),
            ..Record::default()
        };
        self.commit(key, &record, &after, &mut attach_nothing)?;
        Ok(true)
    }

    /// Drops `key`'s record if it still holds exactly `observed`: a stand-in calls this
    /// after handing off versions it kept for a key it does not own. Returns false (and
    /// changes nothing) if a write arrived in between.
    pub fn forget(&self, key: &[u8], observed: &Siblings) -> Result<bool, StoreError> {
        self.check_key(key)?;
        let _guard = self.lock(key);
        let Some(record) = self.load(key)? else {
            return Ok(true);
        };
        if &record.siblings != observed {
            return Ok(false);
        }
        self.commit(key, &record, &Record::default(), &mut attach_nothing)?;
        Ok(true)
    }

    /// The engine under this store (the node keeps its hints for the store in it).
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// Every key of one partition with its siblings, in key order. The scan reads only
    /// that partition's engine range.
    pub fn scan_partition(&self, partition: u32) -> Result<Vec<(Vec<u8>, Siblings)>, StoreError> {
        let range = KeyRange::prefix(&partition.to_be_bytes());
        let mut out = Vec::new();
        for item in self
            .engine
            .scan(&self.keyspace, &range, dynamo_engines::Direction::Forward)
            .map_err(self.engine_err("scanning a partition"))?
        {
            let (ek, bytes) = item.map_err(self.engine_err("scanning a partition"))?;
            let Some((p, key)) = split_engine_key(&ek) else {
                continue;
            };
            debug_assert_eq!(p, partition);
            let record = self.decode_record(key, &bytes)?;
            out.push((key.to_vec(), record.siblings));
        }
        Ok(out)
    }

    /// Up to `limit` keys of `partition` that sort after `after` (from the partition's
    /// first key when `after` is empty), in key order, and whether more follow. Keys
    /// whose record holds only tombstones are listed too (a read shows them empty).
    /// Reads only the partition's engine range, and stops after `limit + 1` entries.
    pub fn keys_after(
        &self,
        partition: u32,
        after: &[u8],
        limit: usize,
    ) -> Result<(Vec<Vec<u8>>, bool), StoreError> {
        let range = Self::partition_range(partition, after);
        let mut keys = Vec::new();
        for item in self
            .engine
            .scan(&self.keyspace, &range, dynamo_engines::Direction::Forward)
            .map_err(self.engine_err("listing a partition's keys"))?
        {
            let (ek, _) = item.map_err(self.engine_err("listing a partition's keys"))?;
            let Some((_, key)) = split_engine_key(&ek) else {
                continue;
            };
            if keys.len() == limit {
                return Ok((keys, true));
            }
            keys.push(key.to_vec());
        }
        Ok((keys, false))
    }

    /// Up to `limit` records of `partition` after key `after` (from the first when
    /// empty), in key order, each key with every version this replica holds (hinted
    /// ones included) and the reaped context kept in its record, stopping early once
    /// `max_bytes` of values are taken (at least one record is), and whether more
    /// follow. What a partition transfer streams first.
    pub fn records_after(
        &self,
        partition: u32,
        after: &[u8],
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<KeyState>, bool), StoreError> {
        let range = Self::partition_range(partition, after);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for item in self
            .engine
            .scan(&self.keyspace, &range, dynamo_engines::Direction::Forward)
            .map_err(self.engine_err("reading a partition"))?
        {
            let (ek, value) = item.map_err(self.engine_err("reading a partition"))?;
            let Some((_, key)) = split_engine_key(&ek) else {
                continue;
            };
            if out.len() == limit || (bytes >= max_bytes && !out.is_empty()) {
                return Ok((out, true));
            }
            bytes += value.len();
            let record = self.decode_record(key, &value)?;
            out.push(KeyState {
                key: key.to_vec(),
                versions: record.siblings.into_versions(),
                reaped: record.reaped,
            });
        }
        Ok((out, false))
    }

    /// Up to `limit` reaped keys of `partition` with no record (the `reaped` keyspace)
    /// after key `after`, in key order, each with its reaped context and no versions,
    /// and whether more follow. What a partition transfer streams second, so a new
    /// owner keeps reaped keys from coming back as well as the old ones did.
    pub fn reaped_after(
        &self,
        partition: u32,
        after: &[u8],
        limit: usize,
    ) -> Result<(Vec<KeyState>, bool), StoreError> {
        let range = Self::partition_range(partition, after);
        let mut out = Vec::new();
        for item in self
            .engine
            .scan(REAPED_KEYSPACE, &range, dynamo_engines::Direction::Forward)
            .map_err(self.engine_err("reading a partition's reaped keys"))?
        {
            let (ek, value) = item.map_err(self.engine_err("reading a partition's reaped keys"))?;
            let Some((_, key)) = split_engine_key(&ek) else {
                continue;
            };
            if out.len() == limit {
                return Ok((out, true));
            }
            let (_, reaped) = decode_reaped(&value).map_err(|source| StoreError::Corrupt {
                store: self.config.name.clone(),
                key: printable_key(key),
                source,
            })?;
            out.push(KeyState {
                key: key.to_vec(),
                versions: Vec::new(),
                reaped: Some(reaped),
            });
        }
        Ok((out, false))
    }

    /// The engine's estimate of the bytes it holds (all keyspaces).
    pub fn approximate_size(&self) -> Result<u64, StoreError> {
        self.engine
            .approximate_size()
            .map_err(self.engine_err("estimating its size"))
    }

    /// Flushes the engine (used on shutdown).
    pub fn sync(&self) -> Result<(), StoreError> {
        self.engine.sync().map_err(self.engine_err("syncing"))
    }

    /// Syncs the engine and records that this boot ended cleanly, so the next open
    /// continues it (see [`VersionedStore::boot`]). Called when the store is dropped.
    pub fn close(&self) -> Result<(), StoreError> {
        self.sync()?;
        let key = format!("store/{}/clean", self.config.name).into_bytes();
        self.engine
            .put(META_KEYSPACE, &key, &self.boot.to_be_bytes())
            .map_err(self.engine_err("marking a clean close"))?;
        self.sync()
    }
}

/// A `reaped` keyspace value: the reap time (ms, big-endian) then the context.
fn encode_reaped(at_ms: u64, reaped: &Context) -> Vec<u8> {
    let mut out = at_ms.to_be_bytes().to_vec();
    out.extend_from_slice(&reaped.encode());
    out
}

/// Reads a `reaped` keyspace value: (reap time, context).
fn decode_reaped(bytes: &[u8]) -> Result<(u64, Context), DecodeError> {
    let Some((at, ctx)) = bytes.split_first_chunk::<8>() else {
        return Err(DecodeError {
            what: "reaped key",
            reason: format!("{} bytes, expected at least 8", bytes.len()),
            offset: 0,
        });
    };
    Ok((u64::from_be_bytes(*at), Context::decode(ctx)?))
}

fn be_u64(bytes: &[u8]) -> u64 {
    <[u8; 8]>::try_from(bytes).map_or(0, u64::from_be_bytes)
}

/// The anti-entropy side of a store replica: its trees, the state hashes behind them,
/// tombstones waiting to be reaped, and the reaped keys.
impl VersionedStore {
    /// Whether partition `p`'s tree is current (built since the store opened).
    pub fn tree_ready(&self, p: u32) -> bool {
        self.tree.is_ready(p)
    }

    /// How many partitions' trees are current.
    pub fn trees_ready(&self) -> usize {
        self.tree.ready_count()
    }

    /// Partition `p`'s root, or `None` while its tree is not current.
    pub fn tree_root(&self, p: u32) -> Option<u64> {
        // Checked first without the lock: a build holds it across engine writes.
        if !self.tree.is_ready(p) {
            return None;
        }
        let t = self.tree.lock(p);
        t.is_ready().then(|| t.root())
    }

    /// Partition `p`'s branch hashes, or `None` while its tree is not current.
    pub fn tree_branches(&self, p: u32) -> Option<Vec<u64>> {
        // Checked first without the lock: a build holds it across engine writes.
        if !self.tree.is_ready(p) {
            return None;
        }
        let t = self.tree.lock(p);
        t.is_ready().then(|| t.branches())
    }

    /// The leaf hashes under each of `branches` (16 per branch, in order), or `None`
    /// while the tree is not current.
    pub fn tree_leaves(&self, p: u32, branches: &[u16]) -> Option<Vec<u64>> {
        // Checked first without the lock: a build holds it across engine writes.
        if !self.tree.is_ready(p) {
            return None;
        }
        let t = self.tree.lock(p);
        t.is_ready().then(|| {
            branches
                .iter()
                .flat_map(|b| t.leaves_of(usize::from(*b)).to_vec())
                .collect()
        })
    }

    /// The keys of `segment` in partition `p` with their state hashes, in key order,
    /// at most `limit` (a range read of the `aae` keyspace, no record is read), and
    /// whether more follow.
    pub fn segment_hashes(
        &self,
        p: u32,
        segment: u8,
        limit: usize,
    ) -> Result<(Vec<KeyHash>, bool), StoreError> {
        let prefix = tree::index_key(p, segment, b"");
        let mut out = Vec::new();
        for item in self
            .engine
            .scan(
                AAE_KEYSPACE,
                &KeyRange::prefix(&prefix),
                dynamo_engines::Direction::Forward,
            )
            .map_err(self.engine_err("listing a segment"))?
        {
            let (k, v) = item.map_err(self.engine_err("listing a segment"))?;
            if out.len() == limit {
                return Ok((out, true));
            }
            if let Some((_, _, key)) = tree::split_index_key(&k) {
                out.push((key.to_vec(), be_u64(&v)));
            }
        }
        Ok((out, false))
    }

    /// Builds up to `limit` keys more of partition `p`'s tree from the `aae` keyspace
    /// (see [`tree`]); returns whether the tree is ready and the keys counted. Holds
    /// the partition's lock for one page: writes to it wait that long.
    pub fn rebuild_tree_page(&self, p: u32, limit: usize) -> Result<(bool, usize), StoreError> {
        if !self.indexed.load(Ordering::Acquire) {
            return Ok((false, 0));
        }
        let mut g = self.tree.lock(p);
        if g.is_ready() {
            return Ok((true, 0));
        }
        HashTree::begin(&mut g);
        let prefix = p.to_be_bytes();
        let start = match &g.state {
            tree::TreeState::Building {
                cursor: Some((s, k)),
            } => std::ops::Bound::Excluded(tree::index_key(p, *s, k)),
            _ => std::ops::Bound::Included(prefix.to_vec()),
        };
        let end = match dynamo_engines::prefix_successor(&prefix) {
            Some(e) => std::ops::Bound::Excluded(e),
            None => std::ops::Bound::Unbounded,
        };
        let mut counted = 0;
        for item in self
            .engine
            .scan(
                AAE_KEYSPACE,
                &KeyRange::new(start, end),
                dynamo_engines::Direction::Forward,
            )
            .map_err(self.engine_err("rebuilding a tree"))?
        {
            let (k, v) = item.map_err(self.engine_err("rebuilding a tree"))?;
            if let Some((_, segment, key)) = tree::split_index_key(&k) {
                HashTree::count(&mut g, segment, key, be_u64(&v));
                counted += 1;
            }
            if counted == limit {
                return Ok((false, counted));
            }
        }
        self.tree.finish(p, &mut g);
        Ok((true, counted))
    }

    /// Whether every record has its state hash in the `aae` keyspace.
    pub fn is_indexed(&self) -> bool {
        self.indexed.load(Ordering::Acquire)
    }

    /// Writes the state hash (and tombstone entry) of up to `limit` records of
    /// partition `p` after `after`, each under its key's lock: how a store written
    /// before the `aae` keyspace existed is indexed. Returns the last key done and
    /// whether more follow; [`Self::finish_indexing`] marks the store indexed.
    pub fn index_page(
        &self,
        p: u32,
        after: &[u8],
        limit: usize,
    ) -> Result<(Option<Vec<u8>>, bool), StoreError> {
        let (keys, more) = self.keys_after(p, after, limit)?;
        for key in &keys {
            let _guard = self.lock(key);
            let Some(record) = self.load(key)? else {
                continue;
            };
            let mut batch = WriteBatch::new();
            let hash = tree::state_hash(key, &record.siblings);
            if hash != 0 {
                batch.put(
                    AAE_KEYSPACE,
                    &tree::index_key(p, self.segment_of(key), key),
                    &hash.to_be_bytes(),
                );
            }
            if record.siblings.all_tombstones() {
                let newest = record.siblings.versions().iter().map(|v| v.timestamp_ms);
                batch.put(
                    TOMBSTONES_KEYSPACE,
                    &engine_key(p, key),
                    &newest.max().unwrap_or(0).to_be_bytes(),
                );
            }
            if !batch.is_empty() {
                self.engine
                    .write_batch(batch)
                    .map_err(self.engine_err("indexing a record"))?;
            }
        }
        Ok((keys.last().cloned(), more))
    }

    /// Marks the store indexed (every partition went through [`Self::index_page`]).
    pub fn finish_indexing(&self) -> Result<(), StoreError> {
        let key = format!("store/{}/aae-index", self.config.name).into_bytes();
        self.engine
            .put(META_KEYSPACE, &key, &1u64.to_be_bytes())
            .map_err(self.engine_err("marking the anti-entropy index"))?;
        self.indexed.store(true, Ordering::Release);
        Ok(())
    }

    /// Up to `limit` keys of partition `p` after `after` whose versions are all
    /// tombstones, the newest written before `before_ms`, and whether more follow.
    pub fn tombstones_before(
        &self,
        p: u32,
        after: &[u8],
        before_ms: u64,
        limit: usize,
    ) -> Result<(Vec<Vec<u8>>, bool), StoreError> {
        let range = Self::partition_range(p, after);
        let mut out = Vec::new();
        for item in self
            .engine
            .scan(
                TOMBSTONES_KEYSPACE,
                &range,
                dynamo_engines::Direction::Forward,
            )
            .map_err(self.engine_err("listing tombstones"))?
        {
            let (ek, v) = item.map_err(self.engine_err("listing tombstones"))?;
            if out.len() == limit {
                return Ok((out, true));
            }
            if let Some((_, key)) = split_engine_key(&ek) {
                if be_u64(&v) < before_ms {
                    out.push(key.to_vec());
                }
            }
        }
        Ok((out, false))
    }

    /// How many keys of partition `p` hold only tombstones (a range count of the
    /// `tombstones` keyspace).
    pub fn tombstone_count(&self, p: u32) -> Result<u64, StoreError> {
        let mut n = 0;
        for item in self
            .engine
            .scan(
                TOMBSTONES_KEYSPACE,
                &KeyRange::prefix(&p.to_be_bytes()),
                dynamo_engines::Direction::Forward,
            )
            .map_err(self.engine_err("counting tombstones"))?
        {
            item.map_err(self.engine_err("counting tombstones"))?;
            n += 1;
        }
        Ok(n)
    }

    /// Forgets reaped keys of partition `p` reaped before `before_ms` (after the
    /// retention period a replica restored from an older backup could bring them
    /// back; see docs/anti-entropy.md). A key written again keeps its reaped context in
    /// its record. Returns how many were forgotten.
    pub fn expire_reaped(&self, p: u32, before_ms: u64) -> Result<usize, StoreError> {
        let mut old = Vec::new();
        for item in self
            .engine
            .scan(
                REAPED_KEYSPACE,
                &KeyRange::prefix(&p.to_be_bytes()),
                dynamo_engines::Direction::Forward,
            )
            .map_err(self.engine_err("listing reaped keys"))?
        {
            let (ek, v) = item.map_err(self.engine_err("listing reaped keys"))?;
            if v.len() >= 8 && be_u64(&v[..8]) < before_ms {
                old.push(ek);
            }
        }
        for ek in &old {
            let Some((_, key)) = split_engine_key(ek) else {
                continue;
            };
            let _guard = self.lock(key);
            // Only if it is still a reaped key with no record (a write in between
            // moved the context into the record).
            let raw = self
                .engine
                .get(REAPED_KEYSPACE, ek)
                .map_err(self.engine_err("reading a reaped key"))?;
            if raw.is_some_and(|v| v.len() >= 8 && be_u64(&v[..8]) < before_ms) {
                self.engine
                    .delete(REAPED_KEYSPACE, ek)
                    .map_err(self.engine_err("forgetting a reaped key"))?;
            }
        }
        Ok(old.len())
    }
}

impl Drop for VersionedStore {
    fn drop(&mut self) {
        // Without the mark the next open starts a new boot: always safe, only costlier.
        if let Err(e) = self.close() {
            eprintln!("closing store {:?}: {e}", self.config.name);
        }
    }
}

#[cfg(test)]
mod chunk_tests {
    use super::{chunk_by_bytes, KeyState};
    use crate::context::Context;
    use crate::dot::{Actor, Dot};
    use crate::version::Version;

    fn state(key: &str, value: usize) -> KeyState {
        KeyState {
            key: key.as_bytes().to_vec(),
            versions: vec![Version {
                dot: Dot::new(Actor::new(1, 1), 1),
                past: Context::new(),
                timestamp_ms: 1,
                value: Some(vec![0; value]),
                request_id: None,
            }],
            reaped: None,
        }
    }

    #[test]
    fn runs_stay_under_the_budget_and_keep_every_state_in_order() {
        let states: Vec<KeyState> = (0..10).map(|i| state(&format!("k{i}"), 1000)).collect();
        let runs = chunk_by_bytes(states.clone(), 3000);
        assert!(runs.len() > 1);
        for run in &runs {
            assert!(run.iter().map(KeyState::approx_bytes).sum::<usize>() <= 3000);
        }
        let flat: Vec<KeyState> = runs.into_iter().flatten().collect();
        assert_eq!(flat, states);
        // A state over the budget goes alone.
        let runs = chunk_by_bytes(vec![state("a", 10), state("b", 5000), state("c", 10)], 3000);
        assert_eq!(runs.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 1, 1]);
    }
}
