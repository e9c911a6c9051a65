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

use super::local::{blocking, LocalNode};

/// One replica a request goes to.
#[derive(Clone, Debug)]
struct Target {
    name: String,
    /// Set for a stand-in: the down owner it keeps the versions for.
    hint_for: Option<String>,
}

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

impl LocalNode {
    /// Is this node one of the first N members of `key`'s preference list?
    pub fn in_top_n(&self, store: &VersionedStore, key: &[u8]) -> bool {
        let n = store.config().n;
        self.core
            .walk(store, key)
            .iter()
            .take(n)
            .any(|m| *m == self.name())
    }

    /// The top-N owners of `key`.
    pub fn top_n(&self, store: &VersionedStore, key: &[u8]) -> Vec<String> {
        let n = store.config().n;
        self.core
            .walk(store, key)
            .into_iter()
            .take(n)
            .map(str::to_owned)
            .collect()
    }

    fn plan(&self, store: &VersionedStore, key: &[u8], coordinator_must_hold: bool) -> Plan {
        let n = store.config().n;
        let walk = self.core.walk(store, key);
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
        let mut owed = down.iter().map(|(m, _)| m.clone()).collect::<Vec<_>>();
        owed.reverse();
        // This node coordinates; if it is outside the top N (no owner was reachable to
        // forward to) it must hold the version itself, as the first stand-in.
        if coordinator_must_hold && !targets.iter().any(|t| t.name == self.name()) {
            let hint_for = owed.pop().or_else(|| walk.first().map(|m| (*m).to_owned()));
            targets.insert(
                0,
                Target {
                    name: self.name().to_owned(),
                    hint_for,
                },
            );
        }
        for m in walk.iter().skip(n) {
            if owed.is_empty() {
                break;
            }
            if targets.iter().any(|t| t.name == *m) || !self.is_healthy(m) {
                continue;
            }
            targets.push(Target {
                name: (*m).to_owned(),
                hint_for: owed.pop(),
            });
        }
        Plan {
            targets,
            down,
            uncovered: owed.len(),
        }
    }

