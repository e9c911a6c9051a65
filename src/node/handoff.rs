//! Background loops: local failure detection (ping every peer each second) and hinted
//! handoff (deliver hints to owners that answer again, remove them once acknowledged).

use std::time::Duration;

use crate::error::DynamoError;

use super::hints::HintLog;
use super::local::{blocking, LocalNode};

/// How often peers are pinged and hints retried.
pub const TICK: Duration = Duration::from_millis(1000);

/// At most this many hints are handed off per store per tick (bounds background work).
const HANDOFF_BATCH: usize = 512;

/// Pings every peer once per tick, forever: a peer that fails is marked down, one that
/// answers is marked up.
pub async fn ping_loop(node: LocalNode) {
    // The first round waits a tick: peers started with this node may not listen yet.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let peers = node.peers();
        let pings = peers.iter().map(|p| node.ping(p));
        futures::future::join_all(pings).await;
    }
}

/// Hands off hints to owners that are up, once per tick, forever.
pub async fn handoff_loop(node: LocalNode) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = handoff_once(&node).await {
            eprintln!("{}: hinted handoff: {}", node.name(), e.message);
        }
    }
}

/// One pass over every store's hints. Returns how many were delivered.
pub async fn handoff_once(node: &LocalNode) -> Result<usize, DynamoError> {
    let mut delivered = 0;
    for store in node.core.stores.values() {
        let s = store.clone();
        let hints = blocking(move || HintLog::list(&s).map_err(DynamoError::from)).await?;
        for hint in hints.into_iter().take(HANDOFF_BATCH) {
            if !node.core.health.is_up(&hint.owner) || node.core.ring.member(&hint.owner).is_none()
            {
                continue;
            }
            let s = store.clone();
            let key = hint.key.clone();
            let siblings = blocking(move || Ok(s.get(&key)?.siblings)).await?;
            if node
                .deliver_hint(&hint.owner, store, &hint.key, &siblings)
                .await
                .is_err()
            {
                continue; // marked down; retried next tick
            }
            delivered += 1;
            let core = node.core.clone();
            let s = store.clone();
            let owns = node.in_top_n(store, &hint.key);
            let members: Vec<String> = node
                .core
                .ring
                .members()
                .iter()
                .map(|m| m.name.clone())
                .collect();
            blocking(move || {
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
    }
    Ok(delivered)
}
