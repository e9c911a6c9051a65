//! Rebuilding lost data: a node that starts as a new incarnation of a member (its data
//! directory was wiped) or finds a store's data missing (the store's incarnation is new
//! while the node's is not) pulls every partition it replicates from the other
//! replicas, as a transfer does, before its answers count as an owner's.
//!
//! Until partition `p` of a store is rebuilt, this node's reads of `p` say
//! `rebuilding`, and a quorum read counts them as a stand-in's (see
//! [`crate::quorum`]): its empty answer never hides a value the other replicas hold.
//! Writes go on as usual (they are simply merged with what the pull brings). A
//! partition is rebuilt once it was read whole from at least N - W + 1 of its other
//! replicas (clamped to how many there are): every write acknowledged by W replicas,
//! this one perhaps among them, is on one of those. A replica that does not host the
//! store counts as read and empty. A replica that is rebuilding the partition itself
//! does not count (it may have lost writes it acknowledged), unless every other replica
//! answered and those not read whole are all rebuilding: then every replica that could
//! hold a write no whole one has lost its data (more losses than a write at W survives),
//! and waiting for each other would never end (a new cluster's first start, where every
//! node starts with a new data directory, is that case with nothing lost).
//!
//! The partitions still to rebuild are kept in the store's metadata (synced after each
//! one), so a crash in the middle resumes where it was. Progress is in `dynamo status`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{DynamoError, ErrorKind};
use crate::store::{StoreError, VersionedStore};

use super::local::LocalNode;
use super::transfer::{read_enough, Copied};

pub use crate::api::status::{RebuildStatus, StoreRebuildStatus};

/// The metadata entry of a store's partitions still to rebuild.
const META: &str = "rebuild";

struct StoreRebuild {
    pending: BTreeSet<u32>,
    total: u64,
    keys: u64,
    bytes: u64,
    started: Instant,
    took: Option<Duration>,
    last_error: Option<String>,
}

/// The node's rebuilds (thread-safe: reads check it on every request).
#[derive(Default)]
pub struct RebuildBoard {
    stores: Mutex<BTreeMap<String, StoreRebuild>>,
}

impl std::fmt::Debug for RebuildBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RebuildBoard")
    }
}

fn encode(pending: &BTreeSet<u32>) -> Vec<u8> {
    pending.iter().flat_map(|p| p.to_be_bytes()).collect()
}

