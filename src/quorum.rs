//! The read side of a sloppy quorum (paper sections 4.5 and 4.6), shared by a node that
//! coordinates a get and by a client that coordinates its own reads (client-driven
//! coordination, section 6.4), so both follow exactly the same rules:
//!
//! - R and W are between 1 and N ([`quorum_size`]);
//! - owners first, then stand-ins: the first N healthy members of the key's walk are
//!   asked, each owner believed down gets the next healthy member past the top N
//!   ([`stand_ins_for`]), and a replica that fails is replaced by the next healthy
//!   member not used yet ([`next_stand_in`]);
//! - replies from stand-ins count toward R only once every owner that was asked has
//!   replied or failed, so a stand-in's "not found" never hides a value an owner could
//!   still return; owners alone answer as soon as R of them replied;
//! - a replica that lost its data and has not rebuilt the key's partition yet says so
//!   (`rebuilding`), and its reply counts as a stand-in's: its "not found" never hides
//!   a value either;
//! - replies are merged as they come (supersession by dots), and versions covered by a
//!   reaped context any reply carries are dead and dropped (a replica restored from an
//!   old copy never brings a reaped key back); replies that arrive after the answer are
//!   still collected for read repair.
//!
//! Reads are spawned with `spawn_local`: callers run on a `LocalSet` (capnp-rpc is
//! `!Send`).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use tokio::sync::mpsc;

use crate::context::Context;
use crate::error::{DynamoError, ErrorKind};
use crate::store::printable_key;
use crate::version::{ConflictPolicy, Siblings, Version};

/// A member asked for a key's versions: an owner, or a stand-in for `hint_for`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The member's name.
    pub name: String,
    /// The owner it stands in for (`None`: it is an owner).
    pub hint_for: Option<String>,
}

impl Target {
    /// An owner.
    pub fn owner(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            hint_for: None,
        }
    }
}

/// What one replica answered to a read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaReply {
    /// Its versions of the key.
    pub versions: Vec<Version>,
    /// It lost its data and has not rebuilt the key's partition: its answer counts as
    /// a stand-in's.
    pub rebuilding: bool,
    /// The key's reaped context there (versions it covers are dead).
    pub reaped: Option<Context>,
}

/// The effective R or W of one request: `requested` if given, else the store's
/// `default`; it must be between 1 and the store's `n` (a bad request otherwise).
pub fn quorum_size(
    store: &str,
    field: &str,
    requested: Option<u8>,
    default: usize,
    n: usize,
) -> Result<usize, DynamoError> {
    let q = requested.map_or(default, usize::from);
    if q == 0 || q > n {
        return Err(DynamoError::new(
            ErrorKind::BadRequest,
            format!("{field}={q} is invalid for store {store}: it must be between 1 and N={n}"),
        ));
    }
    Ok(q)
}

/// Owners first, then stand-ins: for each owner of `down_owners` (in walk order) the
/// next member past the key's top `n` of `walk` that is `healthy` and not in `taken`,
/// as a stand-in holding a hint for that owner. Owners left without one are counted in
/// the second value.
pub fn stand_ins_for(
    walk: &[String],
    n: usize,
    down_owners: &[String],
    taken: &[String],
    healthy: impl Fn(&str) -> bool,
) -> (Vec<Target>, usize) {
    let mut past = walk
        .iter()
        .skip(n)
        .filter(|m| !taken.contains(m) && healthy(m));
    let mut targets = Vec::new();
    let mut uncovered = 0;
    for owner in down_owners {
        match past.next() {
            Some(s) => targets.push(Target {
                name: s.clone(),
                hint_for: Some(owner.clone()),
            }),
            None => uncovered += 1,
        }
    }
    (targets, uncovered)
}

/// The stand-in for a replica that failed during a request: the first member past the
/// key's top `n` of `walk` that the request has not `used` and that is `healthy`.
pub fn next_stand_in(
    walk: &[String],
    n: usize,
    used: &[String],
    healthy: impl Fn(&str) -> bool,
) -> Option<String> {
    walk.iter()
        .skip(n)
        .find(|m| !used.contains(m) && healthy(m))
        .cloned()
}

