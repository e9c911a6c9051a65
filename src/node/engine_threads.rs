//! The threads that run engine calls for the event loop.
//!
//! Engines block, so the RPC thread never calls them itself. tokio's blocking pool
//! parks and wakes a thread per call, which cost a third of a node's CPU under load;
//! here a fixed set of threads takes calls from one queue and, while the queue is not
//! empty, runs them back to back without sleeping. Invariant: every job
//! submitted is run exactly once, or its caller gets an error if the threads are gone.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::oneshot;

use crate::error::{DynamoError, ErrorKind};

type Job = Box<dyn FnOnce() + Send>;

/// Engine threads per process. One measured faster than two on a 2-core machine
/// shared by three nodes (less lock handoff); raise it where engine calls wait on disk.
const THREADS: usize = 1;

/// A queue of engine calls served by [`THREADS`] threads.
pub struct EngineThreads {
    tx: Mutex<Sender<Job>>,
}

impl EngineThreads {
    fn start() -> Self {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..THREADS {
            let rx: Arc<Mutex<Receiver<Job>>> = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("dynamo-engine-{i}"))
                .spawn(move || loop {
                    // One thread waits in recv while holding the lock; the other waits
                    // for the lock. A job releases the lock before it runs.
                    let job = {
                        let guard = rx.lock().unwrap_or_else(|p| p.into_inner());
                        guard.recv()
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                });
            if let Err(e) = spawned {
                eprintln!("cannot start engine thread {i}: {e}");
            }
        }
        Self { tx: Mutex::new(tx) }
    }

    /// The process's engine threads (started on first use).
    pub fn global() -> &'static EngineThreads {
        static THREADS: OnceLock<EngineThreads> = OnceLock::new();
        THREADS.get_or_init(EngineThreads::start)
    }

    /// Runs `f` on an engine thread and waits for its result without blocking the
    /// caller's event loop. A panic in `f` is caught on the engine thread (which lives
    /// on) and comes back as `Err(Panicked)` with the panic's message.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, DynamoError> + Send + 'static,
    ) -> Result<Result<T, DynamoError>, Panicked> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .map_err(|p| Panicked(crate::error::panic_message(p.as_ref())));
            let _ = tx.send(out);
        });
        let gone = || {
            Ok(Err(DynamoError::new(
                ErrorKind::Internal,
                "the engine threads stopped",
            )))
        };
        if self
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job)
            .is_err()
        {
            return gone();
        }
        match rx.await {
            Ok(out) => out,
            Err(_) => gone(),
        }
    }
}

/// An engine call panicked; the panic's message.
#[derive(Debug)]
pub struct Panicked(pub String);
