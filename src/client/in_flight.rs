//! The client's own bound on the calls it has in flight to one node, and the queue in
//! front of it (do not shed only at the replicas): past the bound, a call waits here,
//! where waiting costs nothing, instead of queueing at a node that is already busy.
//!
//! Two classes wait: a write that carries a context (usually the second half of a
//! read-modify-write) goes before calls that start new work. Under overload this keeps
//! the time between a read and the write made from it short, so a hot key's writers
//! stay few at a time and its siblings stay few; a read-modify-write waits once, not
//! twice. Within a class, calls go first come, first served.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use tokio::sync::oneshot;

/// How urgent a waiting call is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Urgency {
    /// Finishes work already started: a write made from a read's context.
    Finishing,
    /// Starts new work: a read, a blind write, a repair.
    Starting,
}

/// The bound for one node. Single-threaded (the client's connection thread).
#[derive(Debug)]
pub(super) struct InFlight {
    limit: usize,
    used: Cell<usize>,
    finishing: RefCell<VecDeque<oneshot::Sender<Permit>>>,
    starting: RefCell<VecDeque<oneshot::Sender<Permit>>>,
    /// Places handed to finishing calls in a row while starting ones waited.
    streak: Cell<u32>,
}

/// Finishing calls go first, but after this many in a row a starting one gets a place,
/// so a steady stream of read-modify-writes never starves new work.
const FINISHING_STREAK: u32 = 8;

/// One call's place in flight; dropping it hands the place to the next waiter.
#[derive(Debug)]
pub(super) struct Permit(Option<Rc<InFlight>>);

impl InFlight {
    /// A bound of `limit` calls (at least one).
    pub(super) fn new(limit: usize) -> Rc<Self> {
        Rc::new(Self {
            limit: limit.max(1),
            used: Cell::new(0),
            finishing: RefCell::default(),
            starting: RefCell::default(),
            streak: Cell::new(0),
        })
    }

    /// Calls in flight now.
    #[cfg(test)]
    pub(super) fn used(&self) -> usize {
        self.used.get()
    }

    /// Waits for a place. Cancel-safe: a waiter dropped before or after it was handed
    /// a place gives the place on.
    pub(super) async fn acquire(self: &Rc<Self>, urgency: Urgency) -> Permit {
        if self.used.get() < self.limit {
            self.used.set(self.used.get() + 1);
            return Permit(Some(self.clone()));
        }
        let (tx, rx) = oneshot::channel();
        match urgency {
            Urgency::Finishing => self.finishing.borrow_mut().push_back(tx),
            Urgency::Starting => self.starting.borrow_mut().push_back(tx),
        }
        match rx.await {
            Ok(p) => p,
            // Unreachable while this call holds the bound (`self`); should the bound
            // ever go with its waiters, go on unbounded rather than never.
            Err(_) => Permit(None),
        }
    }

    /// A place now, or none (never waits).
    pub(super) fn try_acquire(self: &Rc<Self>) -> Option<Permit> {
        (self.used.get() < self.limit).then(|| {
            self.used.set(self.used.get() + 1);
            Permit(Some(self.clone()))
        })
    }

    /// The waiter a freed place goes to: finishing calls first, but a starting one
    /// after [`FINISHING_STREAK`] finishing ones in a row.
    fn next_waiter(&self) -> Option<oneshot::Sender<Permit>> {
        let starting_waits = !self.starting.borrow().is_empty();
        if starting_waits && self.streak.get() >= FINISHING_STREAK {
            self.streak.set(0);
            return self.starting.borrow_mut().pop_front();
        }
        let finishing = self.finishing.borrow_mut().pop_front();
        if finishing.is_some() {
            if starting_waits {
                self.streak.set(self.streak.get() + 1);
            }
            return finishing;
        }
        self.streak.set(0);
        self.starting.borrow_mut().pop_front()
    }

    /// Gives a place that was freed to the next waiter, or frees it.
    fn release(self: &Rc<Self>) {
        loop {
            let Some(tx) = self.next_waiter() else {
                self.used.set(self.used.get().saturating_sub(1));
                return;
            };
            // A waiter that gave up hands the place back: try the next one.
            match tx.send(Permit(Some(self.clone()))) {
                Ok(()) => return,
                Err(mut p) => p.0 = None,
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(bound) = self.0.take() {
            bound.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn past_the_bound_calls_wait_and_finishing_ones_go_first() {
        let bound = InFlight::new(2);
        let a = bound.acquire(Urgency::Starting).await;
        let b = bound.acquire(Urgency::Starting).await;
        assert_eq!(bound.used(), 2);
        let order = Rc::new(RefCell::new(Vec::new()));
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let mut waiting = Vec::new();
                for (name, urgency) in [
                    ("start-1", Urgency::Starting),
                    ("finish-1", Urgency::Finishing),
                    ("start-2", Urgency::Starting),
                ] {
                    let (bound, order) = (bound.clone(), order.clone());
                    waiting.push(tokio::task::spawn_local(async move {
                        let p = bound.acquire(urgency).await;
                        order.borrow_mut().push(name);
                        p
                    }));
                }
                tokio::task::yield_now().await;
                assert!(order.borrow().is_empty(), "nobody passes a full bound");
                drop(a);
                drop(b);
                let mut held = Vec::new();
                for w in waiting.drain(..2) {
                    held.push(w.await.unwrap());
                }
                drop(held);
                let _last = waiting.pop().unwrap().await.unwrap();
            })
            .await;
        assert_eq!(*order.borrow(), vec!["finish-1", "start-1", "start-2"]);
        assert_eq!(bound.used(), 0, "every place came back");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_stream_of_finishing_calls_never_starves_a_starting_one() {
        let bound = InFlight::new(1);
        let first = bound.acquire(Urgency::Starting).await;
        let local = tokio::task::LocalSet::new();
        let granted = Rc::new(RefCell::new(Vec::new()));
        local
            .run_until(async {
                let mut tasks = Vec::new();
                let (b, g) = (bound.clone(), granted.clone());
                tasks.push(tokio::task::spawn_local(async move {
                    drop(b.acquire(Urgency::Starting).await);
                    g.borrow_mut().push("starting");
                }));
                for _ in 0..2 * FINISHING_STREAK {
                    let (b, g) = (bound.clone(), granted.clone());
                    tasks.push(tokio::task::spawn_local(async move {
                        drop(b.acquire(Urgency::Finishing).await);
                        g.borrow_mut().push("finishing");
                    }));
                }
                tokio::task::yield_now().await;
                drop(first);
                for t in tasks {
                    t.await.unwrap();
                }
            })
            .await;
        let at = granted.borrow().iter().position(|g| *g == "starting");
        assert_eq!(
            at,
            Some(FINISHING_STREAK as usize),
            "{:?}",
            granted.borrow()
        );
        assert_eq!(bound.used(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiter_that_gave_up_leaves_its_place_to_the_next() {
        let bound = InFlight::new(1);
        let held = bound.acquire(Urgency::Starting).await;
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(5),
            bound.acquire(Urgency::Finishing),
        )
        .await;
        assert!(gave_up.is_err());
        drop(held);
        assert_eq!(bound.used(), 0);
        let _again = bound.acquire(Urgency::Starting).await;
        assert_eq!(bound.used(), 1);
    }
}
