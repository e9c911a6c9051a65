//! The membership view a node serves with: its history, the ring replayed from it, and
//! each partition's walk cached per replication factor.
//!
//! Invariant: a [`Topology`] never changes. Its ring is its history's replay, so two
//! nodes holding the same history serve with byte-identical rings; a node that learns
//! new changes builds a new topology and swaps it in whole (see
//! [`super::NodeCore::adopt`]), so a request sees one view from start to end.

use std::collections::HashMap;

use crate::membership::{ChangeId, History, HistoryError};
use crate::ring::Ring;

/// One membership view (see the module doc).
#[derive(Debug)]
pub struct Topology {
    history: History,
    ring: Ring,
    digest: [u8; 16],
    skipped: Vec<(ChangeId, String)>,
    /// Per replication factor N: per partition, the walk as member indices.
    walks: HashMap<usize, Vec<Vec<usize>>>,
}

impl Topology {
    /// Replays `history`, caching walks for each replication factor in `ns`.
    pub fn replay(history: History, ns: &[usize]) -> Result<Self, HistoryError> {
        let replay = history.replay()?;
        let ring = replay.ring;
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
        Ok(Self {
            digest: history.digest(),
            history,
            ring,
            skipped: replay.skipped,
            walks,
        })
    }

    /// The history this view was replayed from.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The ring.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The history's digest: equal digests, equal views.
    pub fn digest(&self) -> [u8; 16] {
        self.digest
    }

    /// The ring's version (derived from the history).
    pub fn version(&self) -> u64 {
        self.ring.version()
    }

    /// Changes of the history that did not apply, with why.
    pub fn skipped(&self) -> &[(ChangeId, String)] {
        &self.skipped
    }

    /// Every member in the order a request for `partition` with replication factor `n`
    /// tries them: the preference list (first `n`), then the stand-ins.
    pub fn walk(&self, partition: u32, n: usize) -> Vec<&str> {
        let members = self.ring.members();
        match self.walks.get(&n) {
            Some(w) => w[partition as usize]
                .iter()
                .map(|&i| members[i].name.as_str())
                .collect(),
            None => self
                .ring
                .walk(partition, n)
                .iter()
                .map(|m| m.name.as_str())
                .collect(),
        }
    }

    /// Whether `name` is a member.
    pub fn is_member(&self, name: &str) -> bool {
        self.ring.member(name).is_some()
    }

    /// The address the history records for member `name`.
    pub fn address(&self, name: &str) -> Option<&str> {
        self.ring.member(name)?.address.as_deref()
    }

    /// Every member's name and address (members without a recorded address left out).
    pub fn addresses(&self) -> HashMap<String, String> {
        self.ring
            .members()
            .iter()
            .filter_map(|m| Some((m.name.clone(), m.address.clone()?)))
            .collect()
    }
}
