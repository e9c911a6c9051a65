//! Group commit: synced writes that share their fsyncs.
//!
//! A store with `durability = "sync"` acknowledges a write only once it is on disk. An
//! fsync per write would cap a node at one write per disk flush, whatever the number of
//! writers; here writes go to the engine unsynced (the write-ahead log, in the OS's
//! cache), and one syncer thread per store flushes the log to disk for every write made
//! before it started. A writer waits (asynchronously, off the engine threads) until a
//! flush that began after its write has finished: many writers, one fsync, so durable
//! write throughput grows with the number of writers.
//!
//! Invariant: [`GroupCommit::durable`] for a sequence number returns `Ok` only after an
//! engine `sync` that started after every write numbered up to it had returned.

use std::sync::{Arc, Condvar, Mutex};

use dynamo_engines::Engine;

/// How a store makes its writes durable before they are acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreDurability {
    /// The write-ahead log is written before the acknowledgement, and flushed to disk by
    /// the OS in its own time (Dynamo's durability comes from W replicas).
    #[default]
    Os,
    /// Flushed to disk before the acknowledgement, with group commit.
    Sync,
}

#[derive(Default)]
struct State {
    /// Writes made so far (the last one's number).
    written: u64,
    /// Every write up to this number is on disk.
    synced: u64,
    /// The last flush failed with this (the writes it covered are not known durable).
    failed: Option<(u64, String)>,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    synced: tokio::sync::watch::Sender<u64>,
}

/// The syncer of one store.
pub struct GroupCommit {
    shared: Arc<Shared>,
}

impl GroupCommit {
    /// Starts the syncer thread of store `name` over `engine`.
    pub fn start(name: &str, engine: Arc<dyn Engine>) -> Self {
        let (synced, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            synced,
        });
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("{name}-sync"))
            .spawn(move || sync_loop(&s, engine.as_ref()));
        if let Err(e) = spawned {
            // Without a syncer every durable wait fails: the store still refuses to
            // acknowledge what is not on disk.
            let mut st = lock(&shared);
            st.closed = true;
            st.failed = Some((u64::MAX, format!("cannot start the sync thread: {e}")));
        }
        Self { shared }
    }

    /// Counts one write that has reached the engine; returns its number.
    pub fn note_write(&self) -> u64 {
        let mut st = lock(&self.shared);
        st.written += 1;
        let n = st.written;
        drop(st);
        self.shared.work.notify_one();
        n
    }

    /// The number of the last write made so far.
    pub fn written(&self) -> u64 {
        lock(&self.shared).written
    }

    /// Waits until every write up to number `seq` is on disk; an error if the flush
    /// that covered it failed (the write may not survive a power loss).
    pub async fn durable(&self, seq: u64) -> Result<(), String> {
        let mut rx = self.shared.synced.subscribe();
        loop {
            {
                let st = lock(&self.shared);
                if st.synced >= seq {
                    return Ok(());
                }
                if let Some((upto, why)) = &st.failed {
                    if *upto >= seq {
                        return Err(why.clone());
                    }
                }
                if st.closed {
                    return Err("the store is closing".into());
                }
            }
            if rx.changed().await.is_err() {
                return Err("the store's sync thread stopped".into());
            }
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        lock(&self.shared).closed = true;
        self.shared.work.notify_all();
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, State> {
    shared.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Flushes whatever was written since the last flush, until closed and caught up.
fn sync_loop(shared: &Shared, engine: &dyn Engine) {
    loop {
        let target = {
            let mut st = lock(shared);
            while st.written == st.synced && !st.closed {
                st = shared.work.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            if st.written == st.synced {
                return;
            }
            st.written
        };
        let result = engine.sync();
        {
            let mut st = lock(shared);
            match result {
                Ok(()) => {
                    st.synced = st.synced.max(target);
                    st.failed = None;
                }
                Err(e) => st.failed = Some((target, format!("flushing the log to disk: {e}"))),
            }
        }
        shared.synced.send_replace(target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynamo_engines::{open_engine, EngineOptions, EngineSpec};

    #[test]
    fn every_write_waited_for_is_covered_by_a_finished_flush() {
        let dir = tempfile::tempdir().unwrap();
        let engine = open_engine(
            "memory".parse::<EngineSpec>().unwrap(),
            dir.path(),
            &EngineOptions::default(),
        )
        .unwrap();
        let g = GroupCommit::start("t", engine);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let seqs: Vec<u64> = (0..32).map(|_| g.note_write()).collect();
        assert_eq!(seqs.last(), Some(&32));
        rt.block_on(async {
            let waits = seqs.iter().map(|s| g.durable(*s));
            for r in futures::future::join_all(waits).await {
                r.unwrap();
            }
        });
        assert!(lock(&g.shared).synced >= 32);
    }
}
