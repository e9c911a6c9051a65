//! A Dynamo node: one process serving the client-facing and internode RPC interfaces,
//! coordinating requests for the keys it holds, and running the background loops
//! (failure detection, hinted handoff, gossip, transfers, anti-entropy and reaping,
//! rebuilding lost data), the background ones under admission control.
//!
//! Threads: the core state ([`NodeCore`]) is `Send + Sync`. capnp-rpc runs on
//! `node.rpc_threads` event loops, each a current-thread tokio runtime inside a
//! `LocalSet` with its own [`LocalNode`] (its own peer connections): the thread that
//! calls [`run`] accepts connections, hands them out in turn and runs the background
//! loops. Engine calls go to a pool of engine threads, never on an event loop.

mod admin;
pub mod admission;
pub mod anti_entropy;
mod coordinator;
pub mod engine_threads;
mod gossip;
pub mod handoff;
pub mod health;
pub mod hints;
pub mod identity;
mod local;
pub mod rebuild;
mod server;
pub mod topology;
pub mod transfer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use dynamo_engines::{open_engine, EngineError, EngineOptions, EngineSpec};

use crate::config::NodeConfig;
use crate::error::{DynamoError, ErrorKind};
use crate::membership::{Change, ChangeKind, History, HistoryFile};
use crate::store::{StoreConfig, StoreError, VersionedStore};

pub use local::LocalNode;
pub use server::MAX_KEYS_PER_PAGE;

use health::HealthTable;
use hints::HintLog;
use identity::{Identity, IdentityError};
pub use topology::Topology;

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

/// Everything a node knows, shareable across threads. Invariant: `stores` are fixed
/// for the life of the process; the membership view changes only by
/// [`NodeCore::adopt`] and [`NodeCore::issue`], which save the history durably before
/// the new view is served.
pub struct NodeCore {
    /// The config the node started with.
    pub config: NodeConfig,
    /// The data directory's identity.
    pub identity: Identity,
    /// The current membership view; `None` until a node started from seeds alone has
    /// learned its cluster.
    view: RwLock<Option<Arc<Topology>>>,
    /// Serialises changes of the view (merge, save, replay, swap).
    changing: Mutex<()>,
    /// The serving ring's digest and when this node started serving with it.
    serving_since: Mutex<(String, Instant)>,
    /// Where the history is kept.
    history_file: HistoryFile,
    /// Q, as the config gives it: the stores are laid out for it.
    partitions: u32,
    /// The replication factors of this node's stores (walks are cached for each).
    ns: Vec<usize>,
    /// The stores this node hosts, by name.
    pub stores: BTreeMap<String, Arc<VersionedStore>>,
    /// Local opinion of peer health.
    pub health: HealthTable,
    /// Hint bookkeeping.
    pub hints: HintLog,
    /// This node's ownership transfer in progress, for status.
    pub transfers: transfer::TransferBoard,
    /// Anti-entropy progress, for status.
    pub aae: anti_entropy::AntiEntropyBoard,
    /// Partitions of lost data still to rebuild (their reads count as a stand-in's).
    pub rebuild: rebuild::RebuildBoard,
    /// The background work budget.
    pub admission: admission::Admission,
    /// Hint delivery cursors and refused hints.
    pub handoff: handoff::HandoffBoard,
    /// When the node started.
    pub started: Instant,
    /// Client requests being served.
    pub in_flight: AtomicU64,
    /// Calls to peers that timed out since start.
    pub call_timeouts: AtomicU64,
    /// The threads that run engine calls (bounded for request work).
    pub engines: engine_threads::EnginePool,
    /// Requests refused as `overloaded` at this node's door (in-flight limits) since
    /// start; the engine queue's refusals are in [`engine_threads::EnginePoolStats`].
    pub overloaded: AtomicU64,
    /// Requests and replica calls dropped unrun since start because their deadline had
    /// passed when they arrived (the engine queue's drops are counted there).
    pub expired: AtomicU64,
    /// Replica reads answered from memory on the event loop (no engine-pool hop).
    pub cached_reads: AtomicU64,
    /// Set once an engine call panicked: the node's storage is not trusted any more, so
    /// it refuses requests and pings until restarted.
    storage_fault: Mutex<Option<String>>,
    /// Largest Cap'n Proto message this node accepts (from the stores' limits).
    pub max_message: usize,
}

