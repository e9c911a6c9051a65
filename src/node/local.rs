//! The node as seen from its event-loop thread: the shared core plus the `!Send`
//! connections to peers, and the replica operations (local ones on the engine threads,
//! remote ones over RPC, each with the request timeout).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::api::Deadline;
use crate::context::Context;
use crate::error::{DynamoError, ErrorKind};
use crate::quorum::ReplicaReply;
use crate::rpc::{self, internode, Connection};
use crate::store::{printable_key, VersionedStore};
use crate::version::{Siblings, Version};

use super::engine_threads::Panicked;
use super::NodeCore;

struct Peer {
    conn: Connection,
    internode: internode::Client,
}

/// What a write sends to replicas: the key and its versions, encoded once for every
/// replica and round, and a reaped context they take in too (read repair).
pub(crate) struct WritePayload {
    /// The key.
    pub key: Rc<Vec<u8>>,
    /// The versions (a put's new one, or a repair's merged set).
    pub versions: Rc<Vec<Version>>,
    /// `versions`, encoded.
    pub encoded: Rc<Vec<Vec<u8>>>,
    /// A reaped context to take in (`None`: none).
    pub reaped: Option<Rc<Context>>,
}

impl WritePayload {
    /// The payload of `versions` of `key`, encoded.
    pub fn new(key: Rc<Vec<u8>>, versions: Vec<Version>, reaped: Option<Rc<Context>>) -> Self {
        Self {
            encoded: Rc::new(rpc::encode_versions(&versions)),
            versions: Rc::new(versions),
            key,
            reaped,
        }
    }
}

/// A node's state on its RPC thread. Cheap to clone (`Rc`).
#[derive(Clone)]
pub struct LocalNode {
    /// The thread-safe core.
    pub core: Arc<NodeCore>,
    /// The connection to each peer that requests, replication and background calls
    /// share. Only a broken connection is given up; a call that times out fails alone.
    peers: Rc<RefCell<HashMap<String, Peer>>>,
    /// A second connection to each peer probed, that carries pings only: a probe is
    /// never queued behind the data a busy shared connection carries.
    probe_conns: Rc<RefCell<HashMap<String, Peer>>>,
    /// One connect at a time per peer and connection kind: a burst of requests opens
    /// one connection, and a peer that does not answer its SYNs never delays
    /// connecting to another.
    connecting: Rc<RefCell<HashMap<String, Rc<tokio::sync::Mutex<()>>>>>,
    /// Per peer, the probe running now: later callers wait for that one, so a down
    /// peer gets one probe at a time however many requests meet it.
    probing: Rc<RefCell<HashMap<String, Probe>>>,
    /// Per peer, the gossip exchange running with it because a reply showed it serves
    /// another view: later callers wait for that one (whoever polls it drives it, so
    /// a caller that goes away leaves nothing stuck).
    learning: Rc<RefCell<HashMap<String, Learning>>>,
}

/// A gossip exchange several requests may wait for.
type Learning = futures::future::Shared<futures::future::LocalBoxFuture<'static, ()>>;

/// A probe several requests may wait for; its answer is the ping's.
type Probe =
    futures::future::Shared<futures::future::LocalBoxFuture<'static, Result<(), DynamoError>>>;

/// Which connection to a peer a call uses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    /// The shared one.
    Data,
    /// The probe's own.
    Probe,
}

impl LocalNode {
    /// Wraps the core for use on this thread.
    pub fn new(core: Arc<NodeCore>) -> Self {
        Self {
            core,
            peers: Rc::default(),
            probe_conns: Rc::default(),
            connecting: Rc::default(),
            probing: Rc::default(),
            learning: Rc::default(),
        }
    }

