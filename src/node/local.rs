//! The node as seen from its event-loop thread: the shared core plus the `!Send`
//! connections to peers, and the replica operations (local ones on the engine threads,
//! remote ones over RPC, each with the request timeout).

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

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

/// Consecutive timed-out calls after which a peer's connection is given up (closed)
/// and the peer marked down. One slow reply fails only its own call.
const TIMEOUTS_BEFORE_DOWN: u32 = 3;

/// A node's state on its RPC thread. Cheap to clone (`Rc`).
#[derive(Clone)]
pub struct LocalNode {
    /// The thread-safe core.
    pub core: Arc<NodeCore>,
    peers: Rc<RefCell<HashMap<String, Peer>>>,
    /// One connect at a time per peer: a burst of requests opens one connection, and
    /// a peer that does not answer its SYNs never delays connecting to another.
    connecting: Rc<RefCell<HashMap<String, Rc<tokio::sync::Mutex<()>>>>>,
    /// Per peer, calls that timed out since its last answer.
    timeouts: Rc<RefCell<HashMap<String, u32>>>,
    /// Per peer, the gossip exchange running with it because a reply showed it serves
    /// another view: later callers wait for that one (whoever polls it drives it, so
    /// a caller that goes away leaves nothing stuck).
    learning: Rc<RefCell<HashMap<String, Learning>>>,
}

/// A gossip exchange several requests may wait for.
type Learning = futures::future::Shared<futures::future::LocalBoxFuture<'static, ()>>;

impl LocalNode {
    /// Wraps the core for use on this thread.
    pub fn new(core: Arc<NodeCore>) -> Self {
        Self {
            core,
            peers: Rc::default(),
            connecting: Rc::default(),
            timeouts: Rc::default(),
            learning: Rc::default(),
        }
    }

