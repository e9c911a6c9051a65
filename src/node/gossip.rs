//! Membership gossip (paper section 4.8): about once a second each node reconciles its
//! membership history with one peer, and with its configured seeds while it knows of
//! no other member.
//!
//! **Why a digest exchange over the internode interface, not a gossip crate.** The
//! state is one small grow-only set (a change per administrator action) that every
//! node needs whole, so scuttlebutt's per-key versions (chitchat) would buy nothing,
//! and a second transport would be one more port to configure, secure and test. One
//! exchange: the caller sends its digest; the callee answers with its digest and, when
//! they differ, its history; the caller merges it and, if the digests still differ
//! (it held changes the callee lacks), sends its merged history in a second call. Both
//! sides then hold the union.
//!
//! Peers are taken in a random order that is reshuffled each time every peer has had
//! its turn: random, yet no peer waits more than two cycles. Gossip carries membership
//! only; a peer that fails a gossip call is marked down like after any failed call,
//! and probed ([`super::handoff::probe_loop`]).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use rand::seq::SliceRandom;

use crate::config::NodeConfig;
use crate::error::{DynamoError, ErrorKind};
use crate::membership::{Change, ChangeKind, History, HistoryFile};
use crate::rpc;

use super::local::LocalNode;

/// Parses a history sent by a peer (a JSON list of changes).
pub(crate) fn parse_history(json: &str, from: &str) -> Result<History, DynamoError> {
    let changes: Vec<Change> = serde_json::from_str(json).map_err(|e| {
        DynamoError::new(
            ErrorKind::BadRequest,
            format!("membership history from {from} does not parse: {e}"),
        )
    })?;
    let mut h = History::new();
    for c in changes {
        h.insert(c).map_err(|e| {
            DynamoError::new(
                ErrorKind::BadRequest,
                format!("membership from {from}: {e}"),
            )
        })?;
    }
    Ok(h)
}

/// A history as JSON (what `gossip` carries).
pub(crate) fn history_json(h: &History) -> String {
    let changes: Vec<&Change> = h.changes().collect();
    serde_json::to_string(&changes).unwrap_or_else(|_| "[]".into())
}

/// Who to gossip with.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// A member, by name (its connection and health are tracked).
    Member(String),
    /// A configured seed, by address.
    Seed(String),
}

impl Target {
    fn label(&self) -> &str {
        match self {
            Target::Member(n) | Target::Seed(n) => n,
        }
    }
}

