//! Ownership transfer (paper section 4.9), on the receiving side.
//!
//! When the step after the serving one (see [`super::topology`]) makes this node a
//! replica of partitions it did not hold, this node pulls them and then says so with a
//! `Settled` change; once every receiver has, the next step serves. The pull:
//!
//! 1. Every member is told the change first, and the pull waits until each has taken
//!    it, merging what each knows (a member believed up that cannot be told makes the
//!    pull start again later; one believed down is tried once, and asks its peers for
//!    the membership when it starts, before it serves), so from then on every write
//!    coordinated anywhere also comes here (see [`Topology::second_sets`]). Writes
//!    started before a coordinator knew finish or fail within twice the request
//!    timeout, which the pull waits out.
//! 2. Each partition is read from its sources (its replicas in the serving ring), a
//!    page at a time (at most [`PAGE_KEYS`] keys and [`PAGE_BYTES`] of values; the
//!    next page is asked only once this one is merged: that is the backpressure), and
//!    merged into the local replica. Every source that answers is read whole (a write
//!    made with a smaller per-request W may be on one replica only), and per store at
//!    least N - W + 1 must have answered: every write acknowledged by the store's W
//!    replicas is on one of them.
//! 3. The stores are synced, what every member knows is merged once more, and only
//!    then, if the serving and next rings are still the ones pulled from and for, is
//!    `Settled` issued: the sources never drop data before the receiver made it
//!    durable, and a change made concurrently elsewhere is seen before the record.
//!
//! A step that moves no replica has no receivers: the first member that sees it next
//! tells the others and records it the same way, so that it keeps its place.
//!
//! A crash of either side only loses the pull in progress: merges are idempotent, and
//! the loop starts the pull again (after a restart, or when a source answers again).
//! A pull also starts again when the membership changes under it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{DynamoError, ErrorKind};
use crate::membership::{ChangeId, ChangeKind};
use crate::rpc;
use crate::store::VersionedStore;

use super::gossip;
use super::local::LocalNode;
use super::topology::{PendingMove, Topology};

pub use crate::api::status::{PartitionTransfer, TransferStatus};

/// Most keys per transfer page.
pub const PAGE_KEYS: u32 = 1_000;
/// Most value bytes per transfer page (a page may hold one larger record).
pub const PAGE_BYTES: u64 = 4 << 20;
/// How often the loop looks for work.
const TICK: Duration = Duration::from_millis(500);

/// The shared progress record (thread-safe: status is served from it).
#[derive(Debug, Default)]
pub struct TransferBoard {
    /// The transfer, when it started, and how long it took once settled (its rate
    /// and elapsed time stop there while the step waits for the other receivers).
    state: Mutex<Option<(TransferStatus, Instant, Option<Duration>)>>,
}

