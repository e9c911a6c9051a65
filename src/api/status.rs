//! What a node reports about itself (`dynamo status`, `Dynamo.status`, the C and
//! Python status calls): its members, stores, hints, a transfer in progress,
//! anti-entropy, rebuilds, the background budget and refused hints. Plain data, so the
//! client, the node, the CLI and the FFI share it without depending on each other.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ring::Ring;

/// A member as a node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    /// Name.
    pub name: String,
    /// RPC address.
    pub address: String,
    /// Zone.
    pub zone: Option<String>,
    /// Up, in the answering node's opinion.
    pub up: bool,
    /// Partitions it owns.
    pub partitions: u32,
    /// Why it is considered down.
    pub last_error: Option<String>,
}

/// A store's settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StoreSummary {
    /// Name.
    pub name: String,
    /// Engine.
    pub engine: String,
    /// Replicas.
    pub n: u8,
    /// Read quorum.
    pub r: u8,
    /// Write quorum.
    pub w: u8,
    /// Conflict policy.
    pub policy: String,
    /// Largest value accepted.
    pub max_value_size: u64,
}

/// A node's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    /// Its name.
    pub node: String,
    /// Its listen address.
    pub address: String,
    /// Its data directory's id.
    pub node_id: String,
    /// Milliseconds since start.
    pub uptime_ms: u64,
    /// Client requests in flight (this one not counted).
    pub in_flight: u64,
    /// Every member with its health as this node sees it.
    pub members: Vec<MemberStatus>,
    /// Hints waiting for handoff, per intended owner.
    pub hints: BTreeMap<String, u64>,
    /// Hints owed to nodes that are no longer members: they cannot be delivered.
    pub hints_for_non_members: BTreeMap<String, u64>,
    /// Stores.
    pub stores: Vec<StoreSummary>,
    /// `None` when healthy; otherwise why the node is not (its storage failed, ...).
    pub unhealthy: Option<String>,
    /// Calls to peers that timed out since the node started.
    pub call_timeouts: u64,
    /// The version of the ring it serves with (derived from its membership history;
    /// 0 while it has not learned its cluster).
    pub ring_version: u64,
    /// Changes in its membership history.
    pub membership_changes: u32,
    /// Hex MD5 of its membership history: nodes with equal digests serve equal rings.
    pub membership_digest: String,
    /// Hex MD5 of its ring's JSON, to compare rings byte for byte.
    pub ring_digest: String,
    /// The version every applied membership change leads to: above `ring_version`
    /// while data is moving.
    pub target_ring_version: u64,
    /// Its ownership transfer in progress (it is receiving partitions), if any.
    pub transfer: Option<TransferStatus>,
    /// Anti-entropy, reaping, rebuilds of lost data, the background work budget and
    /// refused hints (`None` from a node of an older version).
    pub anti_entropy: Option<AntiEntropyStatus>,
    /// Load and shedding: limits, refusals, expired work, the engine pool (`None` from
    /// a node of an older version).
    pub load: Option<LoadStatus>,
}

/// How a node copes with its load, for `dynamo status` and benchmarks. Every counter
/// counts since the node started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadStatus {
    /// `node.max_in_flight`.
    pub max_in_flight: u64,
    /// Requests refused as `overloaded` at the door (in-flight limits).
    pub overloaded: u64,
    /// Requests and replica calls dropped unrun because their deadline had passed when
    /// they arrived or before they were sent.
    pub expired: u64,
    /// Threads running engine calls.
    pub engine_threads: u64,
    /// Engine calls waiting now.
    pub engine_queued: u64,
    /// Engine threads running a call now.
    pub engine_busy: u64,
    /// Engine calls refused as `overloaded` (the queue was full).
    pub engine_refused: u64,
    /// Engine calls dropped before the engine because their deadline passed in the
    /// queue.
    pub engine_expired: u64,
    /// Times a peer was marked down (under load alone this stays 0: busy is not dead).
    pub peers_marked_down: u64,
    /// Replica reads answered from memory (memtable, block cache, write buffer) on
    /// the event loop, without a hop to the engine pool.
    #[serde(default)]
    pub cached_reads: u64,
}

/// The cluster's layout as a node reports it.
#[derive(Clone, Debug)]
pub struct RingInfo {
    /// Partition owners.
    pub ring: Ring,
    /// Members with addresses.
    pub members: Vec<MemberStatus>,
    /// Stores.
    pub stores: Vec<StoreSummary>,
}