/// Gossips forever (see the module doc).
pub async fn gossip_loop(node: LocalNode) {
    let every = Duration::from_millis(node.core.config.node.gossip_interval_ms);
    let order: Rc<RefCell<Vec<String>>> = Rc::default();
    // With peers, the first round waits: peers started with this node may not listen
    // yet, and a failed gossip call marks its peer down. A node that knows no peer asks
    // its seeds at once.
    let first = match node.peers().is_empty() {
        true => tokio::time::Instant::now(),
        false => tokio::time::Instant::now() + every,
    };
    let mut tick = tokio::time::interval_at(first, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing: Option<String> = None;
    loop {
        tick.tick().await;
        for target in targets(&node, &order) {
            let result = exchange(&node, &target).await;
            report(&node, &target, &result, &mut failing);
        }
        if let Err(e) = maybe_join(&node).await {
            eprintln!("{}: joining through seeds: {}", node.name(), e.message);
        }
    }
}

/// Logs a failed round once per run of failures to the same target.
fn report(
    node: &LocalNode,
    target: &Target,
    result: &Result<bool, DynamoError>,
    failing: &mut Option<String>,
) {
    match result {
        Ok(_) => {
            if failing.as_deref() == Some(target.label()) {
                *failing = None;
            }
        }
        Err(e) => {
            if failing.as_deref() != Some(target.label()) {
                eprintln!(
                    "{}: gossip with {}: {}",
                    node.name(),
                    target.label(),
                    e.message
                );
                *failing = Some(target.label().to_owned());
            }
        }
    }
}

/// This round's targets: the next peer of the shuffled cycle, or every seed when this
/// node knows of no other member.
fn targets(node: &LocalNode, order: &Rc<RefCell<Vec<String>>>) -> Vec<Target> {
    let peers = node.peers();
    if peers.is_empty() {
        return node
            .core
            .config
            .cluster
            .seeds
            .iter()
            .map(|s| Target::Seed(s.clone()))
            .collect();
    }
    let mut order = order.borrow_mut();
    order.retain(|p| peers.contains(p));
    if order.is_empty() {
        *order = peers;
        order.shuffle(&mut rand::rng());
    }
    order.pop().map(Target::Member).into_iter().collect()
}

/// One exchange with `target` (see the module doc). Returns whether this node learned
/// changes.
pub(crate) async fn exchange(node: &LocalNode, target: &Target) -> Result<bool, DynamoError> {
    let view = node.core.view();
    let digest = view
        .as_ref()
        .map_or(History::new().digest(), |v| v.digest());
    let (their_digest, theirs) = call(node, target, &digest, None).await?;
    let mut learned = false;
    let mut merged = view;
    if let Some(json) = theirs {
        let h = parse_history(&json, target.label())?;
        if let Some(view) = node.adopt(h).await? {
            learned = true;
            eprintln!(
                "{}: membership from {}: ring version {} ({} members)",
                node.name(),
                target.label(),
                view.version(),
                view.ring().members().len()
            );
            merged = Some(view);
        }
    }
    if let Some(v) = merged.filter(|v| v.digest().as_slice() != their_digest.as_slice()) {
        call(node, target, &v.digest(), Some(&history_json(v.history()))).await?;
    }
    Ok(learned)
}

async fn call(
    node: &LocalNode,
    target: &Target,
    digest: &[u8],
    history: Option<&str>,
) -> Result<(Vec<u8>, Option<String>), DynamoError> {
    let me = node.name().to_owned();
    match target {
        Target::Member(name) => {
            node.call_peer(name, "gossip", |c| async move {
                rpc::call_gossip(&c, name, &me, digest, history).await
            })
            .await
        }
        Target::Seed(address) => {
            let core = &node.core;
            call_address(
                address,
                &me,
                digest,
                history,
                core.request_timeout(),
                core.max_message,
            )
            .await
        }
    }
}

/// One gossip call to the node at `address` on a connection of its own (seeds, and
/// the first start, have no member name to track), bounded by twice `timeout`.
async fn call_address(
    address: &str,
    me: &str,
    digest: &[u8],
    history: Option<&str>,
    timeout: Duration,
    max_message: usize,
) -> Result<(Vec<u8>, Option<String>), DynamoError> {
    let attempt = async {
        let conn = rpc::connect(address, timeout, max_message).await?;
        let internode = conn.internode();
        let answer = rpc::call_gossip(&internode, address, me, digest, history).await;
        conn.close();
        answer
    };
    tokio::time::timeout(timeout * 2, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(DynamoError::new(
                ErrorKind::Unavailable,
                format!("{address} timed out after {} ms", (timeout * 2).as_millis()),
            ))
        })
}

/// One gossip exchange with every member of the view this node serves, all at once
/// (failures are skipped).
pub(crate) async fn exchange_with_members(node: &LocalNode) {
    let Some(view) = node.core.view() else {
        return;
    };
    let peers: Vec<String> = view
        .member_names()
        .into_iter()
        .filter(|p| p != node.name())
        .collect();
    futures::future::join_all(
        peers
            .into_iter()
            .map(|p| async move { exchange(node, &Target::Member(p)).await }),
    )
    .await;
}