    /// Runs a blocking background engine call for `key` of `store` on the engine
    /// threads (no deadline: it always queues). See [`LocalNode::engine_by`].
    pub(crate) async fn engine<T: Send + 'static>(
        &self,
        store: &str,
        key: &[u8],
        f: impl FnOnce() -> Result<T, DynamoError> + Send + 'static,
    ) -> Result<T, DynamoError> {
        self.engine_by(None, store, key, f).await
    }

    /// Runs a blocking engine call for `key` of `store` on the engine threads, off the
    /// event loop. With a `deadline` (request work) it is refused as `overloaded` when
    /// the engine queue is full and dropped unrun once the deadline passes. A panic in
    /// the engine is caught and logged with the store and key, marks this node's
    /// storage failed (it then refuses requests and pings), and answers as an internal
    /// error.
    pub(crate) async fn engine_by<T: Send + 'static>(
        &self,
        deadline: Option<Deadline>,
        store: &str,
        key: &[u8],
        f: impl FnOnce() -> Result<T, DynamoError> + Send + 'static,
    ) -> Result<T, DynamoError> {
        let faults = &self.core.config.faults;
        let inject = faults
            .panic_on_key
            .as_deref()
            .is_some_and(|k| k.as_bytes() == key);
        let slow = (faults.slow_engine
            && faults
                .slow_key
                .as_deref()
                .is_some_and(|k| k.as_bytes() == key))
        .then(|| std::time::Duration::from_millis(faults.slow_ms));
        let run = move || {
            if inject {
                panic!("injected fault: panic_on_key");
            }
            if let Some(busy) = slow {
                // Fault injection: a busy engine holds its thread.
                std::thread::sleep(busy);
            }
            f()
        };
        match self.core.engines.run(deadline, run).await {
            Ok(result) => result,
            Err(Panicked(why)) => {
                let message = format!(
                    "the engine of store {store:?} panicked on key {}: {why}; node {} marks its storage failed and refuses requests until it is restarted",
                    printable_key(key),
                    self.name()
                );
                eprintln!("{}: {message}", self.name());
                self.core.fail_storage(message.clone());
                Err(DynamoError::new(ErrorKind::Internal, message))
            }
        }
    }

    /// This node's record of `key`: answered on the event loop when the engine has it
    /// in memory (a memtable, the block cache, a write buffer), else read on the engine
    /// pool like any engine call. Keys that faults are injected on always take the
    /// pool, and so does a node whose storage failed.
    pub(crate) async fn read_local(
        &self,
        store: &Arc<VersionedStore>,
        key: &[u8],
        deadline: Option<Deadline>,
    ) -> Result<crate::store::ReadResult, DynamoError> {
        let faults = &self.core.config.faults;
        let injected = [&faults.panic_on_key, &faults.slow_key]
            .iter()
            .any(|k| k.as_deref().is_some_and(|k| k.as_bytes() == key));
        if !injected && self.core.storage_fault().is_none() {
            // An engine that panics here falls back to the pool, where the panic is
            // caught and marks the storage failed.
            let cached =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.get_cached(key)));
            if let Ok(Ok(Some(read))) = cached {
                self.core.cached_reads.fetch_add(1, Ordering::Relaxed);
                return Ok(read);
            }
        }
        let (s, k) = (store.clone(), key.to_vec());
        self.engine_by(deadline, store.name(), key, move || {
            s.get(&k).map_err(DynamoError::from)
        })
        .await
    }

    /// An engine call that is not about one key (status, shutdown).
    pub(crate) async fn engine_any<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce() -> Result<T, DynamoError> + Send + 'static,
    ) -> Result<T, DynamoError> {
        self.engine(what, b"", f).await
    }

    /// Merges a history learned from a peer, off the event loop (it saves the file);
    /// returns the new view when it brought changes.
    pub async fn adopt(
        &self,
        history: crate::membership::History,
    ) -> Result<Option<Arc<super::Topology>>, DynamoError> {
        let core = self.core.clone();
        self.engine_any("membership", move || core.adopt(&history))
            .await
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        self.core.name()
    }

    /// Is `name` this node or a peer this node believes is up?
    pub fn is_healthy(&self, name: &str) -> bool {
        name == self.name() || self.core.health.is_up(name)
    }

    fn conns(&self, path: Path) -> &Rc<RefCell<HashMap<String, Peer>>> {
        match path {
            Path::Data => &self.peers,
            Path::Probe => &self.probe_conns,
        }
    }

    fn live_peer(&self, name: &str, path: Path) -> Option<internode::Client> {
        self.conns(path)
            .borrow()
            .get(name)
            .filter(|p| p.conn.alive())
            .map(|p| p.internode.clone())
    }

    async fn internode(&self, name: &str) -> Result<internode::Client, DynamoError> {
        self.connection(name, Path::Data).await
    }

    async fn connection(&self, name: &str, path: Path) -> Result<internode::Client, DynamoError> {
        if let Some(c) = self.live_peer(name, path) {
            return Ok(c);
        }
        let slot = match path {
            Path::Data => name.to_owned(),
            Path::Probe => format!("probe {name}"),
        };
        let lock = self
            .connecting
            .borrow_mut()
            .entry(slot)
            .or_default()
            .clone();
        let _connecting = lock.lock().await;
        if let Some(c) = self.live_peer(name, path) {
            return Ok(c);
        }
        let address = self.core.address(name)?;
        let conn =
            rpc::connect(&address, self.core.request_timeout(), self.core.max_message).await?;
        let internode = conn.internode();
        self.conns(path).borrow_mut().insert(
            name.to_owned(),
            Peer {
                conn,
                internode: internode.clone(),
            },
        );
        Ok(internode)
    }

    /// Forgets the connections and per-peer state of peers that are no longer
    /// members (they left or were removed), so these maps stay as small as the
    /// cluster.
    pub(crate) fn forget_departed(&self) {
        let Some(view) = self.core.view() else {
            return;
        };
        let members = view.member_names();
        let gone = |name: &String| !members.iter().any(|m| m == name);
        for map in [&self.peers, &self.probe_conns] {
            let departed: Vec<String> = map.borrow().keys().filter(|n| gone(n)).cloned().collect();
            for name in departed {
                if let Some(p) = map.borrow_mut().remove(&name) {
                    p.conn.close();
                }
            }
        }
        self.connecting.borrow_mut().retain(|slot, lock| {
            let name = slot.strip_prefix("probe ").unwrap_or(slot);
            // A lock someone holds stays until they are done.
            !gone(&name.to_owned()) || Rc::strong_count(lock) > 1
        });
        for name in self.core.health.names() {
            if gone(&name) {
                self.core.health.forget(&name);
            }
        }
    }

    /// The client-facing capability of peer `name` (for forwarding).
    pub async fn dynamo_of(&self, name: &str) -> Result<rpc::dynamo::Client, DynamoError> {
        if let Err(e) = self.internode(name).await {
            // It cannot be connected to: down.
            if e.kind == ErrorKind::Unavailable {
                self.give_up(name, &e.message);
            }
            return Err(e);
        }
        let peers = self.peers.borrow();
        let p = peers
            .get(name)
            .ok_or_else(|| DynamoError::unreachable(name, "connection closed while opening it"))?;
        Ok(p.conn.dynamo.clone())
    }

    /// `name` could not be connected to: marks it down. (There is no connection to
    /// close; one another caller opened meanwhile is left alone.)
    fn give_up(&self, name: &str, why: &str) {
        self.mark_down(name, why);
    }

    fn mark_down(&self, name: &str, why: &str) {
        if self.core.health.mark_down(name, why) {
            eprintln!("{}: peer {name} marked down: {why}", self.name());
        }
    }

    /// Runs a background `call` against peer `name` with the request timeout (see
    /// [`LocalNode::call_peer_by`]).
    pub async fn call_peer<T, F, Fut>(
        &self,
        name: &str,
        what: &str,
        call: F,
    ) -> Result<T, DynamoError>
    where
        F: FnOnce(internode::Client) -> Fut,
        Fut: Future<Output = Result<T, DynamoError>>,
    {
        self.call_peer_by(name, what, None, call).await
    }

    /// Runs `call` against peer `name` on the shared connection, under the request
    /// timeout and never past `deadline`. An answer marks the peer up; a connection
    /// that cannot be opened marks it down. A call that times out fails alone: the
    /// connection and its other calls go on. A connection that breaks is closed (the
    /// next call opens another). Either way the peer is then probed on a connection of
    /// its own (one probe at a time), and only a failed probe marks it down. A peer
    /// that answers `overloaded` is busy, not down.
    pub async fn call_peer_by<T, F, Fut>(
        &self,
        name: &str,
        what: &str,
        deadline: Option<&Deadline>,
        call: F,
    ) -> Result<T, DynamoError>
    where
        F: FnOnce(internode::Client) -> Fut,
        Fut: Future<Output = Result<T, DynamoError>>,
    {
        let limit = self.core.request_timeout();
        let timeout = deadline.map_or(limit, |d| d.cap(limit));
        if timeout.is_zero() {
            self.core.expired.fetch_add(1, Ordering::Relaxed);
            return Err(DynamoError::new(
                ErrorKind::Timeout,
                format!("the request's deadline passed before its {what} to {name} was sent"),
            ));
        }
        let connected = Cell::new(false);
        let attempt = async {
            let client = self.internode(name).await?;
            connected.set(true);
            call(client).await
        };
        let (result, timed_out) = match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => (r, false),
            Err(_) => (
                Err(DynamoError::new(
                    ErrorKind::Unavailable,
                    format!("{name} timed out after {} ms ({what})", timeout.as_millis()),
                )),
                true,
            ),
        };
        match &result {
            Ok(_) => {
                if self.core.health.mark_up(name) {
                    eprintln!("{}: peer {name} is up again", self.name());
                }
            }
            Err(e) if !timed_out && !connected.get() && e.kind == ErrorKind::Unavailable => {
                // It cannot be connected to: down.
                self.give_up(name, &e.message);
            }
            Err(e)
                if timed_out || matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Protocol) =>
            {
                // Neither a timeout nor a failure the peer reported closes the shared
                // connection; one that broke is not alive any more, and the next call
                // opens a fresh one (a peer that restarted is not down).
                if timed_out {
                    self.core.call_timeouts.fetch_add(1, Ordering::Relaxed);
                }
                // Slow or cut off is not dead yet: ask on a path of its own, in the
                // background; only a failed probe marks it down.
                let node = self.clone();
                let peer = name.to_owned();
                tokio::task::spawn_local(async move {
                    let _ = node.probe(&peer).await;
                });
            }
            Err(_) => {}
        }
        result
    }

    /// Reads one replica's versions of `key` (this node's or a peer's); `as_owner`: the
    /// peer is asked as one of the key's owners (see `Internode.read`). Never runs past
    /// `deadline`.
    pub async fn replica_read(
        &self,
        target: &str,
        store: &Arc<VersionedStore>,
        key: Rc<Vec<u8>>,
        as_owner: bool,
        deadline: Option<Deadline>,
    ) -> Result<ReplicaReply, DynamoError> {
        if target == self.name() {
            let rebuilding = self.core.rebuilding(store, &key);
            let read = self.read_local(store, &key, deadline).await?;
            return Ok(ReplicaReply {
                versions: read.siblings.into_versions(),
                rebuilding,
                reaped: read.reaped,
            });
        }
        let store_name = store.name().to_owned();
        let sent = self.call_deadline(deadline);
        let answer = self
            .call_peer_by(target, "replica read", deadline.as_ref(), |c| async move {
                rpc::call_replica_read(&c, target, &store_name, &key, as_owner, Some(&sent)).await
            })
            .await;
        let (versions, theirs) = match answer {
            // No owner in its rings (it serves a newer one): learn that view before
            // the read picks stand-ins, so that they come from the new ring.
            Err(e) if e.kind == ErrorKind::Quorum => {
                self.learn_within(target, deadline).await;
                return Err(e);
            }
            other => other?,
        };
        let mine = self.core.view().map_or(0, |v| v.version());
        if theirs > mine {
            // The replica serves a newer ring: learn it now rather than at the next
            // gossip round.
            let node = self.clone();
            let peer = target.to_owned();
            tokio::task::spawn_local(async move { node.learn_from(&peer).await });
        }
        Ok(versions)
    }

    /// Writes `payload` to one replica; `hint_for` makes it a stand-in's write.
    /// `step`: the membership view the write was planned with (see
    /// [`super::Topology::step_key`]; empty: not checked). `Ok(false)`: written, but
    /// the replica serves another view and it matters (see `Internode.write`); this
    /// node has learned the replica's view before returning, so the write can be
    /// planned again. The answer also names the versions other attempts of the
    /// written requests left on the replica. Never runs past `deadline`.
    pub(crate) async fn replica_write(
        &self,
        target: &str,
        store: &Arc<VersionedStore>,
        payload: &WritePayload,
        hint_for: Option<String>,
        step: &str,
        deadline: Option<Deadline>,
    ) -> Result<rpc::ReplicaAck, DynamoError> {
        if target == self.name() {
            let core = self.core.clone();
            let s = store.clone();
            let k = payload.key.to_vec();
            let v = payload.versions.to_vec();
            let dead = payload.reaped.as_deref().cloned();
            let held = self
                .engine_by(deadline, store.name(), &payload.key, move || {
                    let sent = Siblings::attempts_of(&v);
                    let (now, _) = core.hints.merge_with_reaped(
                        &s,
                        &k,
                        v,
                        dead.as_ref(),
                        hint_for.as_deref(),
                    )?;
                    Ok(now.other_attempts(&sent))
                })
                .await?;
            store
                .durable(store.durability_mark())
                .await
                .map_err(DynamoError::from)?;
            return Ok(rpc::ReplicaAck { agrees: true, held });
        }
        let sent = self.call_deadline(deadline);
        let write = rpc::ReplicaWrite {
            store: store.name(),
            key: &payload.key,
            encoded: &payload.encoded,
            hint_for: hint_for.as_deref(),
            step,
            reaped: payload.reaped.as_deref(),
            deadline: Some(&sent),
        };
        let ack = self
            .call_peer_by(target, "replica write", deadline.as_ref(), |c| async move {
                rpc::call_replica_write(&c, target, &write).await
            })
            .await?;
        if !ack.agrees {
            self.learn_within(target, deadline).await;
        }
        Ok(ack)
    }

    /// The deadline sent with one replica call: the request's, or the end of this
    /// call's timeout if that comes first (the replica stops when this node stops
    /// waiting for it); a background call (no deadline) gets the request timeout.
    fn call_deadline(&self, deadline: Option<Deadline>) -> Deadline {
        let call = Deadline::after(self.core.request_timeout());
        deadline.map_or(call, |d| d.min(call))
    }

    /// [`LocalNode::learn_from`], but never past `deadline`.
    async fn learn_within(&self, peer: &str, deadline: Option<Deadline>) {
        match deadline {
            Some(d) => {
                let _ = tokio::time::timeout(d.remaining(), self.learn_from(peer)).await;
            }
            None => self.learn_from(peer).await,
        }
    }

    /// One gossip exchange with `peer`, or, when one is running already, waiting for
    /// it: how a request that met a node with another view learns that view before
    /// it goes on.
    pub(crate) async fn learn_from(&self, peer: &str) {
        use futures::FutureExt;
        let running = self.learning.borrow().get(peer).cloned();
        let exchange = match running {
            Some(exchange) => exchange,
            None => {
                let (node, name) = (self.clone(), peer.to_owned());
                let exchange = async move {
                    let target = super::gossip::Target::Member(name.clone());
                    let _ = super::gossip::exchange(&node, &target).await;
                    node.learning.borrow_mut().remove(&name);
                }
                .boxed_local()
                .shared();
                self.learning
                    .borrow_mut()
                    .insert(peer.to_owned(), exchange.clone());
                exchange
            }
        };
        exchange.await;
    }

    /// Hands `versions` of `key` off to their owner `target`.
    pub async fn deliver_hint(
        &self,
        target: &str,
        store: &Arc<VersionedStore>,
        key: &[u8],
        versions: &Siblings,
    ) -> Result<(), DynamoError> {
        let encoded = rpc::encode_versions(versions.versions());
        let store_name = store.name().to_owned();
        let me = self.name().to_owned();
        self.call_peer(target, "hinted handoff", |c| async move {
            rpc::call_deliver_hint(&c, target, &store_name, key, &me, &encoded).await
        })
        .await
    }

    /// Probes `target` (see [`LocalNode::probe`]).
    pub async fn ping(&self, target: &str) -> Result<(), DynamoError> {
        self.probe(target).await
    }

    /// Probes `target` with a ping on a connection of its own, under the request
    /// timeout: an answer marks it up, no answer (or no connection) marks it down.
    /// While a probe of `target` runs (on any of the node's event loops), callers wait
    /// for that one instead of sending another.
    pub async fn probe(&self, target: &str) -> Result<(), DynamoError> {
        use futures::FutureExt;
        let running = self.probing.borrow().get(target).cloned();
        let probe = match running {
            Some(p) => p,
            None => {
                let (node, name) = (self.clone(), target.to_owned());
                let p = async move {
                    let core = node.core.clone();
                    let r = match core.health.probe_turn(&name) {
                        super::health::ProbeTurn::Mine(ticket) => {
                            let r = node.ping_once(&name).await;
                            drop(ticket);
                            r
                        }
                        // Another event loop probes it: its answer is ours.
                        super::health::ProbeTurn::Running(running) => {
                            let limit = core.request_timeout() + Duration::from_millis(100);
                            core.health.wait_probe(&name, running, limit).await;
                            let h = core.health.get(&name);
                            match h.up {
                                true => Ok(()),
                                false => Err(DynamoError::unreachable(
                                    &name,
                                    h.last_error.unwrap_or_else(|| "down".into()),
                                )),
                            }
                        }
                    };
                    node.probing.borrow_mut().remove(&name);
                    r
                }
                .boxed_local()
                .shared();
                self.probing
                    .borrow_mut()
                    .insert(target.to_owned(), p.clone());
                p
            }
        };
        probe.await
    }

    async fn ping_once(&self, target: &str) -> Result<(), DynamoError> {
        let me = self.name().to_owned();
        let timeout = self.core.request_timeout();
        let attempt = async {
            let c = self.connection(target, Path::Probe).await?;
            let name = rpc::call_ping(&c, target, &me).await?;
            if name != target {
                return Err(rpc::protocol(format!(
                    "{target}'s address answers as node {name:?}: check cluster.members"
                )));
            }
            Ok(())
        };
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err({
                self.core.call_timeouts.fetch_add(1, Ordering::Relaxed);
                DynamoError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "{target} did not answer a ping within {} ms",
                        timeout.as_millis()
                    ),
                )
            }),
        };
        match &result {
            Ok(()) => {
                if self.core.health.mark_up(target) {
                    eprintln!("{}: peer {target} is up again", self.name());
                }
            }
            Err(e) => {
                // The probe's own connection is opened afresh next time.
                if let Some(p) = self.probe_conns.borrow_mut().remove(target) {
                    p.conn.close();
                }
                self.mark_down(target, &e.message);
            }
        }
        result
    }

    /// The members other than this node, of the serving or the target ring.
    pub fn peers(&self) -> Vec<String> {
        self.core.view().map_or_else(Vec::new, |t| {
            t.member_names()
                .into_iter()
                .filter(|m| m != self.name())
                .collect()
        })
    }
}