impl TransferBoard {
    #[allow(clippy::type_complexity)]
    fn with<R>(
        &self,
        f: impl FnOnce(&mut Option<(TransferStatus, Instant, Option<Duration>)>) -> R,
    ) -> R {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// The current transfer, if any, with its rate and ETA computed now.
    pub fn snapshot(&self) -> Option<TransferStatus> {
        self.with(|s| {
            s.as_ref().map(|(t, started, took)| {
                let mut t = t.clone();
                let secs = took.unwrap_or_else(|| started.elapsed()).as_secs_f64();
                t.elapsed_ms = (secs * 1000.0) as u64;
                t.keys = t.partitions.iter().map(|p| p.keys).sum();
                t.bytes = t.partitions.iter().map(|p| p.bytes).sum();
                t.rate_bytes_per_s = if secs > 0.0 {
                    (t.bytes as f64 / secs) as u64
                } else {
                    0
                };
                let done = t.partitions.iter().filter(|p| p.state == "done").count();
                let total = t.partitions.len();
                t.eta_ms = (done > 0 && t.phase == "copying").then(|| {
                    let per = secs / done as f64;
                    ((total - done) as f64 * per * 1000.0) as u64
                });
                t
            })
        })
    }

    fn start(
        &self,
        change: &ChangeId,
        action: String,
        moves: &[(std::sync::Arc<VersionedStore>, Vec<PendingMove>)],
        me: &str,
    ) {
        let mut partitions: Vec<PartitionTransfer> = Vec::new();
        for m in moves.iter().flat_map(|(_, ms)| ms) {
            if partitions.iter().any(|p| p.partition == m.partition) {
                continue;
            }
            partitions.push(PartitionTransfer {
                partition: m.partition,
                from: m.sources.clone(),
                to: me.to_owned(),
                state: "pending".into(),
                ..PartitionTransfer::default()
            });
        }
        partitions.sort_by_key(|p| p.partition);
        let status = TransferStatus {
            change: change.to_string(),
            action,
            phase: "waiting".into(),
            partitions,
            ..TransferStatus::default()
        };
        self.with(|s| *s = Some((status, Instant::now(), None)));
    }

    fn update(&self, f: impl FnOnce(&mut TransferStatus)) {
        self.with(|s| {
            if let Some((t, _, _)) = s.as_mut() {
                f(t);
            }
        });
    }

    /// Marks the transfer settled and stops its clock (once).
    fn settled(&self) {
        self.with(|s| {
            if let Some((t, started, took)) = s.as_mut() {
                t.phase = "settled".into();
                took.get_or_insert_with(|| started.elapsed());
            }
        });
    }

    fn partition(&self, p: u32, f: impl FnOnce(&mut PartitionTransfer)) {
        self.update(|t| {
            if let Some(x) = t.partitions.iter_mut().find(|x| x.partition == p) {
                f(x);
            }
        });
    }

    fn clear(&self) {
        self.with(|s| *s = None);
    }
}

/// What a change does, in a few words.
pub fn describe(kind: &ChangeKind) -> String {
    match kind {
        ChangeKind::Create { members, .. } => format!("create with {} member(s)", members.len()),
        ChangeKind::Join { member } => format!("join {}", member.name),
        ChangeKind::Leave { name } => format!("leave {name}"),
        ChangeKind::Replace { old, new } => format!("replace {old} by {}", new.name),
        ChangeKind::Remove { name } => format!("remove {name}"),
        ChangeKind::SetZone { name, zone } => {
            format!(
                "move {name} to zone {}",
                zone.as_deref().unwrap_or("(none)")
            )
        }
        ChangeKind::SetAddress { name, address } => format!("{name} now at {address}"),
        ChangeKind::Settled { change, node, .. } => {
            format!("{node} settled {change}")
        }
    }
}

/// Pulls what the next step moves to this node, forever (see the module doc).
pub async fn transfer_loop(node: LocalNode) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error = String::new();
    loop {
        tick.tick().await;
        let board = &node.core.transfers;
        let Some(view) = node.core.view() else {
            continue;
        };
        let Some(next) = view.next_step() else {
            board.clear();
            continue;
        };
        if view.has_settled(node.name()) {
            board.settled();
            continue;
        }
        if view.next_receivers().is_empty() {
            // A step that moves no replica is served once any member records it, after
            // telling the others (so a change sorting before it is known first).
            board.clear();
            let record = view.settlement(node.name());
            let recorded = match tell_members(&node, &view).await {
                Ok(()) => settle(&node, record).await,
                Err(e) => Err(e),
            };
            if let Err(e) = recorded {
                note_error(&node, &mut last_error, &e);
            }
            continue;
        }
        if !view.is_receiver(node.name()) {
            board.clear();
            continue;
        }
        // Per store, with its own replication factor.
        let moves: Vec<(std::sync::Arc<VersionedStore>, Vec<PendingMove>)> = node
            .core
            .stores
            .values()
            .map(|st| (st.clone(), view.moves(st.config().n, Some(node.name()))))
            .collect();
        let record = view.settlement(node.name());
        board.start(&next.change, describe(&next.kind), &moves, node.name());
        match pull(&node, &view, &moves).await {
            Ok(()) => match settle(&node, record).await {
                Ok(()) => last_error.clear(),
                Err(e) => note_error(&node, &mut last_error, &e),
            },
            Err(e) => note_error(&node, &mut last_error, &e),
        }
    }
}

fn note_error(node: &LocalNode, last: &mut String, e: &DynamoError) {
    node.core
        .transfers
        .update(|t| t.phase = format!("retrying: {}", e.message));
    if *last != e.message {
        eprintln!("{}: transfer: {} (retrying)", node.name(), e.message);
        last.clone_from(&e.message);
    }
}