fn decode(bytes: &[u8]) -> BTreeSet<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Whether `store` never recorded whether it must rebuild (its first open here did not
/// get that far, or it predates rebuilds). Blocking.
pub fn undecided(store: &VersionedStore) -> Result<bool, StoreError> {
    Ok(store.read_meta(META)?.is_none())
}

impl RebuildBoard {
    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<String, StoreRebuild>) -> R) -> R {
        f(&mut self.stores.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Loads `store`'s pending rebuild from its metadata; with `start`, first records
    /// a rebuild of every partition (the store's data was lost). With `decided` (the
    /// node knew the membership when it chose), a choice not to rebuild is recorded
    /// too, so a store is [`undecided`] only until an open that knew completes: a node
    /// that started knowing no ring (its seeds did not answer) decides again at its
    /// next start. Blocking.
    pub fn open(
        &self,
        store: &VersionedStore,
        start: bool,
        decided: bool,
    ) -> Result<(), StoreError> {
        if start {
            let all: BTreeSet<u32> = (0..store.partitions()).collect();
            store.write_meta(META, &encode(&all))?;
        } else if decided && store.read_meta(META)?.is_none() {
            store.write_meta(META, &[])?;
        }
        let pending = store
            .read_meta(META)?
            .map(|b| decode(&b))
            .unwrap_or_default();
        if pending.is_empty() {
            return Ok(());
        }
        self.with(|s| {
            s.insert(
                store.name().to_owned(),
                StoreRebuild {
                    total: pending.len() as u64,
                    pending,
                    keys: 0,
                    bytes: 0,
                    started: Instant::now(),
                    took: None,
                    last_error: None,
                },
            )
        });
        Ok(())
    }

    /// Whether partition `p` of `store` is still to be rebuilt here.
    pub fn is_rebuilding(&self, store: &str, p: u32) -> bool {
        self.with(|s| s.get(store).is_some_and(|r| r.pending.contains(&p)))
    }

    fn pending(&self, store: &str) -> Vec<u32> {
        self.with(|s| {
            s.get(store)
                .map(|r| r.pending.iter().copied().collect())
                .unwrap_or_default()
        })
    }

    fn progress(&self, store: &str, keys: u64, bytes: u64) {
        self.with(|s| {
            if let Some(r) = s.get_mut(store) {
                r.keys += keys;
                r.bytes += bytes;
            }
        });
    }

    fn failed(&self, store: &str, why: String) {
        self.with(|s| {
            if let Some(r) = s.get_mut(store) {
                r.last_error = Some(why);
            }
        });
    }

    /// Marks `p` rebuilt and returns what is still pending.
    fn done(&self, store: &str, p: u32) -> BTreeSet<u32> {
        self.with(|s| match s.get_mut(store) {
            Some(r) => {
                r.pending.remove(&p);
                if r.pending.is_empty() {
                    r.took.get_or_insert_with(|| r.started.elapsed());
                    r.last_error = None;
                }
                r.pending.clone()
            }
            None => BTreeSet::new(),
        })
    }

    /// The rebuilds of this process, `None` when there were none.
    pub fn status(&self) -> Option<RebuildStatus> {
        self.with(|s| {
            (!s.is_empty()).then(|| RebuildStatus {
                stores: s
                    .iter()
                    .map(|(name, r)| {
                        let took = r.took.unwrap_or_else(|| r.started.elapsed());
                        let secs = took.as_secs_f64();
                        StoreRebuildStatus {
                            store: name.clone(),
                            partitions: r.total,
                            done: r.total - r.pending.len() as u64,
                            keys: r.keys,
                            bytes: r.bytes,
                            elapsed_ms: took.as_millis() as u64,
                            keys_per_s: if secs > 0.0 {
                                (r.keys as f64 / secs) as u64
                            } else {
                                0
                            },
                            last_error: r.last_error.clone(),
                        }
                    })
                    .collect(),
            })
        })
    }
}

/// Rebuilds what is pending, partition by partition, until nothing is (see the module
/// doc). A partition that cannot be read from enough replicas is tried again later.
pub async fn rebuild_loop(node: LocalNode) {
    let stores: Vec<Arc<VersionedStore>> = node.core.stores.values().cloned().collect();
    if stores
        .iter()
        .all(|s| node.core.rebuild.pending(s.name()).is_empty())
    {
        return;
    }
    // As gossip does, wait a round first: peers started with this node may not listen
    // yet, and a failed call marks its peer down.
    tokio::time::sleep(Duration::from_millis(
        node.core.config.node.gossip_interval_ms,
    ))
    .await;
    // Every store in every round: one whose sources are down must not keep the others
    // from their rebuild.
    loop {
        let mut left = false;
        let mut progressed = false;
        for store in &stores {
            let pending = node.core.rebuild.pending(store.name());
            if pending.is_empty() {
                continue;
            }
            left = true;
            for p in pending {
                match rebuild_partition(&node, store, p).await {
                    Ok(()) => {
                        progressed = true;
                        let rest = node.core.rebuild.done(store.name(), p);
                        let s = store.clone();
                        let bytes = encode(&rest);
                        let saved = node
                            .engine_any("recording a rebuild", move || {
                                Ok(s.write_meta(META, &bytes)?)
                            })
                            .await;
                        if let Err(e) = saved {
                            node.core.rebuild.failed(store.name(), e.message);
                        }
                        if rest.is_empty() {
                            eprintln!(
                                "{}: store {} rebuilt from the other replicas",
                                node.name(),
                                store.name()
                            );
                        }
                    }
                    Err(e) => node
                        .core
                        .rebuild
                        .failed(store.name(), format!("partition {p}: {}", e.message)),
                }
            }
        }
        if !left {
            return;
        }
        if !progressed {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

async fn rebuild_partition(
    node: &LocalNode,
    store: &Arc<VersionedStore>,
    p: u32,
) -> Result<(), DynamoError> {
    let view = node.core.topology()?;
    let cfg = store.config();
    let me = node.name();
    let replicas = |r: &crate::ring::Ring| -> Vec<String> {
        r.preference_list(p, cfg.n)
            .iter()
            .map(|m| m.name.clone())
            .collect()
    };
    let serving = replicas(view.ring());
    let mine = serving.iter().any(|m| m == me)
        || replicas(view.target()).iter().any(|m| m == me)
        || view
            .next_step()
            .is_some_and(|s| replicas(&s.ring).iter().any(|m| m == me));
    if !mine {
        // Not a replica: a transfer brings the partition if it ever becomes one.
        return Ok(());
    }
    let sources: Vec<String> = serving.into_iter().filter(|m| m != me).collect();
    let need = (cfg.n + 1)
        .saturating_sub(cfg.w)
        .clamp(1, sources.len().max(1));
    let mut read = 0;
    let mut rebuilding = 0;
    let mut failures = Vec::new();
    for source in &sources {
        if !node.is_healthy(source) {
            // The probe loop finds out when it is back; the partition is tried again.
            failures.push(format!("{source}: believed down"));
            continue;
        }
        let board = &node.core.rebuild;
        let name = store.name().to_owned();
        match super::transfer::copy(node, store, p, source, &|keys, bytes| {
            board.progress(&name, keys, bytes)
        })
        .await
        {
            Ok(Copied::Whole) => read += 1,
            Ok(Copied::FromRebuilding) => {
                rebuilding += 1;
                failures.push(format!("{source}: rebuilding the partition itself"));
            }
            Err(e) if e.kind == ErrorKind::UnknownStore => read += 1,
            Err(e) => failures.push(format!("{source}: {}", e.message)),
        }
    }
    if !read_enough(read, rebuilding, sources.len(), need) && !sources.is_empty() {
        return Err(DynamoError::new(
            ErrorKind::Unavailable,
            format!(
                "read {read} of its {} other replica(s), {need} needed (N={}, W={}): {}",
                sources.len(),
                cfg.n,
                cfg.w,
                failures.join("; ")
            ),
        ));
    }
    let s = store.clone();
    node.engine_any("syncing a rebuilt partition", move || Ok(s.sync()?))
        .await
}
