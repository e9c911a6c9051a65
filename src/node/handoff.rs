//! Background loops: local failure detection (peers believed down are probed) and
//! hinted handoff (deliver hints to owners that answer again, remove them once
//! the owner has made them durable).

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::error::DynamoError;
use crate::store::VersionedStore;

use super::hints::HintLog;
use super::local::LocalNode;

/// How often hints are retried.
pub const TICK: Duration = Duration::from_millis(1000);

/// At most this many hints are handed off per owner per store per tick (bounds
/// background work).
const HANDOFF_BATCH: usize = 512;

/// Probes the peers this node believes down, forever: each on a task of its own, so a
/// peer that does not answer never delays the probes of the others; one that answers
/// is marked up. Peers that are up are not pinged: a failed call (a request, a
/// handoff, gossip) is what marks a peer down, and gossip carries membership, not
/// liveness.
pub async fn probe_loop(node: LocalNode) {
    let every = Duration::from_millis(node.core.config.node.ping_interval_ms);
    let probing: Rc<RefCell<HashSet<String>>> = Rc::default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for peer in node.peers() {
            if node.core.health.is_up(&peer) || !probing.borrow_mut().insert(peer.clone()) {
                continue;
            }
            let (node, probing) = (node.clone(), probing.clone());
            tokio::task::spawn_local(async move {
                let _ = node.ping(&peer).await;
                probing.borrow_mut().remove(&peer);
            });
        }
    }
}

/// Hands off hints to owners that are up, once per tick, forever. Each (store, owner)
/// runs as a task of its own, and a tick skips those still running: a slow owner never
/// holds up the others.
pub async fn handoff_loop(node: LocalNode) {
    let running: Rc<RefCell<HashSet<(String, String)>>> = Rc::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (store, owner) in deliverable(&node) {
            if !running
                .borrow_mut()
                .insert((store.name().to_owned(), owner.clone()))
            {
                continue;
            }
            let (node, running) = (node.clone(), running.clone());
            tokio::task::spawn_local(async move {
                handoff_logged(&node, &store, &owner).await;
                running
                    .borrow_mut()
                    .remove(&(store.name().to_owned(), owner));
            });
        }
    }
}

/// The (store, owner) pairs with hints to hand off: owners of the target ring that are
/// up, and owners gone from the membership (their hints go to the key's new owners).
fn deliverable(node: &LocalNode) -> Vec<(Arc<VersionedStore>, String)> {
    let mut out = Vec::new();
    let Some(view) = node.core.view() else {
        return out;
    };
    for store in node.core.stores.values() {
        for owner in node.core.hints.backlog(store.name()).into_keys() {
            let member = view.target().member(&owner).is_some();
            let gone = !member && view.ring().member(&owner).is_none();
            if (member && node.core.health.is_up(&owner)) || gone {
                out.push((store.clone(), owner));
            }
        }
    }
    out
}

async fn handoff_logged(node: &LocalNode, store: &Arc<VersionedStore>, owner: &str) {
    match handoff_owner(node, store, owner).await {
        Ok(_) => {}
        Err(e) => {
            eprintln!(
                "{}: hinted handoff to {owner} (store {}): {}",
                node.name(),
                store.name(),
                e.message
            );
        }
    }
}

/// Delivers a batch of `owner`'s hints in `store`, in key order, stopping at the first
/// failure (the owner is then marked down and retried on a later tick). The hints of
/// an owner gone from the membership go to the key's owners in the target ring.
async fn handoff_owner(
    node: &LocalNode,
    store: &Arc<VersionedStore>,
    owner: &str,
) -> Result<usize, DynamoError> {
    let view = node.core.topology()?;
    let gone = view.target().member(owner).is_none() && view.ring().member(owner).is_none();
    let s = store.clone();
    let o = owner.to_owned();
    let hints = node
        .engine_any(store.name(), move || {
            HintLog::list_for(&s, &o, HANDOFF_BATCH).map_err(DynamoError::from)
        })
        .await?;
    let members: Vec<String> = view.member_names();
    let mut delivered = 0;
    for hint in hints {
        let s = store.clone();
        let key = hint.key.clone();
        let siblings = node
            .engine(store.name(), &hint.key, move || Ok(s.get(&key)?.siblings))
            .await?;
        let n = store.config().n;
        let serving_owners: Vec<String> = {
            let r = view.ring();
            let p = r.partition_for_key(store.name(), &hint.key);
            r.preference_list(p, n)
                .iter()
                .map(|m| m.name.clone())
                .collect()
        };
        let targets: Vec<String> = if !gone && !serving_owners.iter().any(|m| m == owner) {
            // The owner is no longer among the key's replicas (a membership change
            // moved it): the key's owners now get the versions too.
            std::iter::once(owner.to_owned())
                .chain(
                    serving_owners
                        .into_iter()
                        .filter(|m| m != owner && m != node.name()),
                )
                .collect()
        } else if gone {
            let t = view.target();
            let p = t.partition_for_key(store.name(), &hint.key);
            t.walk(p, store.config().n)
                .iter()
                .take(store.config().n)
                .map(|m| m.name.clone())
                .filter(|m| m != node.name())
                .collect()
        } else {
            vec![owner.to_owned()]
        };
        let mut failed = false;
        for t in &targets {
            if node
                .deliver_hint(t, store, &hint.key, &siblings)
                .await
                .is_err()
            {
                failed = true;
                break;
            }
        }
        if failed {
            break;
        }
        delivered += 1;
        let core = node.core.clone();
        let s = store.clone();
        // A replica in any ring of the view (serving, the next step's, the target, or
        // the step just left) keeps its copy: a transfer may have put it there.
        let owns = {
            let n = store.config().n;
            let me = node.name();
            let p = view.ring().partition_for_key(store.name(), &hint.key);
            let top = |r: &crate::ring::Ring| r.preference_list(p, n).iter().any(|m| m.name == me);
            top(view.ring())
                || top(view.target())
                || view
                    .second_sets(p, n, true)
                    .iter()
                    .any(|s| s.iter().any(|m| m == me))
        };
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