/// Tells every member of `view` about its changes and merges what each knows (see
/// [`gossip::confirm_known`]): every member this node believes up must take them, and
/// one believed down is tried once too (it may be up, only not heard from lately); one
/// that does not answer then is skipped: it asks its peers for the membership when it
/// starts, before it serves.
/// Members are told all at once; a removed node (dead) is not waited for.
async fn tell_members(node: &LocalNode, view: &Topology) -> Result<(), DynamoError> {
    let peers: Vec<String> = view
        .member_names()
        .into_iter()
        .filter(|p| p != node.name() && !view.removed().contains(p))
        .collect();
    let told = futures::future::join_all(peers.iter().map(|peer| async move {
        let believed_up = node.is_healthy(peer);
        match gossip::confirm_known(node, peer, view.history()).await {
            Err(e) if believed_up => Err(DynamoError::new(
                e.kind,
                format!(
                    "telling {peer} about the change before copying: {}",
                    e.message
                ),
            )),
            _ => Ok(()),
        }
    }))
    .await;
    told.into_iter().collect()
}

/// Steps 1 to 3 of the module doc.
async fn pull(
    node: &LocalNode,
    view: &Topology,
    moves: &[(std::sync::Arc<VersionedStore>, Vec<PendingMove>)],
) -> Result<(), DynamoError> {
    let board = &node.core.transfers;
    let base = view.settlement(node.name());
    tell_members(node, view).await?;
    tokio::time::sleep(node.core.request_timeout() * 2 + Duration::from_millis(100)).await;
    board.update(|t| t.phase = "copying".into());
    // Partition by partition (all stores), so progress and ETA follow partitions.
    let mut by_partition: std::collections::BTreeMap<
        u32,
        Vec<(&std::sync::Arc<VersionedStore>, &PendingMove)>,
    > = std::collections::BTreeMap::new();
    for (store, store_moves) in moves {
        for mv in store_moves {
            by_partition
                .entry(mv.partition)
                .or_default()
                .push((store, mv));
        }
    }
    for (partition, work) in by_partition {
        board.partition(partition, |p| p.state = "running".into());
        for (store, mv) in work {
            let cfg = store.config();
            let need = (cfg.n + 1)
                .saturating_sub(cfg.w)
                .clamp(1, mv.sources.len().max(1));
            let mut read = 0;
            let mut rebuilding = 0;
            let mut failures = Vec::new();
            for source in &mv.sources {
                if node.core.view().and_then(|v| v.settlement(node.name())) != base {
                    return Err(DynamoError::new(
                        ErrorKind::Unavailable,
                        "the membership changed during the transfer; starting over",
                    ));
                }
                let board = &node.core.transfers;
                let progress = |keys, bytes| {
                    board.partition(partition, |x| {
                        x.keys += keys;
                        x.bytes += bytes;
                    })
                };
                match copy(node, store, partition, source, &progress).await {
                    Ok(Copied::Whole) => read += 1,
                    Ok(Copied::FromRebuilding) => {
                        rebuilding += 1;
                        failures.push(format!("{source}: rebuilding the partition itself"));
                    }
                    Err(e) => failures.push(format!("{source}: {}", e.message)),
                }
            }
            if !read_enough(read, rebuilding, mv.sources.len(), need) && !mv.sources.is_empty() {
                return Err(DynamoError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "partition {partition} of store {}: read {read} of its {} source(s), {need} \
                         needed (N={}, W={}): {}",
                        store.name(),
                        mv.sources.len(),
                        cfg.n,
                        cfg.w,
                        failures.join("; ")
                    ),
                ));
            }
        }
        board.partition(partition, |p| p.state = "done".into());
    }
    board.update(|t| t.phase = "syncing".into());
    for (store, _) in moves {
        let store = store.clone();
        node.engine_any("syncing after a transfer", move || Ok(store.sync()?))
            .await?;
    }
    Ok(())
}

