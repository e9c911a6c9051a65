//! Background loops: local failure detection (peers believed down are probed) and
//! hinted handoff (deliver hints to owners that answer again, remove them once
//! the owner has made them durable).
//!
//! Handoff never stalls on one hint: each (store, owner) walks its hints from where
//! the last batch stopped (wrapping around at the end), and a hint that fails to
//! deliver for any reason but the owner being unreachable (the owner refuses it: the
//! merged record is over its size limit, a value over its `max_value_size`, a store it
//! does not host; or the stand-in's own copy cannot be read) is retried later with
//! exponential backoff, from 2 s up to 10 minutes, while the owner's other hints go
//! on. Such hints are listed in `dynamo status` (store, key, owner, reason); the copy
//! stays here meanwhile, and anti-entropy converges the owners from the replicas that
//! took the write. Only a connection failure ends an owner's batch (it is down).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{DynamoError, ErrorKind};
use crate::store::{printable_key, VersionedStore};

use super::hints::HintLog;
use super::local::LocalNode;

pub use crate::api::status::RefusedHint;

/// How often hints are retried.
pub const TICK: Duration = Duration::from_millis(1000);

/// At most this many hints are handed off per owner per store per tick (bounds
/// background work).
const HANDOFF_BATCH: usize = 512;

/// Probes the peers this node believes down, forever: each on a task of its own, so a
/// peer that does not answer never delays the probes of the others; one that answers
/// is marked up. Peers that are up are not pinged: a broken connection or a failed
/// probe (after a call timed out) is what marks a peer down, and gossip carries
/// membership, not liveness. Each tick also forgets the connections and health of
/// peers that left the cluster.
pub async fn probe_loop(node: LocalNode) {
    let every = Duration::from_millis(node.core.config.node.ping_interval_ms);
    let probing: Rc<RefCell<HashSet<String>>> = Rc::default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        node.forget_departed();
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

/// First backoff after a refusal; it doubles per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// Longest wait between attempts of one hint.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Most refused hints listed by status.
const LISTED: usize = 100;

struct Backoff {
    attempts: u32,
    next: Instant,
    reason: String,
}

#[derive(Default)]
struct HandoffState {
    /// (store, owner, key) → its backoff.
    backoff: BTreeMap<(String, String, Vec<u8>), Backoff>,
    /// (store, owner) → the last key of the last batch (the next starts after it).
    cursor: BTreeMap<(String, String), Vec<u8>>,
}

/// Handoff bookkeeping shared with status: cursors and refused hints.
#[derive(Default)]
pub struct HandoffBoard {
    inner: Mutex<HandoffState>,
}

impl std::fmt::Debug for HandoffBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandoffBoard")
    }
}

impl HandoffBoard {
    fn with<R>(&self, f: impl FnOnce(&mut HandoffState) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn waiting(&self, store: &str, owner: &str, key: &[u8]) -> bool {
        self.with(|s| {
            s.backoff
                .get(&(store.to_owned(), owner.to_owned(), key.to_vec()))
                .is_some_and(|b| b.next > Instant::now())
        })
    }

    fn refuse(&self, store: &str, owner: &str, key: &[u8], reason: String) {
        self.with(|s| {
            let b = s
                .backoff
                .entry((store.to_owned(), owner.to_owned(), key.to_vec()))
                .or_insert(Backoff {
                    attempts: 0,
                    next: Instant::now(),
                    reason: String::new(),
                });
            b.attempts = b.attempts.saturating_add(1);
            let wait = FIRST_BACKOFF
                .saturating_mul(1 << b.attempts.saturating_sub(1).min(16))
                .min(MAX_BACKOFF);
            b.next = Instant::now() + wait;
            b.reason = reason;
        });
    }

    fn delivered(&self, store: &str, owner: &str, key: &[u8]) {
        self.with(|s| {
            s.backoff
                .remove(&(store.to_owned(), owner.to_owned(), key.to_vec()))
        });
    }

    fn cursor(&self, store: &str, owner: &str) -> Vec<u8> {
        self.with(|s| {
            s.cursor
                .get(&(store.to_owned(), owner.to_owned()))
                .cloned()
                .unwrap_or_default()
        })
    }

    fn set_cursor(&self, store: &str, owner: &str, at: Vec<u8>) {
        self.with(|s| s.cursor.insert((store.to_owned(), owner.to_owned()), at));
    }

    /// The hints waiting after a refusal (at most 100), most attempts first.
    pub fn refused(&self) -> Vec<RefusedHint> {
        let now = Instant::now();
        self.with(|s| {
            let mut out: Vec<RefusedHint> = s
                .backoff
                .iter()
                .map(|((store, owner, key), b)| RefusedHint {
                    store: store.clone(),
                    key: printable_key(key),
                    owner: owner.clone(),
                    reason: b.reason.clone(),
                    attempts: b.attempts,
                    retry_in_ms: b.next.saturating_duration_since(now).as_millis() as u64,
                })
                .collect();
            out.sort_by_key(|h| std::cmp::Reverse(h.attempts));
            out.truncate(LISTED);
            out
        })
    }
}

async fn handoff_logged(node: &LocalNode, store: &Arc<VersionedStore>, owner: &str) {
    if let Err(e) = handoff_owner(node, store, owner).await {
        eprintln!(
            "{}: hinted handoff to {owner} (store {}): {}",
            node.name(),
            store.name(),
            e.message
        );
    }
}

/// Whether a failed delivery means the target is unreachable (the batch ends) rather
/// than that it refused this one hint.
fn unreachable(e: &DynamoError) -> bool {
    matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Timeout)
}

