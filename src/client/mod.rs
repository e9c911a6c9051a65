//! The Rust client library: [`Client`] talks to a cluster over Cap'n Proto RPC.
//!
//! Two coordination modes (paper section 6.4):
//! - [`Coordination::ClientDriven`] (the default): the client fetches the ring from
//!   any node, refreshes it every 10 s or after an error, and sends each request
//!   straight to the first reachable node of the key's preference list, which
//!   coordinates it: one hop to the coordinator plus one parallel fan-out to the
//!   replicas. (Choosing the least-busy of the top N instead measured no better and
//!   spreads one key's writes over more coordinators.)
//! - [`Coordination::ServerDriven`]: requests go to the nodes the client was given, in
//!   turn (as through a load balancer); a node outside the key's top N forwards the
//!   request to one inside it (one hop more).
//!
//! The parts, one concept a file: `layout` (the routing layout and which nodes are
//! avoided), `connections` (connections and timeouts), `requests` (gets and puts sent
//! to a coordinator, with retries), `reads` (client-coordinated reads and their read
//! repair), `keys` (key listing), `blocking` ([`BlockingClient`]), `local`
//! ([`LocalClient`]: calls made on the connection thread, without a thread hop). The
//! answer types are in [`crate::api`].
//!
//! `Client` is `Send + Sync + Clone`; its RPC connections live on a thread of its own
//! (capnp-rpc is `!Send`), so it can be used from any async runtime or, through
//! [`Client::blocking`], from plain threads.
//!
//! ```no_run
//! # async fn demo() -> Result<(), dynamo::error::DynamoError> {
//! use dynamo::client::{Client, ClientOptions};
//! let client = Client::connect(&["127.0.0.1:7400".into()], ClientOptions::default())?;
//! let put = client.put("default", b"cart:42", b"1 book", None, None).await?;
//! let got = client.get("default", b"cart:42", None).await?;
//! assert_eq!(got.values(), vec![&b"1 book"[..]]);
//! // Resolve siblings by writing with the context of the read.
//! client.put("default", b"cart:42", b"2 books", Some(&got.context), None).await?;
//! # let _ = put; Ok(()) }
//! ```

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::api::{Deadline, GetRequest};
pub use crate::api::{
    GetResponse, KeyPage, MemberStatus, NodeStatus, PutResponse, RingInfo, Sibling, StoreSummary,
};
use crate::error::{DynamoError, ErrorKind};
use crate::quorum::{lacking_replicas, stale_replicas, QuorumRead, ReadFn, Target};
use crate::rpc::{self, internode, Connection};
use crate::version::{ConflictPolicy, Version};

/// How requests find their coordinator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Coordination {
    /// Straight to a node in the key's preference list (partition-aware client).
    #[default]
    ClientDriven,
    /// To any node, which forwards to a coordinator.
    ServerDriven,
}

impl std::str::FromStr for Coordination {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "client" | "client-driven" => Ok(Self::ClientDriven),
            "server" | "server-driven" => Ok(Self::ServerDriven),
            other => Err(format!(
                "unknown coordination mode {other:?}: use client or server"
            )),
        }
    }
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Coordination mode.
    pub coordination: Coordination,
    /// Timeout of each call to a node (connect included).
    pub timeout: Duration,
    /// How often the ring is refreshed (also after any error).
    pub ring_refresh: Duration,
    /// Largest reply accepted from a node, in bytes. The default (256 MiB) holds a
    /// full key record of every store whose `max_record_size` is up to 128 MiB.
    pub max_message_size: usize,
    /// How many more rounds over the candidate nodes a request makes after every node
    /// failed it as unreachable or timed out (0: one round only). Rounds are 50 ms, then
    /// 100 ms, ... apart. A retried write keeps its request id: a node holding the
    /// version it names answers with it instead of writing again (a retry that reaches
    /// a node the first attempt's version has not reached yet may still add a sibling).
    pub retries: u32,
    /// Most calls in flight to one node; past it, calls wait in this client (a write
    /// carrying a context first: it finishes a read-modify-write), for up to `timeout`,
    /// then fail as `overloaded`. Bounds what one client can pile onto a busy node.
    /// At least 1 (0 is taken as 1).
    pub max_in_flight_per_node: usize,
}

/// The default of [`ClientOptions::max_in_flight_per_node`].
pub const DEFAULT_MAX_IN_FLIGHT_PER_NODE: usize = 128;

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            coordination: Coordination::ClientDriven,
            timeout: Duration::from_secs(3),
            ring_refresh: Duration::from_secs(10),
            max_message_size: 256 << 20,
            retries: 0,
            max_in_flight_per_node: DEFAULT_MAX_IN_FLIGHT_PER_NODE,
        }
    }
}

mod blocking;
mod connections;
mod in_flight;
mod keys;
mod layout;
mod local;
mod reads;
mod requests;

pub use blocking::BlockingClient;
use layout::{retry_pause, Layout};
pub use local::LocalClient;
use requests::Op;

type Job = Box<dyn FnOnce(Rc<State>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// A handle to a cluster. Cheap to clone; the connection thread stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Client {
    jobs: mpsc::UnboundedSender<Job>,
    exited: ClientExit,
}

