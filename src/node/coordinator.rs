//! The quorum coordinator: get, put and delete over a key's preference list, with
//! sloppy quorum, hints and read repair (paper sections 4.5-4.7).
//!
//! A request goes to the first N *healthy* members of the key's walk; for every owner
//! in the top N that is down, the next healthy member past the top N stands in and
//! receives the write with a hint naming that owner. Puts answer after W acks (the
//! coordinator's own write counts), gets after R replies. Nothing on the request path
//! waits on a timer other than the per-call timeout; slow replicas finish in background
//! tasks, which also do read repair.

use std::rc::Rc;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::context::Context;
use crate::error::{DynamoError, ErrorKind};
use crate::rpc;

use crate::store::{printable_key, VersionedStore};
use crate::version::{Siblings, Version};

use super::local::{LocalNode, WritePayload};
use super::{NodeCore, Topology};
use crate::api::Deadline;
use crate::quorum::{
    holding_reaped, next_stand_in, quorum_size, stale_replicas, stand_ins_for, QuorumRead, ReadFn,
    Target,
};

/// The replicas of one request and the owners left out.
struct Plan {
    targets: Vec<Target>,
    /// Owners in the top N that are down, with the reason.
    down: Vec<(String, String)>,
    /// The owners that got no stand-in (too few healthy members).
    uncovered: usize,
}

/// A coordinated get's answer.
pub struct GetOutcome {
    /// Merged siblings from the replicas that answered.
    pub siblings: Siblings,
    /// Token covering them.
    pub context: String,
}

/// The walk of `key` in `view`, owned.
fn walk_in(view: &Topology, store: &VersionedStore, key: &[u8]) -> Vec<String> {
    NodeCore::walk(view, store, key)
        .into_iter()
        .map(str::to_owned)
        .collect()
}

impl LocalNode {
    /// Is this node one of the first N members of `key`'s preference list?
    pub fn in_top_n(&self, store: &VersionedStore, key: &[u8]) -> bool {
        self.top_n(store, key).iter().any(|m| m == self.name())
    }

    /// The top-N owners of `key` (none while this node knows no cluster).
    pub fn top_n(&self, store: &VersionedStore, key: &[u8]) -> Vec<String> {
        let n = store.config().n;
        let mut walk = self.walk(store, key).unwrap_or_default();
        walk.truncate(n);
        walk
    }

    /// The other replica sets a write of `key` must also reach W of, in `view` (see
    /// [`Topology::second_sets`]): the next step's while a membership change moves the
    /// key's partition, and the previous ring's for `node.membership_grace_ms` after a
    /// switch (readers whose view has not switched yet still ask it).
    pub(crate) fn second_sets(
        &self,
        view: &Topology,
        store: &VersionedStore,
        key: &[u8],
    ) -> Vec<Vec<String>> {
        let p = view.ring().partition_for_key(store.name(), key);
        let n = store.config().n;
        let grace = self.core.serving_for() < self.core.membership_grace();
        view.second_sets(p, n, grace)
    }

    /// The walk of `key` in the current view, owned: the view may change while a
    /// request that took it runs.
    pub(crate) fn walk(
        &self,
        store: &VersionedStore,
        key: &[u8],
    ) -> Result<Vec<String>, DynamoError> {
        let t = self.core.topology()?;
        Ok(walk_in(&t, store, key))
    }

    fn plan(&self, view: &Topology, store: &VersionedStore, key: &[u8]) -> Plan {
        let n = store.config().n;
        let walk = walk_in(view, store, key);
        let mut targets = Vec::with_capacity(n);
        let mut down = Vec::new();
        for m in walk.iter().take(n) {
            if self.is_healthy(m) {
                targets.push(Target {
                    name: (*m).to_owned(),
                    hint_for: None,
                });
            } else {
                let why = self
                    .core
                    .health
                    .get(m)
                    .last_error
                    .unwrap_or_else(|| "down".into());
                down.push(((*m).to_owned(), why));
            }
        }
        let owed: Vec<String> = down.iter().map(|(m, _)| m.clone()).collect();
        let taken: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
        let (stand_ins, uncovered) = stand_ins_for(&walk, n, &owed, &taken, |m| self.is_healthy(m));
        targets.extend(stand_ins);
        Plan {
            targets,
            down,
            uncovered,
        }
    }