/// Reads one member's versions of the key.
pub type ReadFn =
    Rc<dyn Fn(Target) -> Pin<Box<dyn Future<Output = Result<ReplicaReply, DynamoError>>>>>;

type Reply = (Target, Result<ReplicaReply, DynamoError>);

/// One quorum read in progress. Invariant: `pending` counts reads sent and not yet
/// received; `owners_pending` those among them sent to owners.
pub struct QuorumRead {
    r: usize,
    policy: ConflictPolicy,
    read: ReadFn,
    tx: Option<mpsc::UnboundedSender<Reply>>,
    rx: mpsc::UnboundedReceiver<Reply>,
    used: Vec<String>,
    pending: usize,
    owners_pending: usize,
    /// Everything the replies so far hold, merged, less what `reaped` covers.
    pub merged: Siblings,
    /// The replies so far, by member.
    pub replies: Vec<(Target, Vec<Version>)>,
    /// Members whose reply counts as a stand-in's although they were asked as owners
    /// (they are rebuilding).
    pub rebuilding: Vec<String>,
    /// The union of the reaped contexts the replies carried.
    pub reaped: Context,
    /// Failed reads, as "member: why".
    pub failed: Vec<String>,
    /// The errors of the failed reads, in the same order.
    pub errors: Vec<DynamoError>,
}

impl QuorumRead {
    /// True once every read sent has answered (or failed).
    pub fn is_done(&self) -> bool {
        self.pending == 0
    }

    /// What [`QuorumRead::finish`] returns, without waiting: for a read that
    /// [`QuorumRead::is_done`] (a read still out is not waited for).
    pub fn into_results(self) -> (Siblings, Vec<(Target, Vec<Version>)>, Context) {
        (self.merged, self.replies, self.reaped)
    }