/// Makes sure member `peer` holds every change of `mine`: pushes it, then asks until
/// the peer's history includes it (it merges in the background), for up to 3 s. What
/// the peer knows and this node does not (a transfer settled elsewhere, say) is merged
/// here too, so a receiver about to settle has seen every change the members it told
/// had.
pub(crate) async fn confirm_known(
    node: &LocalNode,
    peer: &str,
    mine: &History,
) -> Result<(), DynamoError> {
    let target = Target::Member(peer.to_owned());
    let json = history_json(mine);
    let mut pushed = false;
    for _ in 0..30 {
        let push = (!pushed).then_some(json.as_str());
        let (digest, theirs) = call(node, &target, &mine.digest(), push).await?;
        pushed = true;
        if digest.as_slice() == mine.digest().as_slice() {
            return Ok(());
        }
        if let Some(t) = theirs {
            let t = parse_history(&t, peer)?;
            let has_mine = mine.ids().iter().all(|id| t.contains(id));
            // Best effort: a peer history this node refuses (a conflicting change) must
            // not keep it from confirming that the peer holds this node's changes.
            let _ = node.adopt(t).await;
            if has_mine {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(DynamoError::new(
        ErrorKind::Unavailable,
        format!("{peer} did not take the membership change within 3 s"),
    ))
}

/// The history of the node at `address` (`None` when it has none), on a connection of
/// its own.
pub(crate) async fn fetch_history(
    node: &LocalNode,
    address: &str,
) -> Result<Option<History>, DynamoError> {
    let core = &node.core;
    let empty = History::new().digest();
    let (_, json) = call_address(
        address,
        node.name(),
        &empty,
        None,
        core.request_timeout(),
        core.max_message,
    )
    .await?;
    json.map(|j| parse_history(&j, address)).transpose()
}

/// At start, before serving: the history held by the other members (of the saved
/// history and of the config) and the seeds, asked all at once (each bounded by twice
/// the request timeout), merged. `None` when nobody answered with one (on a first
/// start: the cluster is being created, and the config's member list creates it).
/// This keeps a node started on an empty data directory from building a ring of its
/// own while the others have moved on, and a node that was down from coordinating
/// writes with the view it had before (a transfer may have started meanwhile).
pub async fn peers_history(config: &NodeConfig) -> Option<History> {
    let me = config.node.name.as_str();
    let mut addresses: Vec<String> = config
        .cluster
        .members
        .iter()
        .filter(|m| m.name != me)
        .map(|m| m.address.clone())
        .collect();
    if let Ok(Some(saved)) = HistoryFile::in_dir(&config.node.data_dir).load() {
        if let Ok(t) = super::Topology::replay(saved, &[]) {
            addresses.extend(
                t.addresses()
                    .into_iter()
                    .filter(|(name, _)| name != me)
                    .map(|(_, a)| a),
            );
        }
    }
    addresses.extend(config.cluster.seeds.iter().cloned());
    addresses.sort();
    addresses.dedup();
    if addresses.is_empty() {
        return None;
    }
    let timeout = Duration::from_millis(config.node.request_timeout_ms);
    let empty = History::new().digest();
    let asks = addresses.iter().map(|a| async move {
        let answer = call_address(a, me, &empty, None, timeout, 64 << 20).await;
        (a, answer)
    });
    let mut merged = History::new();
    for (address, answer) in futures::future::join_all(asks).await {
        match answer {
            Ok((_, Some(json))) => match parse_history(&json, address) {
                Ok(h) => {
                    let (_, conflicts) = merged.merge(&h);
                    if let Some(c) = conflicts.first() {
                        eprintln!("{me}: membership from {address} left out: {c}");
                    }
                }
                Err(e) => eprintln!("{me}: {}", e.message),
            },
            Ok((_, None)) => {}
            Err(e) => eprintln!("{me}: at start, {address} did not answer: {}", e.message),
        }
    }
    (!merged.is_empty()).then_some(merged)
}

/// [`peers_history`] from synchronous code: on a thread and runtime of its own, so it
/// is safe to call from inside another runtime too.
pub fn peers_history_blocking(config: &NodeConfig) -> Option<History> {
    let config = config.clone();
    std::thread::Builder::new()
        .name("dynamo-first-start".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            tokio::task::LocalSet::new().block_on(&rt, peers_history(&config))
        })
        .ok()?
        .join()
        .ok()
        .flatten()
}

/// Whether any ring change of `h` names member `name` (it joined, left, was
/// replaced...).
fn ever_named(h: &History, name: &str) -> bool {
    h.changes()
        .filter(|c| c.kind.is_ring_change())
        .any(|c| c.kind.names().contains(&name))
}

/// A node that learned a cluster it is not a member of (started from seeds, or with a
/// member list naming it that the cluster never applied) joins it, once: only while
/// the history has never named it, so a node an administrator removed stays out until
/// it is joined again.
async fn maybe_join(node: &LocalNode) -> Result<(), DynamoError> {
    let core = &node.core;
    let Some(view) = core.view() else {
        return Ok(());
    };
    if view.is_member(node.name()) || ever_named(view.history(), node.name()) {
        return Ok(());
    }
    let me = core.config.this_member();
    let c = core.clone();
    let (change, view) = node
        .engine_any("membership", move || {
            c.issue(ChangeKind::Join { member: me })
        })
        .await?;
    eprintln!(
        "{}: joined the cluster (change {}): ring version {}, {} partitions owned",
        node.name(),
        change.id,
        view.version(),
        view.ring().partitions_of(node.name()).len()
    );
    Ok(())
}
