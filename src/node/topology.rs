//! The membership view a node serves with: its history, the rings that history steps
//! through, and which of them serves.
//!
//! **Steps.** Replaying the history gives its sequence of rings (see
//! [`crate::membership::sequence`]): one per applied ring change, the last one the
//! *target*, and the *serving* step, the last one whose receivers have all pulled their
//! data and settled. Reads use the serving ring's preference lists; writes go to them
//! and also to the replicas of the next step (see [`Topology::second_sets`]), so data
//! moves one step at a time while nothing stops, and a step once served stays served.
//!
//! Invariant: a [`Topology`] never changes. Everything in it is a function of the
//! history's set of changes, so two nodes holding the same history serve with
//! byte-identical rings and agree on which step serves; a node that learns new
//! changes builds a new topology and swaps it in whole (see
//! [`super::NodeCore::adopt`]), so a request sees one view from start to end.

use std::collections::{BTreeSet, HashMap};

use crate::membership::sequence::names;
use crate::membership::{receivers, ring_digest, Step};
use crate::membership::{sequence, ChangeId, ChangeKind, History, HistoryError, Sequence};
use crate::ring::Ring;

/// A partition that changes replicas between the serving step and the next: the
/// receivers pull it from the sources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingMove {
    /// The partition.
    pub partition: u32,
    /// Its replicas in the serving ring that can give its data (a node whose last
    /// ring change is a removal is not one).
    pub sources: Vec<String>,
    /// The nodes that become its replicas in the next step.
    pub receivers: Vec<String>,
}

/// One membership view (see the module doc).
#[derive(Debug)]
pub struct Topology {
    history: History,
    steps: Vec<Step>,
    serving: usize,
    /// The step served before `serving` (the writes' second set during the grace).
    previous: Option<usize>,
    /// The step whose data moves now (after `serving`; steps in between whose missing
    /// receivers all left are skipped).
    next: Option<usize>,
    /// The nodes that receive data in the next step.
    next_receivers: BTreeSet<String>,
    /// The nodes whose last ring change is a `Remove`.
    removed: BTreeSet<String>,
    digest: [u8; 16],
    /// The serving ring's digest, and the next step's (hex MD5 of their JSON).
    serving_digest: String,
    next_digest: Option<String>,
    /// See [`Topology::step_key`].
    step_key: String,
    skipped: Vec<(ChangeId, String)>,
    /// Every member's latest address (of any step: a member leaving is still reached).
    addresses: HashMap<String, String>,
    /// Per replication factor N: per partition, the serving ring's walk as indices.
    walks: HashMap<usize, Vec<Vec<usize>>>,
}

impl Topology {
    /// Replays `history` (see [`crate::membership::sequence`]), caching walks for each
    /// replication factor in `ns`.
    pub fn replay(history: History, ns: &[usize]) -> Result<Self, HistoryError> {
        let Sequence {
            steps,
            serving,
            previous,
            next,
            skipped,
        } = sequence(&history)?;
        let mut addresses = HashMap::new();
        for s in &steps {
            for m in s.ring.members() {
                if let Some(a) = &m.address {
                    addresses.insert(m.name.clone(), a.clone());
                }
            }
        }
        // Address changes, in history order, after every member's first address.
        for c in history.changes() {
            if let ChangeKind::SetAddress { name, address } = &c.kind {
                addresses.insert(name.clone(), address.clone());
            }
        }
        let ring = &steps[serving].ring;
        let mut walks = HashMap::new();
        for &n in ns {
            walks.entry(n).or_insert_with(|| {
                (0..ring.partition_count())
                    .map(|p| {
                        ring.walk(p, n)
                            .iter()
                            .filter_map(|m| ring.members().iter().position(|x| x.name == m.name))
                            .collect()
                    })
                    .collect()
            });
        }
        let next_receivers = next
            .map(|j| receivers(&steps[serving].ring, &steps[j].ring))
            .unwrap_or_default();
        let removed = removed_nodes(&steps);
        let serving_digest = ring_digest(&steps[serving].ring);
        let next_digest = next.map(|j| ring_digest(&steps[j].ring));
        Ok(Self {
            digest: history.digest(),
            step_key: format!("{serving_digest}/{}", next_digest.as_deref().unwrap_or("-")),
            serving_digest,
            next_digest,
            history,
            steps,
            serving,
            previous,
            next,
            next_receivers,
            removed,
            skipped,
            addresses,
            walks,
        })
    }

