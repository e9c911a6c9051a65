//! A Dynamo node: one process serving the client-facing and internode RPC interfaces,
//! coordinating requests for the keys it holds, and running the background loops
//! (failure detection, hinted handoff).
//!
//! Threads: the core state ([`NodeCore`]) is `Send + Sync`. capnp-rpc runs on one
//! current-thread tokio runtime inside a `LocalSet` (the thread that calls
//! [`run`]); engine calls go to dedicated engine threads, never on the event loop.

mod coordinator;
mod engine_threads;
mod handoff;
pub mod health;
pub mod hints;
pub mod identity;
mod local;
mod server;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dynamo_engines::{open_engine, EngineOptions};

use crate::config::NodeConfig;
use crate::error::{DynamoError, ErrorKind};
use crate::ring::{Member, Ring};
use crate::store::{StoreError, VersionedStore};

pub use local::LocalNode;

use health::HealthTable;
use hints::HintLog;
use identity::{Identity, IdentityError};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The data directory's identity or ring.
    #[error("data directory: {0}")]
    Identity(#[from] IdentityError),
    /// A store could not be opened.
    #[error("opening store {store:?} in {dir}: {reason}")]
    Store {
        /// The store.
        store: String,
        /// Its directory.
        dir: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The config is inconsistent with itself.
    #[error("config: {0}")]
    Config(String),
    /// Listening or the runtime failed.
    #[error("{0}")]
    Io(String),
}

/// Everything a node knows, shareable across threads. Invariant: `ring`,
/// `addresses` and `stores` are fixed for the life of the process (static membership).
pub struct NodeCore {
    /// The config the node started with.
    pub config: NodeConfig,
    /// The data directory's identity.
    pub identity: Identity,
    /// The ring (partition owners).
    pub ring: Ring,
    /// Member name → RPC address.
    pub addresses: HashMap<String, String>,
    /// The stores this node hosts, by name.
    pub stores: BTreeMap<String, Arc<VersionedStore>>,
    /// Local opinion of peer health.
    pub health: HealthTable,
    /// Hint bookkeeping.
    pub hints: HintLog,
    /// When the node started.
    pub started: Instant,
    /// Client requests being served.
    pub in_flight: AtomicU64,
    /// Calls to peers that timed out since start.
    pub call_timeouts: AtomicU64,
    /// Set once an engine call panicked: the node's storage is not trusted any more, so
    /// it refuses requests and pings until restarted.
    storage_fault: Mutex<Option<String>>,
    /// Largest Cap'n Proto message this node accepts (from the stores' limits).
    pub max_message: usize,
    /// Per replication factor N: per partition, the walk order as member indices.
    walks: HashMap<usize, Vec<Vec<usize>>>,
}

impl NodeCore {
    /// Opens the data directory, the ring and every store of `config`.
    pub fn open(config: NodeConfig) -> Result<Self, NodeError> {
        let data_dir = config.node.data_dir.clone();
        let (identity, created) = Identity::load_or_create(&data_dir, &config.node.name)?;
        if created {
            eprintln!(
                "{}: new data directory {} (node id {})",
                config.node.name,
                data_dir.display(),
                identity.node_id
            );
        }
        let members_cfg = config.members();
        let members: Vec<Member> = members_cfg.iter().map(|(m, _)| m.clone()).collect();
        if !members.iter().any(|m| m.name == config.node.name) {
            return Err(NodeError::Config(format!(
                "node.name {:?} is not in cluster.members ({})",
                config.node.name,
                members
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let target_n = config.stores.iter().map(|s| s.n).max().unwrap_or(3);
        let ring = identity::load_or_create_ring(
            &data_dir,
            config.cluster.partitions,
            target_n,
            &members,
        )?;
        let addresses = members_cfg
            .iter()
            .map(|(m, a)| (m.name.clone(), a.clone()))
            .collect();
        let mut stores = BTreeMap::new();
        let hints = HintLog::default();
        for sc in &config.stores {
            let dir = data_dir.join("stores").join(&sc.name);
            let fail = |reason: String| NodeError::Store {
                store: sc.name.clone(),
                dir: dir.clone(),
                reason,
            };
            std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
            let spec = sc.engine_spec().map_err(|e| fail(e.to_string()))?;
            let engine = open_engine(spec, &dir, &EngineOptions::default())
                .map_err(|e| fail(e.to_string()))?;
            let store = VersionedStore::open(engine, sc.clone(), ring.partition_count())
                .map_err(|e| fail(e.to_string()))?;
            hints.prepare(&store).map_err(|e| fail(e.to_string()))?;
            stores.insert(sc.name.clone(), Arc::new(store));
        }
        let mut walks = HashMap::new();
        for sc in &config.stores {
            walks.entry(sc.n).or_insert_with(|| {
                (0..ring.partition_count())
                    .map(|p| {
                        ring.walk(p, sc.n)
                            .iter()
                            .map(|m| {
                                ring.members()
                                    .iter()
                                    .position(|x| x.name == m.name)
                                    .unwrap_or(0)
                            })
                            .collect()
                    })
                    .collect()
            });
        }
        let max_message = max_message(&config.stores);
        Ok(Self {
            config,
            identity,
            ring,
            addresses,
            stores,
            health: HealthTable::default(),
            hints,
            started: Instant::now(),
            in_flight: AtomicU64::new(0),
            call_timeouts: AtomicU64::new(0),
            storage_fault: Mutex::new(None),
            max_message,
            walks,
        })
    }

    /// Why this node's storage is not trusted, once an engine call panicked.
    pub fn storage_fault(&self) -> Option<String> {
        self.storage_fault
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records that the storage failed; the first failure is kept.
    pub(crate) fn fail_storage(&self, why: String) {
        let mut f = self.storage_fault.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some(why);
        }
    }

    /// This node's member name.
    pub fn name(&self) -> &str {
        &self.config.node.name
    }

    /// The timeout of every call to another node.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.config.node.request_timeout_ms)
    }

    /// The store `name`, or an error listing the stores there are.
    pub fn store(&self, name: &str) -> Result<&Arc<VersionedStore>, DynamoError> {
        self.stores.get(name).ok_or_else(|| {
            DynamoError::from(StoreError::UnknownStore {
                store: name.to_owned(),
                known: self.stores.keys().cloned().collect(),
            })
        })
    }

    /// Every member in the order a request for `key` in `store` tries them: its
    /// preference list (the first `store.n`), then the stand-ins.
    pub fn walk(&self, store: &VersionedStore, key: &[u8]) -> Vec<&str> {
        let n = store.config().n;
        let p = self.ring.partition_for_key(store.name(), key);
        let members = self.ring.members();
        match self.walks.get(&n) {
            Some(w) => w[p as usize]
                .iter()
                .map(|&i| members[i].name.as_str())
                .collect(),
            None => self
                .ring
                .walk(p, n)
                .iter()
                .map(|m| m.name.as_str())
                .collect(),
        }
    }

    /// The address of member `name`.
    pub fn address(&self, name: &str) -> Result<&str, DynamoError> {
        self.addresses.get(name).map(String::as_str).ok_or_else(|| {
            DynamoError::new(
                ErrorKind::Internal,
                format!("member {name:?} has no address in cluster.members"),
            )
        })
    }

    /// Flushes every store (shutdown).
    pub fn sync_all(&self) -> Result<(), StoreError> {
        for s in self.stores.values() {
            s.sync()?;
        }
        Ok(())
    }

    fn request_started(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self)
    }
}

/// The largest message any request or reply of these stores can need: a record at its
/// replica limit (see [`crate::store::StoreConfig::replica_record_limit`]) plus the
/// largest key, and room for the versions' causal pasts and the framing.
fn max_message(stores: &[crate::store::StoreConfig]) -> usize {
    let need = stores
        .iter()
        .map(|s| {
            s.replica_record_limit()
                .saturating_add(s.max_value_size)
                .saturating_add(s.max_key_size)
        })
        .max()
        .unwrap_or(0);
    need.saturating_add(4 << 20)
}

/// Counts a client request as in flight until dropped.
pub(crate) struct InFlight<'a>(&'a NodeCore);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs a node until SIGTERM or Ctrl-C, then shuts it down cleanly: stops accepting,
/// lets in-flight requests finish (up to 10 s), flushes the engines.
pub fn run(config: NodeConfig) -> Result<(), NodeError> {
    let core = Arc::new(NodeCore::open(config)?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| NodeError::Io(format!("starting the runtime: {e}")))?;
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&rt, server::serve(core.clone()));
    // Engines are flushed after the event loop stopped serving.
    let synced = core.sync_all();
    drop(local);
    rt.shutdown_timeout(Duration::from_secs(2));
    result?;
    synced.map_err(|e| NodeError::Io(format!("flushing on shutdown: {e}")))?;
    eprintln!("{}: stopped", core.name());
    Ok(())
}
