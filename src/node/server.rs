//! The node's RPC servers (client-facing `Dynamo`, `Internode`), the accept loop and
//! clean shutdown on SIGTERM / Ctrl-C.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::api::{
    GetRequest, GetResponse, MemberStatus, NodeStatus, PutRequest, PutResponse, StoreSummary,
};
use crate::error::{DynamoError, ErrorKind};
use crate::quorum::ReplicaReply;
use crate::rpc::anti_entropy as ae_rpc;
use crate::rpc::{self, dynamo, internode};
use crate::store::VersionedStore;
use crate::version::{Siblings, Version};

use super::local::LocalNode;
use super::{admission, anti_entropy, gossip, handoff, rebuild, transfer};
use super::{NodeCore, NodeError};

/// How long shutdown waits for in-flight requests.
const DRAIN: Duration = Duration::from_secs(10);

pub use crate::api::MAX_KEYS_PER_PAGE;

/// The client-facing interface as one connection sees it: each accepted connection
/// gets its own, with its own count of requests in flight.
struct DynamoServer {
    node: LocalNode,
    internode: internode::Client,
    stopping: Arc<AtomicBool>,
    /// Requests in flight on this connection.
    in_flight: Rc<Cell<usize>>,
}

/// Counts a request on its connection until dropped.
struct ConnectionSlot(Rc<Cell<usize>>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

struct InternodeServer {
    node: LocalNode,
}

/// The deadline of one forward of a request due at `deadline`: half the time left.
fn forward_deadline(deadline: &crate::api::Deadline) -> crate::api::Deadline {
    crate::api::Deadline::after(deadline.remaining() / 2)
}

/// The failure of a request whose deadline passed while a forward of it to `owner` ran.
fn deadline_passed(what: &str, owner: &str) -> DynamoError {
    DynamoError::new(
        ErrorKind::Timeout,
        format!(
            "the request's deadline passed while its {what} was forwarded to {owner}; a write \
             may or may not have been applied (retrying with the same request id is safe)"
        ),
    )
}

/// Summaries of a node's stores.
pub(crate) fn store_summaries(core: &NodeCore) -> Vec<StoreSummary> {
    core.stores
        .values()
        .map(|s| {
            let c = s.config();
            StoreSummary {
                name: c.name.clone(),
                engine: c.engine.clone(),
                n: c.n as u8,
                r: c.r as u8,
                w: c.w as u8,
                policy: c.policy.to_string(),
                max_value_size: c.max_value_size as u64,
            }
        })
        .collect()
}

/// `partition` if `st` has it, else a bad-request error saying how many it has.
fn existing_partition(st: &VersionedStore, partition: u32) -> Result<u32, DynamoError> {
    if partition < st.partitions() {
        return Ok(partition);
    }
    Err(DynamoError::new(
        ErrorKind::BadRequest,
        format!(
            "partition {partition} does not exist: store {} has {} partitions",
            st.name(),
            st.partitions()
        ),
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn member_statuses(node: &LocalNode) -> Vec<MemberStatus> {
    let core = &node.core;
    let Some(view) = core.view() else {
        return Vec::new();
    };
    view.member_names()
        .into_iter()
        .map(|name| {
            let h = core.health.get(&name);
            let me = name == node.name();
            let zone = view
                .ring()
                .member(&name)
                .or_else(|| view.target().member(&name))
                .and_then(|m| m.zone.clone());
            MemberStatus {
                address: core.address(&name).unwrap_or_default(),
                zone,
                up: me || h.up,
                partitions: view.ring().partitions_of(&name).len() as u32,
                last_error: if me || h.up { None } else { h.last_error },
                name,
            }
        })
        .collect()
}

impl DynamoServer {
    /// Admits a request: counted in flight on the node and on this connection until the
    /// guards drop, or refused at once as `overloaded` when either limit is reached.
    fn admit(&self) -> Result<(super::InFlight<'_>, ConnectionSlot), DynamoError> {
        let core = &self.node.core;
        let limit = core.config.node.max_in_flight_per_connection;
        if self.in_flight.get() >= limit {
            core.overloaded.fetch_add(1, Ordering::Relaxed);
            return Err(DynamoError::new(
                ErrorKind::Overloaded,
                format!(
                    "node {} is overloaded: {limit} requests in flight on this connection \
                     (node.max_in_flight_per_connection); the request was refused untouched: \
                     try another node after a short backoff",
                    core.name()
                ),
            ));
        }
        let node_slot = core.request_started()?;
        self.in_flight.set(self.in_flight.get() + 1);
        Ok((node_slot, ConnectionSlot(self.in_flight.clone())))
    }

    fn check_open(&self) -> Result<(), DynamoError> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err(DynamoError::new(
                ErrorKind::Unavailable,
                format!("node {} is shutting down", self.node.name()),
            ));
        }
        if let Some(why) = self.node.core.storage_fault() {
            // Unavailable, so clients move on to another node.
            return Err(DynamoError::new(ErrorKind::Unavailable, why));
        }
        Ok(())
    }

    /// Owners of the key this node could forward to, in preference order (server-driven
    /// coordination). Empty when this node coordinates itself.
    fn forward_targets(&self, store: &VersionedStore, key: &[u8], forwarded: bool) -> Vec<String> {
        if forwarded || self.node.core.config.faults.never_forward || self.node.in_top_n(store, key)
        {
            return Vec::new();
        }
        self.node
            .top_n(store, key)
            .into_iter()
            .filter(|m| self.node.is_healthy(m))
            .collect()
    }

    /// A forward failed: an owner that could not be connected to was marked down (by
    /// [`LocalNode::dynamo_of`]); a forward that timed out or an owner that is busy is
    /// not, since busy is not dead.
    fn forward_failed(&self, owner: &str, e: &DynamoError) {
        eprintln!(
            "{}: forward to {owner} failed, trying the next coordinator: {}",
            self.node.name(),
            e.message
        );
    }

    async fn handle_get(
        &self,
        mut req: GetRequest,
        forwarded: bool,
    ) -> Result<GetResponse, DynamoError> {
        self.check_open()?;
        let deadline = self.node.core.deadline_of(req.deadline);
        req.deadline = Some(deadline);
        let st = self.node.core.store(&req.store)?.clone();
        for owner in self.forward_targets(&st, &req.key, forwarded) {
            // Half the time left, so that another owner (or this node) can still take
            // the request if this one cannot; the owner is told that shorter deadline.
            let part = forward_deadline(&deadline);
            let fwd = GetRequest {
                deadline: Some(part),
                ..req.clone()
            };
            let attempt = async {
                let d = self.node.dynamo_of(&owner).await?;
                // A failure the owner reports is the answer; only transport errors and
                // a busy owner move on to the next owner.
                match rpc::call_get(&d, &owner, &fwd, true).await {
                    Err(e) if matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Overloaded) => {
                        Err(e)
                    }
                    answer => Ok(answer),
                }
            };
            match tokio::time::timeout(part.remaining(), attempt).await {
                Ok(Ok(answer)) => return answer,
                Ok(Err(e)) => self.forward_failed(&owner, &e),
                Err(_) => self.forward_failed(&owner, &deadline_passed("get", &owner)),
            };
            if deadline.passed() {
                return Err(deadline_passed("get", &owner));
            }
        }
        let out = self
            .node
            .coordinate_get(&st, req.key, req.r, deadline)
            .await?;
        let mut answer =
            GetResponse::from_siblings(&out.siblings, out.context, self.node.name().to_owned());
        answer.ring_version = self.node.core.view().map_or(0, |v| v.version());
        Ok(answer)
    }

    async fn handle_put(
        &self,
        mut req: PutRequest,
        forwarded: bool,
    ) -> Result<PutResponse, DynamoError> {
        self.check_open()?;
        let deadline = self.node.core.deadline_of(req.deadline);
        req.deadline = Some(deadline);
        let st = self.node.core.store(&req.store)?.clone();
        for owner in self.forward_targets(&st, &req.key, forwarded) {
            // As for gets: half the time left, told to the owner.
            let part = forward_deadline(&deadline);
            let fwd = rpc::WriteRequest {
                store: &req.store,
                key: &req.key,
                value: req.value.as_deref(),
                context: req.context.as_deref().unwrap_or(""),
                w: req.w,
                request_id: req.request_id,
                retry: req.retry,
                deadline: Some(part),
            };
            let attempt = async {
                let d = self.node.dynamo_of(&owner).await?;
                let answer = rpc::call_put(&d, &owner, &fwd, true).await;
                match answer {
                    Err(e) if matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Overloaded) => {
                        Err(e)
                    }
                    answer => Ok(answer),
                }
            };
            let outcome = tokio::time::timeout(part.remaining(), attempt).await;
            match outcome {
                Ok(Ok(answer)) => return answer,
                // Refused untouched: the next attempt is no retry.
                Ok(Err(e)) if e.kind == ErrorKind::Overloaded => self.forward_failed(&owner, &e),
                // It may have been applied: the next attempt is a retry.
                Ok(Err(e)) => {
                    req.retry = true;
                    self.forward_failed(&owner, &e)
                }
                Err(_) => {
                    req.retry = true;
                    self.forward_failed(&owner, &deadline_passed("write", &owner))
                }
            };
            if deadline.passed() {
                return Err(deadline_passed("write", &owner));
            }
        }
        let token = self.node.coordinate_put(&st, req).await?;
        let delay = self.node.core.config.faults.delay_write_reply_ms;
        if delay > 0 {
            // Fault injection: the write is applied, its reply comes late.
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        Ok(PutResponse {
            context: token,
            coordinator: self.node.name().to_owned(),
            ring_version: self.node.core.view().map_or(0, |v| v.version()),
        })
    }

    async fn handle_status(&self) -> Result<NodeStatus, DynamoError> {
        let core = &self.node.core;
        let mut hints: BTreeMap<String, u64> = BTreeMap::new();
        let mut hints_for_non_members: BTreeMap<String, u64> = BTreeMap::new();
        let view = core.view();
        for s in core.stores.keys() {
            for (owner, n) in core.hints.backlog(s) {
                let to = if view
                    .as_ref()
                    .is_some_and(|v| v.target().member(&owner).is_some())
                {
                    &mut hints
                } else {
                    &mut hints_for_non_members
                };
                *to.entry(owner).or_insert(0) += n;
            }
        }
        Ok(NodeStatus {
            node: core.name().to_owned(),
            address: core.config.node.listen.clone(),
            node_id: core.identity.node_id.clone(),
            uptime_ms: core.started.elapsed().as_millis() as u64,
            in_flight: core.in_flight.load(Ordering::SeqCst).saturating_sub(1),
            members: member_statuses(&self.node),
            hints,
            hints_for_non_members,
            stores: store_summaries(core),
            unhealthy: core.storage_fault(),
            call_timeouts: core
                .call_timeouts
                .load(std::sync::atomic::Ordering::Relaxed),
            ring_version: view.as_ref().map_or(0, |v| v.version()),
            membership_changes: view.as_ref().map_or(0, |v| v.history().len() as u32),
            membership_digest: view.as_ref().map_or_else(String::new, |v| hex(&v.digest())),
            ring_digest: view
                .as_ref()
                .map_or_else(String::new, |v| v.serving_digest()),
            target_ring_version: view.as_ref().map_or(0, |v| v.steps().len() as u64),
            transfer: core.transfers.snapshot(),
            anti_entropy: Some(core.aae.status(core)),
            load: Some(core.load_status()),
        })
    }
}

impl dynamo::Server for DynamoServer {
    async fn get(
        self: Rc<Self>,
        params: dynamo::GetParams,
        mut results: dynamo::GetResults,
    ) -> Result<(), capnp::Error> {
        let started = Instant::now();
        let answer = match (rpc::read_get_params(params.get()?), self.admit()) {
            (Ok((req, fwd)), Ok(_slots)) => {
                let answer = self.handle_get(req, fwd).await;
                // Refusals are not latency samples (they would hide the overload).
                self.node.core.admission.record(started.elapsed());
                answer
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        rpc::answer_get(results.get().init_reply(), &answer);
        Ok(())
    }

    async fn put(
        self: Rc<Self>,
        params: dynamo::PutParams,
        mut results: dynamo::PutResults,
    ) -> Result<(), capnp::Error> {
        let started = Instant::now();
        let answer = match (rpc::read_put_params(params.get()?), self.admit()) {
            (Ok((req, fwd)), Ok(_slots)) => {
                let answer = self.handle_put(req, fwd).await;
                self.node.core.admission.record(started.elapsed());
                answer
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        rpc::answer_put(results.get().init_reply(), &answer);
        Ok(())
    }

    async fn delete(
        self: Rc<Self>,
        params: dynamo::DeleteParams,
        mut results: dynamo::DeleteResults,
    ) -> Result<(), capnp::Error> {
        let started = Instant::now();
        let answer = match (rpc::read_delete_params(params.get()?), self.admit()) {
            (Ok((req, fwd)), Ok(_slots)) => {
                let answer = self.handle_put(req, fwd).await;
                self.node.core.admission.record(started.elapsed());
                answer
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        rpc::answer_put(results.get().init_reply(), &answer);
        Ok(())
    }

    async fn ring(
        self: Rc<Self>,
        _: dynamo::RingParams,
        mut results: dynamo::RingResults,
    ) -> Result<(), capnp::Error> {
        let core = &self.node.core;
        let view = match core.topology() {
            Ok(v) => v,
            Err(e) => return Err(capnp::Error::failed(e.message)),
        };
        rpc::write_ring_reply(
            results.get().init_reply(),
            &view.ring().to_json(),
            &member_statuses(&self.node),
            &store_summaries(core),
        );
        Ok(())
    }

    async fn status(
        self: Rc<Self>,
        _: dynamo::StatusParams,
        mut results: dynamo::StatusResults,
    ) -> Result<(), capnp::Error> {
        let _in = self.node.core.request_counted();
        let status = self
            .handle_status()
            .await
            .map_err(|e| capnp::Error::failed(e.message))?;
        rpc::write_status(results.get().init_reply(), &status);
        Ok(())
    }

    async fn admin(
        self: Rc<Self>,
        params: dynamo::AdminParams,
        mut results: dynamo::AdminResults,
    ) -> Result<(), capnp::Error> {
        let _in = self.node.core.request_counted();
        let p = params.get()?;
        let answer = async {
            self.check_open()?;
            let request = rpc::read_admin_params(p)?;
            super::admin::handle(&self.node, request).await
        }
        .await;
        rpc::write_admin_reply(results.get(), &answer);
        Ok(())
    }

    async fn internode(
        self: Rc<Self>,
        _: dynamo::InternodeParams,
        mut results: dynamo::InternodeResults,
    ) -> Result<(), capnp::Error> {
        rpc::write_internode_reply(results.get(), self.internode.clone());
        Ok(())
    }
}

impl InternodeServer {
    /// Fault injection: a slow replica for one key.
    async fn maybe_slow(&self, key: &[u8]) {
        let f = &self.node.core.config.faults;
        if f.slow_key
            .as_deref()
            .is_some_and(|slow| slow.as_bytes() == key)
        {
            tokio::time::sleep(Duration::from_millis(f.slow_ms)).await;
        }
    }

    /// The store `name`, unless this node's storage failed.
    fn store_named(&self, name: &str) -> Result<Arc<VersionedStore>, DynamoError> {
        if let Some(why) = self.node.core.storage_fault() {
            return Err(DynamoError::new(ErrorKind::Unavailable, why));
        }
        Ok(self.node.core.store(name)?.clone())
    }

    /// The value limit of store `name` (for decoding what a peer sends).
    fn max_value_of(&self, name: &str) -> Result<u64, DynamoError> {
        Ok(self.store_named(name)?.config().max_value_size as u64)
    }
}

impl InternodeServer {
    /// A `Timeout` failure, counted, when the caller's deadline passed before this node
    /// got to the call: the work is dropped untouched.
    fn check_deadline(
        &self,
        deadline: Option<&crate::api::Deadline>,
        what: &str,
    ) -> Result<(), DynamoError> {
        match deadline {
            Some(d) if d.passed() => {
                self.node.core.expired.fetch_add(1, Ordering::Relaxed);
                Err(DynamoError::new(
                    ErrorKind::Timeout,
                    format!(
                        "node {}: the caller's deadline passed before its {what} was served; \
                         dropped unrun",
                        self.node.name()
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Merges versions from a peer into this replica; with `hint_for` this node is a
    /// stand-in and records the hint in the same atomic batch. With `durable` the engine
    /// is synced before the answer (a delivered hint: the stand-in drops its copy once
    /// this node acknowledged). Dropped unrun once the caller's deadline passed.
    /// Merges an incoming write; answers with the versions other attempts of its
    /// requests left here (see `Internode.write`).
    async fn merge_in(
        &self,
        w: rpc::IncomingWrite,
        durable: bool,
    ) -> Result<Vec<Version>, DynamoError> {
        self.check_deadline(w.deadline.as_ref(), "replica write")?;
        let st = self.store_named(&w.store)?;
        let core = self.node.core.clone();
        let rpc::IncomingWrite {
            key,
            versions,
            hint_for,
            reaped,
            deadline,
            ..
        } = w;
        let (k, name) = (key.clone(), st.name().to_owned());
        let store = st.clone();
        let held = self
            .node
            .engine_by(deadline, &name, &key, move || {
                let sent = Siblings::attempts_of(&versions);
                let (now, _) = core.hints.merge_with_reaped(
                    &st,
                    &k,
                    versions,
                    reaped.as_ref(),
                    hint_for.as_deref(),
                )?;
                if durable {
                    st.sync()?;
                }
                Ok(now.other_attempts(&sent))
            })
            .await?;
        // A `sync` store answers once the write is on disk (group commit).
        store
            .durable(store.durability_mark())
            .await
            .map_err(DynamoError::from)?;
        Ok(held)
    }
}

impl internode::Server for InternodeServer {
    async fn read(
        self: Rc<Self>,
        params: internode::ReadParams,
        mut results: internode::ReadResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let answer = async {
            let req = rpc::read_replica_read_params(p)?;
            self.maybe_slow(&req.key).await;
            self.check_deadline(req.deadline.as_ref(), "replica read")?;
            let st = self.store_named(&req.store)?;
            let rebuilding = self.node.core.rebuilding(&st, &req.key);
            let read = self.node.read_local(&st, &req.key, req.deadline).await?;
            if req.as_owner && read.siblings.is_empty() {
                self.node.core.check_owner(&req.store, &req.key)?;
            }
            Ok::<_, DynamoError>(ReplicaReply {
                versions: read.siblings.into_versions(),
                rebuilding,
                reaped: read.reaped,
            })
        }
        .await;
        let ring_version = self.node.core.view().map_or(0, |v| v.version());
        rpc::write_replica_read_reply(results.get(), &answer, ring_version);
        Ok(())
    }

    async fn write(
        self: Rc<Self>,
        params: internode::WriteParams,
        mut results: internode::WriteResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let answer = async {
            let w = rpc::read_replica_write_params(p, |s| self.max_value_of(s))?;
            self.maybe_slow(&w.key).await;
            // The coordinator planned with another view, and it matters here: a change
            // is pending (its receivers need the write too) or this node is no owner.
            let differs = !w.step.is_empty()
                && self.node.core.view().is_some_and(|v| {
                    v.step_key() != w.step
                        && ((v.next_step().is_some() && !v.next_receivers().is_empty())
                            || !self.node.core.is_owner(&v, &w.store, &w.key))
                });
            self.merge_in(w, false).await.map(|held| (differs, held))
        }
        .await;
        rpc::write_replica_write_reply(results.get(), &answer);
        Ok(())
    }

    async fn deliver_hint(
        self: Rc<Self>,
        params: internode::DeliverHintParams,
        mut results: internode::DeliverHintResults,
    ) -> Result<(), capnp::Error> {
        // The sender names itself in `from`; a delivered hint is a plain merge here.
        let p = params.get()?;
        let answer = async {
            let w = rpc::read_deliver_hint_params(p, |s| self.max_value_of(s))?;
            self.merge_in(w, true).await.map(drop)
        }
        .await;
        if let Err(e) = answer {
            rpc::write_failure(results.get().init_failure(), &e);
        }
        Ok(())
    }

    async fn keys(
        self: Rc<Self>,
        params: internode::KeysParams,
        mut results: internode::KeysResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let answer = async {
            // At most 10,000 keys a page, so one reply stays far below any message limit.
            let page = rpc::read_keys_params(p)?;
            let st = self.store_named(&page.store)?;
            let partition = existing_partition(&st, page.partition)?;
            self.node
                .engine_any("listing keys", move || {
                    Ok(st.keys_after(partition, &page.after, page.limit)?)
                })
                .await
        }
        .await;
        rpc::write_keys_reply(results.get(), &answer);
        Ok(())
    }

    async fn partition_records(
        self: Rc<Self>,
        params: internode::PartitionRecordsParams,
        mut results: internode::PartitionRecordsResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let answer = async {
            let page = rpc::read_partition_records_params(p)?;
            let st = self.store_named(&page.store)?;
            let partition = existing_partition(&st, page.partition)?;
            // A page stays far below the message limit whatever the caller asked.
            let max_bytes = usize::try_from(page.max_bytes)
                .unwrap_or(usize::MAX)
                .clamp(1, self.node.core.max_message / 4);
            // Read before the page: a rebuild that ends meanwhile only makes the flag
            // err on the careful side.
            let rebuilding = self.node.core.rebuild.is_rebuilding(st.name(), partition);
            self.node
                .engine_any("reading a partition for a transfer", move || {
                    let (records, more) = match page.graveyard {
                        true => st.reaped_after(partition, &page.after, page.limit)?,
                        false => st.records_after(partition, &page.after, page.limit, max_bytes)?,
                    };
                    Ok((records, more, rebuilding))
                })
                .await
        }
        .await;
        rpc::write_partition_records_reply(results.get(), &answer);
        Ok(())
    }

    async fn gossip(
        self: Rc<Self>,
        params: internode::GossipParams,
        mut results: internode::GossipResults,
    ) -> Result<(), capnp::Error> {
        // A node whose storage failed must not look alive to its peers.
        if let Some(why) = self.node.core.storage_fault() {
            return Err(capnp::Error::failed(why));
        }
        let p = params.get()?;
        let answer = async {
            let (from, digest, history) = rpc::read_gossip_params(p)?;
            if !history.is_empty() {
                let h = gossip::parse_history(&history, &from)?;
                // Merged in the background: saving it syncs a file, which may take
                // longer than the caller's timeout on a busy disk, and a slow answer
                // would mark this node down.
                let node = self.node.clone();
                tokio::task::spawn_local(async move {
                    match node.adopt(h).await {
                        Ok(Some(view)) => eprintln!(
                            "{}: membership from {from}: ring version {} ({} members)",
                            node.name(),
                            view.version(),
                            view.ring().members().len()
                        ),
                        Ok(None) => {}
                        Err(e) => {
                            eprintln!("{}: membership from {from}: {}", node.name(), e.message)
                        }
                    }
                });
            }
            // The view's cached digest; the history is encoded only when it differs.
            let view = self.node.core.view();
            let my_digest = view
                .as_ref()
                .map_or(crate::membership::History::new().digest(), |v| v.digest());
            let reply = view
                .filter(|_| my_digest.as_slice() != digest.as_slice())
                .map(|v| gossip::history_json(v.history()));
            Ok::<_, DynamoError>((my_digest.to_vec(), reply))
        }
        .await;
        rpc::write_gossip_reply(results.get(), &answer);
        Ok(())
    }

    async fn aae_roots(
        self: Rc<Self>,
        params: internode::AaeRootsParams,
        mut results: internode::AaeRootsResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let answer = (|| {
            let (store, parts) = ae_rpc::read_roots_params(p)?;
            let st = self.store_named(&store)?;
            let mut out = Vec::with_capacity(parts.len());
            for part in parts {
                let part = anti_entropy::check_partition(&st, part)?;
                let rebuilding = self.node.core.rebuild.is_rebuilding(st.name(), part);
                out.push(st.tree_root(part).filter(|_| !rebuilding));
            }
            Ok::<_, DynamoError>(out)
        })();
        ae_rpc::write_roots_reply(results.get(), &answer);
        Ok(())
    }

    async fn aae_tree(
        self: Rc<Self>,
        params: internode::AaeTreeParams,
        mut results: internode::AaeTreeResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let answer = (|| {
            let (store, partition, branches) = ae_rpc::read_tree_params(p)?;
            let st = self.store_named(&store)?;
            let part = anti_entropy::check_partition(&st, partition)?;
            if self.node.core.rebuild.is_rebuilding(st.name(), part) {
                return Ok(None);
            }
            Ok::<_, DynamoError>(if branches.is_empty() {
                st.tree_branches(part)
            } else {
                st.tree_leaves(part, &branches)
            })
        })();
        ae_rpc::write_tree_reply(results.get(), &answer);
        Ok(())
    }

    async fn aae_segments(
        self: Rc<Self>,
        params: internode::AaeSegmentsParams,
        mut results: internode::AaeSegmentsResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let answer = async {
            let ae_rpc::SegmentsRequest {
                store,
                partition,
                segments,
                limit,
            } = ae_rpc::read_segments_params(p)?;
            let st = self.store_named(&store)?;
            let part = anti_entropy::check_partition(&st, partition)?;
            let budget = self.node.core.max_message / 4;
            self.node
                .engine_any("listing segments", move || {
                    let mut all: Vec<crate::store::KeyHash> = Vec::new();
                    let mut bytes = 0usize;
                    let mut more = false;
                    let mut listed = 0usize;
                    for seg in segments {
                        let (mut keys, m) = st.segment_hashes(part, seg, limit)?;
                        let b: usize = keys.iter().map(|(k, _)| k.len() + 16).sum();
                        if listed > 0 && bytes.saturating_add(b) > budget {
                            break;
                        }
                        if b > budget {
                            // One segment alone over the budget: its first keys.
                            let mut kept = 0usize;
                            keys.retain(|(k, _)| {
                                kept += k.len() + 16;
                                kept <= budget
                            });
                            more = true;
                        }
                        bytes = bytes.saturating_add(b);
                        all.extend(keys);
                        more |= m;
                        listed += 1;
                    }
                    Ok(ae_rpc::SegmentsPage {
                        keys: all,
                        more,
                        listed,
                    })
                })
                .await
        }
        .await;
        ae_rpc::write_segments_reply(results.get(), &answer);
        Ok(())
    }

    async fn fetch(
        self: Rc<Self>,
        params: internode::FetchParams,
        mut results: internode::FetchResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let answer = async {
            let (store, keys) = ae_rpc::read_fetch_params(p)?;
            let st = self.store_named(&store)?;
            for k in &keys {
                st.check_key(k)?;
            }
            // The reply answers a prefix of the keys, as many as fit in a quarter of a
            // message (at least one); the caller asks again for the rest.
            let budget = self.node.core.max_message / 4;
            self.node
                .engine_any("reading keys for anti-entropy", move || {
                    let mut out = Vec::with_capacity(keys.len());
                    let mut bytes = 0usize;
                    for key in keys {
                        let read = st.get(&key)?;
                        let state = crate::store::KeyState {
                            key,
                            versions: read.siblings.into_versions(),
                            reaped: read.reaped,
                        };
                        let b = state.approx_bytes();
                        if !out.is_empty() && bytes.saturating_add(b) > budget {
                            break;
                        }
                        bytes = bytes.saturating_add(b);
                        out.push(state);
                    }
                    Ok(out)
                })
                .await
        }
        .await;
        ae_rpc::write_fetch_reply(results.get(), &answer);
        Ok(())
    }

    async fn merge_records(
        self: Rc<Self>,
        params: internode::MergeRecordsParams,
        mut results: internode::MergeRecordsResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let answer = async {
            let (store, records) = ae_rpc::read_merge_records_params(p)?;
            let st = self.store_named(&store)?;
            let core = self.node.core.clone();
            self.node
                .engine_any("merging an anti-entropy repair", move || {
                    // One record refused (over this node's limits, say) must not keep
                    // the others out.
                    let total = records.len();
                    let mut refused: Vec<DynamoError> = Vec::new();
                    for r in records {
                        if let Err(e) = core.hints.merge_with_reaped(
                            &st,
                            &r.key,
                            r.versions,
                            r.reaped.as_ref(),
                            None,
                        ) {
                            refused.push(e.into());
                        }
                    }
                    match refused.first() {
                        None => Ok(()),
                        Some(e) => Err(DynamoError::new(
                            e.kind,
                            format!(
                                "{} of {total} record(s) refused, the others merged; first: {}",
                                refused.len(),
                                e.message
                            ),
                        )),
                    }
                })
                .await
        }
        .await;
        ae_rpc::write_merge_records_reply(results.get(), &answer);
        Ok(())
    }

    async fn reap_check(
        self: Rc<Self>,
        params: internode::ReapCheckParams,
        mut results: internode::ReapCheckResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let answer = async {
            let (store, records) = ae_rpc::read_reap_check_params(p)?;
            let st = self.store_named(&store)?;
            let view = self.node.core.topology()?;
            let moving = view.next_step().is_some()
                || self.node.core.serving_for() < self.node.core.membership_grace();
            let names = anti_entropy::history_names(&view);
            let states = self
                .node
                .engine_any("checking tombstones", move || {
                    records
                        .iter()
                        .map(|r| anti_entropy::reap_state(&st, &names, r))
                        .collect::<Result<Vec<u8>, DynamoError>>()
                })
                .await?;
            Ok::<_, DynamoError>((states, moving))
        }
        .await;
        ae_rpc::write_reap_check_reply(results.get(), &answer);
        Ok(())
    }

    async fn reap(
        self: Rc<Self>,
        params: internode::ReapParams,
        mut results: internode::ReapResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let answer = async {
            let (store, records) = ae_rpc::read_reap_params(p)?;
            let st = self.store_named(&store)?;
            let core = self.node.core.clone();
            self.node
                .engine_any("reaping", move || {
                    let policy = st.config().policy;
                    let mut out = Vec::with_capacity(records.len());
                    for r in records {
                        let observed = crate::version::Siblings::from_versions(r.versions, policy);
                        let reaped = st.reap(&r.key, &observed)?;
                        if reaped {
                            core.aae.count_reaped(1);
                        }
                        out.push(reaped);
                    }
                    Ok(out)
                })
                .await
        }
        .await;
        ae_rpc::write_reap_reply(results.get(), &answer);
        Ok(())
    }

    async fn ping(
        self: Rc<Self>,
        _: internode::PingParams,
        mut results: internode::PingResults,
    ) -> Result<(), capnp::Error> {
        // A node whose storage failed must not look alive to its peers.
        if let Some(why) = self.node.core.storage_fault() {
            return Err(capnp::Error::failed(why));
        }
        rpc::write_ping_reply(
            results.get(),
            self.node.name(),
            &self.node.core.identity.node_id,
        );
        Ok(())
    }
}

/// Serves until SIGTERM or Ctrl-C, then drains in-flight requests.
pub async fn serve(core: Arc<NodeCore>) -> Result<(), NodeError> {
    let listener = bind(&core.config.node.listen)?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| NodeError::Io(format!("installing the SIGTERM handler: {e}")))?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    };
    serve_until(core, listener, stop).await
}

/// Binds `node.listen` (blocking, so a caller learns at once that the port is taken).
pub fn bind(listen: &str) -> Result<std::net::TcpListener, NodeError> {
    let addr = rpc::resolve(listen).map_err(|e| NodeError::Config(format!("node.listen {e}")))?;
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| NodeError::Io(format!("listening on {listen} (node.listen): {e}")))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| NodeError::Io(format!("listening on {listen}: {e}")))?;
    Ok(listener)
}

/// Serves on `listener` until `stop` completes, then drains in-flight requests. Installs
/// no signal handlers (an embedded node must leave the host's signals alone).
///
/// The RPC runs on `node.rpc_threads` event loops (0: one per core): this one, which
/// accepts and runs the background loops, and threads of their own, each with its own
/// peer connections. Accepted connections are spread over the loops in turn. Every
/// loop has stopped, and its threads ended, when this returns.
pub async fn serve_until(
    core: Arc<NodeCore>,
    listener: std::net::TcpListener,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    let node = LocalNode::new(core.clone());
    let listen = core.config.node.listen.clone();
    let listener = TcpListener::from_std(listener)
        .map_err(|e| NodeError::Io(format!("listening on {listen} (node.listen): {e}")))?;
    let stopping = Arc::new(AtomicBool::new(false));
    let open = Arc::new(AtomicUsize::new(0));
    let loops = match core.config.node.rpc_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut workers = Vec::new();
    for i in 1..loops {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<std::net::TcpStream>();
        let (core, stopping, open) = (core.clone(), stopping.clone(), open.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("{}-rpc-{i}", core.name()))
            .spawn(move || event_loop(core, rx, stopping, open));
        match spawned {
            Ok(handle) => workers.push((tx, handle)),
            Err(e) => eprintln!("{}: cannot start RPC thread {i}: {e}", node.name()),
        }
    }
    let bootstrap = server_factory(&node, &stopping);
    let ping = tokio::task::spawn_local(handoff::probe_loop(node.clone()));
    let gossip_task = tokio::task::spawn_local(gossip::gossip_loop(node.clone()));
    let transfer_task = tokio::task::spawn_local(transfer::transfer_loop(node.clone()));
    let drop_task = tokio::task::spawn_local(transfer::drop_loop(node.clone()));
    let handoff_task = tokio::task::spawn_local(handoff::handoff_loop(node.clone()));
    let ae_task = tokio::task::spawn_local(anti_entropy::anti_entropy_loop(node.clone()));
    let rebuild_task = tokio::task::spawn_local(rebuild::rebuild_loop(node.clone()));
    let admission_task = tokio::task::spawn_local(admission::feedback_loop(core.clone()));
    tokio::pin!(stop);
    match core.view() {
        Some(v) => eprintln!(
            "{}: listening on {listen} ({} members, {} partitions, ring version {}, stores: {}; {} RPC thread(s), {} engine thread(s))",
            core.name(),
            v.ring().members().len(),
            v.ring().partition_count(),
            v.version(),
            core.stores.keys().cloned().collect::<Vec<_>>().join(", "),
            workers.len() + 1,
            core.engines.stats().threads,
        ),
        None => eprintln!(
            "{}: listening on {listen}; learning the cluster from seeds {}",
            core.name(),
            core.config.cluster.seeds.join(", ")
        ),
    }
    let idle = Duration::from_millis(core.config.node.idle_timeout_ms);
    let cap = core.config.node.max_connections;
    let mut refused_since_log = 0u64;
    let mut last_log = Instant::now() - Duration::from_secs(60);
    let mut next = 0usize;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) if open.load(Ordering::SeqCst) >= cap => {
                    // Over the cap: closed at once (dropped), logged at most once a
                    // second with how many were refused since.
                    drop(stream);
                    refused_since_log += 1;
                    if last_log.elapsed() >= Duration::from_secs(1) {
                        eprintln!(
                            "{}: {cap} connections open (node.max_connections): closed \
                             {refused_since_log} new one(s), the last from {peer}",
                            core.name()
                        );
                        refused_since_log = 0;
                        last_log = Instant::now();
                    }
                }
                Ok((stream, _)) => {
                    // In turn over the loops; this one takes every (workers + 1)th.
                    next = (next + 1) % (workers.len() + 1);
                    match next.checked_sub(1).and_then(|w| workers.get(w)) {
                        None => rpc::serve_stream(stream, bootstrap(), core.max_message, idle, open.clone()),
                        Some((tx, _)) => {
                            let handed = stream.into_std().map(|s| tx.send(s));
                            if let Err(e) = handed {
                                eprintln!("{}: handing a connection to an RPC thread: {e}", core.name());
                            }
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors (or another transient failure): back off
                    // instead of spinning on a listener that stays readable.
                    if last_log.elapsed() >= Duration::from_secs(1) {
                        eprintln!("{}: accept failed, pausing 100 ms: {e}", core.name());
                        last_log = Instant::now();
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = &mut stop => break,
        }
    }
    eprintln!("{}: shutting down", core.name());
    stopping.store(true, Ordering::SeqCst);
    drop(listener);
    ping.abort();
    gossip_task.abort();
    transfer_task.abort();
    drop_task.abort();
    handoff_task.abort();
    ae_task.abort();
    rebuild_task.abort();
    admission_task.abort();
    drain(&core).await;
    for (tx, handle) in workers {
        // Closing its channel tells the loop to drain and end.
        drop(tx);
        let joined = tokio::task::spawn_blocking(move || handle.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            eprintln!("{}: an RPC thread ended badly", core.name());
        }
    }
    Ok(())
}

/// Waits (up to [`DRAIN`]) until no client request is in flight.
async fn drain(core: &NodeCore) {
    let start = Instant::now();
    while core.in_flight.load(Ordering::SeqCst) > 0 && start.elapsed() < DRAIN {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Makes the client-facing server of one accepted connection on `node`'s loop: each
/// connection gets its own (its own in-flight count); they share the loop's node and
/// internode interface.
fn server_factory(node: &LocalNode, stopping: &Arc<AtomicBool>) -> impl Fn() -> dynamo::Client {
    let internode: internode::Client =
        capnp_rpc::new_client(InternodeServer { node: node.clone() });
    let (node, stopping) = (node.clone(), stopping.clone());
    move || {
        capnp_rpc::new_client(DynamoServer {
            node: node.clone(),
            internode: internode.clone(),
            stopping: stopping.clone(),
            in_flight: Rc::default(),
        })
    }
}

/// One extra RPC event loop: serves the connections the accepting loop hands it, with
/// peer connections of its own, until its channel closes; then drains and ends.
fn event_loop(
    core: Arc<NodeCore>,
    mut accepted: tokio::sync::mpsc::UnboundedReceiver<std::net::TcpStream>,
    stopping: Arc<AtomicBool>,
    open: Arc<AtomicUsize>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{}: cannot start an RPC event loop: {e}", core.name());
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let node = LocalNode::new(core.clone());
        let bootstrap = server_factory(&node, &stopping);
        let idle = Duration::from_millis(core.config.node.idle_timeout_ms);
        let tidy = {
            let node = node.clone();
            let every = Duration::from_millis(core.config.node.ping_interval_ms);
            tokio::task::spawn_local(async move {
                loop {
                    tokio::time::sleep(every).await;
                    node.forget_departed();
                }
            })
        };
        while let Some(stream) = accepted.recv().await {
            match stream
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpStream::from_std(stream))
            {
                Ok(s) => rpc::serve_stream(s, bootstrap(), core.max_message, idle, open.clone()),
                Err(e) => eprintln!("{}: serving a connection: {e}", core.name()),
            }
        }
        tidy.abort();
        drain(&core).await;
    });
}