/// One partition of a running or pending transfer, as `dynamo status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionTransfer {
    /// The partition.
    pub partition: u32,
    /// Where its data comes from.
    pub from: Vec<String>,
    /// The receiving node.
    pub to: String,
    /// `pending`, `running` or `done`.
    pub state: String,
    /// Keys received so far (all stores, all sources).
    pub keys: u64,
    /// Bytes of values received so far.
    pub bytes: u64,
}

/// This node's transfer, as `dynamo status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferStatus {
    /// The membership change being carried out (`origin#seq`) and what it does.
    pub change: String,
    /// What the change does, e.g. `join node-4`.
    pub action: String,
    /// `waiting` (for writes in flight to finish), `copying`, `syncing`, `settled`, or
    /// `retrying: <why>`.
    pub phase: String,
    /// Milliseconds since the pull started.
    pub elapsed_ms: u64,
    /// Per partition.
    pub partitions: Vec<PartitionTransfer>,
    /// Keys received so far.
    pub keys: u64,
    /// Bytes received so far.
    pub bytes: u64,
    /// Bytes per second so far.
    pub rate_bytes_per_s: u64,
    /// Estimated milliseconds left (from the partitions done so far), if known.
    pub eta_ms: Option<u64>,
}

/// The admission controller's state, as `dynamo status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionStatus {
    /// Background work units per second allowed now.
    pub budget_units_per_s: u64,
    /// The foreground p99 the budget reacts to (last measured second), microseconds.
    pub foreground_p99_us: u64,
    /// Requests measured in that second.
    pub foreground_requests: u64,
    /// The p99 target, ms.
    pub target_p99_ms: u64,
    /// Times the budget was cut since the node started.
    pub cuts: u64,
    /// Units granted to background work since the node started.
    pub units_granted: u64,
}

/// A hint an owner refused (or that could not be read here), waiting for its retry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedHint {
    /// The store.
    pub store: String,
    /// The key, printable.
    pub key: String,
    /// The owner it is for.
    pub owner: String,
    /// Why the last attempt failed.
    pub reason: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Milliseconds until the next attempt.
    pub retry_in_ms: u64,
}

/// One store's rebuild, as `dynamo status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreRebuildStatus {
    /// The store.
    pub store: String,
    /// Partitions to rebuild in all.
    pub partitions: u64,
    /// Partitions rebuilt so far.
    pub done: u64,
    /// Keys pulled so far.
    pub keys: u64,
    /// Bytes of values pulled so far.
    pub bytes: u64,
    /// Milliseconds since it started (until it finished).
    pub elapsed_ms: u64,
    /// Keys per second so far.
    pub keys_per_s: u64,
    /// Why the last attempt at a partition failed, if it did.
    pub last_error: Option<String>,
}

/// Every store's rebuild, while one runs or after it finished in this process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebuildStatus {
    /// Per store.
    pub stores: Vec<StoreRebuildStatus>,
}

/// Anti-entropy's state, as `dynamo status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AntiEntropyStatus {
    /// Whether exchanges and reaping run (`[anti_entropy] enabled`).
    pub enabled: bool,
    /// Partition exchanges that finished (roots equal, or the repair done).
    pub exchanges: u64,
    /// Keys found differing in a first comparison.
    pub differences_seen: u64,
    /// Keys repaired (still differing in the second comparison, then exchanged).
    pub keys_repaired: u64,
    /// The longest time, over this node's partitions and their other replicas, since
    /// the last successful exchange (counted from the node's start when there was none
    /// yet), ms; `None` when no partition has another replica.
    pub oldest_exchange_age_ms: Option<u64>,
    /// Which (store/partition with peer) that is.
    pub oldest_exchange: Option<String>,
    /// Trees current, over every store's partitions.
    pub trees_ready: u64,
    /// Trees in all.
    pub trees_total: u64,
    /// Keys whose versions are all tombstones, as of the last reap pass over their
    /// partition (summed over partitions).
    pub tombstones: u64,
    /// Keys reaped here since the node started.
    pub reaped: u64,
    /// Why the last tombstones checked were kept, if they were.
    pub last_kept: Option<String>,
    /// The last exchange error.
    pub last_error: Option<String>,
    /// A rebuild of lost data, while one runs (see `node::rebuild`).
    pub rebuild: Option<RebuildStatus>,
    /// The background work budget.
    pub admission: AdmissionStatus,
    /// Hints an owner refused, retried later with backoff (see `node::handoff`).
    pub refused_hints: Vec<RefusedHint>,
}