/// Tells when a client's connection thread has ended: every clone of the client was
/// dropped, and the calls and read repairs still running then have finished (or run
/// out of time) and its connections are closed.
#[derive(Clone, Debug, Default)]
pub struct ClientExit(std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);

impl ClientExit {
    fn set(&self) {
        let (done, cv) = &*self.0;
        *done.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    }

    /// Blocks the calling thread until the connection thread has ended, for at most
    /// `limit`; returns whether it has. Never call it from an async task.
    pub fn wait(&self, limit: Duration) -> bool {
        let (done, cv) = &*self.0;
        let guard = done.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = cv
            .wait_timeout_while(guard, limit, |d| !*d)
            .unwrap_or_else(|p| p.into_inner());
        *guard
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Client")
    }
}

struct State {
    seeds: Vec<String>,
    options: ClientOptions,
    conns: RefCell<HashMap<String, Connection>>,
    /// Internode capabilities (for client-driven reads and repairs), by address, with
    /// the connection they came from.
    internodes: RefCell<HashMap<String, (Connection, internode::Client)>>,
    layout: RefCell<Option<Rc<Layout>>>,
    refreshing: Cell<bool>,
    stale: Cell<bool>,
    failed: RefCell<HashMap<String, Instant>>,
    next: Cell<usize>,
    /// Serialises connecting, so a burst of first requests opens one connection per node.
    connecting: tokio::sync::Mutex<()>,
    /// Serialises the first ring fetch, so a burst of first requests fetches it once.
    fetching: tokio::sync::Mutex<()>,
    /// Read repairs in progress (finished ones are reaped as new ones start).
    repairs: RefCell<tokio::task::JoinSet<()>>,
    /// The highest serving ring version a reply reported: a layout below it is
    /// fetched again before the next request uses it.
    known_version: Cell<u64>,
    /// This client's bound on its calls in flight, per node address.
    in_flight: RefCell<HashMap<String, Rc<in_flight::InFlight>>>,
}

