//! The sequence of rings a history steps through, and how far along it data has moved.
//!
//! A history's ring changes are applied one at a time; each applied change gives a
//! *step* (the ring after it). A change that moves replicas is carried out by its
//! *receivers* (the nodes that become a replica of some partition between the ring
//! before and the ring after): each pulls the data from the ring before, then issues a
//! `Settled { change, node, from, to }` naming both rings by digest. The *serving* step is
//! the last one whose receivers have all settled; the steps after it are pending.
//!
//! **Served steps are never taken back.** Ordering every ring change by the history's
//! total order alone would let a change issued from a lagging view (its Lamport time
//! below that of changes already carried out) sort before them: their `Settled` records
//! would name a ring that is no longer the one before them, the serving ring would go
//! back, and writes acknowledged by the replicas of the later ring could be missed by
//! reads. So the sequence is built greedily, from the creation on:
//!
//! 1. At the ring reached so far (digest `d`), a run of remaining changes carried out
//!    from `d` comes next: `Settled` records from `d`, one from each receiver, naming
//!    the changes applied (`via`, then `change`) and the exact ring they lead to (`to`).
//!    Its data moved from exactly this ring to exactly that one, so this is the order
//!    it was carried out in, whatever sorts before it now. Among several runs, the one
//!    whose `change` sorts first. A change that moves no replica needs one record (made
//!    by any member that sees it next, see `crate::node::transfer`). A remaining change
//!    that does not apply at its place in the total order before the run is dropped,
//!    unless it has records of its own (it was carried out from some other ring).
//! 2. Otherwise the remaining changes follow in the total order, those that do not apply
//!    at their place skipped, and are pending. The next one, whose receivers pull now,
//!    is the first whose receivers are all still in the target ring; those before it
//!    (a joiner removed before its transfer ended can never settle) are never served:
//!    their changes go in the run's `via`, and the data moves from the serving ring
//!    straight to the step after them.
//!
//! Every choice is made from the set of changes alone, so equal sets give equal
//! sequences (the history's convergence argument carries over). Adding changes never
//! moves a step that step 1 fixed unless two different changes were both settled from
//! the same ring, and a receiver settles only after every member it reaches has taken
//! the change and shared what it knows (see `crate::node::transfer`), so a change
//! settled elsewhere is known to it first and sorts first here.

use std::collections::{BTreeSet, HashMap, HashSet};

use md5::{Digest, Md5};

use super::history::{apply, Change, ChangeId, ChangeKind, History, HistoryError};
use crate::ring::{Ring, Transfer};

/// One ring of the sequence.
#[derive(Clone, Debug)]
pub struct Step {
    /// The change that produced it.
    pub change: ChangeId,
    /// What that change did.
    pub kind: ChangeKind,
    /// The ring after it (its version is the step's index plus one).
    pub ring: Ring,
    /// The partition owners it changed (empty for the creation).
    pub moves: Vec<Transfer>,
}

/// A history's steps and how far data has moved along them (see the module doc).
#[derive(Clone, Debug)]
pub struct Sequence {
    /// Every step, from the creation to the target (the last).
    pub steps: Vec<Step>,
    /// The index of the serving step.
    pub serving: usize,
    /// The step served before `serving`, if any.
    pub previous: Option<usize>,
    /// The pending step whose data moves now (after `serving`; pending steps between
    /// with a receiver that left the target are passed over).
    pub next: Option<usize>,
    /// Ring changes that did not apply, with why.
    pub skipped: Vec<(ChangeId, String)>,
}

/// The preference list of `partition`, by name.
pub fn names(ring: &Ring, partition: u32, n: usize) -> Vec<String> {
    ring.preference_list(partition, n)
        .iter()
        .map(|m| m.name.clone())
        .collect()
}