impl NodeCore {
    /// Opens the data directory, the membership history and every store of `config`.
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
        let target_n = config.stores.iter().map(|s| s.n).max().unwrap_or(3);
        let mut ns: Vec<usize> = config.stores.iter().map(|s| s.n).collect();
        ns.sort_unstable();
        ns.dedup();
        let history_file = HistoryFile::in_dir(&data_dir);
        let learned = gossip::peers_history_blocking(&config);
        let history =
            identity::startup_history(&config, &identity, &history_file, target_n, learned)?;
        let view = match history.is_empty() {
            true => None,
            false => {
                let t = Topology::replay(history, &ns)
                    .map_err(|e| NodeError::Config(format!("membership history: {e}")))?;
                if t.ring().partition_count() != config.cluster.partitions {
                    return Err(NodeError::Config(format!(
                        "the cluster has {} partitions but cluster.partitions is {}; Q is \
                         fixed when a cluster is created",
                        t.ring().partition_count(),
                        config.cluster.partitions
                    )));
                }
                Some(Arc::new(t))
            }
        };
        if let Some(v) = &view {
            let n = v.target().target_n();
            if let Some(sc) = config.stores.iter().find(|s| s.n > n) {
                return Err(NodeError::Config(format!(
                    "store {:?} has N={} but the cluster was created for N up to {n}: its \
                     replicas beyond {n} would never receive transfers",
                    sc.name, sc.n
                )));
            }
        }
        let partitions = config.cluster.partitions;
        let mut stores = BTreeMap::new();
        let hints = HintLog::default();
        let rebuild = rebuild::RebuildBoard::default();
        // A member that lost its data (a new data directory, or one store's data)
        // rebuilds it before its answers count as an owner's.
        let member = view.as_ref().is_some_and(|v| {
            v.ring().member(&config.node.name).is_some()
                || v.target().member(&config.node.name).is_some()
        });
        let others = view
            .as_ref()
            .is_some_and(|v| v.member_names().iter().any(|m| *m != config.node.name));
        for sc in &config.stores {
            let dir = data_dir.join("stores").join(&sc.name);
            let fail = |reason: String| NodeError::Store {
                store: sc.name.clone(),
                dir: dir.clone(),
                reason,
            };
            std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
            let spec = store_engine(sc, &dir).map_err(fail)?;
            let engine = open_engine(spec, &dir, &EngineOptions::default())
                .map_err(|e| fail(e.to_string()))?;
            // The store reports the engine it really runs on (`auto` resolved).
            let mut resolved = sc.clone();
            resolved.engine = spec.to_string();
            let store = VersionedStore::open(engine, resolved, partitions)
                .map_err(|e| fail(e.to_string()))?;
            hints.prepare(&store).map_err(|e| fail(e.to_string()))?;
            // A member with a new data directory (or a new store, or a store whose
            // rebuild was never recorded, as after a crash right after its first
            // open) may be a wiped disk: it cannot tell that from a new cluster's
            // first start, so it always checks with the other replicas, which is quick
            // when they are new too (see `rebuild`).
            let undecided = rebuild::undecided(&store).map_err(|e| fail(e.to_string()))?;
            let lost = member && others && (created || store.is_fresh() || undecided);
            if lost {
                eprintln!(
                    "{}: store {} has no data from before here (a new data directory: a \
                     wiped disk, or a new cluster's first start): reading its partitions \
                     from the other replicas; until then its reads count as a stand-in's",
                    config.node.name, sc.name
                );
            }
            rebuild
                .open(&store, lost, view.is_some())
                .map_err(|e| fail(e.to_string()))?;
            stores.insert(sc.name.clone(), Arc::new(store));
        }
        let max_message = max_message(&config.stores);
        let admission_control = admission::Admission::new(config.admission.clone());
        let engines = engine_threads::EnginePool::start(
            &config.node.name,
            config.node.engine_threads,
            config.node.engine_queue,
        );
        Ok(Self {
            config,
            identity,
            serving_since: Mutex::new((
                view.as_ref()
                    .map(|v| v.serving_digest())
                    .unwrap_or_default(),
                Instant::now(),
            )),
            view: RwLock::new(view),
            changing: Mutex::new(()),
            history_file,
            partitions,
            ns,
            stores,
            health: HealthTable::default(),
            hints,
            transfers: transfer::TransferBoard::default(),
            aae: anti_entropy::AntiEntropyBoard::default(),
            rebuild,
            admission: admission_control,
            handoff: handoff::HandoffBoard::default(),
            started: Instant::now(),
            in_flight: AtomicU64::new(0),
            call_timeouts: AtomicU64::new(0),
            engines,
            overloaded: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            cached_reads: AtomicU64::new(0),
            storage_fault: Mutex::new(None),
            max_message,
        })
    }

    /// The membership view this node serves with, or an error when it has not learned
    /// its cluster yet (started from seeds that have not answered).
    pub fn topology(&self) -> Result<Arc<Topology>, DynamoError> {
        self.view
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                DynamoError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "node {} has not learned its cluster yet: it asks its seeds ({}) for \
                         the membership",
                        self.name(),
                        self.config.cluster.seeds.join(", ")
                    ),
                )
            })
    }

    /// The membership view, if there is one yet.
    pub fn view(&self) -> Option<Arc<Topology>> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Merges `incoming` into this node's history. When it brings changes this node
    /// lacked, the merged history is saved (durably) and then served as the new view,
    /// which is returned. Blocking (file I/O): call it off the event loop.
    pub fn adopt(&self, incoming: &History) -> Result<Option<Arc<Topology>>, DynamoError> {
        let _one = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let mut merged = self.view().map(|t| t.history().clone()).unwrap_or_default();
        let (added, conflicts) = merged.merge(incoming);
        if let Some(c) = conflicts.first() {
            return Err(DynamoError::new(
                ErrorKind::BadRequest,
                format!("membership from a peer refused: {c}"),
            ));
        }
        if added == 0 {
            return Ok(None);
        }
        self.install(merged).map(Some)
    }

    /// Makes a membership change at this node (an administrator's action): it is added
    /// to the history with this node's id, saved, and served; gossip spreads it.
    /// Blocking (file I/O): call it off the event loop.
    pub fn issue(&self, kind: ChangeKind) -> Result<(Change, Arc<Topology>), DynamoError> {
        let _one = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let mut history = self.view().map(|t| t.history().clone()).unwrap_or_default();
        let change = history.issue(&self.identity.node_id, kind);
        let topology = self.install(history)?;
        Ok((change, topology))
    }

    /// Records `record`, this node's `Settled` for the next step, only if the view this
    /// node serves now still gives that very record (checked and issued under the
    /// change lock, so no change learned in between can make it void). `None`: the
    /// view moved on. Blocking (file I/O): call it off the event loop.
    pub fn settle(&self, record: ChangeKind) -> Result<Option<Arc<Topology>>, DynamoError> {
        let _one = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let Some(view) = self.view() else {
            return Ok(None);
        };
        if view.settlement(self.name()).as_ref() != Some(&record) {
            return Ok(None);
        }
        let mut history = view.history().clone();
        history.issue(&self.identity.node_id, record);
        self.install(history).map(Some)
    }

    /// Gives up this node's own membership for `history` (another cluster's) and then
    /// makes `change` here: how a node that runs alone joins a cluster. Refused when
    /// this node's history names another member (it belongs to a real cluster) or its
    /// stores hold data. Blocking (file I/O): call it off the event loop.
    pub fn rebase(
        &self,
        history: History,
        change: ChangeKind,
    ) -> Result<(Change, Arc<Topology>), DynamoError> {
        let _one = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mine) = self.view() {
            let others: Vec<String> = mine
                .member_names()
                .into_iter()
                .filter(|m| m != self.name())
                .collect();
            if !others.is_empty() {
                return Err(DynamoError::new(
                    ErrorKind::BadRequest,
                    format!(
                        "node {} already belongs to a cluster with {}; it cannot join another",
                        self.name(),
                        others.join(", ")
                    ),
                ));
            }
            for (name, store) in &self.stores {
                for p in 0..store.partitions() {
                    if !store
                        .keys_after(p, &[], 1)
                        .map_err(DynamoError::from)?
                        .0
                        .is_empty()
                    {
                        return Err(DynamoError::new(
                            ErrorKind::BadRequest,
                            format!(
                                "node {} holds data in store {name:?} from running alone; a node \
                                 joins a cluster with empty stores (move the data with `python -m \
                                 dynamo export`/`load`, or start it on a new data directory)",
                                self.name()
                            ),
                        ));
                    }
                }
            }
        }
        let mut history = history;
        let change = history.issue(&self.identity.node_id, change);
        let topology = Topology::replay(history.clone(), &self.ns).map_err(|e| {
            DynamoError::new(ErrorKind::BadRequest, format!("membership refused: {e}"))
        })?;
        self.check_partitions(&topology)?;
        self.history_file.overwrite(&history).map_err(|e| {
            DynamoError::new(ErrorKind::Internal, format!("saving the membership: {e}"))
        })?;
        let topology = Arc::new(topology);
        self.swap(topology.clone());
        Ok((change, topology))
    }

    fn check_partitions(&self, topology: &Topology) -> Result<(), DynamoError> {
        if topology.ring().partition_count() != self.partitions {
            return Err(DynamoError::new(
                ErrorKind::BadRequest,
                format!(
                    "membership refused: that cluster has {} partitions but node {} is \
                     configured with cluster.partitions = {}",
                    topology.ring().partition_count(),
                    self.name(),
                    self.partitions
                ),
            ));
        }
        Ok(())
    }

    /// Saves `history`, replays it and swaps the view. Caller holds `changing`.
    fn install(&self, history: History) -> Result<Arc<Topology>, DynamoError> {
        let topology = Topology::replay(history.clone(), &self.ns).map_err(|e| {
            DynamoError::new(ErrorKind::BadRequest, format!("membership refused: {e}"))
        })?;
        self.check_partitions(&topology)?;
        let saved = self.history_file.save(&history).map_err(|e| {
            DynamoError::new(ErrorKind::Internal, format!("saving the membership: {e}"))
        })?;
        // The file may hold more than we gave it (it only grows); serve what it holds.
        let topology = if saved.digest() == topology.digest() {
            topology
        } else {
            Topology::replay(saved, &self.ns).map_err(|e| {
                DynamoError::new(ErrorKind::Internal, format!("membership on disk: {e}"))
            })?
        };
        let topology = Arc::new(topology);
        self.swap(topology.clone());
        Ok(topology)
    }

    /// Serves with `topology` from now on. Caller holds `changing`.
    fn swap(&self, topology: Arc<Topology>) {
        let digest = topology.serving_digest();
        {
            let mut since = self.serving_since.lock().unwrap_or_else(|p| p.into_inner());
            if since.0 != digest {
                *since = (digest, Instant::now());
            }
        }
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = Some(topology);
    }

    /// `node.membership_grace_ms`: after a switch, how long writes still reach the
    /// dropped replicas, and after which those drop their data.
    pub fn membership_grace(&self) -> Duration {
        Duration::from_millis(self.config.node.membership_grace_ms)
    }

    /// How long this node has served with its current serving ring.
    pub fn serving_for(&self) -> Duration {
        self.serving_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .elapsed()
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

    /// Whether this node is still rebuilding the partition of `key` in `store` (its
    /// answers for it count as a stand-in's).
    pub fn rebuilding(&self, store: &VersionedStore, key: &[u8]) -> bool {
        self.rebuild
            .is_rebuilding(store.name(), store.partition_of(key))
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

    /// Fails unless this node is an owner of `key` (see [`NodeCore::is_owner`]): a node
    /// asked as an owner by a caller with an older ring, that holds nothing for the key,
    /// may have dropped the partition, and its "none" must not count as an owner's
    /// answer. The error's kind is `Quorum` (this node is up; the caller learns its
    /// view and asks the owners of the new ring).
    pub fn check_owner(&self, store: &str, key: &[u8]) -> Result<(), DynamoError> {
        let view = self.topology()?;
        if self.is_owner(&view, store, key) {
            return Ok(());
        }
        let me = self.name();
        // Not Unavailable: this node is up, and the caller must not take it for down.
        Err(DynamoError::new(
            ErrorKind::Quorum,
            format!(
                "{me} is no owner of this key of store {store} in ring version {} (the \
                 caller's ring is older) and holds nothing for it",
                view.version()
            ),
        ))
    }

    /// Whether this node is an owner of `key` in `store` in `view`'s serving, next or
    /// target ring, or (during the grace period) the ring served before.
    pub fn is_owner(&self, view: &Topology, store: &str, key: &[u8]) -> bool {
        let n = self.stores.get(store).map_or(0, |s| s.config().n);
        let me = self.name();
        let owns = |ring: &crate::ring::Ring| {
            let p = ring.partition_for_key(store, key);
            ring.preference_list(p, n).iter().any(|m| m.name == me)
        };
        let previous = view
            .previous_ring()
            .filter(|_| self.serving_for() < self.membership_grace());
        owns(view.ring())
            || view.next_step().is_some_and(|s| owns(&s.ring))
            || owns(view.target())
            || previous.is_some_and(owns)
    }

    /// Every member in the order a request for `key` in `store` tries them: its
    /// preference list (the first `store.n`), then the stand-ins, in view `t`.
    pub fn walk<'t>(t: &'t Topology, store: &VersionedStore, key: &[u8]) -> Vec<&'t str> {
        let p = t.ring().partition_for_key(store.name(), key);
        t.walk(p, store.config().n)
    }

    /// The address of member `name` (this node's own is the one it listens on).
    pub fn address(&self, name: &str) -> Result<String, DynamoError> {
        if name == self.name() {
            return Ok(self.config.node.listen.clone());
        }
        self.view()
            .and_then(|t| t.address(name).map(str::to_owned))
            .ok_or_else(|| {
                DynamoError::new(
                    ErrorKind::Internal,
                    format!("member {name:?} has no known address"),
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

    /// Counts a client request in flight, or refuses it as `overloaded` when the node
    /// already serves `node.max_in_flight` (the refusal touches nothing).
    /// Load and shedding counters, for status.
    pub fn load_status(&self) -> crate::api::LoadStatus {
        let engine = self.engines.stats();
        crate::api::LoadStatus {
            max_in_flight: self.config.node.max_in_flight as u64,
            overloaded: self.overloaded.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            engine_threads: engine.threads as u64,
            engine_queued: engine.queued as u64,
            engine_busy: engine.busy as u64,
            engine_refused: engine.refused,
            engine_expired: engine.expired,
            peers_marked_down: self.health.downs(),
            cached_reads: self.cached_reads.load(Ordering::Relaxed),
        }
    }

    /// Counts an operator's request (status, admin) in flight, whatever the load: it is
    /// never refused, so a node can be watched and operated while it sheds.
    fn request_counted(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self)
    }

    fn request_started(&self) -> Result<InFlight<'_>, DynamoError> {
        let limit = self.config.node.max_in_flight as u64;
        let before = self.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(self);
        if before >= limit {
            drop(guard);
            self.overloaded.fetch_add(1, Ordering::Relaxed);
            return Err(DynamoError::new(
                ErrorKind::Overloaded,
                format!(
                    "node {} is overloaded: {limit} requests in flight (node.max_in_flight); \
                     the request was refused untouched: try another node after a short backoff",
                    self.name()
                ),
            ));
        }
        Ok(guard)
    }

    /// The deadline of a request received with `deadline` (`None`: it carried none, and
    /// `node.default_deadline_ms` from now applies).
    pub fn deadline_of(&self, deadline: Option<crate::api::Deadline>) -> crate::api::Deadline {
        deadline.unwrap_or_else(|| {
            crate::api::Deadline::after(Duration::from_millis(self.config.node.default_deadline_ms))
        })
    }
}

/// The engine of the store `sc` whose files are in `dir`. The first open of a store on
/// disk records its engine in `dir/ENGINE` (written atomically); later opens use the
/// recorded one for `engine = "auto"` (so a changed size profile never hides a store's
/// data behind another engine) and refuse an explicit engine that keeps its files in
/// another format (`rocksdb` and `buffered:rocksdb` share theirs, as do `sqlite` and
/// `buffered:sqlite`). A store directory from before the marker existed is recognised
/// by its files. `memory` stores keep nothing on disk and are not recorded.
fn store_engine(sc: &StoreConfig, dir: &Path) -> Result<EngineSpec, String> {
    let marker = dir.join("ENGINE");
    let recorded = match std::fs::read_to_string(&marker) {
        Ok(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("reading {}: {e}", marker.display())),
    }
    .or_else(|| engine_from_files(dir).map(str::to_owned));
    let name = match &recorded {
        Some(r) if sc.is_auto() => r.clone(),
        _ => sc.resolved_engine().map_err(|e| e.to_string())?.to_owned(),
    };
    let spec: EngineSpec = name.parse().map_err(|e: EngineError| e.to_string())?;
    if spec == EngineSpec::Memory {
        return Ok(spec);
    }
    match recorded {
        Some(r) if files_of(&r) != files_of(&spec.to_string()) => Err(format!(
            "the store's data is in engine {r:?} but the config says engine = {:?}; \
             set engine = {r:?} (or \"auto\") to open it",
            sc.engine
        )),
        _ => {
            write_marker(&marker, &spec.to_string())?;
            if sc.is_auto() {
                eprintln!("store {}: engine = \"auto\" uses {spec}", sc.name);
            }
            Ok(spec)
        }
    }
}

/// The on-disk format an engine name implies: engines over the same durable engine
/// share their files.
fn files_of(engine: &str) -> &str {
    engine.strip_prefix("buffered:").unwrap_or(match engine {
        "buffered" => "rocksdb",
        other => other,
    })
}

/// The engine whose files are in `dir`, for store directories made before `ENGINE`.
fn engine_from_files(dir: &Path) -> Option<&'static str> {
    if dir.join("CURRENT").exists() {
        Some("rocksdb")
    } else if dir.join(dynamo_engines::SQLITE_DB_FILE).exists() {
        Some("sqlite")
    } else {
        None
    }
}