    /// A plan with at least `need` targets if possible: when owners believed down
    /// leave it short, they are pinged first (one may be back before the ping loop
    /// noticed), so a quorum is never refused on stale health alone.
    /// Returns the plan with the view it was made in: the whole request uses that one
    /// view.
    async fn plan_probing(
        &self,
        store: &VersionedStore,
        key: &[u8],
        need: usize,
        deadline: &Deadline,
    ) -> Result<(Plan, Arc<Topology>), DynamoError> {
        let view = self.core.topology()?;
        let plan = self.plan(&view, store, key);
        if plan.targets.len() >= need || plan.down.is_empty() {
            return Ok((plan, view));
        }
        // One probe per down owner however many requests wait on it, and none
        // waited on past the request's deadline.
        let probes = plan.down.iter().map(|(m, _)| self.probe(m));
        let _ = tokio::time::timeout(deadline.remaining(), futures::future::join_all(probes)).await;
        let view = self.core.topology()?;
        Ok((self.plan(&view, store, key), view))
    }

    fn unreachable_quorum(
        &self,
        op: &str,
        store: &VersionedStore,
        key: &[u8],
        need: (&str, usize),
        plan: &Plan,
    ) -> DynamoError {
        let mut why: Vec<String> = plan
            .down
            .iter()
            .map(|(m, reason)| format!("{m} is down ({reason})"))
            .collect();
        if plan.uncovered > 0 {
            why.push(format!(
                "no stand-in available for {} owner(s)",
                plan.uncovered
            ));
        }
        let members = self.core.view().map_or(0, |t| t.ring().members().len());
        if members < need.1 {
            why.push(format!(
                "the cluster has only {members} member(s): lower the store's {} (or pass a smaller --{} for this request) or add members",
                need.0.to_lowercase(),
                need.0.to_lowercase()
            ));
        }
        DynamoError::new(
            ErrorKind::Quorum,
            format!(
                "quorum not reached for {op} store={} key={}: only {} of {}={} replicas reachable ({}); {}; nothing was {}",
                store.name(),
                printable_key(key),
                plan.targets.len(),
                need.0,
                need.1,
                plan.targets.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", "),
                why.join("; "),
                if op == "get" { "read" } else { "written" },
            ),
        )
    }

    /// Coordinates a put (value `Some`) or delete (`None`). Returns the new context's
    /// token. With a `request_id` that already wrote a version here, that version is
    /// replicated again instead of writing a new one (a retried request).
    pub async fn coordinate_put(
        &self,
        store: &Arc<VersionedStore>,
        req: crate::api::PutRequest,
    ) -> Result<String, DynamoError> {
        let crate::api::PutRequest {
            key,
            value,
            context,
            w,
            request_id,
            retry,
            deadline,
            ..
        } = req;
        let deadline = self.core.deadline_of(deadline);
        let op = if value.is_some() { "put" } else { "delete" };
        let cfg = store.config();
        let w = check_quorum(store, "w", w, cfg.w)?;
        // Bad input is refused before any fan-out, even when W is out of reach.
        store.check_key(&key)?;
        store.check_value(value.as_deref())?;
        let ctx: Option<Context> = match context.as_deref() {
            Some(t) if !t.is_empty() => {
                Some(store.parse_context(&key, t).map_err(DynamoError::from)?)
            }
            _ => None,
        };
        let (plan, view) = self.plan_probing(store, &key, w, &deadline).await?;
        if plan.targets.len() < w {
            return Err(self.unreachable_quorum(op, store, &key, ("W", w), &plan));
        }
        // A replica of the key (owner or stand-in) writes locally and issues the dot
        // from its record. A node outside the key's replicas (it could not forward)
        // never counts itself: it mints a dot from a fresh epoch and only sends.
        let me = plan.targets.iter().find(|t| t.name == self.name()).cloned();
        let s = store.clone();
        let k = key.clone();
        let core = self.core.clone();
        let local = me.is_some();
        let hint_for = me.as_ref().and_then(|t| t.hint_for.clone());
        let hint_for_me = hint_for.clone();
        // A retry: an earlier attempt may have been applied elsewhere (its reply was
        // lost). Its version, found on the key's replicas, is taken in (or, by a node
        // that holds no record of the key, sent again) instead of a second one.
        let earlier = match (retry, request_id) {
            (true, Some(id)) => {
                self.earlier_attempt(store, &key, id, &view, &deadline)
                    .await
            }
            _ => Vec::new(),
        };
        if local && !earlier.is_empty() {
            let (core, s, k, hint) = (core.clone(), s.clone(), k.clone(), hint_for.clone());
            let found = earlier.clone();
            // Best effort: if this fails, the write below makes a version of its own.
            let _ = self
                .engine_by(Some(deadline), store.name(), &key, move || {
                    core.hints.merge(&s, &k, found, hint.as_deref())?;
                    Ok(())
                })
                .await;
        }
        let replayed = (!local)
            .then(|| store.replay(earlier.clone(), ctx.as_ref()))
            .flatten();
        let mut written = match replayed {
            Some(w) => w,
            None => {
                self.engine_by(Some(deadline), store.name(), &key, move || {
                    let r = if local {
                        core.hints.put(
                            &s,
                            &k,
                            value.as_deref(),
                            ctx.as_ref(),
                            request_id,
                            hint_for.as_deref(),
                        )
                    } else {
                        s.mint(&k, value.as_deref(), ctx.as_ref(), request_id)
                    };
                    r.map_err(DynamoError::from)
                })
                .await?
            }
        };
        // A `sync` store acknowledges its own copy only once it is on disk (group
        // commit: concurrent writers share the flush).
        if local {
            store
                .durable(store.durability_mark())
                .await
                .map_err(DynamoError::from)?;
        }
        // Whatever happened above, the answer covers every version this request made,
        // so a write made with it supersedes them all.
        for v in &earlier {
            written.context.add(v.dot, v.timestamp_ms);
        }
        let mut context = written.context;
        // Replicas get the version written (its past names what it supersedes), not
        // the key's whole sibling set; encoded once for every round.
        let payload = Rc::new(WritePayload::new(Rc::new(key), vec![written.version], None));
        let key = payload.key.clone();
        let held = local.then(|| hint_for_me.clone());
        let mut fan = self
            .replicate(
                store,
                &payload,
                Round {
                    plan: &plan,
                    view: &view,
                    held: held.clone(),
                },
                w,
                deadline,
            )
            .await;
        let mut plan = plan;
        let mut view = view;
        let mut replanned = 0;
        let mut short: Option<Plan> = None;
        // What replicas of earlier rounds answered they held: the answer covers it too.
        let mut earlier_held: Vec<Version> = Vec::new();
        for _ in 0..PLAN_AGAIN {
            if !(fan.view_changed && self.learned_since(&view)) {
                break;
            }
            // A replica knew a change this view lacks (or another), and this node has
            // learned it: the write is planned again to reach the change's receivers
            // and the new owners too. Every round sends the same version.
            let (again, now) = self.plan_probing(store, &key, w, &deadline).await?;
            if again.targets.len() < w {
                short = Some(again);
                break;
            }
            replanned += 1;
            let still_held = held.clone().filter(|h| {
                again
                    .targets
                    .iter()
                    .any(|t| t.name == self.name() && t.hint_for == *h)
            });
            let mut first = fan;
            earlier_held.append(&mut first.held);
            if first.pending > 0 {
                tokio::task::spawn_local(async move {
                    while first.pending > 0 {
                        first.step().await;
                    }
                });
            }
            fan = self
                .replicate(
                    store,
                    &payload,
                    Round {
                        plan: &again,
                        view: &now,
                        held: still_held,
                    },
                    w,
                    deadline,
                )
                .await;
            plan = again;
            view = now;
        }
        if fan.quorum(w) && !(fan.view_changed && self.learned_since(&view)) {
            // Replicas that already held another attempt's version of this request
            // named it: the answer covers it too.
            earlier_held.append(&mut fan.held);
            fan.held = earlier_held;
            for v in &fan.held {
                context.add(v.dot, v.timestamp_ms);
            }
            if local && !fan.held.is_empty() {
                self.take_in_background(store, &fan.key, fan.held.clone(), hint_for_me);
            }
            let token = store.context_token(&fan.key, &context);
            // The rest of the replicas still get their copy (or a stand-in does),
            // without anyone waiting for it.
            if fan.pending > 0 {
                tokio::task::spawn_local(async move {
                    while fan.pending > 0 {
                        fan.step().await;
                    }
                });
            }
            return Ok(token);
        }
        let mut missing = fan.failed;
        if fan.view_changed && self.learned_since(&view) {
            missing.push(match &short {
                Some(p) => format!(
                    "the membership changed during the write and its new replicas are not \
                     reachable: only {} of W={w} ({})",
                    p.targets.len(),
                    p.down
                        .iter()
                        .map(|(m, why)| format!("{m}: down ({why})"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => format!(
                    "the membership changed during the write (planned again {replanned} \
                     time(s)); retry"
                ),
            });
        }
        for (m, why) in &plan.down {
            missing.push(format!("{m}: down ({why})"));
        }
        Err(DynamoError::new(
            ErrorKind::Quorum,
            format!(
                "quorum not reached for {op} store={} key={}: {} of W={w} acknowledged ({}); {}. \
                 The write was not acknowledged; the replicas that stored it keep it, and a later read may show it",
                store.name(),
                printable_key(&fan.key),
                fan.acked.len(),
                fan.acked.join(", "),
                if fan.acked.len() >= w {
                    format!(
                        "but not W={w} of every replica set of the membership change in \
                         progress ({}); {}",
                        fan.second
                            .iter()
                            .zip(&fan.acked_second)
                            .map(|(set, acked)| format!(
                                "{} of [{}]: {}",
                                acked.len(),
                                set.join(", "),
                                acked.join(", ")
                            ))
                            .collect::<Vec<_>>()
                            .join("; "),
                        missing.join("; ")
                    )
                } else {
                    missing.join("; ")
                }
            ),
        ))
    }

    /// Merges versions other attempts of a request left on replicas into this node's
    /// copy, in the background and best effort (anti-entropy would bring them too).
    fn take_in_background(
        &self,
        store: &Arc<VersionedStore>,
        key: &[u8],
        versions: Vec<Version>,
        hint_for: Option<String>,
    ) {
        let (node, s, k) = (self.clone(), store.clone(), key.to_vec());
        tokio::task::spawn_local(async move {
            let core = node.core.clone();
            let name = s.name().to_owned();
            let key = k.clone();
            let _ = node
                .engine_by(None, &name, &key, move || {
                    core.hints
                        .merge(&s, &k, versions, hint_for.as_deref())
                        .map_err(DynamoError::from)?;
                    Ok(())
                })
                .await;
        });
    }

    /// A retried write's earlier attempts: the versions written by request `id` that
    /// the key's replicas hold, asked of every healthy member among the first 2N of the
    /// key's walk (owners and the stand-ins an earlier attempt may have used), this
    /// node aside. Best effort within half the time left: replicas that fail, or do not
    /// answer by then, are skipped.
    async fn earlier_attempt(
        &self,
        store: &Arc<VersionedStore>,
        key: &[u8],
        id: u64,
        view: &Topology,
        deadline: &Deadline,
    ) -> Vec<Version> {
        let n = store.config().n;
        let key_rc = Rc::new(key.to_vec());
        let walk = walk_in(view, store, key);
        let reads = walk
            .iter()
            .take(2 * n)
            .enumerate()
            .filter(|(_, m)| *m != self.name() && self.is_healthy(m))
            .map(|(i, m)| self.replica_read(m, store, key_rc.clone(), i < n, Some(*deadline)));
        // Half the time left at most: the write itself needs the rest.
        let answers =
            tokio::time::timeout(deadline.remaining() / 2, futures::future::join_all(reads))
                .await
                .unwrap_or_default();
        let mut found: Vec<Version> = answers
            .into_iter()
            .filter_map(Result::ok)
            .flat_map(|r| r.versions)
            .filter(|v| v.request_id == Some(id))
            .collect();
        found.sort_by_key(|v| v.dot);
        found.dedup_by_key(|v| v.dot);
        found
    }

    /// A stand-in for a replica that failed during a request: the next healthy member
    /// past the top N that the request has not used yet.
    fn stand_in(&self, store: &VersionedStore, key: &[u8], used: &[String]) -> Option<String> {
        let walk = self.walk(store, key).ok()?;
        next_stand_in(&walk, store.config().n, used, |m| self.is_healthy(m))
    }

    /// Coordinates a get: R replies, merged; stale replicas repaired afterwards.
    ///
    /// A replica that fails is replaced by the next healthy member of the walk (reads
    /// are sloppy too). Replies from stand-ins count toward R only once every owner
    /// that was asked has replied or failed, so a stand-in's "not found" never hides
    /// a value an owner could still return; owners alone answer as soon as R replied.
    pub async fn coordinate_get(
        &self,
        store: &Arc<VersionedStore>,
        key: Vec<u8>,
        r: Option<u8>,
        deadline: Deadline,
    ) -> Result<GetOutcome, DynamoError> {
        let cfg = store.config();
        let r = check_quorum(store, "r", r, cfg.r)?;
        // Bad input is refused before any fan-out.
        store.check_key(&key)?;
        let (plan, _) = self.plan_probing(store, &key, r, &deadline).await?;
        if plan.targets.len() < r {
            return Err(self.unreachable_quorum("get", store, &key, ("R", r), &plan));
        }
        let key = Rc::new(key);
        let read: ReadFn = {
            let (node, store, key) = (self.clone(), store.clone(), key.clone());
            Rc::new(move |t: Target| {
                let (node, store, key) = (node.clone(), store.clone(), key.clone());
                let as_owner = t.hint_for.is_none();
                Box::pin(async move {
                    node.replica_read(&t.name, &store, key, as_owner, Some(deadline))
                        .await
                })
            })
        };
        let policy = cfg.policy;
        let mut q = QuorumRead::start(r, policy, plan.targets.clone(), read);
        if !q.wait(|used| self.stand_in(store, &key, used)).await {
            let down: Vec<String> = plan
                .down
                .iter()
                .map(|(m, why)| format!("{m}: down ({why})"))
                .collect();
            return Err(q.quorum_error(store.name(), &key, &down));
        }
        let context = store.context_token(&key, &q.merged.context());
        let answer = q.merged.clone();
        // Read repair runs after the answer: late replies are merged in too.
        let node = self.clone();
        let store2 = store.clone();
        tokio::task::spawn_local(async move {
            let (merged, replies, reaped) = q.finish().await;
            node.read_repair(&store2, key, merged, replies, reaped)
                .await;
        });
        Ok(GetOutcome {
            siblings: answer,
            context,
        })
    }

    /// Replicates `version` of `key` to `plan`'s targets and, while owners change, to
    /// the other replica sets of `view`; `held`: this node stored it (standing in for
    /// that owner, if any) and counts. Returns once W is reached in every set, every
    /// write has answered, or a replica serves another view (`view_changed`).
    async fn replicate(
        &self,
        store: &Arc<VersionedStore>,
        payload: &Rc<WritePayload>,
        round: Round<'_>,
        w: usize,
        deadline: Deadline,
    ) -> Replication {
        let Round { plan, view, held } = round;
        let mut fan = Replication::new(
            self.clone(),
            store.clone(),
            payload,
            plan,
            view.step_key(),
            deadline,
        );
        // While owners change, the write needs W in the other replica sets too.
        let seconds = self.second_sets(view, store, &payload.key);
        fan.acked_second = vec![Vec::new(); seconds.len()];
        fan.second = seconds.clone();
        let held_here = held.is_some();
        if let Some(hint_for) = held {
            fan.ack(self.name().to_owned(), hint_for.as_deref());
        }
        for t in plan.targets.iter() {
            // This node's own copy, when it already holds it in the role the plan
            // gives it, is counted above; else it is written here like any other.
            if t.name != self.name() || !held_here {
                fan.send(t.clone());
            }
        }
        let mut extra: Vec<String> = Vec::new();
        for m in seconds.into_iter().flatten() {
            if !plan.targets.iter().any(|t| t.name == m) && !extra.contains(&m) {
                extra.push(m);
            }
        }
        fan.send_to_receivers(extra);
        while !fan.quorum(w) && fan.pending > 0 {
            if fan.view_changed && self.learned_since(view) {
                break;
            }
            fan.step().await;
        }
        fan
    }

    /// Whether this node's view now plans writes differently from `view`.
    fn learned_since(&self, view: &Topology) -> bool {
        self.core
            .view()
            .is_some_and(|now| now.step_key() != view.step_key())
    }

    async fn read_repair(
        &self,
        store: &Arc<VersionedStore>,
        key: Rc<Vec<u8>>,
        newest: Siblings,
        replies: Vec<(Target, Vec<Version>)>,
        reaped: Context,
    ) {
        let policy = store.config().policy;
        // Replicas holding versions reaped elsewhere get the reaped context too.
        let mut stale = holding_reaped(&replies, &reaped);
        for t in stale_replicas(&newest, replies, policy) {
            if !stale.contains(&t) {
                stale.push(t);
            }
        }
        if stale.is_empty() {
            return;
        }
        let reaped = (!reaped.is_empty()).then(|| Rc::new(reaped));
        let payload = WritePayload::new(key, newest.into_versions(), reaped);
        for t in stale {
            // A repair merges what the replica lacks, whatever view it has; it is
            // background work, with no deadline.
            let r = self
                .replica_write(&t.name, store, &payload, t.hint_for.clone(), "", None)
                .await;
            if let Err(e) = r {
                eprintln!(
                    "{}: read repair of {} store={} failed: {}",
                    self.name(),
                    t.name,
                    store.name(),
                    e.message
                );
            }
        }
    }
}

/// One round of a put's replication: where it goes, planned with which view, and
/// whether this node's own copy counts (`held`: stored here, standing in for that
/// owner if any).
struct Round<'a> {
    plan: &'a Plan,
    view: &'a Topology,
    held: Option<Option<String>>,
}

/// The replica writes of one put: sent in parallel; a replica that fails gets a
/// stand-in with a hint (the next healthy member past the top N), before or after the
/// put answered.
struct Replication {
    node: LocalNode,
    store: Arc<VersionedStore>,
    key: Rc<Vec<u8>>,
    payload: Rc<WritePayload>,
    /// The request's deadline: no replica write or stand-in is sent past it.
    deadline: Deadline,
    tx: mpsc::UnboundedSender<(Target, Result<rpc::ReplicaAck, DynamoError>)>,
    rx: mpsc::UnboundedReceiver<(Target, Result<rpc::ReplicaAck, DynamoError>)>,
    /// The membership view the write was planned with (see `Topology::step_key`).
    step: Rc<String>,
    /// A replica serves another view, and it matters (a transfer is pending there, or
    /// it is no owner in its rings): the write is planned again if this node's view
    /// changed by learning it.
    view_changed: bool,
    /// Members asked so far (owners, stand-ins, this node).
    used: Vec<String>,
    /// Writes sent and not answered yet.
    pending: usize,
    /// Members that stored the version (counted toward W).
    acked: Vec<String>,
    /// Nodes outside the key's replicas that get the write because a membership change
    /// is in progress (see `second`): they do not count toward W among the replicas.
    receivers: Vec<String>,
    /// The key's other replica sets while a membership change is in progress (see
    /// [`LocalNode::second_sets`]); empty when none is.
    second: Vec<Vec<String>>,
    /// Per set of `second`: its members (or stand-ins for them) that stored the version.
    acked_second: Vec<Vec<String>>,
    /// Failures, for the quorum error.
    failed: Vec<String>,
    /// Versions replicas hold that other attempts of this request made: the answer's
    /// context covers them too.
    held: Vec<Version>,
}

impl Replication {
    fn new(
        node: LocalNode,
        store: Arc<VersionedStore>,
        payload: &Rc<WritePayload>,
        plan: &Plan,
        step: &str,
        deadline: Deadline,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut used: Vec<String> = plan.targets.iter().map(|t| t.name.clone()).collect();
        used.push(node.name().to_owned());
        Self {
            node,
            store,
            key: payload.key.clone(),
            payload: payload.clone(),
            deadline,
            tx,
            rx,
            step: Rc::new(step.to_owned()),
            view_changed: false,
            used,
            pending: 0,
            acked: Vec::new(),
            receivers: Vec::new(),
            second: Vec::new(),
            acked_second: Vec::new(),
            failed: Vec::new(),
            held: Vec::new(),
        }
    }

    /// Counts `name` (standing in for `hint_for`, if any) as having stored the version:
    /// toward W among the replicas unless it is only there for a membership change,
    /// and toward each other set it (or the owner it stands in for) belongs to.
    fn ack(&mut self, name: String, hint_for: Option<&str>) {
        let owner = hint_for.unwrap_or(&name).to_owned();
        for (set, acked) in self.second.iter().zip(self.acked_second.iter_mut()) {
            if set.contains(&owner) || set.contains(&name) {
                acked.push(name.clone());
            }
        }
        if !self.receivers.contains(&owner) {
            self.acked.push(name);
        }
    }

    /// Whether W is reached among the replicas and in every other set (each needs
    /// W of its members, or all of them when it has fewer).
    fn quorum(&self, w: usize) -> bool {
        self.acked.len() >= w
            && self
                .second
                .iter()
                .zip(&self.acked_second)
                .all(|(set, acked)| acked.len() >= w.min(set.len()))
    }

    /// Sends the write to the members of the other sets that are not among the targets.
    fn send_to_receivers(&mut self, receivers: Vec<String>) {
        for r in receivers {
            if self.used.contains(&r) && r != self.node.name() {
                continue;
            }
            self.used.push(r.clone());
            self.receivers.push(r.clone());
            self.send(Target {
                name: r,
                hint_for: None,
            });
        }
    }

    fn send(&mut self, t: Target) {
        self.pending += 1;
        let node = self.node.clone();
        let (store, payload, tx, step, deadline) = (
            self.store.clone(),
            self.payload.clone(),
            self.tx.clone(),
            self.step.clone(),
            self.deadline,
        );
        tokio::task::spawn_local(async move {
            let hint_for = t.hint_for.clone();
            let r = node
                .replica_write(&t.name, &store, &payload, hint_for, &step, Some(deadline))
                .await;
            let _ = tx.send((t, r));
        });
    }

    /// Waits for one reply; a failed replica gets a stand-in.
    async fn step(&mut self) {
        let Some((t, result)) = self.rx.recv().await else {
            self.pending = 0;
            return;
        };
        self.pending -= 1;
        match result {
            Ok(ack) => {
                // Stored either way; a replica with another view that matters makes
                // the coordinator plan again with what it learned from it.
                self.view_changed |= !ack.agrees;
                for v in ack.held {
                    if !self.held.iter().any(|h| h.dot == v.dot) {
                        self.held.push(v);
                    }
                }
                let hint_for = t.hint_for.clone();
                self.ack(t.name, hint_for.as_deref());
            }
            Err(e) => {
                self.failed.push(format!("{}: {}", t.name, e.message));
                let owner = t.hint_for.clone().unwrap_or(t.name.clone());
                if self.deadline.passed() {
                    // Past the deadline a stand-in's write would be dropped unsent; the
                    // replica gets the version from read repair or anti-entropy.
                    return;
                }
                if let Some(m) = self.node.stand_in(&self.store, &self.key, &self.used) {
                    self.used.push(m.clone());
                    self.send(Target {
                        name: m,
                        hint_for: Some(owner),
                    });
                } else if !self.acked.is_empty() {
                    eprintln!(
                        "{}: no stand-in for {} (store={} key={}): it gets the write from read repair or anti-entropy",
                        self.node.name(),
                        owner,
                        self.store.name(),
                        printable_key(&self.key)
                    );
                }
            }
        }
    }
}

/// How many times a write is planned again when a replica serves another membership
/// view (concurrent changes can each make one round stale).
const PLAN_AGAIN: usize = 3;

/// The effective R or W: the override if given, else the store's; must be 1..=N.
fn check_quorum(
    store: &VersionedStore,
    field: &str,
    requested: Option<u8>,
    default: usize,
) -> Result<usize, DynamoError> {
    quorum_size(store.name(), field, requested, default, store.config().n)
}