    /// The history this view was replayed from.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The ring that serves: reads use its preference lists.
    pub fn ring(&self) -> &Ring {
        &self.steps[self.serving].ring
    }

    /// The ring every applied change leads to (the serving one once every transfer
    /// finished).
    pub fn target(&self) -> &Ring {
        &self.steps[self.steps.len() - 1].ring
    }

    /// Every step, from the creation to the target.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The index of the serving step.
    pub fn serving_step(&self) -> usize {
        self.serving
    }

    /// The step after the serving one, whose data is moving now (`None`: settled).
    pub fn next_step(&self) -> Option<&Step> {
        self.next.map(|j| &self.steps[j])
    }

    /// The history's digest: equal digests, equal views.
    pub fn digest(&self) -> [u8; 16] {
        self.digest
    }

    /// The serving ring's version (derived from the history).
    pub fn version(&self) -> u64 {
        self.ring().version()
    }

    /// Changes of the history that did not apply, with why.
    pub fn skipped(&self) -> &[(ChangeId, String)] {
        &self.skipped
    }

    /// Every member in the order a request for `partition` with replication factor `n`
    /// tries them in the serving ring: the preference list (first `n`), then the
    /// stand-ins.
    pub fn walk(&self, partition: u32, n: usize) -> Vec<&str> {
        let ring = self.ring();
        let members = ring.members();
        match self.walks.get(&n) {
            Some(w) => w[partition as usize]
                .iter()
                .map(|&i| members[i].name.as_str())
                .collect(),
            None => ring
                .walk(partition, n)
                .iter()
                .map(|m| m.name.as_str())
                .collect(),
        }
    }

    /// The other replica sets of `partition` (replication factor `n`) a write must also
    /// reach W of while owners change: the next step's while its transfer runs, and
    /// (when `grace`) the ring served before the serving one, without nodes removed
    /// since (they are dead). Sets equal to the serving one are left out.
    pub fn second_sets(&self, partition: u32, n: usize, grace: bool) -> Vec<Vec<String>> {
        let mut rings: Vec<&Ring> = Vec::new();
        if let Some(next) = self.next_step() {
            rings.push(&next.ring);
        }
        if let (Some(prev), true) = (self.previous, grace) {
            rings.push(&self.steps[prev].ring);
        }
        let mut out = Vec::new();
        if rings.is_empty() {
            // The common case, on every write: no membership change in progress.
            return out;
        }
        let now = names(self.ring(), partition, n);
        for ring in rings {
            let set: Vec<String> = names(ring, partition, n)
                .into_iter()
                .filter(|m| !self.removed.contains(m))
                .collect();
            if set.iter().any(|m| !now.contains(m)) && !out.contains(&set) {
                out.push(set);
            }
        }
        out
    }

    /// Names where data stands: the serving ring and the next step's, by digest. Two
    /// views with the same key plan writes alike (the same replicas, the same second
    /// sets); a replica refuses writes planned with another key while a transfer is
    /// pending (see `Internode.write`).
    pub fn step_key(&self) -> &str {
        &self.step_key
    }

    /// The ring served before the serving one, if any.
    pub fn previous_ring(&self) -> Option<&Ring> {
        self.previous.map(|i| &self.steps[i].ring)
    }

    /// The nodes whose last ring change in the history is a `Remove`: dead, nobody's
    /// source (a node removed and joined again is a member like any other).
    pub fn removed(&self) -> &BTreeSet<String> {
        &self.removed
    }

    /// What moves between the serving step and the next, per partition (replication
    /// factor `n`): what `receiver` must pull before it may settle, or every move when
    /// `receiver` is `None`.
    pub fn moves(&self, n: usize, receiver: Option<&str>) -> Vec<PendingMove> {
        let Some(next) = self.next_step() else {
            return Vec::new();
        };
        let removed = &self.removed;
        let now = self.ring();
        (0..now.partition_count())
            .filter_map(|p| {
                let before = names(now, p, n);
                let receivers: Vec<String> = names(&next.ring, p, n)
                    .into_iter()
                    .filter(|r| !before.contains(r))
                    .filter(|r| receiver.is_none_or(|me| me == r))
                    .collect();
                (!receivers.is_empty()).then(|| PendingMove {
                    partition: p,
                    sources: before
                        .into_iter()
                        .filter(|s| !removed.contains(s.as_str()))
                        .collect(),
                    receivers,
                })
            })
            .collect()
    }