/// Delivers the next batch of `owner`'s hints in `store`, in key order from where the
/// last batch stopped; a refused hint waits for its backoff and the others go on; a
/// connection failure ends the batch (the owner is then marked down and retried on a
/// later tick). The hints of an owner gone from the membership go to the key's owners
/// in the target ring.
async fn handoff_owner(
    node: &LocalNode,
    store: &Arc<VersionedStore>,
    owner: &str,
) -> Result<usize, DynamoError> {
    let view = node.core.topology()?;
    let gone = view.target().member(owner).is_none() && view.ring().member(owner).is_none();
    let s = store.clone();
    let o = owner.to_owned();
    let board = &node.core.handoff;
    let after = board.cursor(store.name(), owner);
    let from = after.clone();
    let hints = node
        .engine_any(store.name(), move || {
            HintLog::list_for(&s, &o, &from, HANDOFF_BATCH).map_err(DynamoError::from)
        })
        .await?;
    // The next batch starts after this one, or from the first hint again.
    let next = match hints.last() {
        Some(h) if hints.len() == HANDOFF_BATCH => h.key.clone(),
        _ => Vec::new(),
    };
    board.set_cursor(store.name(), owner, next);
    let members: Vec<String> = view.member_names();
    let mut delivered = 0;
    // The key of the last hint dealt with: a batch that ends early resumes after it,
    // so the hints after the one that could not go are not skipped until a wrap-around.
    let mut done_up_to = after;
    for hint in hints {
        if board.waiting(store.name(), owner, &hint.key) {
            done_up_to.clone_from(&hint.key);
            continue;
        }
        node.core.admission.acquire(1).await;
        let s = store.clone();
        let key = hint.key.clone();
        let siblings = match node
            .engine(store.name(), &hint.key, move || Ok(s.get(&key)?.siblings))
            .await
        {
            Ok(s) => s,
            Err(e) => {
                board.refuse(
                    store.name(),
                    owner,
                    &hint.key,
                    format!("reading this stand-in's copy: {}", e.message),
                );
                done_up_to.clone_from(&hint.key);
                continue;
            }
        };
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
        let mut refused = None;
        for t in &targets {
            if let Err(e) = node.deliver_hint(t, store, &hint.key, &siblings).await {
                if unreachable(&e) && t != owner {
                    // A new owner of the key is down: this hint waits its backoff, and
                    // the owner's other hints (which may go elsewhere) go on.
                    refused = Some(format!("{t} could not be reached: {}", e.message));
                    break;
                }
                if unreachable(&e) {
                    if node.is_healthy(t) {
                        // The call failed but the owner is not believed down (one
                        // timeout): a hint that times out every time (a large record
                        // on a slow disk) must not hold the others back, so it waits
                        // its backoff.
                        board.refuse(
                            store.name(),
                            owner,
                            &hint.key,
                            format!("{t} did not answer in time: {}", e.message),
                        );
                    }
                    // The owner (or a new owner) is down: the rest waits for it, from
                    // this hint on.
                    board.set_cursor(store.name(), owner, done_up_to);
                    return Ok(delivered);
                }
                refused = Some(format!("{t} refused it: {}", e.message));
                break;
            }
        }
        done_up_to.clone_from(&hint.key);
        if let Some(why) = refused {
            board.refuse(store.name(), owner, &hint.key, why);
            continue;
        }
        board.delivered(store.name(), owner, &hint.key);
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
        .await
        .inspect_err(|_| board.set_cursor(store.name(), owner, done_up_to.clone()))?;
    }
    Ok(delivered)
}
