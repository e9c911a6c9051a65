//! Background loops: local failure detection (each peer pinged on its own schedule)
//! and hinted handoff (deliver hints to owners that answer again, remove them once
//! the owner has made them durable).

use std::time::Duration;

use crate::error::DynamoError;

use super::hints::HintLog;
use super::local::LocalNode;

/// How often hints are retried.
pub const TICK: Duration = Duration::from_millis(1000);

/// At most this many hints are handed off per owner per store per tick (bounds
/// background work).
const HANDOFF_BATCH: usize = 512;

/// Pings every peer, forever: one loop per peer, so a peer that does not answer never
/// delays the probes of the others. A peer that fails is marked down, one that answers
/// is marked up.
pub async fn ping_loop(node: LocalNode) {
    let every = Duration::from_millis(node.core.config.node.ping_interval_ms);
    let loops = node.peers().into_iter().map(|peer| {
        let node = node.clone();
        async move {
            // The first round waits: peers started with this node may not listen yet.
            let start = tokio::time::Instant::now() + every;
            let mut tick = tokio::time::interval_at(start, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let _ = node.ping(&peer).await;
            }
        }
    });
    futures::future::join_all(loops).await;
}

/// Hands off hints to owners that are up, once per tick, forever.
pub async fn handoff_loop(node: LocalNode) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        handoff_once(&node).await;
    }
}

/// One pass: for every store and every owner that is up and a member, up to
/// [`HANDOFF_BATCH`] of its hints, owners in parallel. Returns how many were delivered.
pub async fn handoff_once(node: &LocalNode) -> usize {
    let mut runs = Vec::new();
    for store in node.core.stores.values() {
        for owner in node.core.hints.backlog(store.name()).into_keys() {
            if node.core.health.is_up(&owner) && node.core.ring.member(&owner).is_some() {
                runs.push(async move {
                    match handoff_owner(node, store, &owner).await {
                        Ok(n) => n,
                        Err(e) => {
                            eprintln!(
                                "{}: hinted handoff to {owner} (store {}): {}",
                                node.name(),
                                store.name(),
                                e.message
                            );
                            0
                        }
                    }
                });
            }
        }
    }
    futures::future::join_all(runs).await.into_iter().sum()
}

/// Delivers a batch of `owner`'s hints in `store`, in key order, stopping at the first
/// failure (the owner is then marked down and retried on a later tick).
async fn handoff_owner(
    node: &LocalNode,
    store: &std::sync::Arc<crate::store::VersionedStore>,
    owner: &str,
) -> Result<usize, DynamoError> {
    let s = store.clone();
    let o = owner.to_owned();
    let hints = node
        .engine_any(store.name(), move || {
            HintLog::list_for(&s, &o, HANDOFF_BATCH).map_err(DynamoError::from)
        })
        .await?;
    let members: Vec<String> = node
        .core
        .ring
        .members()
        .iter()
        .map(|m| m.name.clone())
        .collect();
    let mut delivered = 0;
    for hint in hints {
        let s = store.clone();
        let key = hint.key.clone();
        let siblings = node
            .engine(store.name(), &hint.key, move || Ok(s.get(&key)?.siblings))
            .await?;
        if node
            .deliver_hint(owner, store, &hint.key, &siblings)
            .await
            .is_err()
        {
            break;
        }
        delivered += 1;
        let core = node.core.clone();
        let s = store.clone();
        let owns = node.in_top_n(store, &hint.key);
        let members = members.clone();
        let key = hint.key.clone();
        node.engine(store.name(), &key, move || {
            if core.hints.clear(&s, &hint)?
                && !owns
                && !HintLog::pending_for_key(&s, &members, &hint.key)?
            {
                // Not an owner and nothing more to hand off: drop the copy, unless
                // a write arrived meanwhile.
                s.forget(&hint.key, &siblings)?;
            }
            Ok(())
        })
        .await?;
    }
    Ok(delivered)
}
