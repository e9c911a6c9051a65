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

pub use crate::api::{
    GetResponse, KeyPage, MemberStatus, NodeStatus, PutResponse, RingInfo, Sibling, StoreSummary,
};
use crate::error::{DynamoError, ErrorKind};
use crate::quorum::{lacking_replicas, stale_replicas, QuorumRead, ReadFn, Target};
use crate::ring::Ring;
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
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            coordination: Coordination::ClientDriven,
            timeout: Duration::from_secs(3),
            ring_refresh: Duration::from_secs(10),
            max_message_size: 256 << 20,
            retries: 0,
        }
    }
}

/// The cursor token `partition:hex(after)` a key page hands to the next call.
fn key_cursor(partition: u32, after: &[u8]) -> String {
    let mut s = format!("{partition}:");
    for b in after {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Parses a cursor from [`key_cursor`], checking it against the ring's `q` partitions.
fn parse_key_cursor(cursor: &str, q: u32) -> Result<(u32, Vec<u8>), DynamoError> {
    let bad = |why: &str| {
        DynamoError::new(
            ErrorKind::BadRequest,
            format!(
                "bad key-listing cursor {cursor:?}: {why}; pass the `next` of the previous page"
            ),
        )
    };
    let (p, hex) = cursor.split_once(':').ok_or_else(|| bad("no ':'"))?;
    let partition: u32 = p
        .parse()
        .map_err(|_| bad("the partition is not a number"))?;
    if partition >= q {
        return Err(bad(&format!("the ring has only {q} partitions")));
    }
    if hex.len() % 2 != 0 || !hex.is_ascii() {
        return Err(bad("the key is not hex"));
    }
    let after = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| bad("the key is not hex"))?;
    Ok((partition, after))
}

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

/// Member names in the order a key's requests try them: its preference list (the
/// first N), then the stand-ins.
type Walk = Vec<String>;

struct Layout {
    info: RingInfo,
    addresses: HashMap<String, String>,
    stores: HashMap<String, StoreSummary>,
    fetched: Instant,
    walks: RefCell<HashMap<(u8, u32), Rc<Walk>>>,
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
}

impl Layout {
    /// The walk of `key` in `store` (cached per replication factor and partition).
    fn walk(&self, store: &StoreSummary, key: &[u8]) -> Rc<Walk> {
        let ring = &self.info.ring;
        let p = ring.partition_for_key(&store.name, key);
        self.walks
            .borrow_mut()
            .entry((store.n, p))
            .or_insert_with(|| {
                Rc::new(
                    ring.walk(p, usize::from(store.n))
                        .iter()
                        .map(|m| m.name.clone())
                        .collect(),
                )
            })
            .clone()
    }

    /// The summary of `store`, or an unknown-store error naming the stores there are.
    fn store(&self, store: &str) -> Result<StoreSummary, DynamoError> {
        self.stores.get(store).cloned().ok_or_else(|| {
            let mut known: Vec<&str> = self.stores.keys().map(String::as_str).collect();
            known.sort_unstable();
            DynamoError::new(
                ErrorKind::UnknownStore,
                format!(
                    "unknown store {store:?}; the cluster has: {}",
                    known.join(", ")
                ),
            )
        })
    }

    /// The address of member `name`.
    fn address_of(&self, name: &str) -> Result<String, DynamoError> {
        self.addresses.get(name).cloned().ok_or_else(|| {
            DynamoError::new(
                ErrorKind::Internal,
                format!("member {name} has no address in the ring the client holds"),
            )
        })
    }
}

/// The pause before retry round `round` (1, 2, ...): 50 ms, doubling, at most 3.2 s.
fn retry_pause(round: u32) -> Duration {
    Duration::from_millis(50u64 << (round.saturating_sub(1)).min(6))
}

/// How long a node that failed a call is avoided.
const AVOID: Duration = Duration::from_secs(1);

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
        self.run(move |st| async move { st.request(Op::Get { r }, &store, &key).await?.into_get() })
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
        let context = context.unwrap_or_default().to_owned();
        // One id for every attempt of this write: a node that already applied it
        // answers with that version instead of writing a second one.
        let request_id = Some(rand::random::<u64>() | 1);
        self.run(move |st| async move {
            let op = Op::Put {
                value,
                context,
                w,
                request_id,
            };
            st.request(op, &store, &key).await?.into_put()
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
            st.replica_read(&address, &store, &key)
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

/// [`Client`] for synchronous callers: each call blocks the calling thread (do not use
/// it inside an async runtime).
pub struct BlockingClient {
    client: Client,
}

fn block_on<F: Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

impl BlockingClient {
    /// See [`Client::get`].
    pub fn get(&self, store: &str, key: &[u8], r: Option<u8>) -> Result<GetResponse, DynamoError> {
        block_on(self.client.get(store, key, r))
    }
    /// See [`Client::put`].
    pub fn put(
        &self,
        store: &str,
        key: &[u8],
        value: &[u8],
        context: Option<&str>,
        w: Option<u8>,
    ) -> Result<PutResponse, DynamoError> {
        block_on(self.client.put(store, key, value, context, w))
    }
    /// See [`Client::delete`].
    pub fn delete(
        &self,
        store: &str,
        key: &[u8],
        context: Option<&str>,
        w: Option<u8>,
    ) -> Result<PutResponse, DynamoError> {
        block_on(self.client.delete(store, key, context, w))
    }
    /// See [`Client::status`].
    pub fn status(&self, address: Option<&str>) -> Result<NodeStatus, DynamoError> {
        block_on(self.client.status(address))
    }
    /// See [`Client::ring_version`].
    pub fn ring_version(&self) -> Option<u64> {
        block_on(self.client.ring_version())
    }
    /// See [`Client::admin`].
    pub fn admin(
        &self,
        address: &str,
        request: &crate::admin::AdminRequest,
    ) -> Result<crate::admin::AdminReply, DynamoError> {
        block_on(self.client.admin(address, request))
    }
    /// See [`Client::read_replica`].
    pub fn read_replica(
        &self,
        address: &str,
        store: &str,
        key: &[u8],
    ) -> Result<Vec<Version>, DynamoError> {
        block_on(self.client.read_replica(address, store, key))
    }

    /// See [`Client::list_keys`].
    pub fn list_keys(
        &self,
        store: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, DynamoError> {
        block_on(self.client.list_keys(store, cursor, limit))
    }

    /// See [`Client::ring`].
    pub fn ring(&self) -> Result<RingInfo, DynamoError> {
        block_on(self.client.ring())
    }
}

enum Op {
    Get {
        r: Option<u8>,
    },
    Put {
        value: Option<Vec<u8>>,
        context: String,
        w: Option<u8>,
        request_id: Option<u64>,
    },
}

enum Answer {
    Get(GetResponse),
    Put(PutResponse),
}

impl Answer {
    fn into_get(self) -> Result<GetResponse, DynamoError> {
        match self {
            Answer::Get(g) => Ok(g),
            Answer::Put(_) => Err(rpc::protocol("a put answer to a get")),
        }
    }
    fn into_put(self) -> Result<PutResponse, DynamoError> {
        match self {
            Answer::Put(p) => Ok(p),
            Answer::Get(_) => Err(rpc::protocol("a get answer to a put")),
        }
    }
}

impl State {
    fn live_conn(&self, address: &str) -> Option<Connection> {
        self.conns
            .borrow()
            .get(address)
            .filter(|c| c.alive())
            .cloned()
    }

    async fn conn(&self, address: &str) -> Result<Connection, DynamoError> {
        if let Some(c) = self.live_conn(address) {
            return Ok(c);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(c) = self.live_conn(address) {
            return Ok(c);
        }
        let c = rpc::connect(address, self.options.timeout, self.options.max_message_size).await?;
        self.conns
            .borrow_mut()
            .insert(address.to_owned(), c.clone());
        Ok(c)
    }

    async fn timed<T>(
        &self,
        address: &str,
        call: impl Future<Output = Result<T, DynamoError>>,
    ) -> Result<T, DynamoError> {
        let t = self.options.timeout;
        let (r, timed_out) = match tokio::time::timeout(t, call).await {
            Ok(r) => (r, false),
            Err(_) => (
                Err(DynamoError::new(
                    ErrorKind::Timeout,
                    format!(
                        "node {address} timed out: no answer within {} ms",
                        t.as_millis()
                    ),
                )),
                true,
            ),
        };
        if let Err(e) = &r {
            if matches!(
                e.kind,
                ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::Protocol
            ) {
                // A slow reply fails this call only: other calls on the connection go
                // on. A broken or garbled connection is closed.
                if !timed_out {
                    if let Some(c) = self.conns.borrow_mut().remove(address) {
                        c.close();
                    }
                }
                self.failed
                    .borrow_mut()
                    .insert(address.to_owned(), Instant::now());
                self.stale.set(true);
            }
        }
        r
    }

    async fn admin_of(
        &self,
        address: &str,
        request: &str,
    ) -> Result<crate::admin::AdminReply, DynamoError> {
        let conn = self.conn(address).await?;
        self.timed(address, async {
            let mut req = conn.dynamo.admin_request();
            req.get().set_request(request);
            let resp = req
                .send()
                .promise
                .await
                .map_err(|e| rpc::from_capnp(address, e))?;
            let r = resp.get().map_err(|e| rpc::from_capnp(address, e))?;
            if let Some(f) = rpc::read_failure(r.has_failure(), r.get_failure()) {
                return Err(f);
            }
            let text = rpc::text(r.get_reply())?;
            serde_json::from_str(&text)
                .map_err(|e| rpc::protocol(format!("reading the admin reply from {address}: {e}")))
        })
        .await
    }

    async fn status_of(&self, address: &str) -> Result<NodeStatus, DynamoError> {
        let conn = self.conn(address).await?;
        self.timed(address, async {
            let resp = conn
                .dynamo
                .status_request()
                .send()
                .promise
                .await
                .map_err(|e| rpc::from_capnp(address, e))?;
            rpc::read_status(
                address,
                resp.get()
                    .map_err(|e| rpc::from_capnp(address, e))?
                    .get_reply(),
            )
        })
        .await
    }

    async fn ring_of(&self, address: &str) -> Result<Layout, DynamoError> {
        let conn = self.conn(address).await?;
        self.timed(address, async {
            let resp = conn
                .dynamo
                .ring_request()
                .send()
                .promise
                .await
                .map_err(|e| rpc::from_capnp(address, e))?;
            let r = resp
                .get()
                .and_then(|r| r.get_reply())
                .map_err(|e| rpc::from_capnp(address, e))?;
            let ring = Ring::from_json(&rpc::text(r.get_ring_json())?)
                .map_err(|e| rpc::protocol(format!("ring from {address}: {e}")))?;
            let mut members = Vec::new();
            for m in r
                .get_members()
                .map_err(|e| rpc::from_capnp(address, e))?
                .iter()
            {
                members.push(rpc::read_member(m)?);
            }
            let mut stores = Vec::new();
            for s in r
                .get_stores()
                .map_err(|e| rpc::from_capnp(address, e))?
                .iter()
            {
                stores.push(rpc::read_store(s)?);
            }
            Ok(Layout {
                addresses: members
                    .iter()
                    .map(|m| (m.name.clone(), m.address.clone()))
                    .collect(),
                stores: stores.iter().map(|s| (s.name.clone(), s.clone())).collect(),
                info: RingInfo {
                    ring,
                    members,
                    stores,
                },
                fetched: Instant::now(),
                walks: RefCell::default(),
            })
        })
        .await
    }

    /// Fetches the layout from the seeds (then known members) and caches it.
    async fn fetch_layout(&self) -> Result<Rc<Layout>, DynamoError> {
        let mut candidates = self.seeds.clone();
        if let Some(l) = self.layout.borrow().as_ref() {
            candidates.extend(l.addresses.values().cloned());
        }
        let mut errors = Vec::new();
        // The first ring at least as new as any reply reported; else the newest seen
        // (a node that has not switched yet serves an older one).
        let want = self.known_version.get();
        let mut best: Option<Layout> = None;
        for a in candidates {
            match self.ring_of(&a).await {
                Ok(l) => {
                    let v = l.info.ring.version();
                    if best.as_ref().is_none_or(|b| v > b.info.ring.version()) {
                        best = Some(l);
                    }
                    if v >= want {
                        break;
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if let Some(l) = best {
            // Never go back to an older ring than the one held.
            let held = self.layout.borrow().clone();
            if let Some(h) = held.filter(|h| h.info.ring.version() > l.info.ring.version()) {
                self.stale.set(false);
                return Ok(h);
            }
            let l = Rc::new(l);
            *self.layout.borrow_mut() = Some(l.clone());
            self.stale.set(false);
            return Ok(l);
        }
        // As for requests: when a node did not answer in time the caller sees a
        // timeout (its write may be pending elsewhere), else the cluster is unavailable.
        let timed_out = errors.iter().any(|e| e.kind == ErrorKind::Timeout);
        let why: Vec<String> = errors.into_iter().map(|e| e.message).collect();
        Err(DynamoError::new(
            if timed_out {
                ErrorKind::Timeout
            } else {
                ErrorKind::Unavailable
            },
            format!("no node answered: {}", why.join("; ")),
        ))
    }

    /// The cached layout; refreshed in the background when old or after an error,
    /// fetched (waiting) only when there is none yet.
    async fn layout(self: &Rc<Self>) -> Result<Rc<Layout>, DynamoError> {
        let cached = self.layout.borrow().clone();
        match cached {
            None => {
                let _fetching = self.fetching.lock().await;
                if let Some(l) = self.layout.borrow().clone() {
                    return Ok(l);
                }
                self.fetch_layout().await
            }
            Some(l) if l.info.ring.version() < self.known_version.get() => {
                // A reply told of a newer ring: no request goes out on this one.
                let _fetching = self.fetching.lock().await;
                match self.layout.borrow().clone() {
                    Some(now) if now.info.ring.version() >= self.known_version.get() => {
                        return Ok(now)
                    }
                    _ => {}
                }
                match self.fetch_layout().await {
                    Ok(fresh) => {
                        // Nodes may still be learning it: never ask again for it in a loop.
                        if fresh.info.ring.version() < self.known_version.get() {
                            self.known_version.set(fresh.info.ring.version());
                        }
                        Ok(fresh)
                    }
                    Err(_) => Ok(l),
                }
            }
            Some(l) => {
                let old = l.fetched.elapsed() >= self.options.ring_refresh || self.stale.get();
                if old && !self.refreshing.get() {
                    self.refreshing.set(true);
                    let me = self.clone();
                    tokio::task::spawn_local(async move {
                        let _ = me.fetch_layout().await;
                        me.refreshing.set(false);
                    });
                }
                Ok(l)
            }
        }
    }

    /// Remembers that `address` failed a call: it is avoided for a moment and the ring
    /// is refreshed.
    fn note_failure(&self, address: &str) {
        self.failed
            .borrow_mut()
            .insert(address.to_owned(), Instant::now());
        self.stale.set(true);
    }

    fn avoided(&self, address: &str) -> bool {
        match self.failed.borrow().get(address) {
            Some(t) => t.elapsed() < AVOID,
            None => false,
        }
    }

    /// The addresses to try for a request, best first.
    fn route(&self, layout: &Layout, store: &StoreSummary, key: &[u8]) -> Vec<String> {
        let mut order: Vec<String> = Vec::new();
        if self.options.coordination == Coordination::ClientDriven {
            let walk = layout.walk(store, key);
            for name in walk.iter().take(usize::from(store.n)) {
                if let Some(a) = layout.addresses.get(name) {
                    order.push(a.clone());
                }
            }
        }
        // Server-driven: the nodes the client was given, in turn, as a load balancer
        // would spread them. Then (and as client-driven's fallback) every member.
        let start = self.next.get();
        self.next.set(start.wrapping_add(1));
        let rotations: [Vec<&String>; 2] = [
            self.seeds.iter().collect(),
            layout.info.members.iter().map(|m| &m.address).collect(),
        ];
        for all in rotations.iter().filter(|a| !a.is_empty()) {
            for i in 0..all.len() {
                let a = all[(start + i) % all.len()];
                if !order.contains(a) {
                    order.push(a.clone());
                }
            }
        }
        // Nodes that failed a moment ago go last.
        let (good, bad): (Vec<String>, Vec<String>) =
            order.into_iter().partition(|a| !self.avoided(a));
        good.into_iter().chain(bad).collect()
    }

    /// The ring, fetched with the client's retry rounds when no node answers.
    async fn layout_with_retries(self: &Rc<Self>) -> Result<Rc<Layout>, DynamoError> {
        let mut round = 0;
        loop {
            match self.layout().await {
                Ok(l) => return Ok(l),
                Err(e)
                    if round < self.options.retries
                        && matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Timeout) =>
                {
                    round += 1;
                    tokio::time::sleep(retry_pause(round)).await;
                }
                Err(mut e) => {
                    if round > 0 {
                        e.message = format!("{} (after {} attempts)", e.message, round + 1);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// One page of [`Client::list_keys`]: the keys of the cursor's partition, asked of
    /// every owner in parallel and merged (a key missing on one replica is still listed),
    /// moving on to the next partition when the cursor's is exhausted.
    async fn list_keys(
        self: &Rc<Self>,
        store: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<KeyPage, DynamoError> {
        let layout = self.layout_with_retries().await?;
        let summary = layout.store(store)?;
        let ring = &layout.info.ring;
        let q = ring.partition_count();
        let (mut partition, mut after) = match cursor {
            Some(c) => parse_key_cursor(c, q)?,
            None => (0, Vec::new()),
        };
        let limit = limit.clamp(1, crate::api::MAX_KEYS_PER_PAGE);
        let mut unanswered: Vec<String> = Vec::new();
        while partition < q {
            // The walk goes on past the top N to the stand-ins: only owners are asked.
            let owners: Vec<String> = ring
                .walk(partition, usize::from(summary.n))
                .iter()
                .take(usize::from(summary.n))
                .map(|m| m.name.clone())
                .collect();
            let asks = owners.iter().map(|name| {
                let (after, layout) = (&after, &layout);
                async move {
                    let address = layout.address_of(name)?;
                    let node = self.internode(&address).await?;
                    self.timed(
                        &address,
                        rpc::call_replica_keys(&node, &address, store, partition, after, limit),
                    )
                    .await
                    .map_err(|e| DynamoError::new(e.kind, format!("{name}: {}", e.message)))
                }
            });
            let answers = futures::future::join_all(asks).await;
            let mut merged = std::collections::BTreeSet::new();
            let mut more = false;
            let mut errors = Vec::new();
            let mut answered = 0;
            for (name, a) in owners.iter().zip(answers) {
                match a {
                    Ok((keys, m)) => {
                        answered += 1;
                        more |= m;
                        merged.extend(keys);
                    }
                    Err(e) => {
                        if !unanswered.contains(name) {
                            unanswered.push(name.clone());
                        }
                        errors.push(e);
                    }
                }
            }
            if answered == 0 {
                let kind = errors.first().map_or(ErrorKind::Unavailable, |e| e.kind);
                let why: Vec<String> = errors.iter().map(|e| e.message.clone()).collect();
                return Err(DynamoError::new(
                    kind,
                    format!(
                        "listing keys of store {store}: no replica of partition {partition} answered: {}",
                        why.join("; ")
                    ),
                ));
            }
            let mut keys: Vec<Vec<u8>> = merged.into_iter().collect();
            if keys.len() > limit as usize {
                keys.truncate(limit as usize);
                more = true;
            }
            let next = if more {
                let last = keys.last().cloned().unwrap_or_else(|| after.clone());
                Some(key_cursor(partition, &last))
            } else if partition + 1 < q {
                Some(key_cursor(partition + 1, &[]))
            } else {
                None
            };
            if !keys.is_empty() || next.is_none() {
                return Ok(KeyPage {
                    keys,
                    next,
                    unanswered,
                });
            }
            // An empty partition: go on to the next one within this call.
            partition += 1;
            after.clear();
        }
        Ok(KeyPage {
            keys: Vec::new(),
            next: None,
            unanswered,
        })
    }

    async fn request(
        self: &Rc<Self>,
        op: Op,
        store: &str,
        key: &[u8],
    ) -> Result<Answer, DynamoError> {
        let mut layout = self.layout_with_retries().await?;
        let mut summary = layout.store(store)?;
        if let (Op::Get { r }, Coordination::ClientDriven) = (&op, self.options.coordination) {
            let mut round = 0;
            let mut followed = false;
            loop {
                let answer = self.coordinate_get(&layout, &summary, key, *r).await;
                // A replica serves a newer ring (owners switched): read again, once, on
                // the new ring, so that no read goes to former owners only.
                if !followed && layout.info.ring.version() < self.known_version.get() {
                    followed = true;
                    if let Ok(fresh) = self.layout().await {
                        if fresh.info.ring.version() > layout.info.ring.version() {
                            layout = fresh;
                            summary = layout.store(store)?;
                            continue;
                        }
                    }
                }
                match answer {
                    Err(e)
                        if round < self.options.retries
                            && matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Timeout) =>
                    {
                        round += 1;
                        tokio::time::sleep(retry_pause(round)).await;
                    }
                    answer => return answer.map(Answer::Get),
                }
            }
        }
        let mut errors = Vec::new();
        let mut timed_out = false;
        let mut attempts = 0;
        for round in 0..=self.options.retries {
            if round > 0 {
                tokio::time::sleep(retry_pause(round)).await;
            }
            for address in self.route(&layout, &summary, key) {
                // Any attempt after the first may follow one that was applied.
                let retry = attempts > 0;
                attempts += 1;
                match self.send(&address, &op, store, key, retry).await {
                    Ok(a) => return Ok(a),
                    // Unreachable, shutting down or slow: another node can take it.
                    Err(e) if matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Timeout) => {
                        timed_out |= e.kind == ErrorKind::Timeout;
                        errors.push(e.message)
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let rounds = match self.options.retries {
            0 => String::new(),
            r => format!(" (in {} rounds)", r + 1),
        };
        Err(DynamoError::new(
            // A write that timed out somewhere may have been applied there.
            if timed_out {
                ErrorKind::Timeout
            } else {
                ErrorKind::Unavailable
            },
            format!(
                "no node could take the request{rounds}: {}",
                errors.join("; ")
            ),
        ))
    }

    /// The internode capability of the node at `address`.
    async fn internode(&self, address: &str) -> Result<internode::Client, DynamoError> {
        let conn = self
            .conn(address)
            .await
            .inspect_err(|_| self.note_failure(address))?;
        if let Some((c, node)) = self.internodes.borrow().get(address) {
            if c.alive() && c.same_as(&conn) {
                return Ok(node.clone());
            }
        }
        let node = conn.dynamo.internode_request().send().pipeline.get_node();
        self.internodes
            .borrow_mut()
            .insert(address.to_owned(), (conn, node.clone()));
        Ok(node)
    }

    /// The versions of `key` at the replica at `address`, timed.
    async fn replica_read(
        &self,
        address: &str,
        store: &str,
        key: &[u8],
    ) -> Result<crate::quorum::ReplicaReply, DynamoError> {
        let node = self.internode(address).await?;
        let (reply, ring_version) = self
            .timed(
                address,
                rpc::call_replica_read(&node, address, store, key, false),
            )
            .await?;
        self.note_ring_version(ring_version);
        Ok(reply)
    }

    /// Remembers the highest serving ring version a node reported.
    fn note_ring_version(&self, v: u64) {
        if v > self.known_version.get() {
            self.known_version.set(v);
        }
    }

    /// Client-driven get (paper section 6.4): reads the key's replicas directly, with
    /// the sloppy-quorum rules a coordinating node uses ([`crate::quorum`]), merges,
    /// answers, then repairs the stale replicas it saw. Replicas that failed a call in
    /// the last second are treated as down: stand-ins past the top N are asked instead.
    async fn coordinate_get(
        self: &Rc<Self>,
        layout: &Rc<Layout>,
        store: &StoreSummary,
        key: &[u8],
        r: Option<u8>,
    ) -> Result<GetResponse, DynamoError> {
        let n = usize::from(store.n);
        let r = r.map_or(usize::from(store.r), usize::from);
        if r == 0 || r > n {
            return Err(DynamoError::new(
                ErrorKind::BadRequest,
                format!(
                    "r={r} is invalid for store {}: it must be between 1 and N={n}",
                    store.name
                ),
            ));
        }
        if key.is_empty() {
            return Err(DynamoError::new(
                ErrorKind::BadRequest,
                format!(
                    "empty key for store {}: keys are 1 or more bytes",
                    store.name
                ),
            ));
        }
        let policy: ConflictPolicy = store.policy.parse().map_err(|e| {
            rpc::protocol(format!(
                "store {} has conflict policy {:?}, which this client does not know: {e}",
                store.name, store.policy
            ))
        })?;
        let ring = &layout.info.ring;
        let members = ring.members().len();
        if members < r {
            return Err(DynamoError::new(
                ErrorKind::Quorum,
                format!(
                    "quorum not reached for get store={}: R={r} but the cluster has only \
                     {members} member(s): lower the store's r (or pass a smaller --r for this \
                     request) or add members",
                    store.name
                ),
            ));
        }
        let walk = layout.walk(store, key);
        let down = |name: &str| layout.addresses.get(name).is_none_or(|a| self.avoided(a));
        // Every owner is asked, so each one counts before any stand-in's reply may (a
        // stand-in's "not found" must never hide an owner's value). An owner that failed
        // a call a moment ago also gets a stand-in at once, in parallel.
        let owners: Vec<&String> = walk.iter().take(n).collect();
        let mut targets: Vec<Target> = owners.iter().map(|m| Target::owner(m.as_str())).collect();
        let mut stand_ins = walk.iter().skip(n).filter(|m| !down(m));
        for owner in owners.iter().filter(|m| down(m)) {
            if let Some(s) = stand_ins.next() {
                targets.push(Target {
                    name: s.clone(),
                    hint_for: Some((*owner).clone()),
                });
            }
        }
        let key_rc = Rc::new(key.to_vec());
        let read: ReadFn = {
            let (st, layout, store_name, key) = (
                self.clone(),
                layout.clone(),
                store.name.clone(),
                key_rc.clone(),
            );
            Rc::new(move |t: Target| {
                let (st, layout, store_name, key) =
                    (st.clone(), layout.clone(), store_name.clone(), key.clone());
                Box::pin(async move {
                    let address = layout.address_of(&t.name)?;
                    st.replica_read(&address, &store_name, &key).await
                })
            })
        };
        let mut q = QuorumRead::start(r, policy, targets, read);
        let ok = q
            .wait(|used| {
                walk.iter()
                    .skip(n)
                    .find(|m| !used.contains(m) && !down(m))
                    .cloned()
            })
            .await;
        if !ok {
            // A request every replica refuses (an oversize key, a store it does not
            // host) is that error, not a quorum failure.
            if let Some(e) = q
                .errors
                .iter()
                .find(|e| matches!(e.kind, ErrorKind::BadRequest | ErrorKind::UnknownStore))
            {
                return Err(e.clone());
            }
            // Nobody answered and only the transport failed: the cluster is unreachable.
            if q.replies.is_empty()
                && !q.errors.is_empty()
                && q.errors
                    .iter()
                    .all(|e| matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Timeout))
            {
                let timed_out = q.errors.iter().any(|e| e.kind == ErrorKind::Timeout);
                return Err(DynamoError::new(
                    if timed_out {
                        ErrorKind::Timeout
                    } else {
                        ErrorKind::Unavailable
                    },
                    format!(
                        "no replica of key {} in store {} answered: {}",
                        crate::store::printable_key(key),
                        store.name,
                        q.failed.join("; ")
                    ),
                ));
            }
            return Err(q.quorum_error(&store.name, key, &[]));
        }
        let context = q
            .merged
            .context()
            .to_token(crate::ring::key_fingerprint(&store.name, key));
        let mut answer = GetResponse::from_siblings(&q.merged, context, "client".to_owned());
        answer.stale_replicas = lacking_replicas(&q.merged, &q.replies);
        // Read repair after the answer, late replies included.
        let (st, layout, store_name) = (self.clone(), layout.clone(), store.name.clone());
        let mut repairs = self.repairs.borrow_mut();
        while repairs.try_join_next().is_some() {}
        repairs.spawn_local(async move {
            let (merged, replies, reaped) = q.finish().await;
            let mut stale = crate::quorum::holding_reaped(&replies, &reaped);
            for t in stale_replicas(&merged, replies, policy) {
                if !stale.contains(&t) {
                    stale.push(t);
                }
            }
            if stale.is_empty() {
                return;
            }
            let reaped = (!reaped.is_empty()).then_some(reaped);
            let encoded = rpc::encode_versions(merged.versions());
            for t in stale {
                let Ok(address) = layout.address_of(&t.name) else {
                    continue;
                };
                let Ok(node) = st.internode(&address).await else {
                    continue;
                };
                let write = rpc::call_replica_write(
                    &node,
                    &address,
                    &store_name,
                    &key_rc,
                    &encoded,
                    t.hint_for.as_deref(),
                    "",
                    reaped.as_ref(),
                );
                // A failed repair is retried by the next read (or anti-entropy).
                let _ = st.timed(&address, write).await;
            }
        });
        Ok(answer)
    }

    async fn send(
        &self,
        address: &str,
        op: &Op,
        store: &str,
        key: &[u8],
        retry: bool,
    ) -> Result<Answer, DynamoError> {
        let conn = self
            .conn(address)
            .await
            .inspect_err(|_| self.note_failure(address))?;
        let call = async {
            match op {
                Op::Get { r } => {
                    let g = rpc::call_get(&conn.dynamo, address, store, key, *r, false).await?;
                    self.note_ring_version(g.ring_version);
                    Ok(Answer::Get(g))
                }
                Op::Put {
                    value,
                    context,
                    w,
                    request_id,
                } => {
                    let req = rpc::WriteRequest {
                        store,
                        key,
                        value: value.as_deref(),
                        context,
                        w: *w,
                        request_id: *request_id,
                        retry,
                    };
                    let p = rpc::call_put(&conn.dynamo, address, &req, false).await?;
                    self.note_ring_version(p.ring_version);
                    Ok(Answer::Put(p))
                }
            }
        };
        self.timed(address, call).await
    }
}
