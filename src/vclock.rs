//! Vector clocks: one (actor, counter, timestamp) entry per actor.
//!
//! A clock `{a: n}` stands for the events (a, 1) ..= (a, n) of every listed actor. The
//! timestamp (wall-clock milliseconds of the entry's latest event) is used only to
//! prune, oldest first, as the paper does beyond about ten entries.
//!
//! Laws (checked by the property tests in `tests/causality_laws.rs`):
//! - [`VClock::merge`] is commutative, associative and idempotent: clocks form a
//!   join-semilattice, so replicas that merge the same clocks in any order, any number
//!   of times, agree.
//! - [`VClock::descends`] is a partial order: reflexive, antisymmetric (mutual descent
//!   means equal counters), transitive; `a.merge(b)` descends both.
//! - [`VClock::compare`] is `Equal`, `After` (descends only), `Before` (is descended
//!   only) or `Concurrent` (neither), consistently with `descends`.
//! - An incremented clock is strictly `After` the clock it came from.
//!
//! Pruning breaks exactness on purpose: a pruned clock claims fewer events, so it can
//! make a superseded version look concurrent again (a false sibling), never hide a
//! version its holder has not seen.

use std::cmp::Ordering;
use std::fmt;

use crate::codec::{put_varint, DecodeError, Reader};
use crate::dot::{Actor, Dot};

/// The paper's threshold: clocks keep at most this many entries by default.
pub const DEFAULT_PRUNE_THRESHOLD: usize = 10;

/// Hard cap on entries accepted from the wire or disk, so a corrupt count cannot
/// allocate without bound.
pub(crate) const MAX_DECODED_ENTRIES: u64 = 1 << 16;

/// How two clocks (or contexts) relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Causality {
    /// Both name the same events.
    Equal,
    /// The left side has seen strictly less than the right side.
    Before,
    /// The left side has seen strictly more than the right side.
    After,
    /// Each has seen an event the other has not.
    Concurrent,
}

impl Causality {
    /// The relation given whether the left side descends the right and vice versa.
    pub fn from_descents(left_descends_right: bool, right_descends_left: bool) -> Self {
        match (left_descends_right, right_descends_left) {
            (true, true) => Causality::Equal,
            (true, false) => Causality::After,
            (false, true) => Causality::Before,
            (false, false) => Causality::Concurrent,
        }
    }
}

/// One actor's entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The actor.
    pub actor: Actor,
    /// Highest counter seen; every lower counter is seen too.
    pub counter: u64,
    /// Wall-clock milliseconds of the event `counter`.
    pub timestamp_ms: u64,
}

/// A vector clock. Invariant: entries sorted by actor, at most one per actor, all
/// counters at least 1.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VClock {
    entries: Vec<Entry>,
}

impl VClock {
    /// The empty clock (has seen nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// The entries, sorted by actor.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Number of actors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if no event is named.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The counter of `actor` (0 if absent).
    pub fn get(&self, actor: &Actor) -> u64 {
        self.find(actor).map_or(0, |i| self.entries[i].counter)
    }

    fn find(&self, actor: &Actor) -> Result<usize, usize> {
        self.entries.binary_search_by(|e| e.actor.cmp(actor))
    }

    /// Does the clock name `dot`?
    pub fn covers(&self, dot: &Dot) -> bool {
        self.get(&dot.actor) >= dot.counter
    }

    /// Raises `actor`'s entry to `counter` (keeping the later of the two events'
    /// timestamps when counters tie). Counter 0 is ignored.
    pub fn witness(&mut self, actor: Actor, counter: u64, timestamp_ms: u64) {
        if counter == 0 {
            return;
        }
        match self.find(&actor) {
            Ok(i) => {
                let e = &mut self.entries[i];
                if (counter, timestamp_ms) > (e.counter, e.timestamp_ms) {
                    e.counter = counter;
                    e.timestamp_ms = timestamp_ms;
                }
            }
            Err(i) => self.entries.insert(
                i,
                Entry {
                    actor,
                    counter,
                    timestamp_ms,
                },
            ),
        }
    }

    /// Issues the next event of `actor` and returns its dot.
    pub fn increment(&mut self, actor: Actor, timestamp_ms: u64) -> Dot {
        let next = self.get(&actor) + 1;
        self.witness(actor, next, timestamp_ms);
        Dot::new(actor, next)
    }

    /// Joins `other` into `self`: per actor the higher counter (ties: later timestamp).
    pub fn merge(&mut self, other: &VClock) {
        for e in &other.entries {
            self.witness(e.actor, e.counter, e.timestamp_ms);
        }
    }