impl Client {
    /// Starts a client for the cluster reachable at any of `nodes` (`host:port`). Does
    /// not contact the cluster yet: the first request fetches the ring.
    pub fn connect(nodes: &[String], options: ClientOptions) -> Result<Client, DynamoError> {
        if nodes.is_empty() {
            return Err(DynamoError::new(
                ErrorKind::BadRequest,
                "no node addresses given (--nodes host:port[,host:port...])",
            ));
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let seeds = nodes.to_vec();
        // The state holds `Rc`s: it is built on the connection thread itself.
        let make_state = move || State {
            seeds,
            options,
            conns: RefCell::default(),
            internodes: RefCell::default(),
            layout: RefCell::default(),
            refreshing: Cell::new(false),
            stale: Cell::new(false),
            failed: RefCell::default(),
            next: Cell::new(0),
            connecting: tokio::sync::Mutex::new(()),
            fetching: tokio::sync::Mutex::new(()),
            repairs: RefCell::default(),
            known_version: Cell::new(0),
            in_flight: RefCell::default(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| DynamoError::new(ErrorKind::Internal, format!("client runtime: {e}")))?;
        let thread_exit = ClientExit::default();
        let exit = thread_exit.clone();
        std::thread::Builder::new()
            .name("dynamo-client".into())
            .spawn(move || {
                let local = tokio::task::LocalSet::new();
                let state = Rc::new(make_state());
                let st = state.clone();
                local.block_on(&rt, async move {
                    let mut running = tokio::task::JoinSet::new();
                    while let Some(job) = rx.recv().await {
                        while running.try_join_next().is_some() {}
                        running.spawn_local(job(st.clone()));
                    }
                    // Every handle is gone: let the calls and read repairs still running
                    // finish (each of their calls is timed, so this is bounded), so that
                    // closing a client right after a read does not drop its repair.
                    let rounds = st.options.retries.saturating_add(2).saturating_mul(2);
                    let limit = st.options.timeout.saturating_mul(rounds);
                    let drain = async {
                        while running.join_next().await.is_some() {}
                        let mut repairs = st.repairs.take();
                        while repairs.join_next().await.is_some() {}
                    };
                    let _ = tokio::time::timeout(limit, drain).await;
                });
                drop(state);
                drop(local);
                exit.set();
            })
            .map_err(|e| DynamoError::new(ErrorKind::Internal, format!("client thread: {e}")))?;
        Ok(Client {
            jobs: tx,
            exited: thread_exit,
        })
    }

    async fn run<T, F, Fut>(&self, f: F) -> Result<T, DynamoError>
    where
        T: Send + 'static,
        F: FnOnce(Rc<State>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, DynamoError>> + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |st| {
            Box::pin(async move {
                let _ = tx.send(f(st).await);
            })
        });
        let gone = || {
            DynamoError::new(
                ErrorKind::Internal,
                "the client's connection thread stopped",
            )
        };
        self.jobs.send(job).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Reads `key` from `store` with the store's R, or `r` if given.
    pub async fn get(
        &self,
        store: &str,
        key: &[u8],
        r: Option<u8>,
    ) -> Result<GetResponse, DynamoError> {
        let (store, key) = (store.to_owned(), key.to_vec());
        self.run(move |state| async move { LocalClient { state }.get(&store, &key, r).await })
            .await
    }

    /// Writes `value` under `key`, superseding what `context` (a token from an earlier
    /// get or put) covers; with no context the write becomes a sibling of whatever is
    /// there. `w` overrides the store's W.
    pub async fn put(
        &self,
        store: &str,
        key: &[u8],
        value: &[u8],
        context: Option<&str>,
        w: Option<u8>,
    ) -> Result<PutResponse, DynamoError> {
        self.write(store, key, Some(value.to_vec()), context, w)
            .await
    }

    /// Deletes `key` (a causal tombstone superseding what `context` covers).
    pub async fn delete(
        &self,
        store: &str,
        key: &[u8],
        context: Option<&str>,
        w: Option<u8>,
    ) -> Result<PutResponse, DynamoError> {
        self.write(store, key, None, context, w).await
    }

    /// A put (`value` Some) or delete (None).
    async fn write(
        &self,
        store: &str,
        key: &[u8],
        value: Option<Vec<u8>>,
        context: Option<&str>,
        w: Option<u8>,
    ) -> Result<PutResponse, DynamoError> {
        let (store, key) = (store.to_owned(), key.to_vec());
        let context = context.map(str::to_owned);
        self.run(move |state| async move {
            LocalClient { state }
                .write(&store, &key, value, context.as_deref(), w)
                .await
        })
        .await
    }

    /// The status of the node at `address` (the first reachable seed if `None`).
    pub async fn status(&self, address: Option<&str>) -> Result<NodeStatus, DynamoError> {
        let address = address.map(str::to_owned);
        self.run(move |st| async move {
            let targets = match address {
                Some(a) => vec![a],
                None => st.seeds.clone(),
            };
            let mut last = None;
            for a in targets {
                match st.status_of(&a).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| DynamoError::new(ErrorKind::Unavailable, "no node to ask")))
        })
        .await
    }

    /// Asks the node at `address` to carry out a membership action (see
    /// [`crate::admin`]); a refused action is an error with the reason.
    pub async fn admin(
        &self,
        address: &str,
        request: &crate::admin::AdminRequest,
    ) -> Result<crate::admin::AdminReply, DynamoError> {
        let address = address.to_owned();
        let json = serde_json::to_string(request)
            .map_err(|e| DynamoError::new(ErrorKind::BadRequest, format!("encoding: {e}")))?;
        self.run(move |st| async move { st.admin_of(&address, &json).await })
            .await
    }

    /// The version of the ring this client routes with now (its cached copy, not
    /// fetched; `None` before the first request). It follows the versions nodes report
    /// in their replies: a reply from a node serving a newer ring makes the next
    /// request fetch it first.
    pub async fn ring_version(&self) -> Option<u64> {
        self.run(|st| async move { Ok(st.layout.borrow().as_ref().map(|l| l.info.ring.version())) })
            .await
            .ok()
            .flatten()
    }

    /// The ring, members and stores, fetched fresh from any seed.
    pub async fn ring(&self) -> Result<RingInfo, DynamoError> {
        self.run(|st| async move { Ok(st.fetch_layout().await?.info.clone()) })
            .await
    }

    /// Diagnostic: the versions of `key` held by the single replica at `address`,
    /// without quorum, repair or forwarding (hinted copies it keeps included).
    pub async fn read_replica(
        &self,
        address: &str,
        store: &str,
        key: &[u8],
    ) -> Result<Vec<Version>, DynamoError> {
        let (address, store, key) = (address.to_owned(), store.to_owned(), key.to_vec());
        self.run(move |st| async move {
            st.replica_read(&address, &store, &key, &Cell::new(false))
                .await
                .map(|r| r.versions)
        })
        .await
    }

    /// One page of the keys of `store`, in (partition, key) order: up to `limit` keys
    /// (at most 10,000), from the start when `cursor` is `None`, else from the page's
    /// `next` cursor. Each partition's keys are the union of what its N owners hold
    /// (owners that fail are skipped and named in `unanswered`; if none answers, the
    /// call fails). Keys written
    /// while the listing runs may or may not appear; a key held only by a stand-in (its
    /// hint not yet handed off) appears once the hint is delivered.
    pub async fn list_keys(
        &self,
        store: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, DynamoError> {
        let (store, cursor) = (store.to_owned(), cursor.map(str::to_owned));
        self.run(move |st| async move { st.list_keys(&store, cursor.as_deref(), limit).await })
            .await
    }

    /// The signal of this client's connection thread ending (see [`ClientExit`]): a
    /// program that drops its last clone can wait on it so that the read repairs its
    /// last reads started are not cut off when the process exits.
    pub fn exit_signal(&self) -> ClientExit {
        self.exited.clone()
    }

    /// A blocking facade for programs without an async runtime.
    pub fn blocking(&self) -> BlockingClient {
        BlockingClient {
            client: self.clone(),
        }
    }
}