/// Writes `dir/ENGINE` so that a crash leaves either the old file or the new one.
fn write_marker(marker: &Path, engine: &str) -> Result<(), String> {
    if std::fs::read_to_string(marker).is_ok_and(|s| s.trim() == engine) {
        return Ok(());
    }
    crate::durable_file::replace(marker, format!("{engine}\n").as_bytes())
        .map_err(|(path, e)| format!("writing {}: {e}", path.display()))
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

/// A node running inside the calling process (the embedded node of the C API and the
/// Python bindings): its own thread serves RPC until [`RunningNode::stop`] or drop.
/// Invariant: when `stop` returns, the node has stopped serving, drained in-flight
/// requests and flushed its engines; the listening port is free again.
pub struct RunningNode {
    name: String,
    address: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), NodeError>>>,
}

impl std::fmt::Debug for RunningNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningNode")
            .field("name", &self.name)
            .field("address", &self.address)
            .finish()
    }
}

impl RunningNode {
    /// Opens the node's data and stores and binds its address on the calling thread (so
    /// every startup error is returned here), then serves on a thread of its own. No
    /// signal handlers are installed.
    ///
    /// A `node.listen` with port 0 gets a port from the OS; the node's own entry in
    /// `cluster.members` (if any) is given that address too, so a single embedded node
    /// needs no free port chosen in advance.
    pub fn start(mut config: NodeConfig) -> Result<Self, NodeError> {
        let listener = server::bind(&config.node.listen)?;
        let asked_any_port = crate::rpc::resolve(&config.node.listen).is_ok_and(|a| a.port() == 0);
        if let (true, Ok(real)) = (asked_any_port, listener.local_addr()) {
            let real = real.to_string();
            for m in &mut config.cluster.members {
                if m.name == config.node.name {
                    m.address = real.clone();
                }
            }
            config.node.listen = real;
        }
        let core = Arc::new(NodeCore::open(config)?);
        let address = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| core.config.node.listen.clone());
        let name = core.name().to_owned();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("dynamo-node-{name}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| NodeError::Io(format!("starting the runtime: {e}")))?;
                let local = tokio::task::LocalSet::new();
                let stop = async move {
                    let _ = rx.await;
                };
                let result = local.block_on(&rt, server::serve_until(core.clone(), listener, stop));
                let synced = core.sync_all();
                drop(local);
                rt.shutdown_timeout(Duration::from_secs(2));
                result?;
                synced.map_err(|e| NodeError::Io(format!("flushing on shutdown: {e}")))?;
                // Close the stores (clean-close markers) before the thread ends.
                drop(core);
                Ok(())
            })
            .map_err(|e| NodeError::Io(format!("starting the node thread: {e}")))?;
        Ok(Self {
            name,
            address,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// The node's member name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address it listens on (`host:port`, the real port when the config said 0).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Whether the node is still serving.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops serving, drains in-flight requests (up to 10 s), flushes the engines and
    /// waits for the node's thread. A second call returns `Ok(())`.
    pub fn stop(&mut self) -> Result<(), NodeError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| NodeError::Io(format!("node {}: its thread panicked", self.name)))?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("{}: stopping: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{auto_engine, ObjectSize, SizeClass, AUTO_SQLITE_FROM};

    fn store(engine: &str, size: Option<ObjectSize>) -> StoreConfig {
        StoreConfig {
            engine: engine.into(),
            object_size: size,
            ..StoreConfig::new("s")
        }
    }

    #[test]
    fn auto_picks_by_object_size() {
        let small = ObjectSize::Class(SizeClass::Small);
        assert_eq!(auto_engine(small), Some("rocksdb"));
        assert_eq!(
            auto_engine(ObjectSize::Class(SizeClass::Large)),
            Some("sqlite")
        );
        let below = ObjectSize::Bytes(AUTO_SQLITE_FROM - 1);
        assert_eq!(auto_engine(below), Some("rocksdb"));
        assert_eq!(
            auto_engine(ObjectSize::Bytes(AUTO_SQLITE_FROM)),
            Some("sqlite")
        );
        assert_eq!(store("auto", None).resolved_engine().unwrap(), "rocksdb");
        let big = store("AUTO", Some(ObjectSize::Bytes(1 << 20)));
        assert_eq!(big.resolved_engine().unwrap(), "sqlite");
    }

    #[test]
    fn object_size_parses_from_toml() {
        let c = NodeConfig::parse(
            "[[stores]]\nname = \"big\"\nengine = \"auto\"\nobject_size = \"large\"\n\
             [[stores]]\nname = \"exact\"\nengine = \"auto\"\nobject_size = 300000\n",
            "test",
        )
        .unwrap();
        assert_eq!(c.stores[0].engine_spec().unwrap().to_string(), "sqlite");
        assert_eq!(c.stores[1].object_size, Some(ObjectSize::Bytes(300000)));
        let err = NodeConfig::parse(
            "[[stores]]\nname = \"x\"\nengine = \"auto\"\nobject_size = \"huge\"\n",
            "test",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"small\", \"large\""), "{err}");
    }

    #[test]
    fn the_first_choice_sticks_and_a_different_explicit_engine_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let spec = store_engine(&store("auto", None), dir.path()).unwrap();
        assert_eq!(spec.to_string(), "rocksdb");
        // The profile changed: the data stays where it is.
        let large = store("auto", Some(ObjectSize::Class(SizeClass::Large)));
        assert_eq!(
            store_engine(&large, dir.path()).unwrap().to_string(),
            "rocksdb"
        );
        assert_eq!(
            store_engine(&store("rocksdb", None), dir.path())
                .unwrap()
                .to_string(),
            "rocksdb"
        );
        let err = store_engine(&store("sqlite", None), dir.path()).unwrap_err();
        assert!(
            err.contains("\"rocksdb\"") && err.contains("sqlite"),
            "{err}"
        );
        // The buffered engine over RocksDB keeps RocksDB's files: allowed.
        let buffered = store_engine(&store("buffered:rocksdb", None), dir.path()).unwrap();
        assert_eq!(buffered.to_string(), "buffered:rocksdb");
        // A directory from before the marker: recognised by its files.
        let old = tempfile::tempdir().unwrap();
        std::fs::write(old.path().join("CURRENT"), "MANIFEST-000001\n").unwrap();
        assert_eq!(
            store_engine(&large, old.path()).unwrap().to_string(),
            "rocksdb"
        );
        // Memory stores keep nothing and record nothing.
        let mem = tempfile::tempdir().unwrap();
        store_engine(&store("memory", None), mem.path()).unwrap();
        assert!(!mem.path().join("ENGINE").exists());
        // A fresh directory with a large profile gets SQLite.
        let other = tempfile::tempdir().unwrap();
        assert_eq!(
            store_engine(&large, other.path()).unwrap().to_string(),
            "sqlite"
        );
    }
}