    /// The nodes that receive data in the next step (for some replication factor);
    /// empty when the next step moves no replica (or there is none).
    pub fn next_receivers(&self) -> &BTreeSet<String> {
        &self.next_receivers
    }

    /// Whether `node` receives data in the next step (for some replication factor).
    pub fn is_receiver(&self, node: &str) -> bool {
        self.next_receivers.contains(node)
    }

    /// The `Settled` change `node` issues once it holds what the next step moves to
    /// it: from the serving ring to the next step's (`None`: no step is pending).
    pub fn settlement(&self, node: &str) -> Option<ChangeKind> {
        let next = self.next?;
        Some(ChangeKind::Settled {
            change: self.steps[next].change.clone(),
            node: node.to_owned(),
            from: self.serving_digest.clone(),
            via: self.steps[self.serving + 1..next]
                .iter()
                .map(|s| s.change.clone())
                .collect(),
            to: self.next_digest.clone().unwrap_or_default(),
        })
    }

    /// Whether `node` has said it holds what the next step moves to it (pulled from
    /// the serving ring, for the next step's ring).
    pub fn has_settled(&self, node: &str) -> bool {
        let Some(record) = self.settlement(node) else {
            return true;
        };
        self.history.changes().any(|c| c.kind == record)
    }

    /// The serving ring's digest (hex MD5 of its JSON): what a `Settled` names as the
    /// ring its data came from.
    pub fn serving_digest(&self) -> String {
        self.serving_digest.clone()
    }

    /// Whether `name` is a member of the serving or the target ring.
    pub fn is_member(&self, name: &str) -> bool {
        self.ring().member(name).is_some() || self.target().member(name).is_some()
    }

    /// The latest address the history records for member `name`.
    pub fn address(&self, name: &str) -> Option<&str> {
        self.addresses.get(name).map(String::as_str)
    }

    /// Every member (of the serving or target ring) with its address.
    pub fn addresses(&self) -> HashMap<String, String> {
        let mut out = HashMap::new();
        let members: BTreeSet<&str> = self
            .ring()
            .members()
            .iter()
            .chain(self.target().members())
            .map(|m| m.name.as_str())
            .collect();
        for m in members {
            if let Some(a) = self.addresses.get(m) {
                out.insert(m.to_owned(), a.clone());
            }
        }
        out
    }

    /// Members of the serving or target ring, by name.
    pub fn member_names(&self) -> Vec<String> {
        let set: BTreeSet<String> = self
            .ring()
            .members()
            .iter()
            .chain(self.target().members())
            .map(|m| m.name.clone())
            .collect();
        set.into_iter().collect()
    }
}

