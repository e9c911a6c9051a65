//! The pool of threads that runs engine calls for the event loops.
//!
//! Engines block, so an RPC thread never calls them itself. tokio's blocking pool parks
//! and wakes a thread per call, which cost a third of a node's CPU under load; here a
//! fixed set of threads (by default one per core) takes calls from one queue and, while
//! the queue is not empty, runs them back to back without sleeping.
//!
//! The queue is bounded for request work: a call made for a client request (it has a
//! deadline) is refused at once as `overloaded` when the queue is full, and one whose
//! deadline passed while it waited is dropped before it touches the engine (counted).
//! Background calls (no deadline: hand-off, transfers, anti-entropy, status) always
//! queue; their loops are few and run under admission control.
//!
//! Invariant: every job submitted is run exactly once, dropped with a deadline error
//! to its caller, or refused before it was queued; a caller never waits on a job that
//! was lost.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;

use crate::api::Deadline;
use crate::error::{DynamoError, ErrorKind};

/// A queued call: runs the engine work when `true`, or answers "deadline passed"
/// without running it when `false`.
type Job = Box<dyn FnOnce(bool) + Send>;

struct Queued {
    deadline: Option<Instant>,
    job: Job,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Queued>,
    /// Of `jobs`, those with a deadline (request work): the ones the capacity bounds.
    requests: usize,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    /// Request calls at most in the queue.
    capacity: usize,
    closed: AtomicBool,
    /// Calls dropped unrun because their deadline passed in the queue.
    expired: AtomicU64,
    /// Calls refused because the queue was full.
    refused: AtomicU64,
    /// Threads running a call now.
    busy: std::sync::atomic::AtomicUsize,
}

/// Counters of the pool, for status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnginePoolStats {
    /// Threads running engine calls.
    pub threads: usize,
    /// Calls waiting now.
    pub queued: usize,
    /// Threads running a call now.
    pub busy: usize,
    /// Calls dropped before the engine because their deadline had passed.
    pub expired: u64,
    /// Calls refused (`overloaded`) because the queue was full.
    pub refused: u64,
}

/// A queue of engine calls served by a fixed set of threads. Dropping the pool stops
/// the threads once the queue is empty.
pub struct EnginePool {
    shared: Arc<Shared>,
    threads: usize,
}

impl EnginePool {
    /// Starts `threads` threads (0: one per core) named after `node`, with room for
    /// `capacity` request calls in the queue.
    pub fn start(node: &str, threads: usize, capacity: usize) -> Self {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            capacity: capacity.max(1),
            closed: AtomicBool::new(false),
            expired: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            busy: Default::default(),
        });
        let mut started = 0;
        for i in 0..threads {
            let shared = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{node}-engine-{i}"))
                .spawn(move || serve(&shared));
            match spawned {
                Ok(_) => started += 1,
                Err(e) => eprintln!("{node}: cannot start engine thread {i}: {e}"),
            }
        }
        Self {
            shared,
            threads: started,
        }
    }

    /// The pool's counters.
    pub fn stats(&self) -> EnginePoolStats {
        EnginePoolStats {
            threads: self.threads,
            queued: self.lock().jobs.len(),
            busy: self.shared.busy.load(Ordering::Relaxed),
            expired: self.shared.expired.load(Ordering::Relaxed),
            refused: self.shared.refused.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.shared.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on a pool thread and waits for its result without blocking the caller's
    /// event loop. With a `deadline`, the call is refused at once (`Overloaded`) when
    /// the queue is full, and dropped unrun (`Timeout`) when the deadline passes before
    /// a thread takes it. A panic in `f` is caught on the pool thread (which lives on)
    /// and comes back as `Err(Panicked)` with the panic's message.
    pub async fn run<T: Send + 'static>(
        &self,
        deadline: Option<Deadline>,
        f: impl FnOnce() -> Result<T, DynamoError> + Send + 'static,
    ) -> Result<Result<T, DynamoError>, Panicked> {
        if self.threads == 0 || self.shared.closed.load(Ordering::Relaxed) {
            return Ok(Err(DynamoError::new(
                ErrorKind::Internal,
                "the engine threads stopped",
            )));
        }
        if deadline.is_some_and(|d| d.passed()) {
            self.shared.expired.fetch_add(1, Ordering::Relaxed);
            return Ok(Err(expired()));
        }
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |run: bool| {
            let out = match run {
                true => std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                    .map_err(|p| Panicked(crate::error::panic_message(p.as_ref()))),
                false => Ok(Err(expired())),
            };
            let _ = tx.send(out);
        });
        {
            let mut queue = self.lock();
            if deadline.is_some() && queue.requests >= self.shared.capacity {
                drop(queue);
                self.shared.refused.fetch_add(1, Ordering::Relaxed);
                return Ok(Err(DynamoError::new(
                    ErrorKind::Overloaded,
                    format!(
                        "the node's engine queue is full ({} calls waiting on {} threads): \
                         the request was refused untouched; try another node after a short \
                         backoff",
                        self.shared.capacity, self.threads
                    ),
                )));
            }
            queue.requests += usize::from(deadline.is_some());
            queue.jobs.push_back(Queued {
                deadline: deadline.map(|d| d.instant()),
                job,
            });
        }
        self.shared.ready.notify_one();
        match rx.await {
            Ok(out) => out,
            Err(_) => Ok(Err(DynamoError::new(
                ErrorKind::Internal,
                "the engine threads stopped",
            ))),
        }
    }
}

