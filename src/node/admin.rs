//! A node carrying out an administrator's membership action (see [`crate::admin`]).

use std::collections::BTreeSet;

use crate::admin::{AdminReply, AdminRequest, PlanSummary};
use crate::error::{DynamoError, ErrorKind};
use crate::membership::{plan, ChangeKind, History, PlanError};

use super::gossip;
use super::local::LocalNode;
use super::transfer::describe;
use super::Topology;

fn refused(e: PlanError) -> DynamoError {
    DynamoError::new(ErrorKind::BadRequest, format!("refused: {e}"))
}

/// Carries out `request` here.
pub async fn handle(node: &LocalNode, request: AdminRequest) -> Result<AdminReply, DynamoError> {
    match request {
        AdminRequest::Plan { change } => {
            if !matches!(
                change,
                ChangeKind::Join { .. }
                    | ChangeKind::Leave { .. }
                    | ChangeKind::Replace { .. }
                    | ChangeKind::Remove { .. }
            ) {
                return Err(DynamoError::new(
                    ErrorKind::BadRequest,
                    format!(
                        "refused: only join, leave, replace and remove can be planned, not {}",
                        describe(&change)
                    ),
                ));
            }
            let view = node.core.topology()?;
            let summary = dry_run(node, &view, &change).await?;
            Ok(reply(node, &view, describe(&change), None, summary, None))
        }
        AdminRequest::Leave { node: name } => issue_here(node, ChangeKind::Leave { name }).await,
        AdminRequest::Remove { node: name, force } => {
            if !force {
                return Err(DynamoError::new(
                    ErrorKind::BadRequest,
                    "refused: remove is for a node that is gone for good and rebuilds its \
                     data from the other replicas; confirm with --force, or use `dynamo \
                     admin leave` for a node that is up (it hands its data off first)",
                ));
            }
            if name == node.name() {
                return Err(DynamoError::new(
                    ErrorKind::BadRequest,
                    format!(
                        "refused: {name} is the node answering, so it is up; use `dynamo admin \
                         leave` (it hands its data off first), or ask another member"
                    ),
                ));
            }
            if node.ping(&name).await.is_ok() {
                return Err(DynamoError::new(
                    ErrorKind::BadRequest,
                    format!(
                        "refused: {name} answers; remove is for a dead node. Use `dynamo admin \
                         leave` so that it hands its data off first, or stop it for good"
                    ),
                ));
            }
            issue_here(node, ChangeKind::Remove { name }).await
        }
        AdminRequest::Join { seed } => {
            let me = node.core.config.this_member();
            join_through(node, &seed, ChangeKind::Join { member: me }).await
        }
        AdminRequest::Replace { seed, old } => {
            let me = node.core.config.this_member();
            join_through(node, &seed, ChangeKind::Replace { old, new: me }).await
        }
    }
}

/// The down set for a plan: members this node believes down (a removed node counts as
/// down whatever this node believes).
fn down(node: &LocalNode, view: &Topology, change: &ChangeKind) -> BTreeSet<String> {
    let mut down: BTreeSet<String> = view
        .member_names()
        .into_iter()
        .filter(|m| !node.is_healthy(m))
        .collect();
    if let ChangeKind::Remove { name } = change {
        down.insert(name.clone());
    }
    down
}

async fn dry_run(
    node: &LocalNode,
    view: &Topology,
    change: &ChangeKind,
) -> Result<PlanSummary, DynamoError> {
    let n = view.target().target_n();
    let p = plan(view.history(), change, n, &down(node, view, change)).map_err(refused)?;
    Ok(PlanSummary::of(&p, bytes_per_replica(node, view).await))
}

/// The average bytes one partition replica holds here: the stores' engine sizes over
/// the replicas this node holds (the estimate a plan gives for the data to move).
async fn bytes_per_replica(node: &LocalNode, view: &Topology) -> u64 {
    let stores: Vec<_> = node.core.stores.values().cloned().collect();
    // Sizing may walk an engine: off the event loop.
    let bytes: u64 = node
        .engine_any("estimating the store sizes", move || {
            Ok(stores
                .iter()
                .filter_map(|s| s.approximate_size().ok())
                .sum())
        })
        .await
        .unwrap_or(0);
    let n = view.target().target_n();
    let ring = view.ring();
    let held = (0..ring.partition_count())
        .filter(|&p| {
            ring.preference_list(p, n)
                .iter()
                .any(|m| m.name == node.name())
        })
        .count() as u64;
    bytes.checked_div(held).unwrap_or(0)
}

