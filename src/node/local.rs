//! The node as seen from its event-loop thread: the shared core plus the `!Send`
//! connections to peers, and the replica operations (local ones on the engine threads,
//! remote ones over RPC, each with the request timeout).

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use crate::error::{DynamoError, ErrorKind};
use crate::rpc::{self, internode, Connection};
use crate::store::VersionedStore;
use crate::version::{Siblings, Version};

use super::NodeCore;

struct Peer {
    conn: Connection,
    internode: internode::Client,
}

/// A node's state on its RPC thread. Cheap to clone (`Rc`).
#[derive(Clone)]
pub struct LocalNode {
    /// The thread-safe core.
    pub core: Arc<NodeCore>,
    peers: Rc<RefCell<HashMap<String, Peer>>>,
    connecting: Rc<tokio::sync::Mutex<()>>,
}

/// Runs a blocking engine call on the engine threads, off the event loop.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DynamoError> + Send + 'static,
) -> Result<T, DynamoError> {
    super::engine_threads::EngineThreads::global().run(f).await
}

impl LocalNode {
    /// Wraps the core for use on this thread.
    pub fn new(core: Arc<NodeCore>) -> Self {
        Self {
            core,
            peers: Rc::default(),
            connecting: Rc::new(tokio::sync::Mutex::new(())),
        }
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
        // One connect at a time: a burst of requests to a peer opens one connection.
        let _connecting = self.connecting.lock().await;
        if let Some(c) = self.live_peer(name) {
            return Ok(c);
        }
        let address = self.core.address(name)?.to_owned();
        let conn = rpc::connect(&address, self.core.request_timeout()).await?;
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

    /// Runs `call` against peer `name` with the request timeout. A failure marks the
    /// peer down and drops its connection; a success marks it up.
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
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(DynamoError::new(
                ErrorKind::Unavailable,
                format!("{name} timed out after {} ms ({what})", timeout.as_millis()),
            )),
        };
        match &result {
            Ok(_) => {
                if self.core.health.mark_up(name) {
                    eprintln!("{}: peer {name} is up again", self.name());
                }
            }
            Err(e) if e.kind == ErrorKind::Unavailable || e.kind == ErrorKind::Protocol => {
                if let Some(p) = self.peers.borrow_mut().remove(name) {
                    p.conn.poison();
                }
                if self.core.health.mark_down(name, &e.message) {
                    eprintln!("{}: peer {name} marked down: {}", self.name(), e.message);
                }
            }
            Err(_) => {}
        }
        result
    }

    /// Reads one replica's versions of `key` (this node's or a peer's).
    pub async fn replica_read(
        &self,
        target: &str,
        store: &Arc<VersionedStore>,
        key: Rc<Vec<u8>>,
    ) -> Result<Vec<Version>, DynamoError> {
        if target == self.name() {
            let s = store.clone();
            let k = key.to_vec();
            return blocking(move || {
                Ok(s.get(&k)
                    .map_err(DynamoError::from)?
                    .siblings
                    .into_versions())
            })
            .await;
        }
        let max = store.config().max_value_size as u64;
        let store_name = store.name().to_owned();
        self.call_peer(target, "replica read", |c| async move {
            let mut req = c.read_request();
            req.get().set_store(store_name.as_str());
            req.get().set_key(&key);
            let resp = req
                .send()
                .promise
                .await
                .map_err(|e| rpc::from_capnp(target, e))?;
            let r = resp.get().map_err(|e| rpc::from_capnp(target, e))?;
            if let Some(f) = rpc::read_failure(r.has_failure(), r.get_failure()) {
                return Err(f);
            }
            rpc::decode_versions(r.get_versions(), max)
        })
        .await
    }

    /// Writes a version set to one replica; `hint_for` makes it a stand-in's write.
    pub async fn replica_write(
        &self,
        target: &str,
        store: &Arc<VersionedStore>,
        key: Rc<Vec<u8>>,
        versions: Rc<Vec<Version>>,
        encoded: Rc<Vec<Vec<u8>>>,
        hint_for: Option<String>,
    ) -> Result<(), DynamoError> {
        if target == self.name() {
            let core = self.core.clone();
            let s = store.clone();
            let k = key.to_vec();
            let v = versions.to_vec();
            return blocking(move || {
                s.merge_remote(&k, v).map_err(DynamoError::from)?;
                if let Some(owner) = hint_for {
                    core.hints
                        .record(&s, &owner, &k)
                        .map_err(DynamoError::from)?;
                }
                Ok(())
            })
            .await;
        }
        let store_name = store.name().to_owned();
        self.call_peer(target, "replica write", |c| async move {
            let mut req = c.write_request();
            {
                let mut p = req.get();
                p.set_store(store_name.as_str());
                p.set_key(&key);
                rpc::set_versions(p.reborrow().init_versions(encoded.len() as u32), &encoded);
                if let Some(h) = &hint_for {
                    p.set_hint_for(h.as_str());
                }
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

    /// Records a hint for `owner` in `store` (engine threads).
    pub async fn record_hint(
        &self,
        store: &Arc<VersionedStore>,
        owner: String,
        key: Vec<u8>,
    ) -> Result<(), DynamoError> {
        let core = self.core.clone();
        let s = store.clone();
        blocking(move || {
            core.hints
                .record(&s, &owner, &key)
                .map_err(DynamoError::from)
        })
        .await
    }

    /// The members other than this node.
    pub fn peers(&self) -> Vec<String> {
        self.core
            .ring
            .members()
            .iter()
            .filter(|m| m.name != self.name())
            .map(|m| m.name.clone())
            .collect()
    }
}
