//! Anti-entropy (paper section 4.7): replicas of a partition compare their hash trees
//! ([`crate::store::tree`]) and exchange only the keys that differ; and, as part of it,
//! settled tombstones are reaped.
//!
//! **Exchange.** Every `[anti_entropy] interval_ms` this node takes the next peer in
//! rotation and, per store, the partitions both replicate in the serving ring:
//! 1. one call fetches the peer's roots of all of them; equal roots end the exchange of
//!    that partition (the usual case costs 8 bytes per partition);
//! 2. for a partition whose roots differ: the 16 branch hashes, then the leaves of the
//!    differing branches, then the (key, state hash) lists of the differing segments,
//!    on both sides, give the differing keys;
//! 3. after `confirm_delay_ms` the same segments are listed again on both sides, and
//!    only keys that still differ count: a write still on its way to one replica is no
//!    repair work (TicTac AAE compares twice the same way);
//! 4. those keys, at most `max_keys_per_exchange` per exchange, are read from the peer
//!    (versions and reaped context), merged here with the normal merge path, and this
//!    node's merged records are merged into the peer: both ways.
//!
//! A partition counts as exchanged with a peer when its roots matched or its repair
//! finished; `dynamo status` shows exchanges, keys repaired and the oldest age of a
//! partition's last successful exchange (over its other replicas).
//!
//! **Reaping.** On the same tick, a node that is the first replica of a partition in
//! the serving ring checks one partition's tombstones that are older than
//! `reap_delay_ms` (the store's `tombstones` keyspace lists them without a scan). A
//! tombstone is reaped only when no membership change is pending (no transfer, the
//! grace period after the last switch is over), every other replica of the partition
//! holds exactly those tombstones (or has already reaped them: its reaped context
//! covers them), no node that answers holds a hint for the key, and nothing for it is
//! waiting here. Each owner then removes the key only if it still holds exactly what
//! was checked, and keeps its reaped context (see [`crate::store::VersionedStore::reap`]).
//! That context is what keeps a reaped key from coming back: no merge takes a covered
//! version in again, a read drops covered versions other replicas return, and read
//! repair and this exchange hand the context to a replica that still holds them (a
//! node restored from an old copy of its data directory, a late hint, a transfer).
//!
//! Every step runs under the admission budget ([`super::admission`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{DynamoError, ErrorKind};
use crate::rpc::anti_entropy as wire;
use crate::store::tree::{BRANCHES, LEAVES_PER_BRANCH};
use crate::store::{chunk_by_bytes, KeyState, VersionedStore};

use super::hints::HintLog;
use super::local::LocalNode;
use super::topology::Topology;

pub use crate::api::status::AntiEntropyStatus;

/// Keys listed per segment in one call.
const SEGMENT_LIMIT: u32 = 10_000;
/// Tombstones checked per reap pass.
const REAP_BATCH: usize = 500;
/// Tree pages rebuilt per step at startup.
const TREE_PAGE: usize = 1_000;

#[derive(Default)]
struct Board {
    exchanges: u64,
    differences_seen: u64,
    keys_repaired: u64,
    /// (store, partition, peer) → last successful exchange.
    last_ok: BTreeMap<(String, u32, String), Instant>,
    tombstones: BTreeMap<(String, u32), u64>,
    reaped: u64,
    last_kept: Option<String>,
    last_error: Option<String>,
}

/// The node's anti-entropy progress (thread-safe: status reads it).
#[derive(Default)]
pub struct AntiEntropyBoard {
    inner: Mutex<Board>,
}

impl std::fmt::Debug for AntiEntropyBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AntiEntropyBoard")
    }
}