    /// Runs a blocking engine call for `key` of `store` on the engine threads, off the
    /// event loop. A panic in the engine is caught and logged with the store and key,
    /// marks this node's storage failed (it then refuses requests and pings), and
    /// answers as an internal error.
    pub(crate) async fn engine<T: Send + 'static>(
        &self,
        store: &str,
        key: &[u8],
        f: impl FnOnce() -> Result<T, DynamoError> + Send + 'static,
    ) -> Result<T, DynamoError> {
        let inject = self
            .core
            .config
            .faults
            .panic_on_key
            .as_deref()
            .is_some_and(|k| k.as_bytes() == key);
        let run = move || {
            if inject {
                panic!("injected fault: panic_on_key");
            }
            f()
        };
        match super::engine_threads::EngineThreads::global()
            .run(run)
            .await
        {
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

    fn live_peer(&self, name: &str) -> Option<internode::Client> {
        self.peers
            .borrow()
            .get(name)
            .filter(|p| p.conn.alive())
            .map(|p| p.internode.clone())
    }

    async fn internode(&self, name: &str) -> Result<internode::Client, DynamoError> {
        if let Some(c) = self.live_peer(name) {
            return Ok(c);
        }
        let lock = self
            .connecting
            .borrow_mut()
            .entry(name.to_owned())
            .or_default()
            .clone();
        let _connecting = lock.lock().await;
        if let Some(c) = self.live_peer(name) {
            return Ok(c);
        }
        let address = self.core.address(name)?;
        let conn =
            rpc::connect(&address, self.core.request_timeout(), self.core.max_message).await?;
        let internode = conn.dynamo.internode_request().send().pipeline.get_node();
        self.peers.borrow_mut().insert(
            name.to_owned(),
            Peer {
                conn,
                internode: internode.clone(),
            },
        );
        Ok(internode)
    }

    /// The client-facing capability of peer `name` (for forwarding).
    pub async fn dynamo_of(&self, name: &str) -> Result<rpc::dynamo::Client, DynamoError> {
        self.internode(name).await?;
        let peers = self.peers.borrow();
        let p = peers
            .get(name)
            .ok_or_else(|| DynamoError::unreachable(name, "connection closed while opening it"))?;
        Ok(p.conn.dynamo.clone())
    }

    /// Gives up the connection to `name` (closing it) and marks the peer down.
    fn give_up(&self, name: &str, why: &str) {
        if let Some(p) = self.peers.borrow_mut().remove(name) {
            p.conn.close();
        }
        if self.core.health.mark_down(name, why) {
            eprintln!("{}: peer {name} marked down: {why}", self.name());
        }
    }

    /// Runs `call` against peer `name` with the request timeout. A success marks the
    /// peer up. A broken connection or a protocol error gives the connection up and
    /// marks the peer down; a timeout fails this call only, unless the peer has now
    /// timed out [`TIMEOUTS_BEFORE_DOWN`] times in a row (or this was a ping).
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
        let timeout = self.core.request_timeout();
        let attempt = async {
            let client = self.internode(name).await?;
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
                self.timeouts.borrow_mut().remove(name);
                if self.core.health.mark_up(name) {
                    eprintln!("{}: peer {name} is up again", self.name());
                }
            }
            Err(e) if timed_out => {
                self.core.call_timeouts.fetch_add(1, Ordering::Relaxed);
                let streak = {
                    let mut t = self.timeouts.borrow_mut();
                    let n = t.entry(name.to_owned()).or_insert(0);
                    *n += 1;
                    *n
                };
                // Background calls (probes, gossip) mark the peer down at once.
                if what == "ping" || what == "gossip" || streak >= TIMEOUTS_BEFORE_DOWN {
                    self.timeouts.borrow_mut().remove(name);
                    self.give_up(name, &e.message);
                }
            }
            Err(e) if e.kind == ErrorKind::Unavailable || e.kind == ErrorKind::Protocol => {
                self.give_up(name, &e.message);
            }
            Err(_) => {}
        }
        result
    }

    /// Reads one replica's versions of `key` (this node's or a peer's); `as_owner`: the
    /// peer is asked as one of the key's owners (see `Internode.read`).
    pub async fn replica_read(
        &self,
        target: &str,
        store: &Arc<VersionedStore>,
        key: Rc<Vec<u8>>,
        as_owner: bool,
    ) -> Result<ReplicaReply, DynamoError> {
        if target == self.name() {
            let s = store.clone();
            let k = key.to_vec();
            let rebuilding = self.core.rebuilding(store, &key);
            return self
                .engine(store.name(), &key, move || {
                    let read = s.get(&k).map_err(DynamoError::from)?;
                    Ok(ReplicaReply {
                        versions: read.siblings.into_versions(),
                        rebuilding,
                        reaped: read.reaped,
                    })
                })
                .await;
        }
        let store_name = store.name().to_owned();
        let answer = self
            .call_peer(target, "replica read", |c| async move {
                rpc::call_replica_read(&c, target, &store_name, &key, as_owner).await
            })
            .await;
        let (versions, theirs) = match answer {
            // No owner in its rings (it serves a newer one): learn that view before
            // the read picks stand-ins, so that they come from the new ring.
            Err(e) if e.kind == ErrorKind::Quorum => {
                self.learn_from(target).await;
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

    /// Writes a version set to one replica; `hint_for` makes it a stand-in's write.
    /// `step`: the membership view the write was planned with (see
    /// [`super::Topology::step_key`]; empty: not checked). `Ok(false)`: written, but
    /// the replica serves another view and it matters (see `Internode.write`); this
    /// node has learned the replica's view before returning, so the write can be
    /// planned again.
    #[allow(clippy::too_many_arguments)]
    pub async fn replica_write(
        &self,
        target: &str,
        store: &Arc<VersionedStore>,
        key: Rc<Vec<u8>>,
        versions: Rc<Vec<Version>>,
        encoded: Rc<Vec<Vec<u8>>>,
        hint_for: Option<String>,
        step: &str,
        reaped: Option<Rc<Context>>,
    ) -> Result<bool, DynamoError> {
        if target == self.name() {
            let core = self.core.clone();
            let s = store.clone();
            let k = key.to_vec();
            let v = versions.to_vec();
            let dead = reaped.as_deref().cloned();
            return self
                .engine(store.name(), &key, move || {
                    core.hints
                        .merge_with_reaped(&s, &k, v, dead.as_ref(), hint_for.as_deref())?;
                    Ok(true)
                })
                .await;
        }
        let store_name = store.name().to_owned();
        let agrees = self
            .call_peer(target, "replica write", |c| async move {
                rpc::call_replica_write(
                    &c,
                    target,
                    &store_name,
                    &key,
                    &encoded,
                    hint_for.as_deref(),
                    step,
                    reaped.as_deref(),
                )
                .await
            })
            .await?;
        if !agrees {
            self.learn_from(target).await;
        }
        Ok(agrees)
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
            let mut req = c.deliver_hint_request();
            {
                let mut p = req.get();
                p.set_store(store_name.as_str());
                p.set_key(key);
                p.set_from(me.as_str());
                rpc::set_versions(p.reborrow().init_versions(encoded.len() as u32), &encoded);
            }
            let resp = req
                .send()
                .promise
                .await
                .map_err(|e| rpc::from_capnp(target, e))?;
            let r = resp.get().map_err(|e| rpc::from_capnp(target, e))?;
            match rpc::read_failure(r.has_failure(), r.get_failure()) {
                Some(f) => Err(f),
                None => Ok(()),
            }
        })
        .await
    }

    /// Pings `target`; marks it up or down.
    pub async fn ping(&self, target: &str) -> Result<(), DynamoError> {
        let me = self.name().to_owned();
        self.call_peer(target, "ping", |c| async move {
            let mut req = c.ping_request();
            req.get().set_from(me.as_str());
            let resp = req
                .send()
                .promise
                .await
                .map_err(|e| rpc::from_capnp(target, e))?;
            let name = rpc::text(
                resp.get()
                    .map_err(|e| rpc::from_capnp(target, e))?
                    .get_name(),
            )?;
            if name != target {
                return Err(rpc::protocol(format!(
                    "{target}'s address answers as node {name:?}: check cluster.members"
                )));
            }
            Ok(())
        })
        .await
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