/// Copies partition `p` of `store` from `source`, page by page, each page under the
/// admission budget; `progress` gets each page's keys and value bytes.
pub(super) async fn copy(
    node: &LocalNode,
    store: &std::sync::Arc<VersionedStore>,
    p: u32,
    source: &str,
    progress: &dyn Fn(u64, u64),
) -> Result<Copied, DynamoError> {
    let mut rebuilding = false;
    // The records first, then the reaped keys without a record: a new owner must keep
    // reaped keys from coming back as the old owners did (see docs/anti-entropy.md).
    for graveyard in [false, true] {
        let mut after: Vec<u8> = Vec::new();
        loop {
            let request = rpc::PageRequest {
                store: store.name().to_owned(),
                partition: p,
                after: after.clone(),
                limit: PAGE_KEYS as usize,
                max_bytes: PAGE_BYTES,
                graveyard,
            };
            let me = node.name().to_owned();
            let page = node
                .call_peer(source, "transfer", |c| async move {
                    rpc::call_partition_records(&c, source, &request, &me).await
                })
                .await?;
            rebuilding |= page.rebuilding;
            let (records, more) = (page.records, page.more);
            let keys = records.len() as u64;
            let bytes: u64 = records
                .iter()
                .flat_map(|r| r.versions.iter())
                .map(|v| v.value.as_ref().map_or(0, |x| x.len() as u64))
                .sum();
            if let Some(last) = records.last() {
                after.clone_from(&last.key);
            }
            let (core, st) = (node.core.clone(), store.clone());
            node.engine_any("merging a transfer page", move || {
                for r in records {
                    core.hints.merge_with_reaped(
                        &st,
                        &r.key,
                        r.versions,
                        r.reaped.as_ref(),
                        None,
                    )?;
                }
                Ok(())
            })
            .await?;
            if !graveyard {
                progress(keys, bytes);
            }
            node.core.admission.acquire(keys.max(1)).await;
            // A page that says more but brought nothing would never end.
            if !more || keys == 0 {
                break;
            }
        }
    }
    Ok(match rebuilding {
        true => Copied::FromRebuilding,
        false => Copied::Whole,
    })
}

/// What a [`copy`] read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Copied {
    /// Everything the source holds, and the source is whole.
    Whole,
    /// Everything the source holds, but the source is rebuilding the partition itself:
    /// it may lack writes it acknowledged before it lost its data.
    FromRebuilding,
}

/// Whether a partition read from its sources has all it must have: `complete` sources
/// were read whole (`need` of them suffice: N - W + 1, so one holds each write
/// acknowledged by W replicas), or every source answered and those not read whole are
/// rebuilding themselves. In that second case the replicas that could still hold a
/// write no whole source has all lost their data (more than the N - W losses a write at
/// W survives), so waiting would gain nothing and, with several nodes rebuilding from
/// each other (a new cluster's first start), never end.
pub(super) fn read_enough(complete: usize, rebuilding: usize, sources: usize, need: usize) -> bool {
    complete >= need || complete + rebuilding == sources
}

/// Drops, in the background, the partitions this node is no longer a replica of: once
/// no transfer is pending and the serving ring has served here longer than the
/// membership grace period (so the receivers made the data durable long ago, and
/// readers with an older ring have moved on). Keys with a hint still waiting are kept:
/// hinted handoff moves them. Each partition is dropped once per serving ring.
pub async fn drop_loop(node: LocalNode) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut done: std::collections::HashSet<(String, u32, String)> = Default::default();
    loop {
        tick.tick().await;
        let Some(view) = node.core.view() else {
            continue;
        };
        if !node.core.config.node.drop_moved_partitions
            || view.next_step().is_some()
            || node.core.serving_for() < node.core.membership_grace()
        {
            continue;
        }
        let serving = view.serving_digest();
        // Every name the history ever held: hints may be kept for any of them.
        let mut owners: Vec<String> = view
            .history()
            .changes()
            .flat_map(|c| c.kind.names().into_iter().map(str::to_owned))
            .collect();
        owners.sort();
        owners.dedup();
        let stores: Vec<_> = node.core.stores.values().cloned().collect();
        'pass: for store in stores {
            let n = store.config().n;
            for p in 0..view.ring().partition_count() {
                let mine = |r: &crate::ring::Ring| {
                    r.preference_list(p, n)
                        .iter()
                        .any(|m| m.name == node.name())
                };
                let key = (store.name().to_owned(), p, serving.clone());
                if mine(view.ring()) || mine(view.target()) || done.contains(&key) {
                    continue;
                }
                match drop_partition(&node, &view, &store, p, &owners).await {
                    Ok(0) => {}
                    Ok(k) => eprintln!(
                        "{}: dropped {k} key(s) of partition {p} of store {}: no longer a replica",
                        node.name(),
                        store.name()
                    ),
                    Err(e) => {
                        // The view changed (or the store failed): start a fresh pass.
                        eprintln!("{}: dropping partition {p}: {}", node.name(), e.message);
                        break 'pass;
                    }
                }
                done.insert(key);
            }
        }
    }
}