impl AntiEntropyBoard {
    fn with<R>(&self, f: impl FnOnce(&mut Board) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Counts keys reaped here on another node's request.
    pub fn count_reaped(&self, n: u64) {
        self.with(|b| b.reaped += n);
    }

    fn exchanged(&self, store: &str, p: u32, peer: &str) {
        self.with(|b| {
            b.exchanges += 1;
            b.last_ok
                .insert((store.to_owned(), p, peer.to_owned()), Instant::now());
        });
    }

    /// The status (without the parts other boards fill in).
    pub fn status(&self, node: &super::NodeCore) -> AntiEntropyStatus {
        let view = node.view();
        let mut oldest: Option<(Duration, String)> = None;
        if let Some(view) = &view {
            let me = node.name();
            self.with(|b| {
                for store in node.stores.values() {
                    let n = store.config().n;
                    for p in 0..view.ring().partition_count() {
                        let owners = view.ring().preference_list(p, n);
                        if !owners.iter().any(|m| m.name == me) {
                            continue;
                        }
                        for peer in owners.iter().filter(|m| m.name != me) {
                            let key = (store.name().to_owned(), p, peer.name.clone());
                            let age = b
                                .last_ok
                                .get(&key)
                                .map_or_else(|| node.started.elapsed(), Instant::elapsed);
                            if oldest.as_ref().is_none_or(|(a, _)| age > *a) {
                                oldest =
                                    Some((age, format!("{}/{p} with {}", store.name(), peer.name)));
                            }
                        }
                    }
                }
            });
        }
        let (trees_ready, trees_total) = node.stores.values().fold((0, 0), |(r, t), s| {
            (r + s.trees_ready() as u64, t + u64::from(s.partitions()))
        });
        self.with(|b| AntiEntropyStatus {
            enabled: node.config.anti_entropy.enabled,
            exchanges: b.exchanges,
            differences_seen: b.differences_seen,
            keys_repaired: b.keys_repaired,
            oldest_exchange_age_ms: oldest.as_ref().map(|(a, _)| a.as_millis() as u64),
            oldest_exchange: oldest.map(|(_, w)| w),
            trees_ready,
            trees_total,
            tombstones: b.tombstones.values().sum(),
            reaped: b.reaped,
            last_kept: b.last_kept.clone(),
            last_error: b.last_error.clone(),
            rebuild: node.rebuild.status(),
            admission: node.admission.status(),
            refused_hints: node.handoff.refused(),
        })
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Builds every store's trees in the background at startup (indexing a store written
/// before the `aae` keyspace existed first), a page at a time under the admission
/// budget; then exchanges and reaps, forever (see the module doc).
pub async fn anti_entropy_loop(node: LocalNode) {
    build_trees(&node).await;
    if !node.core.config.anti_entropy.enabled {
        return;
    }
    let every = Duration::from_millis(node.core.config.anti_entropy.interval_ms);
    // As gossip does, the first round waits: peers started with this node may not
    // listen yet, and a failed call marks its peer down.
    let first = tokio::time::Instant::now()
        + every.max(Duration::from_millis(
            node.core.config.node.gossip_interval_ms,
        ));
    let mut tick = tokio::time::interval_at(first, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut turn: usize = 0;
    let mut reaping = ReapCursor::default();
    loop {
        tick.tick().await;
        let Some(view) = node.core.view() else {
            continue;
        };
        let peers: Vec<String> = view
            .ring()
            .members()
            .iter()
            .map(|m| m.name.clone())
            .filter(|m| m != node.name() && node.is_healthy(m))
            .collect();
        if !peers.is_empty() {
            let peer = peers[turn % peers.len()].clone();
            turn = turn.wrapping_add(1);
            for store in node.core.stores.values() {
                if let Err(e) = exchange(&node, &view, store, &peer).await {
                    node.core.aae.with(|b| {
                        b.last_error = Some(format!(
                            "exchange of store {} with {peer}: {}",
                            store.name(),
                            e.message
                        ))
                    });
                }
            }
        }
        if let Err(e) = reap_pass(&node, &view, &mut reaping).await {
            node.core
                .aae
                .with(|b| b.last_error = Some(format!("reaping: {}", e.message)));
        }
    }
}

async fn build_trees(node: &LocalNode) {
    for store in node.core.stores.values() {
        if !store.is_indexed() {
            eprintln!(
                "{}: store {} has no anti-entropy index yet (written by an older version): \
                 indexing it in the background",
                node.name(),
                store.name()
            );
            for p in 0..store.partitions() {
                let mut after: Vec<u8> = Vec::new();
                loop {
                    node.core.admission.acquire(TREE_PAGE as u64).await;
                    let (s, from) = (store.clone(), after.clone());
                    match node
                        .engine_any("indexing a store", move || {
                            Ok(s.index_page(p, &from, TREE_PAGE)?)
                        })
                        .await
                    {
                        Ok((Some(last), true)) => after = last,
                        Ok(_) => break,
                        Err(e) => {
                            eprintln!(
                                "{}: indexing store {}: {}",
                                node.name(),
                                store.name(),
                                e.message
                            );
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }
            let s = store.clone();
            if let Err(e) = node
                .engine_any("indexing a store", move || Ok(s.finish_indexing()?))
                .await
            {
                eprintln!(
                    "{}: indexing store {}: {}",
                    node.name(),
                    store.name(),
                    e.message
                );
            }
        }
        for p in 0..store.partitions() {
            loop {
                let s = store.clone();
                let step = node
                    .engine_any("rebuilding a tree", move || {
                        Ok(s.rebuild_tree_page(p, TREE_PAGE)?)
                    })
                    .await;
                match step {
                    Ok((true, n)) => {
                        node.core.admission.acquire(n as u64).await;
                        break;
                    }
                    Ok((false, n)) => node.core.admission.acquire(n.max(1) as u64).await,
                    Err(e) => {
                        eprintln!(
                            "{}: building a tree of store {}: {}",
                            node.name(),
                            store.name(),
                            e.message
                        );
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }
}

/// The partitions of `store` that this node and `peer` both replicate in the serving
/// ring, that this node has a current tree of and is not rebuilding.
fn shared_partitions(
    node: &LocalNode,
    view: &Topology,
    store: &VersionedStore,
    peer: &str,
) -> Vec<u32> {
    let n = store.config().n;
    let me = node.name();
    (0..view.ring().partition_count())
        .filter(|p| {
            let owners = view.ring().preference_list(*p, n);
            owners.iter().any(|m| m.name == me)
                && owners.iter().any(|m| m.name == peer)
                && !node.core.rebuild.is_rebuilding(store.name(), *p)
                && store.tree_ready(*p)
        })
        .collect()
}

/// Steps 1 to 4 of the module doc for every partition of `store` shared with `peer`.
async fn exchange(
    node: &LocalNode,
    view: &Topology,
    store: &Arc<VersionedStore>,
    peer: &str,
) -> Result<(), DynamoError> {
    let shared = shared_partitions(node, view, store, peer);
    if shared.is_empty() {
        return Ok(());
    }
    let name = store.name().to_owned();
    node.core
        .admission
        .acquire(shared.len() as u64 / 16 + 1)
        .await;
    let mut differing = Vec::new();
    for chunk in shared.chunks(1024) {
        let (n, parts) = (name.clone(), chunk.to_vec());
        let theirs = node
            .call_peer(peer, "anti-entropy", |c| async move {
                wire::call_roots(&c, peer, &n, &parts).await
            })
            .await?;
        for (p, remote) in chunk.iter().zip(theirs) {
            let Some(remote) = remote else { continue };
            match store.tree_root(*p) {
                Some(mine) if mine == remote => node.core.aae.exchanged(&name, *p, peer),
                Some(_) => differing.push(*p),
                None => {}
            }
        }
    }
    let mut budget = node.core.config.anti_entropy.max_keys_per_exchange;
    for p in differing {
        if budget == 0 {
            break;
        }
        match repair_partition(node, store, p, peer, budget).await {
            Ok((repaired, complete)) => {
                budget = budget.saturating_sub(repaired);
                // An exchange cut short by the cap is not a successful one: the
                // partition's age goes on growing until one repairs everything.
                if complete {
                    node.core.aae.exchanged(&name, p, peer);
                }
            }
            Err(e) if unreachable(&e) => return Err(e),
            // A partition that failed for a reason of its own (a refusal, a reply too
            // large) must not keep the others from their exchange.
            Err(e) => node.core.aae.with(|b| {
                b.last_error = Some(format!(
                    "exchange of {name} partition {p} with {peer}: {}",
                    e.message
                ))
            }),
        }
    }
    Ok(())
}

/// The keys of partition `p` whose state differs from `peer`'s, found by descending from
/// the branches (`segments` `None`) or by listing the given segments; with the segments
/// compared, and whether every key of them was listed.
async fn differing_keys(
    node: &LocalNode,
    store: &Arc<VersionedStore>,
    p: u32,
    peer: &str,
    segments: Option<Vec<u16>>,
) -> Result<(BTreeSet<Vec<u8>>, Vec<u16>, bool), DynamoError> {
    let name = store.name().to_owned();
    let segments = match segments {
        Some(s) => s,
        None => {
            let n = name.clone();
            let theirs = node
                .call_peer(peer, "anti-entropy", |c| async move {
                    wire::call_tree(&c, peer, &n, p, &[]).await
                })
                .await?;
            let (Some(theirs), Some(mine)) = (theirs, store.tree_branches(p)) else {
                return Ok((BTreeSet::new(), Vec::new(), true));
            };
            let branches: Vec<u16> = (0..BRANCHES)
                .filter(|b| theirs.get(*b) != mine.get(*b))
                .map(|b| b as u16)
                .collect();
            if branches.is_empty() {
                return Ok((BTreeSet::new(), Vec::new(), true));
            }
            let (n, bs) = (name.clone(), branches.clone());
            let theirs = node
                .call_peer(peer, "anti-entropy", |c| async move {
                    wire::call_tree(&c, peer, &n, p, &bs).await
                })
                .await?;
            let (Some(theirs), Some(mine)) = (theirs, store.tree_leaves(p, &branches)) else {
                return Ok((BTreeSet::new(), Vec::new(), true));
            };
            let mut segs = Vec::new();
            for (i, b) in branches.iter().enumerate() {
                for l in 0..LEAVES_PER_BRANCH {
                    let at = i * LEAVES_PER_BRANCH + l;
                    if theirs.get(at) != mine.get(at) {
                        segs.push(*b * LEAVES_PER_BRANCH as u16 + l as u16);
                    }
                }
            }
            segs
        }
    };
    if segments.is_empty() {
        return Ok((BTreeSet::new(), segments, true));
    }
    let mut theirs = Vec::new();
    let mut listed_all = true;
    let mut rest: &[u16] = &segments;
    while !rest.is_empty() {
        let (n, segs) = (name.clone(), rest.to_vec());
        let page = node
            .call_peer(peer, "anti-entropy", |c| async move {
                wire::call_segments(&c, peer, &n, p, &segs, SEGMENT_LIMIT).await
            })
            .await?;
        theirs.extend(page.keys);
        listed_all &= !page.more;
        rest = &rest[page.listed.min(rest.len())..];
    }
    let (s, segs) = (store.clone(), segments.clone());
    let (mine, mine_all) = node
        .engine_any("listing segments", move || {
            let mut all = Vec::new();
            let mut every = true;
            for seg in segs {
                let (keys, more) = s.segment_hashes(p, seg as u8, SEGMENT_LIMIT as usize)?;
                all.extend(keys);
                every &= !more;
            }
            Ok((all, every))
        })
        .await?;
    let listed_all = listed_all && mine_all;
    let theirs: BTreeMap<Vec<u8>, u64> = theirs.into_iter().collect();
    let mine: BTreeMap<Vec<u8>, u64> = mine.into_iter().collect();
    let mut diff = BTreeSet::new();
    for (k, h) in &mine {
        if theirs.get(k) != Some(h) {
            diff.insert(k.clone());
        }
    }
    for k in theirs.keys() {
        if !mine.contains_key(k) {
            diff.insert(k.clone());
        }
    }
    Ok((diff, segments, listed_all))
}

/// Compares partition `p` with `peer` twice and repairs the keys that differ both
/// times, at most `cap`; returns how many were repaired, and whether that was every
/// difference found.
async fn repair_partition(
    node: &LocalNode,
    store: &Arc<VersionedStore>,
    p: u32,
    peer: &str,
    cap: usize,
) -> Result<(usize, bool), DynamoError> {
    let (first, segments, listed_all) = differing_keys(node, store, p, peer, None).await?;
    if first.is_empty() {
        return Ok((0, listed_all));
    }
    node.core
        .aae
        .with(|b| b.differences_seen += first.len() as u64);
    tokio::time::sleep(Duration::from_millis(
        node.core.config.anti_entropy.confirm_delay_ms,
    ))
    .await;
    let (second, _, _) = differing_keys(node, store, p, peer, Some(segments)).await?;
    let confirmed = first.intersection(&second).count();
    let keys: Vec<Vec<u8>> = first.intersection(&second).take(cap).cloned().collect();
    for chunk in keys.chunks(wire::MAX_RECORDS_PER_CALL) {
        repair_keys(node, store, peer, chunk.to_vec()).await?;
        node.core
            .aae
            .with(|b| b.keys_repaired += chunk.len() as u64);
    }
    Ok((keys.len(), listed_all && confirmed <= cap))
}

/// Whether `e` says the peer could not be reached (the exchange with it stops) rather
/// than that it refused something (the exchange goes on with the next keys).
fn unreachable(e: &DynamoError) -> bool {
    matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Timeout)
}

/// Reads `keys` from `peer`, merges them here, and merges this node's result there.
/// Replies and merges are split to fit in a message; a record either side refuses is
/// noted in the status and does not keep the others out.
async fn repair_keys(
    node: &LocalNode,
    store: &Arc<VersionedStore>,
    peer: &str,
    keys: Vec<Vec<u8>>,
) -> Result<(), DynamoError> {
    node.core.admission.acquire(keys.len() as u64).await;
    let name = store.name().to_owned();
    let mut rest: &[Vec<u8>] = &keys;
    while !rest.is_empty() {
        let (n, ks) = (name.clone(), rest.to_vec());
        let theirs = node
            .call_peer(peer, "anti-entropy", |c| async move {
                wire::call_fetch(&c, peer, &n, &ks).await
            })
            .await?;
        let (answered, later) = rest.split_at(theirs.len().min(rest.len()));
        rest = later;
        let (core, s, asked) = (node.core.clone(), store.clone(), answered.to_vec());
        let mine = node
            .engine_any("merging an anti-entropy repair", move || {
                let mut out = Vec::with_capacity(asked.len());
                for (key, t) in asked.into_iter().zip(theirs) {
                    // A record this node refuses (over its limits) must not keep the
                    // others out; the refusal shows in the status.
                    if let Err(e) =
                        core.hints
                            .merge_with_reaped(&s, &key, t.versions, t.reaped.as_ref(), None)
                    {
                        core.aae
                            .with(|b| b.last_error = Some(format!("merging a repair here: {e}")));
                    }
                    let read = s.get(&key)?;
                    out.push(KeyState {
                        key,
                        versions: read.siblings.into_versions(),
                        reaped: read.reaped,
                    });
                }
                Ok(out)
            })
            .await?;
        for run in chunk_by_bytes(mine, node.core.max_message / 4) {
            let n = name.clone();
            let merged = node
                .call_peer(peer, "anti-entropy", |c| async move {
                    wire::call_merge_records(&c, peer, &n, &run).await
                })
                .await;
            match merged {
                Ok(()) => {}
                Err(e) if unreachable(&e) => return Err(e),
                Err(e) => node.core.aae.with(|b| {
                    b.last_error = Some(format!("merging a repair at {peer}: {}", e.message))
                }),
            }
        }
    }
    Ok(())
}

/// Every name the membership history ever held (hints may be kept for any of them).
pub(crate) fn history_names(view: &Topology) -> Vec<String> {
    let mut names: Vec<String> = view
        .history()
        .changes()
        .flat_map(|c| c.kind.names().into_iter().map(str::to_owned))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Where the reap passes are: the next partition to reap, the next to expire reaped
/// contexts in, and how far each partition's tombstones were checked (so tombstones
/// that must stay a while never keep later ones from being checked).
#[derive(Default)]
struct ReapCursor {
    turn: usize,
    expire_turn: usize,
    after: BTreeMap<(String, u32), Vec<u8>>,
}

/// One reap pass over the next partition this node is the first replica of (see the
/// module doc), and an expiry of reaped contexts in the next partition it holds.
async fn reap_pass(
    node: &LocalNode,
    view: &Arc<Topology>,
    cursor: &mut ReapCursor,
) -> Result<(), DynamoError> {
    let me = node.name().to_owned();
    let cfg = &node.core.config.anti_entropy;
    let now = now_ms();
    let expire_before = now.saturating_sub(cfg.reaped_retention_ms);
    // Reaped contexts expire on every replica, one partition of every store per pass
    // (a node keeps contexts of partitions it is not first of, or no longer owns).
    let stores: Vec<Arc<VersionedStore>> = node.core.stores.values().cloned().collect();
    let partitions = view.ring().partition_count() as usize;
    if !stores.is_empty() && partitions > 0 {
        let at = cursor.expire_turn % (stores.len() * partitions);
        cursor.expire_turn = cursor.expire_turn.wrapping_add(1);
        let (s, q) = (stores[at / partitions].clone(), (at % partitions) as u32);
        node.engine_any("expiring reaped contexts", move || {
            Ok(s.expire_reaped(q, expire_before)?)
        })
        .await?;
    }
    let mut work: Vec<(Arc<VersionedStore>, u32)> = Vec::new();
    for store in node.core.stores.values() {
        let n = store.config().n;
        for p in 0..view.ring().partition_count() {
            let first = view
                .ring()
                .preference_list(p, n)
                .first()
                .map(|m| m.name.clone());
            if first.as_deref() == Some(me.as_str()) {
                work.push((store.clone(), p));
            }
        }
    }
    if work.is_empty() {
        return Ok(());
    }
    let (store, p) = work[cursor.turn % work.len()].clone();
    cursor.turn = cursor.turn.wrapping_add(1);
    let due_before = now.saturating_sub(cfg.reap_delay_ms);
    let names = history_names(view);
    let s = store.clone();
    let names2 = names.clone();
    let at = cursor
        .after
        .remove(&(store.name().to_owned(), p))
        .unwrap_or_default();
    let (candidates, count, next) = node
        .engine_any("listing tombstones", move || {
            let count = s.tombstone_count(p)?;
            let (keys, more) = s.tombstones_before(p, &at, due_before, REAP_BATCH)?;
            let next = match (more, keys.last()) {
                (true, Some(last)) => Some(last.clone()),
                _ => None,
            };
            let mut out = Vec::new();
            for key in keys {
                if HintLog::pending_for_key(&s, &names2, &key)? {
                    continue;
                }
                let read = s.get(&key)?;
                if read.siblings.all_tombstones() {
                    out.push(KeyState {
                        key,
                        versions: read.siblings.into_versions(),
                        reaped: None,
                    });
                }
            }
            Ok((out, count, next))
        })
        .await?;
    if let Some(next) = next {
        cursor.after.insert((store.name().to_owned(), p), next);
    }
    node.core
        .aae
        .with(|b| b.tombstones.insert((store.name().to_owned(), p), count));
    if candidates.is_empty() {
        return Ok(());
    }
    let keep = |why: String| {
        node.core.aae.with(|b| b.last_kept = Some(why));
        Ok(())
    };
    if view.next_step().is_some() {
        return keep(format!(
            "{} tombstone(s) of {}/{p}: a membership change is in progress",
            candidates.len(),
            store.name()
        ));
    }
    if node.core.serving_for() < node.core.membership_grace() {
        return keep(format!(
            "{} tombstone(s) of {}/{p}: the grace period after the last ring switch is not over",
            candidates.len(),
            store.name()
        ));
    }
    let n = store.config().n;
    let owners: Vec<String> = view
        .ring()
        .preference_list(p, n)
        .iter()
        .map(|m| m.name.clone())
        .filter(|m| *m != me)
        .collect();
    let others: Vec<String> = view
        .member_names()
        .into_iter()
        .filter(|m| *m != me)
        .collect();
    node.core
        .admission
        .acquire(candidates.len() as u64 * (others.len() as u64 + 1))
        .await;
    let name = store.name().to_owned();
    let checks = futures::future::join_all(others.iter().map(|m| {
        let (n, recs) = (name.clone(), candidates.clone());
        async move {
            let r = node
                .call_peer(m, "reap check", |c| async move {
                    wire::call_reap_check(&c, m, &n, &recs).await
                })
                .await;
            (m.clone(), r)
        }
    }))
    .await;
    let mut ok = vec![true; candidates.len()];
    let mut owner_states: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (m, r) in checks {
        let is_owner = owners.contains(&m);
        match r {
            Ok((_, true)) => {
                return keep(format!(
                    "{} tombstone(s) of {}/{p}: {m} has a membership change in progress",
                    candidates.len(),
                    store.name()
                ))
            }
            Ok((states, false)) => {
                for (i, st) in states.iter().enumerate() {
                    let fine = if is_owner {
                        *st == 1 || *st == 2
                    } else {
                        *st != 3
                    };
                    ok[i] &= fine;
                }
                if is_owner {
                    owner_states.insert(m, states);
                }
            }
            Err(e) if is_owner => {
                return keep(format!(
                    "{} tombstone(s) of {}/{p}: owner {m} could not be asked ({})",
                    candidates.len(),
                    store.name(),
                    e.message
                ))
            }
            // A node that is no owner only vouches that it holds no hint; the reaped
            // context keeps a late hint from such a node from bringing the key back.
            Err(_) => {}
        }
    }
    let reapable: Vec<usize> = (0..candidates.len()).filter(|i| ok[*i]).collect();
    if reapable.len() < candidates.len() {
        node.core.aae.with(|b| {
            b.last_kept = Some(format!(
                "{} of {} tombstone(s) of {}/{p}: a replica holds something else or a hint",
                candidates.len() - reapable.len(),
                candidates.len(),
                store.name()
            ))
        });
    }
    if reapable.is_empty() {
        return Ok(());
    }
    for (m, states) in &owner_states {
        let recs: Vec<KeyState> = reapable
            .iter()
            .filter(|i| states[**i] == 1)
            .map(|i| candidates[*i].clone())
            .collect();
        if recs.is_empty() {
            continue;
        }
        let n = name.clone();
        node.call_peer(m, "reap", |c| async move {
            wire::call_reap(&c, m, &n, &recs).await
        })
        .await?;
    }
    let recs: Vec<KeyState> = reapable.iter().map(|i| candidates[*i].clone()).collect();
    let s = store.clone();
    let policy = store.config().policy;
    let reaped = node
        .engine_any("reaping", move || {
            let mut n = 0u64;
            for r in recs {
                let observed = crate::version::Siblings::from_versions(r.versions, policy);
                if s.reap(&r.key, &observed)? {
                    n += 1;
                }
            }
            Ok(n)
        })
        .await?;
    node.core.aae.with(|b| b.reaped += reaped);
    Ok(())
}

/// What this node holds of `record`'s key before a reap (see `Internode.reapCheck`).
pub(crate) fn reap_state(
    store: &VersionedStore,
    names: &[String],
    record: &KeyState,
) -> Result<u8, DynamoError> {
    if HintLog::pending_for_key(store, names, &record.key)? {
        return Ok(3);
    }
    let read = store.get(&record.key)?;
    let theirs =
        crate::version::Siblings::from_versions(record.versions.clone(), store.config().policy);
    if read.siblings.is_empty() {
        let covered = read.reaped.as_ref().is_some_and(|r| {
            theirs
                .versions()
                .iter()
                .all(|v| r.covers_write(&v.dot, v.request_id))
        });
        return Ok(if covered { 2 } else { 0 });
    }
    Ok(u8::from(read.siblings == theirs))
}

/// A bad-request error for a partition the store does not have.
pub(crate) fn check_partition(store: &VersionedStore, p: u32) -> Result<u32, DynamoError> {
    if p < store.partitions() {
        return Ok(p);
    }
    Err(DynamoError::new(
        ErrorKind::BadRequest,
        format!(
            "partition {p} does not exist: store {} has {} partitions",
            store.name(),
            store.partitions()
        ),
    ))
}
