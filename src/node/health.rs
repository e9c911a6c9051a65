//! Local failure detection: this node's own opinion of which peers are up.
//!
//! A peer is marked down for this node only, when it cannot be connected to, its
//! connection breaks, or it does not answer a probe (a ping on a connection of its own);
//! a slow reply or a timed-out call never marks it down (busy is not dead). The ping
//! loop keeps probing a down peer and marks it up when it answers. Nothing is gossiped: two
//! nodes may disagree, which sloppy quorum tolerates.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What this node knows of one peer's health.
#[derive(Clone, Debug)]
pub struct PeerHealth {
    /// Up unless a call failed since the last success.
    pub up: bool,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// When the state last changed.
    pub since: Instant,
}

/// Health of every peer. Invariant: a peer never seen failing is up.
#[derive(Debug, Default)]
pub struct HealthTable {
    peers: Mutex<HashMap<String, PeerHealth>>,
    /// Times a peer went from up to down since start (for status and benchmarks: under
    /// load alone it stays 0).
    downs: std::sync::atomic::AtomicU64,
    /// The peers being probed now (by any event loop), with how to wait for the end.
    probes: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
}

/// Who probes a peer: this caller, or another one it can wait for.
pub enum ProbeTurn<'a> {
    /// No probe of the peer runs: this caller probes it while it holds the ticket.
    Mine(ProbeTicket<'a>),
    /// Another caller probes it: wait with [`HealthTable::wait_probe`].
    Running(Arc<tokio::sync::Notify>),
}

/// The right to probe one peer; dropping it ends the probe and wakes its waiters.
pub struct ProbeTicket<'a> {
    table: &'a HealthTable,
    name: String,
}

impl Drop for ProbeTicket<'_> {
    fn drop(&mut self) {
        let mut probes = self.table.probes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(done) = probes.remove(&self.name) {
            done.notify_waiters();
        }
    }
}

impl HealthTable {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, PeerHealth>) -> R) -> R {
        let mut g = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Is `name` up as far as this node knows?
    pub fn is_up(&self, name: &str) -> bool {
        self.with(|m| m.get(name).is_none_or(|h| h.up))
    }

    /// Records a failed call. Returns true if the peer was up before.
    pub fn mark_down(&self, name: &str, error: &str) -> bool {
        self.with(|m| {
            let h = m.entry(name.to_owned()).or_insert_with(|| PeerHealth {
                up: true,
                last_error: None,
                since: Instant::now(),
            });
            let was_up = h.up;
            if was_up {
                h.since = Instant::now();
                self.downs
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            h.up = false;
            h.last_error = Some(error.to_owned());
            was_up
        })
    }

    /// Records a successful call. Returns true if the peer was down before.
    pub fn mark_up(&self, name: &str) -> bool {
        self.with(|m| match m.get_mut(name) {
            Some(h) if !h.up => {
                h.up = true;
                h.since = Instant::now();
                true
            }
            _ => false,
        })
    }

    /// Takes the turn to probe `name`, or learns that another caller has it: one probe
    /// at a time per peer for the whole node, whatever event loop asks.
    pub fn probe_turn(&self, name: &str) -> ProbeTurn<'_> {
        let mut probes = self.probes.lock().unwrap_or_else(|p| p.into_inner());
        match probes.get(name) {
            Some(running) => ProbeTurn::Running(running.clone()),
            None => {
                probes.insert(name.to_owned(), Arc::default());
                ProbeTurn::Mine(ProbeTicket {
                    table: self,
                    name: name.to_owned(),
                })
            }
        }
    }

    /// Waits (at most `limit`) for the probe of `name` that `running` announces.
    pub async fn wait_probe(&self, name: &str, running: Arc<tokio::sync::Notify>, limit: Duration) {
        let done = running.notified();
        tokio::pin!(done);
        // Registered before the check below: a probe ending after it still wakes us.
        done.as_mut().enable();
        let still = {
            let probes = self.probes.lock().unwrap_or_else(|p| p.into_inner());
            probes.get(name).is_some_and(|r| Arc::ptr_eq(r, &running))
        };
        if still {
            let _ = tokio::time::timeout(limit, done).await;
        }
    }

    /// Times a peer was marked down since start.
    pub fn downs(&self) -> u64 {
        self.downs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The peers this node has an opinion of.
    pub fn names(&self) -> Vec<String> {
        self.with(|m| m.keys().cloned().collect())
    }

    /// Forgets `name` (it left the cluster).
    pub fn forget(&self, name: &str) {
        self.with(|m| m.remove(name));
    }

    /// The health of `name` (up with no history if never seen).
    pub fn get(&self, name: &str) -> PeerHealth {
        self.with(|m| {
            m.get(name).cloned().unwrap_or(PeerHealth {
                up: true,
                last_error: None,
                since: Instant::now(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_and_up_transitions_are_reported_once() {
        let t = HealthTable::default();
        assert!(t.is_up("b"));
        assert!(t.mark_down("b", "timed out"));
        assert!(!t.mark_down("b", "refused"));
        assert!(!t.is_up("b"));
        assert_eq!(t.get("b").last_error.as_deref(), Some("refused"));
        assert!(t.mark_up("b"));
        assert!(!t.mark_up("b"));
        assert!(t.is_up("b"));
    }
}