    /// Sends a read to every target at once.
    pub fn start(r: usize, policy: ConflictPolicy, targets: Vec<Target>, read: ReadFn) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut q = Self {
            r,
            policy,
            read,
            tx: Some(tx),
            rx,
            used: targets.iter().map(|t| t.name.clone()).collect(),
            pending: 0,
            owners_pending: 0,
            merged: Siblings::new(),
            replies: Vec::new(),
            rebuilding: Vec::new(),
            reaped: Context::new(),
            failed: Vec::new(),
            errors: Vec::new(),
        };
        for t in targets {
            q.send(t);
        }
        q
    }

    fn send(&mut self, t: Target) {
        let Some(tx) = self.tx.clone() else {
            return;
        };
        self.pending += 1;
        if t.hint_for.is_none() {
            self.owners_pending += 1;
        }
        let read = (self.read)(t.clone());
        tokio::task::spawn_local(async move {
            let _ = tx.send((t, read.await));
        });
    }

    /// Whether the replies so far answer the read.
    pub fn enough(&self) -> bool {
        let from_owners = self
            .replies
            .iter()
            .filter(|(t, _)| t.hint_for.is_none() && !self.rebuilding.contains(&t.name))
            .count();
        from_owners >= self.r || (self.owners_pending == 0 && self.replies.len() >= self.r)
    }

    /// The error of a read that did not reach R: who replied, why the others failed,
    /// and `also` (members not asked, with why).
    pub fn quorum_error(&self, store: &str, key: &[u8], also: &[String]) -> DynamoError {
        let replied: Vec<&str> = self.replies.iter().map(|(t, _)| t.name.as_str()).collect();
        let failed: Vec<&str> = self.failed.iter().chain(also).map(String::as_str).collect();
        DynamoError::new(
            ErrorKind::Quorum,
            format!(
                "quorum not reached for get store={store} key={}: {} of R={} replied ({}); {}",
                printable_key(key),
                replied.len(),
                self.r,
                replied.join(", "),
                failed.join("; ")
            ),
        )
    }

    /// Members asked so far.
    pub fn used(&self) -> &[String] {
        &self.used
    }

    /// Waits until the read is answered (true) or cannot be (false: every read came
    /// back and no stand-in is left). `stand_in` names the next member to ask in place
    /// of a failed one, given the members asked so far.
    pub async fn wait(&mut self, mut stand_in: impl FnMut(&[String]) -> Option<String>) -> bool {
        while !self.enough() && self.pending > 0 {
            let Some((t, res)) = self.rx.recv().await else {
                break;
            };
            if !self.record(&t, res) {
                if let Some(m) = stand_in(&self.used) {
                    self.used.push(m.clone());
                    let owner = t.hint_for.clone().unwrap_or(t.name.clone());
                    self.send(Target {
                        name: m,
                        hint_for: Some(owner),
                    });
                }
            }
        }
        self.enough()
    }

    /// Counts one reply; false when the read failed.
    fn record(&mut self, t: &Target, res: Result<ReplicaReply, DynamoError>) -> bool {
        self.pending -= 1;
        if t.hint_for.is_none() {
            self.owners_pending -= 1;
        }
        match res {
            Ok(reply) => {
                if reply.rebuilding {
                    self.rebuilding.push(t.name.clone());
                }
                if let Some(r) = &reply.reaped {
                    self.reaped.merge(r);
                }
                self.merged
                    .merge(reply.versions.iter().cloned(), self.policy);
                if !self.reaped.is_empty() {
                    self.merged = drop_reaped(&self.merged, &self.reaped, self.policy);
                }
                self.replies.push((t.clone(), reply.versions));
                true
            }
            Err(e) => {
                self.failed.push(format!("{}: {}", t.name, e.message));
                self.errors.push(e);
                false
            }
        }
    }

    /// Collects the replies still in flight (late ones count for read repair), then
    /// gives everything merged, every reply and the reaped contexts seen.
    pub async fn finish(mut self) -> (Siblings, Vec<(Target, Vec<Version>)>, Context) {
        self.tx = None;
        while self.pending > 0 {
            match self.rx.recv().await {
                Some((t, res)) => {
                    self.record(&t, res);
                }
                None => break,
            }
        }
        (self.merged, self.replies, self.reaped)
    }
}

/// `set` without the versions `reaped` covers.
pub fn drop_reaped(set: &Siblings, reaped: &Context, policy: ConflictPolicy) -> Siblings {
    let kept: Vec<Version> = set
        .versions()
        .iter()
        .filter(|v| !reaped.covers_write(&v.dot, v.request_id))
        .cloned()
        .collect();
    if kept.len() == set.len() {
        return set.clone();
    }
    Siblings::from_versions(kept, policy)
}

/// The replicas among `replies` that still hold a version `reaped` covers: read
/// repair sends them the reaped context.
pub fn holding_reaped(replies: &[(Target, Vec<Version>)], reaped: &Context) -> Vec<Target> {
    if reaped.is_empty() {
        return Vec::new();
    }
    replies
        .iter()
        .filter(|(_, had)| {
            had.iter()
                .any(|v| reaped.covers_write(&v.dot, v.request_id))
        })
        .map(|(t, _)| t.clone())
        .collect()
}