impl Drop for EnginePool {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Relaxed);
        self.shared.ready.notify_all();
    }
}

fn expired() -> DynamoError {
    DynamoError::new(
        ErrorKind::Timeout,
        "the request's deadline passed while it waited for the engine: dropped unrun",
    )
}

/// A pool thread: takes jobs until the pool is dropped and the queue is empty.
fn serve(shared: &Shared) {
    loop {
        let next = {
            let mut queue = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(q) = queue.jobs.pop_front() {
                    queue.requests -= usize::from(q.deadline.is_some());
                    break q;
                }
                if shared.closed.load(Ordering::Relaxed) {
                    return;
                }
                queue = shared.ready.wait(queue).unwrap_or_else(|p| p.into_inner());
            }
        };
        let run = next.deadline.is_none_or(|d| Instant::now() < d);
        if !run {
            shared.expired.fetch_add(1, Ordering::Relaxed);
        }
        shared.busy.fetch_add(1, Ordering::Relaxed);
        (next.job)(run);
        shared.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An engine call panicked; the panic's message.
#[derive(Debug)]
pub struct Panicked(pub String);

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn a_job_whose_deadline_passed_in_the_queue_never_runs() {
        let pool = EnginePool::start("t", 1, 16);
        let ran = Arc::new(AtomicBool::new(false));
        rt().block_on(async {
            // Hold the only thread while the second job's deadline passes.
            let slow = pool.run(None, || {
                std::thread::sleep(Duration::from_millis(100));
                Ok(())
            });
            let r = ran.clone();
            let late = pool.run(
                Some(Deadline::after(Duration::from_millis(20))),
                move || {
                    r.store(true, Ordering::SeqCst);
                    Ok(())
                },
            );
            let (a, b) = futures::join!(slow, late);
            assert!(a.expect("no panic").is_ok());
            let e = b.expect("no panic").expect_err("dropped");
            assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
        });
        assert!(
            !ran.load(Ordering::SeqCst),
            "an expired job touched the engine"
        );
        assert_eq!(pool.stats().expired, 1);
    }

    #[test]
    fn a_full_queue_refuses_request_work_but_queues_background_work() {
        let pool = EnginePool::start("t", 1, 1);
        rt().block_on(async {
            let hold = pool.run(None, || {
                std::thread::sleep(Duration::from_millis(100));
                Ok(1)
            });
            let d = Some(Deadline::after(Duration::from_secs(5)));
            let queued = pool.run(d, || Ok(2));
            let refused = pool.run(d, || Ok(3));
            let background = pool.run(None, || Ok(4));
            let (a, b, c, e) = futures::join!(hold, queued, refused, background);
            assert_eq!(a.expect("no panic").expect("ran"), 1);
            assert_eq!(b.expect("no panic").expect("ran"), 2);
            let err = c.expect("no panic").expect_err("refused");
            assert_eq!(err.kind, ErrorKind::Overloaded, "{err}");
            assert_eq!(e.expect("no panic").expect("ran"), 4);
        });
        assert_eq!(pool.stats().refused, 1);
    }

    #[test]
    fn a_panic_comes_back_and_the_thread_lives_on() {
        let pool = EnginePool::start("t", 2, 8);
        rt().block_on(async {
            let p = pool.run(None, || -> Result<(), DynamoError> { panic!("boom") });
            assert!(matches!(p.await, Err(Panicked(m)) if m == "boom"));
            let ok = pool.run(None, || Ok(7)).await;
            assert_eq!(ok.expect("no panic").expect("ran"), 7);
        });
        assert_eq!(pool.stats().threads, 2);
    }
}