/// The nodes that become a replica of some partition between `before` and `after`,
/// for any replication factor up to `after`'s target N (stores may use a smaller N, and
/// a node can enter a partition's first two replicas while it already was the third).
pub fn receivers(before: &Ring, after: &Ring) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    // Past the member count every preference list holds every member.
    let most = before.members().len().max(after.members().len());
    for n in 1..=after.target_n().min(most) {
        for p in 0..after.partition_count() {
            let b = names(before, p, n);
            for r in names(after, p, n) {
                if !b.contains(&r) {
                    out.insert(r);
                }
            }
        }
    }
    out
}

/// Hex MD5 of a ring's JSON: how a `Settled` names the ring its data came from.
pub fn ring_digest(ring: &Ring) -> String {
    Md5::digest(ring.to_json().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Applies changes to rings, remembering each result: building a sequence tries the
/// same change on the same ring several times (as the natural order and as a run),
/// and a claim costs milliseconds.
#[derive(Default)]
struct Applier {
    done: HashMap<(String, ChangeId), Applied>,
}

/// A change applied to a ring (keyed by the ring's digest): the ring after it and the
/// owners it moved, or why it does not apply.
type Applied = Result<(Ring, Vec<Transfer>), String>;

impl Applier {
    /// `change` applied to a copy of `ring`, numbered as step `index`.
    fn step_after(&mut self, ring: &Ring, change: &Change, index: usize) -> Result<Step, String> {
        let (mut next, moves) = self
            .done
            .entry((ring_digest(ring), change.id.clone()))
            .or_insert_with(|| {
                let mut next = ring.clone();
                let moves = apply(&change.kind, &mut next).map_err(|e| e.to_string())?;
                Ok((next, moves))
            })
            .clone()?;
        next.set_version(index as u64 + 1);
        Ok(Step {
            change: change.id.clone(),
            kind: change.kind.clone(),
            ring: next,
            moves,
        })
    }
}

/// The `Settled` records of a history, grouped: (change, from, via, to) → the nodes.
type Records<'h> = HashMap<(&'h ChangeId, &'h str, &'h [ChangeId], &'h str), HashSet<&'h str>>;

/// Builds the sequence of `history` (see the module doc).
pub fn sequence(history: &History) -> Result<Sequence, HistoryError> {
    let mut records: Records = HashMap::new();
    for c in history.changes() {
        if let ChangeKind::Settled {
            change,
            node,
            from,
            via,
            to,
        } = &c.kind
        {
            records
                .entry((change, from.as_str(), via.as_slice(), to.as_str()))
                .or_default()
                .insert(node.as_str());
        }
    }
    // Every change a record names, as carried out or on the way to one.
    let recorded: HashSet<&ChangeId> = records
        .keys()
        .flat_map(|k| std::iter::once(k.0).chain(k.2.iter()))
        .collect();
    let mut skipped = Vec::new();
    let mut ring_changes = history.changes().filter(|c| c.kind.is_ring_change());
    let mut steps: Vec<Step> = Vec::new();
    for c in ring_changes.by_ref() {
        if let ChangeKind::Create {
            partitions,
            target_n,
            members,
        } = &c.kind
        {
            let mut ring = Ring::new(*partitions, *target_n, members.clone())
                .map_err(HistoryError::BadCreate)?;
            ring.set_version(1);
            steps.push(Step {
                change: c.id.clone(),
                kind: c.kind.clone(),
                ring,
                moves: Vec::new(),
            });
            break;
        }
        skipped.push((c.id.clone(), "no cluster was created before it".into()));
    }
    if steps.is_empty() {
        return Err(HistoryError::NoCluster);
    }
    let mut remaining: Vec<&Change> = ring_changes.collect();
    let mut applier = Applier::default();
    let mut serving = 0;
    let mut previous = None;
    loop {
        let here = &steps[serving].ring;
        let from = ring_digest(here);
        // The rest in the total order, as they would follow from here.
        let mut pending: Vec<Step> = Vec::new();
        let mut failed: Vec<(usize, String)> = Vec::new();
        for (i, c) in remaining.iter().enumerate() {
            let base = pending.last().map_or(here, |s| &s.ring);
            match applier.step_after(base, c, steps.len() + pending.len()) {
                Ok(step) => pending.push(step),
                Err(why) => failed.push((i, why)),
            }
        }
        // 1. A run of changes carried out from exactly this ring comes next.
        let run = carried_out(&mut applier, &records, &from, here, &remaining, steps.len());
        if let Some(run) = run {
            let last = run.last().map_or(0, |(i, _)| *i);
            let mut taken: Vec<usize> = run.iter().map(|(i, _)| *i).collect();
            // A change that did not apply at its place before the run never will (but
            // one carried out somewhere may yet, from the ring it was carried out at).
            let dead = failed
                .into_iter()
                .filter(|(i, _)| *i < last && !taken.contains(i))
                .filter(|(i, _)| !recorded.contains(&remaining[*i].id))
                .collect::<Vec<_>>();
            for (i, why) in dead {
                skipped.push((remaining[i].id.clone(), why));
                taken.push(i);
            }
            steps.extend(run.into_iter().map(|(_, s)| s));
            previous = Some(serving);
            serving = steps.len() - 1;
            taken.sort_unstable();
            for i in taken.into_iter().rev() {
                remaining.remove(i);
            }
            continue;
        }
        // 2. Else the rest are pending; the next is the first whose receivers are all
        //    still in the target (one that moves nothing needs a record).
        let target = pending.last().map_or(here, |s| &s.ring);
        let mut next = None;
        for (j, step) in pending.iter().enumerate() {
            let rs = receivers(here, &step.ring);
            if rs.iter().all(|r| target.member(r).is_some()) {
                next = Some(steps.len() + j);
                break;
            }
        }
        skipped.extend(
            failed
                .into_iter()
                .map(|(i, why)| (remaining[i].id.clone(), why)),
        );
        steps.extend(pending);
        return Ok(Sequence {
            steps,
            serving,
            previous,
            next,
            skipped,
        });
    }
}

/// The run of `remaining` changes (their indices and steps, numbered from `first`)
/// carried out from the ring `here` (digest `from`): the `via` changes then `change`
/// of a group of records that lead from `here` to exactly the ring `to`, recorded by
/// every receiver (anyone, when nothing moves). Among several, the one whose `change`
/// sorts first.
fn carried_out(
    applier: &mut Applier,
    records: &Records,
    from: &str,
    here: &Ring,
    remaining: &[&Change],
    first: usize,
) -> Option<Vec<(usize, Step)>> {
    let position = |id: &ChangeId| remaining.iter().position(|c| c.id == *id);
    let mut groups: Vec<(usize, &[ChangeId], &str, &HashSet<&str>)> = records
        .iter()
        .filter(|((_, f, _, _), _)| *f == from)
        .filter_map(|((change, _, via, to), nodes)| Some((position(change)?, *via, *to, nodes)))
        .collect();
    // A total order (not the map's): equal sets must choose the same run.
    groups.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    'group: for (at, via, to, nodes) in groups {
        let mut run: Vec<(usize, Step)> = Vec::new();
        for i in via.iter().map(position).chain([Some(at)]) {
            // A change named twice (a malformed record) makes no run.
            let Some(i) = i.filter(|i| run.iter().all(|(j, _)| j != i)) else {
                continue 'group;
            };
            let base = run.last().map_or(here, |(_, s)| &s.ring);
            let Ok(step) = applier.step_after(base, remaining[i], first + run.len()) else {
                continue 'group;
            };
            run.push((i, step));
        }
        let Some((_, last)) = run.last() else {
            continue;
        };
        if ring_digest(&last.ring) == to
            && receivers(here, &last.ring)
                .iter()
                .all(|r| nodes.contains(r.as_str()))
        {
            return Some(run);
        }
    }
    None
}