/// The replicas among `replies` that lack a version of `newest` (no version with its
/// dot), by name: what a read reports as stale. It only compares dots, so it copies no
/// value (unlike [`stale_replicas`], which the repair uses to decide what to write).
pub fn lacking_replicas(newest: &Siblings, replies: &[(Target, Vec<Version>)]) -> Vec<String> {
    replies
        .iter()
        .filter(|(_, had)| {
            newest
                .versions()
                .iter()
                .any(|v| !had.iter().any(|h| h.dot == v.dot))
        })
        .map(|(t, _)| t.name.clone())
        .collect()
}
/// The version sets to send in read repair: for each reply that lacks something of
/// `newest`, the member (and whom it stands in for) that should get `newest`.
pub fn stale_replicas(
    newest: &Siblings,
    replies: Vec<(Target, Vec<Version>)>,
    policy: ConflictPolicy,
) -> Vec<Target> {
    replies
        .into_iter()
        .filter_map(|(t, had)| {
            // The common case, a replica that holds exactly the newest versions, needs
            // no merge to tell (a dot names one write: the same dots, the same set).
            let newest_versions = newest.versions();
            let within =
                |a: &[Version], b: &[Version]| a.iter().all(|v| b.iter().any(|w| w.dot == v.dot));
            if had.len() == newest_versions.len()
                && within(&had, newest_versions)
                && within(newest_versions, &had)
            {
                return None;
            }
            let mut theirs = Siblings::from_versions(had, policy);
            theirs
                .merge(newest.versions().iter().cloned(), policy)
                .then_some(t)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Context;
    use crate::dot::{Actor, Dot};

    fn version(actor: u64, counter: u64, past: &Context, value: Option<&str>) -> Version {
        Version {
            dot: Dot::new(Actor::new(actor, 1), counter),
            past: past.clone(),
            timestamp_ms: counter * 10 + actor,
            value: value.map(|v| v.as_bytes().to_vec()),
            request_id: None,
        }
    }

    /// A replica whose reply names the newest versions' dots exactly is not repaired;
    /// one that repeats a dot in place of a missing one (a malformed reply of the
    /// same length) still is.
    #[test]
    fn a_reply_is_stale_unless_it_holds_exactly_the_newest_dots() {
        let a = version(1, 1, &Context::new(), Some("a"));
        let b = version(2, 1, &Context::new(), Some("b"));
        let policy = ConflictPolicy::Siblings;
        let newest = Siblings::from_versions(vec![a.clone(), b.clone()], policy);
        let replies = vec![
            (Target::owner("same"), vec![b.clone(), a.clone()]),
            (Target::owner("repeats"), vec![a.clone(), a.clone()]),
            (Target::owner("short"), vec![a.clone()]),
        ];
        let stale: Vec<String> = stale_replicas(&newest, replies, policy)
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(stale, vec!["repeats".to_string(), "short".to_string()]);
    }

    /// What a read reports (`lacking_replicas`, by dots) and what it repairs
    /// (`stale_replicas`, by merging) name the same replicas, for both policies, with
    /// tombstones, obsolete versions and empty replicas among the replies.
    #[test]
    fn reported_and_repaired_replicas_agree() {
        let a = version(1, 1, &Context::new(), Some("a"));
        let b = version(2, 1, &Context::new(), Some("b"));
        let c = version(1, 2, &a.history(), Some("c"));
        let t = version(3, 1, &Context::new(), None);
        let sets: Vec<Vec<Version>> = vec![
            vec![],
            vec![a.clone()],
            vec![b.clone()],
            vec![a.clone(), b.clone()],
            vec![c.clone()],
            vec![c.clone(), b.clone()],
            vec![t.clone()],
            vec![c.clone(), b.clone(), t.clone()],
        ];
        for policy in [ConflictPolicy::Siblings, ConflictPolicy::Lww] {
            for x in &sets {
                for y in &sets {
                    for z in &sets {
                        let replies: Vec<(Target, Vec<Version>)> = [("x", x), ("y", y), ("z", z)]
                            .into_iter()
                            .map(|(n, vs)| {
                                (
                                    Target::owner(n),
                                    Siblings::from_versions(vs.clone(), policy)
                                        .versions()
                                        .to_vec(),
                                )
                            })
                            .collect();
                        let mut newest = Siblings::new();
                        for (_, vs) in &replies {
                            newest.merge(vs.iter().cloned(), policy);
                        }
                        let reported = lacking_replicas(&newest, &replies);
                        let repaired: Vec<String> = stale_replicas(&newest, replies, policy)
                            .into_iter()
                            .map(|t| t.name)
                            .collect();
                        assert_eq!(reported, repaired, "{policy:?}: {x:?} / {y:?} / {z:?}");
                    }
                }
            }
        }
    }
}