/// Drops partition `p` of `store` here, a page at a time, but for keys with a hint
/// waiting for any of `owners`; stops as soon as the view is no longer `view` (a
/// change may make this node a receiver of `p` again, and its pull must not be
/// deleted). Returns the keys dropped.
async fn drop_partition(
    node: &LocalNode,
    view: &std::sync::Arc<Topology>,
    store: &std::sync::Arc<VersionedStore>,
    p: u32,
    owners: &[String],
) -> Result<usize, DynamoError> {
    let mut after: Vec<u8> = Vec::new();
    let mut dropped = 0;
    loop {
        let (st, owners, from) = (store.clone(), owners.to_vec(), after.clone());
        let (core, seen) = (node.core.clone(), view.clone());
        let (n, last, more) = node
            .engine_any("dropping a partition", move || {
                let (keys, more) = st.keys_after(p, &from, 100)?;
                let mut n = 0;
                for k in &keys {
                    let same = core
                        .view()
                        .is_some_and(|now| std::sync::Arc::ptr_eq(&now, &seen));
                    if !same {
                        return Err(DynamoError::new(
                            ErrorKind::Unavailable,
                            "the membership changed; the drop waits for the next pass",
                        ));
                    }
                    let siblings = st.get(k)?.siblings;
                    if super::hints::HintLog::pending_for_key(&st, &owners, k)? {
                        continue;
                    }
                    if st.forget(k, &siblings)? {
                        n += 1;
                    }
                }
                Ok((n, keys.last().cloned(), more))
            })
            .await?;
        dropped += n;
        match (more, last) {
            (true, Some(l)) => after = l,
            _ => return Ok(dropped),
        }
    }
}

/// Issues `record` (the `Settled` change the view the pull started from gave) here
/// and tells every member at once. Not when the view moved on during the pull (its
/// serving or next ring is another): the pull then starts again against the new view.
/// Right before, it learns what every member it reaches knows, so that a change made
/// concurrently elsewhere (and carried out first, or sorting first) is seen now rather
/// than after this record, which would then be void.
async fn settle(node: &LocalNode, record: Option<ChangeKind>) -> Result<(), DynamoError> {
    gossip::exchange_with_members(node).await;
    let changed = || {
        DynamoError::new(
            ErrorKind::Unavailable,
            "the membership changed during the transfer; starting over",
        )
    };
    let record = record.ok_or_else(changed)?;
    let core = node.core.clone();
    let view = node
        .engine_any("membership", move || core.settle(record))
        .await?
        .ok_or_else(changed)?;
    node.core.transfers.settled();
    eprintln!(
        "{}: transfer settled; serving ring version {}",
        node.name(),
        view.version()
    );
    gossip::exchange_with_members(node).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_settled_transfer_keeps_its_elapsed_time_and_rate() {
        let board = TransferBoard::default();
        let change = ChangeId {
            origin: "o".into(),
            seq: 1,
        };
        board.start(&change, "join d".into(), &[], "d");
        board.update(|t| {
            t.partitions.push(PartitionTransfer {
                partition: 0,
                bytes: 1_000_000,
                keys: 10,
                state: "done".into(),
                ..PartitionTransfer::default()
            })
        });
        std::thread::sleep(Duration::from_millis(20));
        board.settled();
        let first = board.snapshot().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let later = board.snapshot().unwrap();
        assert_eq!(first.phase, "settled");
        assert_eq!(later.elapsed_ms, first.elapsed_ms);
        assert_eq!(later.rate_bytes_per_s, first.rate_bytes_per_s);
        assert!(first.rate_bytes_per_s > 0);
        assert_eq!(later.bytes, 1_000_000);
    }
}

#[cfg(test)]
mod read_enough_tests {
    use super::read_enough;

    #[test]
    fn a_rebuilding_source_counts_only_when_every_unread_one_is_rebuilding() {
        // N=3, W=2: two whole sources are needed of two.
        assert!(read_enough(2, 0, 2, 2));
        assert!(!read_enough(1, 0, 2, 2), "one source not read");
        // The other source is rebuilding too: nothing more can be read anywhere.
        assert!(read_enough(1, 1, 2, 2));
        assert!(read_enough(0, 2, 2, 2));
        // N=5, W=3, need 3 of 4: two whole, one rebuilding, one down: wait for it.
        assert!(!read_enough(2, 1, 4, 3));
        assert!(read_enough(3, 1, 4, 3));
    }
}