    /// `self` has seen every event `other` has seen.
    pub fn descends(&self, other: &VClock) -> bool {
        other
            .entries
            .iter()
            .all(|e| self.get(&e.actor) >= e.counter)
    }

    /// How `self` relates to `other`.
    pub fn compare(&self, other: &VClock) -> Causality {
        Causality::from_descents(self.descends(other), other.descends(self))
    }

    /// Drops entries, oldest timestamp first (ties: lowest actor), until at most
    /// `threshold` remain. Returns how many were dropped.
    pub fn prune(&mut self, threshold: usize) -> usize {
        let excess = self.entries.len().saturating_sub(threshold);
        if excess == 0 {
            return 0;
        }
        let mut by_age: Vec<(u64, Actor)> = self
            .entries
            .iter()
            .map(|e| (e.timestamp_ms, e.actor))
            .collect();
        by_age.sort();
        let doomed: Vec<Actor> = by_age.into_iter().take(excess).map(|(_, a)| a).collect();
        self.entries.retain(|e| !doomed.contains(&e.actor));
        excess
    }

    /// Removes one actor's entry.
    pub(crate) fn remove(&mut self, actor: &Actor) {
        if let Ok(i) = self.find(actor) {
            self.entries.remove(i);
        }
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.entries.len() as u64);
        for e in &self.entries {
            e.actor.encode(out);
            put_varint(out, e.counter);
            put_varint(out, e.timestamp_ms);
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = r.bounded(MAX_DECODED_ENTRIES, "clock entry count")?;
        let mut entries: Vec<Entry> = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let actor = Actor::decode(r)?;
            let counter = r.varint()?;
            let timestamp_ms = r.varint()?;
            if counter == 0 {
                return Err(r.error("clock entry with counter 0"));
            }
            if let Some(last) = entries.last() {
                if last.actor.cmp(&actor) != Ordering::Less {
                    return Err(r.error("clock entries not in strictly increasing actor order"));
                }
            }
            entries.push(Entry {
                actor,
                counter,
                timestamp_ms,
            });
        }
        Ok(Self { entries })
    }
}

impl fmt::Display for VClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}: {}", e.actor, e.counter)?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(n: u64) -> Actor {
        Actor::new(n, 0)
    }

    #[test]
    fn compare_covers_the_four_cases() {
        let mut x = VClock::new();
        x.increment(a(1), 10);
        let mut y = x.clone();
        assert_eq!(x.compare(&y), Causality::Equal);
        y.increment(a(2), 11);
        assert_eq!(x.compare(&y), Causality::Before);
        assert_eq!(y.compare(&x), Causality::After);
        x.increment(a(3), 12);
        assert_eq!(x.compare(&y), Causality::Concurrent);
        x.merge(&y);
        assert_eq!(x.compare(&y), Causality::After);
    }

    #[test]
    fn prune_drops_the_oldest_entries_first() {
        let mut c = VClock::new();
        for i in 0..12u64 {
            // Timestamps out of actor order, so pruning by actor would be wrong.
            c.witness(a(i), 1, 1000 - i * 10);
        }
        assert_eq!(c.prune(DEFAULT_PRUNE_THRESHOLD), 2);
        assert_eq!(c.len(), 10);
        assert_eq!(c.get(&a(11)), 0, "oldest (ts 890) dropped");
        assert_eq!(c.get(&a(10)), 0, "second oldest (ts 900) dropped");
        assert_eq!(c.get(&a(0)), 1, "newest kept");
        assert_eq!(c.prune(DEFAULT_PRUNE_THRESHOLD), 0);
    }

    #[test]
    fn decode_rejects_unsorted_and_zero_entries() {
        let mut c = VClock::new();
        c.witness(a(1), 1, 1);
        c.witness(a(2), 1, 1);
        let mut bytes = Vec::new();
        c.encode(&mut bytes);
        let decoded = VClock::decode(&mut Reader::new(&bytes, "clock")).unwrap();
        assert_eq!(decoded, c);
        // Swap the two entries: same length, wrong order.
        let mut swapped = VClock::new();
        swapped.entries = vec![c.entries[1], c.entries[0]];
        let mut bad = Vec::new();
        swapped.encode(&mut bad);
        let e = VClock::decode(&mut Reader::new(&bad, "clock")).unwrap_err();
        assert!(e.reason.contains("increasing actor order"), "{e}");
    }
}