    /// A plan with at least `need` targets if possible: when owners believed down
    /// leave it short, they are pinged first (one may be back before the ping loop
    /// noticed), so a quorum is never refused on stale health alone.
    async fn plan_probing(
        &self,
        store: &VersionedStore,
        key: &[u8],
        coordinator_must_hold: bool,
        need: usize,
    ) -> Plan {
        let plan = self.plan(store, key, coordinator_must_hold);
        if plan.targets.len() >= need || plan.down.is_empty() {
            return plan;
        }
        let probes = plan.down.iter().map(|(m, _)| self.ping(m));
        futures::future::join_all(probes).await;
        self.plan(store, key, coordinator_must_hold)
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
        let members = self.core.ring.members().len();
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
    /// token.
    pub async fn coordinate_put(
        &self,
        store: &Arc<VersionedStore>,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        context: Option<String>,
        w: Option<u8>,
    ) -> Result<String, DynamoError> {
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
        let plan = self.plan_probing(store, &key, true, w).await;
        if plan.targets.len() < w {
            return Err(self.unreachable_quorum(op, store, &key, ("W", w), &plan));
        }
        // The coordinator's own write issues the dot.
        let me = plan
            .targets
            .iter()
            .find(|t| t.name == self.name())
            .cloned()
            .ok_or_else(|| DynamoError::new(ErrorKind::Internal, "coordinator is not a target"))?;
        let s = store.clone();
        let k = key.clone();
        let written = blocking(move || {
            s.put(&k, value.as_deref(), ctx.as_ref())
                .map_err(DynamoError::from)
        })
        .await?;
        if let Some(owner) = me.hint_for.clone() {
            self.record_hint(store, owner, key.clone()).await?;
        }
        let token = store.context_token(&key, &written.context);
        let versions = Rc::new(written.siblings.into_versions());
        let encoded = Rc::new(rpc::encode_versions(&versions));
        let key = Rc::new(key);
        let others: Vec<Target> = plan
            .targets
            .iter()
            .filter(|t| t.name != self.name())
            .cloned()
            .collect();
        let mut acked = vec![self.name().to_owned()];
        let (tx, mut rx) = mpsc::unbounded_channel();
        let send = |t: Target| {
            let node = self.clone();
            let (store, key, versions, encoded, tx) = (
                store.clone(),
                key.clone(),
                versions.clone(),
                encoded.clone(),
                tx.clone(),
            );
            tokio::task::spawn_local(async move {
                let r = node
                    .replica_write(&t.name, &store, key, versions, encoded, t.hint_for.clone())
                    .await;
                let _ = tx.send((t, r));
            });
        };
        let mut used: Vec<String> = plan.targets.iter().map(|t| t.name.clone()).collect();
        let mut pending = others.len();
        for t in others {
            send(t);
        }
        let mut failed: Vec<String> = Vec::new();
        while acked.len() < w && pending > 0 {
            let Some((t, result)) = rx.recv().await else {
                break;
            };
            pending -= 1;
            match result {
                Ok(()) => acked.push(t.name),
                Err(e) => {
                    failed.push(format!("{}: {}", t.name, e.message));
                    // Sloppy quorum: an owner that failed mid-request gets a stand-in.
                    let owner = t.hint_for.clone().unwrap_or(t.name.clone());
                    let n = store.config().n;
                    let stand_in = self
                        .core
                        .walk(store, &key)
                        .into_iter()
                        .skip(n)
                        .find(|m| !used.iter().any(|u| u == m) && self.is_healthy(m))
                        .map(str::to_owned);
                    if let Some(m) = stand_in {
                        used.push(m.clone());
                        pending += 1;
                        send(Target {
                            name: m,
                            hint_for: Some(owner),
                        });
                    }
                }
            }
        }
        drop(tx);
        if acked.len() >= w {
            return Ok(token);
        }
        let mut missing: Vec<String> = failed;
        for (m, why) in &plan.down {
            missing.push(format!("{m}: down ({why})"));
        }
        Err(DynamoError::new(
            ErrorKind::Quorum,
            format!(
                "quorum not reached for {op} store={} key={}: {} of W={w} acknowledged ({}); {}. \
                 The write was not acknowledged; the replicas that stored it keep it, and a later read may show it",
                store.name(),
                printable_key(&key),
                acked.len(),
                acked.join(", "),
                missing.join("; ")
            ),
        ))
    }

    /// Coordinates a get: R replies, merged; stale replicas repaired afterwards.
    pub async fn coordinate_get(
        &self,
        store: &Arc<VersionedStore>,
        key: Vec<u8>,
        r: Option<u8>,
    ) -> Result<GetOutcome, DynamoError> {
        let cfg = store.config();
        let r = check_quorum(store, "r", r, cfg.r)?;
        // Bad input is refused before any fan-out.
        store.check_key(&key)?;
        let plan = self.plan_probing(store, &key, false, r).await;
        if plan.targets.len() < r {
            return Err(self.unreachable_quorum("get", store, &key, ("R", r), &plan));
        }
        let key = Rc::new(key);
        let (tx, mut rx) = mpsc::unbounded_channel();
        for t in plan.targets.iter().cloned() {
            let node = self.clone();
            let (store, key, tx) = (store.clone(), key.clone(), tx.clone());
            tokio::task::spawn_local(async move {
                let res = node.replica_read(&t.name, &store, key).await;
                let _ = tx.send((t, res));
            });
        }
        drop(tx);
        let policy = cfg.policy;
        let mut merged = Siblings::new();
        let mut replies: Vec<(Target, Vec<Version>)> = Vec::new();
        let mut failed: Vec<String> = Vec::new();
        while replies.len() < r {
            match rx.recv().await {
                Some((t, Ok(versions))) => {
                    merged.merge(versions.iter().cloned(), policy);
                    replies.push((t, versions));
                }
                Some((t, Err(e))) => failed.push(format!("{}: {}", t.name, e.message)),
                None => break,
            }
        }
        if replies.len() < r {
            for (m, why) in &plan.down {
                failed.push(format!("{m}: down ({why})"));
            }
            return Err(DynamoError::new(
                ErrorKind::Quorum,
                format!(
                    "quorum not reached for get store={} key={}: {} of R={r} replied ({}); {}",
                    store.name(),
                    printable_key(&key),
                    replies.len(),
                    replies
                        .iter()
                        .map(|(t, _)| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    failed.join("; ")
                ),
            ));
        }
        let context = store.context_token(&key, &merged.context());
        // Read repair runs after the answer: late replies are merged in too.
        let node = self.clone();
        let store2 = store.clone();
        let answer = merged.clone();
        tokio::task::spawn_local(async move {
            while let Some((t, res)) = rx.recv().await {
                if let Ok(versions) = res {
                    merged.merge(versions.iter().cloned(), policy);
                    replies.push((t, versions));
                }
            }
            node.read_repair(&store2, key, merged, replies).await;
        });
        Ok(GetOutcome {
            siblings: answer,
            context,
        })
    }

    async fn read_repair(
        &self,
        store: &Arc<VersionedStore>,
        key: Rc<Vec<u8>>,
        newest: Siblings,
        replies: Vec<(Target, Vec<Version>)>,
    ) {
        let policy = store.config().policy;
        let versions = Rc::new(newest.into_versions());
        let encoded = Rc::new(rpc::encode_versions(&versions));
        for (t, had) in replies {
            let mut theirs = Siblings::from_versions(had, policy);
            if !theirs.merge(versions.iter().cloned(), policy) {
                continue; // already up to date
            }
            let r = self
                .replica_write(
                    &t.name,
                    store,
                    key.clone(),
                    versions.clone(),
                    encoded.clone(),
                    t.hint_for.clone(),
                )
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

/// The effective R or W: the override if given, else the store's; must be 1..=N.
fn check_quorum(
    store: &VersionedStore,
    field: &str,
    requested: Option<u8>,
    default: usize,
) -> Result<usize, DynamoError> {
    let n = store.config().n;
    let q = requested.map_or(default, usize::from);
    if q == 0 || q > n {
        return Err(DynamoError::new(
            ErrorKind::BadRequest,
            format!(
                "{field}={q} is invalid for store {}: it must be between 1 and N={n}",
                store.name()
            ),
        ));
    }
    Ok(q)
}