/// The nodes whose last applied ring change (in the sequence) is a `Remove`.
fn removed_nodes(steps: &[Step]) -> BTreeSet<String> {
    let mut last: HashMap<&str, bool> = HashMap::new();
    for s in steps {
        let removal = matches!(s.kind, ChangeKind::Remove { .. });
        for name in s.kind.names() {
            last.insert(name, removal);
        }
    }
    last.into_iter()
        .filter(|&(_, removed)| removed)
        .map(|(n, _)| n.to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::ChangeKind;
    use crate::ring::Member;

    fn created() -> History {
        let ms = ["a", "b", "c"].iter().map(|n| Member::new(*n)).collect();
        History::created(64, 3, ms)
    }

    fn settle_all(h: &mut History, t: &Topology) {
        let rs = receivers(t.ring(), &t.next_step().unwrap().ring);
        for r in rs {
            h.issue(&format!("{r}-id"), t.settlement(&r).unwrap());
        }
    }

    #[test]
    fn a_join_serves_only_once_every_receiver_settled() {
        let mut h = created();
        h.issue(
            "a-id",
            ChangeKind::Join {
                member: Member::new("d"),
            },
        );
        let t = Topology::replay(h.clone(), &[3]).unwrap();
        assert_eq!(t.serving_step(), 0);
        assert_eq!(t.ring().members().len(), 3);
        assert_eq!(t.target().members().len(), 4);
        let moves = t.moves(3, None);
        assert!(!moves.is_empty());
        assert!(moves.iter().all(|m| m.receivers == ["d"]), "{moves:?}");
        assert!(moves.iter().all(|m| m.sources.len() == 3));
        let p = moves[0].partition;
        assert!(t.second_sets(p, 3, false)[0].iter().any(|m| m == "d"));
        assert!(!t.has_settled("d"));
        settle_all(&mut h, &t);
        let t = Topology::replay(h, &[3]).unwrap();
        assert_eq!(t.serving_step(), 1);
        assert_eq!(t.ring().members().len(), 4);
        assert!(t.next_step().is_none());
        assert!(t.second_sets(p, 3, false).is_empty());
        assert_eq!(t.version(), 2);
    }

    /// Settles the next step as live receivers do: only those still in the target.
    fn settle_live(h: &mut History, t: &Topology) {
        let next = t.next_step().unwrap();
        for r in receivers(t.ring(), &next.ring) {
            if t.target().member(&r).is_some() {
                h.issue(&format!("{r}-id"), t.settlement(&r).unwrap());
            }
        }
    }

    #[test]
    fn a_joiner_removed_before_its_transfer_ended_is_never_served() {
        let mut h = created();
        h.issue(
            "a-id",
            ChangeKind::Join {
                member: Member::new("d"),
            },
        );
        h.issue(
            "a-id",
            ChangeKind::Join {
                member: Member::new("e"),
            },
        );
        let t = Topology::replay(h.clone(), &[3]).unwrap();
        assert_eq!(t.serving_step(), 0);
        // d dies before its transfer: once removed, no ring holding d serves, since d
        // never got its data.
        h.issue("a-id", ChangeKind::Remove { name: "d".into() });
        let mut served = vec![];
        for _ in 0..6 {
            let t = Topology::replay(h.clone(), &[3]).unwrap();
            served.push(t.serving_step());
            assert!(
                t.ring().member("d").is_none(),
                "a ring with d serves: step {}",
                t.serving_step()
            );
            let Some(_) = t.next_step() else { break };
            assert!(t
                .moves(3, None)
                .iter()
                .all(|m| !m.sources.contains(&"d".to_string())));
            settle_live(&mut h, &t);
        }
        let t = Topology::replay(h, &[3]).unwrap();
        assert_eq!(t.serving_step(), 3, "served {served:?}");
        assert_eq!(t.ring().to_json(), t.target().to_json());
    }

    #[test]
    fn steps_settle_one_after_the_other() {
        let mut h = created();
        h.issue(
            "a-id",
            ChangeKind::Join {
                member: Member::new("d"),
            },
        );
        h.issue("a-id", ChangeKind::Leave { name: "a".into() });
        for expected in [0, 1, 2] {
            let t = Topology::replay(h.clone(), &[3]).unwrap();
            assert_eq!(t.serving_step(), expected);
            if t.next_step().is_some() {
                settle_live(&mut h, &t);
            }
        }
    }

    #[test]
    fn a_served_step_stays_served_when_a_change_sorting_before_it_arrives_late() {
        let mut h = created();
        // e's join is made at an origin that sorts first, at the same Lamport time as
        // d's: d's receiver settles knowing only its own join, and d's ring serves.
        let mut only_d = h.clone();
        only_d.issue(
            "b-id",
            ChangeKind::Join {
                member: Member::new("d"),
            },
        );
        let t = Topology::replay(only_d.clone(), &[3]).unwrap();
        settle_all(&mut only_d, &t);
        let served = Topology::replay(only_d.clone(), &[3]).unwrap();
        assert_eq!(served.serving_step(), 1);
        h.issue(
            "a-id",
            ChangeKind::Join {
                member: Member::new("e"),
            },
        );
        h.merge(&only_d);
        let t = Topology::replay(h.clone(), &[3]).unwrap();
        let order: Vec<String> = t.steps().iter().map(|s| transfer_name(&s.kind)).collect();
        assert_eq!(
            order,
            ["create", "d", "e"],
            "d keeps the place it was carried out at"
        );
        assert_eq!(t.serving_step(), 1);
        assert_eq!(t.ring().to_json(), served.ring().to_json());
        assert!(!t.has_settled("e"));
        settle_all(&mut h, &t);
        let t = Topology::replay(h.clone(), &[3]).unwrap();
        assert_eq!(t.serving_step(), 2);
        assert!(t.next_step().is_none());
        // Learned in any order, the same set gives the same steps.
        let mut reversed = History::new();
        let all: Vec<_> = h.changes().cloned().collect();
        for c in all.into_iter().rev() {
            reversed.insert(c).unwrap();
        }
        let r = Topology::replay(reversed, &[3]).unwrap();
        assert_eq!(r.target().to_json(), t.target().to_json());
        assert_eq!(r.serving_step(), 2);
    }

    #[test]
    fn a_change_issued_from_a_lagging_view_goes_after_the_steps_already_served() {
        let mut h = created();
        let lagging = h.clone();
        h.issue(
            "a-id",
            ChangeKind::Join {
                member: Member::new("d"),
            },
        );
        let t = Topology::replay(h.clone(), &[3]).unwrap();
        settle_all(&mut h, &t);
        h.issue("a-id", ChangeKind::Leave { name: "a".into() });
        let t = Topology::replay(h.clone(), &[3]).unwrap();
        settle_all(&mut h, &t);
        let served = Topology::replay(h.clone(), &[3]).unwrap();
        assert_eq!(served.serving_step(), 2);
        // Issued at a node that saw none of it: its Lamport time sorts it first.
        let mut stale = lagging;
        let late = stale.issue(
            "0-id",
            ChangeKind::Join {
                member: Member::new("e"),
            },
        );
        assert!(late.lamport < h.changes().map(|c| c.lamport).max().unwrap());
        h.merge(&stale);
        let t = Topology::replay(h.clone(), &[3]).unwrap();
        assert_eq!(t.serving_step(), 2);
        assert_eq!(t.ring().to_json(), served.ring().to_json());
        assert_eq!(t.next_step().unwrap().change, late.id);
        assert_eq!(h.replay().unwrap().ring.to_json(), t.target().to_json());
    }

    fn transfer_name(k: &ChangeKind) -> String {
        match k {
            ChangeKind::Join { member } => member.name.clone(),
            _ => "create".into(),
        }
    }

    /// Records the next step as its receivers would (or, moving nothing, one member).
    fn settle_next(h: &mut History, t: &Topology) {
        let mut who: Vec<String> = t.next_receivers().iter().cloned().collect();
        if who.is_empty() {
            who.push(t.ring().members()[0].name.clone());
        }
        for r in who {
            h.issue(&format!("{r}-id"), t.settlement(&r).unwrap());
        }
    }

    #[test]
    fn a_change_only_passed_over_is_not_dropped_when_a_late_duplicate_sorts_first() {
        let base = created();
        // X (join f) is carried out by f knowing nothing of A (join e).
        let mut hx = base.clone();
        hx.issue(
            "n2",
            ChangeKind::Join {
                member: Member::new("f"),
            },
        );
        let t = Topology::replay(hx.clone(), &[3]).unwrap();
        settle_next(&mut hx, &t);
        let mut h = base.clone();
        h.issue(
            "n1",
            ChangeKind::Join {
                member: Member::new("e"),
            },
        );
        h.merge(&hx);
        assert_eq!(Topology::replay(h.clone(), &[3]).unwrap().serving_step(), 1);
        // e dies before its transfer and is removed: the data moves past A's step.
        h.issue("n1", ChangeKind::Remove { name: "e".into() });
        let t = Topology::replay(h.clone(), &[3]).unwrap();
        assert_eq!(
            t.next_step().unwrap().kind,
            ChangeKind::Remove { name: "e".into() }
        );
        settle_next(&mut h, &t);
        let served = Topology::replay(h.clone(), &[3]).unwrap();
        assert_eq!(served.serving_step(), 3);
        // A join of e issued from the creation's view sorts before everything.
        let mut late = base;
        late.issue(
            "n0",
            ChangeKind::Join {
                member: Member::new("e"),
            },
        );
        h.merge(&late);
        let t = Topology::replay(h, &[3]).unwrap();
        assert_eq!(t.ring().to_json(), served.ring().to_json());
        assert!(t.serving_step() >= 3);
    }

    #[test]
    fn malformed_records_neither_panic_nor_drop_a_change() {
        let mut h = created();
        let z = h.issue(
            "a-id",
            ChangeKind::SetZone {
                name: "a".into(),
                zone: None,
            },
        );
        let j = h.issue(
            "a-id",
            ChangeKind::Join {
                member: Member::new("d"),
            },
        );
        let t = Topology::replay(h.clone(), &[3]).unwrap();
        let from = t.serving_digest();
        // The change named as its own `via`, twice over, with any `to`, the ring it
        // gives applied that many times included.
        let applied = |times: u64| {
            let mut r = t.ring().clone();
            for _ in 0..times {
                crate::membership::apply(
                    &ChangeKind::SetZone {
                        name: "a".into(),
                        zone: None,
                    },
                    &mut r,
                )
                .unwrap();
            }
            r.set_version(times + 1);
            ring_digest(&r)
        };
        for via in [vec![z.id.clone()], vec![z.id.clone(), z.id.clone()]] {
            let times = via.len() as u64 + 1;
            for to in [
                String::new(),
                from.clone(),
                ring_digest(t.target()),
                applied(times),
            ] {
                h.issue(
                    "evil",
                    ChangeKind::Settled {
                        change: z.id.clone(),
                        node: "a".into(),
                        from: from.clone(),
                        via: via.clone(),
                        to,
                    },
                );
            }
        }
        let t = Topology::replay(h.clone(), &[3]).unwrap();
        assert!(
            t.steps().iter().any(|s| s.change == j.id),
            "the join is kept"
        );
        assert_eq!(t.target().members().len(), 4);
    }

    #[test]
    fn equal_sets_choose_the_same_run_every_time() {
        let mut h = created();
        let y = h.issue(
            "a-id",
            ChangeKind::Join {
                member: Member::new("y"),
            },
        );
        let x = h.issue(
            "a-id",
            ChangeKind::Join {
                member: Member::new("x"),
            },
        );
        let t = Topology::replay(h.clone(), &[3]).unwrap();
        let from = t.serving_digest();
        // Two complete runs from the same ring ending in x: x alone, and y then x (as
        // receivers with different views would record them).
        for via in [vec![], vec![y.id.clone()]] {
            let mut ring = t.ring().clone();
            for id in via.iter().chain([&x.id]) {
                let kind = &h.changes().find(|c| c.id == *id).unwrap().kind;
                crate::membership::apply(kind, &mut ring).unwrap();
            }
            ring.set_version(via.len() as u64 + 2);
            for r in receivers(t.ring(), &ring) {
                h.issue(
                    &format!("{r}-id"),
                    ChangeKind::Settled {
                        change: x.id.clone(),
                        node: r,
                        from: from.clone(),
                        via: via.clone(),
                        to: ring_digest(&ring),
                    },
                );
            }
        }
        let first = Topology::replay(h.clone(), &[3]).unwrap();
        for _ in 0..30 {
            let again = Topology::replay(h.clone(), &[3]).unwrap();
            assert_eq!(again.serving_step(), first.serving_step());
            assert_eq!(again.ring().to_json(), first.ring().to_json());
        }
        assert_eq!(first.serving_step(), 1, "x alone sorts first");
        assert!(first.ring().member("x").is_some() && first.ring().member("y").is_none());
    }

    #[test]
    fn an_address_change_serves_at_once_and_is_no_step() {
        let mut h = created();
        h.issue(
            "a-id",
            ChangeKind::SetAddress {
                name: "b".into(),
                address: "127.0.0.1:9".into(),
            },
        );
        let t = Topology::replay(h, &[3]).unwrap();
        assert_eq!(t.steps().len(), 1);
        assert_eq!(t.serving_step(), 0);
        assert_eq!(t.address("b"), Some("127.0.0.1:9"));
    }
}