fn reply(
    node: &LocalNode,
    view: &Topology,
    action: String,
    change: Option<String>,
    plan: PlanSummary,
    note: Option<String>,
) -> AdminReply {
    AdminReply {
        action,
        change,
        node: node.name().to_owned(),
        ring_version: view.version(),
        target_ring_version: view.steps().len() as u64,
        plan,
        note,
    }
}

/// Checks `kind` against the rules, issues it here and tells every member.
async fn issue_here(node: &LocalNode, kind: ChangeKind) -> Result<AdminReply, DynamoError> {
    // A change made with a stale history may sort before changes already carried out
    // elsewhere; learning what the members know first keeps that window small.
    catch_up(node).await;
    let view = node.core.topology()?;
    let summary = dry_run(node, &view, &kind).await?;
    let core = node.core.clone();
    let k = kind.clone();
    let (change, view) = node.engine_any("membership", move || core.issue(k)).await?;
    spread(node).await;
    Ok(reply(
        node,
        &view,
        describe(&kind),
        Some(change.id.to_string()),
        summary,
        None,
    ))
}

/// Merges what every member knows (failures are skipped).
async fn catch_up(node: &LocalNode) {
    gossip::exchange_with_members(node).await;
}

/// Tells every member the new history at once (gossip would, within seconds).
async fn spread(node: &LocalNode) {
    gossip::exchange_with_members(node).await;
}

/// Join or replace: this node takes the history of `seed`'s cluster (giving up a
/// cluster of its own, which must hold no other member and no data), then issues
/// `kind` here.
async fn join_through(
    node: &LocalNode,
    seed: &str,
    kind: ChangeKind,
) -> Result<AdminReply, DynamoError> {
    let mut theirs = gossip::fetch_history(node, seed).await?.ok_or_else(|| {
        DynamoError::new(
            ErrorKind::BadRequest,
            format!("refused: the node at {seed} belongs to no cluster yet"),
        )
    })?;
    // The seed may lag: merge what its members know before making the change.
    if let Ok(seen) = Topology::replay(theirs.clone(), &[]) {
        for (name, address) in seen.addresses() {
            if name == node.name() || address == seed {
                continue;
            }
            if let Ok(Some(h)) = gossip::fetch_history(node, &address).await {
                let _ = theirs.merge(&h);
            }
        }
    }
    let mine = node.core.view();
    let same_cluster = mine.as_ref().is_some_and(|v| {
        let mut m: History = v.history().clone();
        m.merge(&theirs).1.is_empty()
    });
    if same_cluster {
        let view = node
            .adopt(theirs)
            .await?
            .or_else(|| node.core.view())
            .ok_or_else(|| DynamoError::new(ErrorKind::Internal, "no membership after merging"))?;
        if view.target().member(node.name()).is_some() {
            return Ok(reply(
                node,
                &view,
                describe(&kind),
                None,
                PlanSummary::default(),
                Some(format!("{} is already a member", node.name())),
            ));
        }
        return issue_here(node, kind).await;
    }
    let theirs_view = Topology::replay(theirs.clone(), &[])
        .map_err(|e| DynamoError::new(ErrorKind::BadRequest, format!("refused: {e}")))?;
    let summary = dry_run(node, &theirs_view, &kind).await?;
    let core = node.core.clone();
    let k = kind.clone();
    let (change, view) = node
        .engine_any("membership", move || core.rebase(theirs, k))
        .await?;
    eprintln!(
        "{}: {} through {seed}: ring version {}",
        node.name(),
        describe(&kind),
        view.version()
    );
    spread(node).await;
    Ok(reply(
        node,
        &view,
        describe(&kind),
        Some(change.id.to_string()),
        summary,
        None,
    ))
}
