//! The node's RPC servers (client-facing `Dynamo`, `Internode`), the accept loop and
//! clean shutdown on SIGTERM / Ctrl-C.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::api::{
    GetRequest, GetResponse, MemberStatus, NodeStatus, PutRequest, PutResponse, StoreSummary,
};
use crate::error::{DynamoError, ErrorKind};
use crate::rpc::{self, dynamo, internode};
use crate::store::VersionedStore;

use super::local::LocalNode;
use super::{admission, anti_entropy, gossip, handoff, rebuild, transfer};
use super::{NodeCore, NodeError};

/// How long shutdown waits for in-flight requests.
const DRAIN: Duration = Duration::from_secs(10);

pub use crate::api::MAX_KEYS_PER_PAGE;

struct DynamoServer {
    node: LocalNode,
    internode: internode::Client,
    stopping: Rc<Cell<bool>>,
}

struct InternodeServer {
    node: LocalNode,
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
    fn check_open(&self) -> Result<(), DynamoError> {
        if self.stopping.get() {
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

    fn forward_timeout(&self) -> Duration {
        // The coordinator's own fan-out may take a full request timeout.
        self.node.core.request_timeout() * 2 + Duration::from_millis(100)
    }

    async fn handle_get(
        &self,
        req: GetRequest,
        forwarded: bool,
    ) -> Result<GetResponse, DynamoError> {
        let GetRequest { store, key, r } = req;
        self.check_open()?;
        let st = self.node.core.store(&store)?.clone();
        for owner in self.forward_targets(&st, &key, forwarded) {
            let attempt = async {
                let d = self.node.dynamo_of(&owner).await?;
                // A failure the owner reports is the answer; only transport errors
                // move on to the next owner.
                match rpc::call_get(&d, &owner, &store, &key, r, true).await {
                    Err(e) if e.kind == ErrorKind::Unavailable => Err(e),
                    answer => Ok(answer),
                }
            };
            match tokio::time::timeout(self.forward_timeout(), attempt).await {
                Ok(Ok(answer)) => return answer,
                Ok(Err(e)) => self.node.core.health.mark_down(&owner, &e.message),
                Err(_) => self
                    .node
                    .core
                    .health
                    .mark_down(&owner, "forwarded get timed out"),
            };
        }
        let out = self.node.coordinate_get(&st, key, r).await?;
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
        let st = self.node.core.store(&req.store)?.clone();
        for owner in self.forward_targets(&st, &req.key, forwarded) {
            let fwd = rpc::WriteRequest {
                store: &req.store,
                key: &req.key,
                value: req.value.as_deref(),
                context: req.context.as_deref().unwrap_or(""),
                w: req.w,
                request_id: req.request_id,
                retry: req.retry,
            };
            let attempt = async {
                let d = self.node.dynamo_of(&owner).await?;
                let answer = rpc::call_put(&d, &owner, &fwd, true).await;
                match answer {
                    Err(e) if e.kind == ErrorKind::Unavailable => Err(e),
                    answer => Ok(answer),
                }
            };
            let outcome = tokio::time::timeout(self.forward_timeout(), attempt).await;
            // A forward that failed may have been applied: the next one is a retry.
            req.retry = true;
            match outcome {
                Ok(Ok(answer)) => return answer,
                Ok(Err(e)) => self.node.core.health.mark_down(&owner, &e.message),
                Err(_) => self
                    .node
                    .core
                    .health
                    .mark_down(&owner, "forwarded put timed out"),
            };
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
        })
    }
}

impl dynamo::Server for DynamoServer {
    async fn get(
        self: Rc<Self>,
        params: dynamo::GetParams,
        mut results: dynamo::GetResults,
    ) -> Result<(), capnp::Error> {
        let _in = self.node.core.request_started();
        let started = Instant::now();
        let answer = match rpc::read_get_params(params.get()?) {
            Ok((req, fwd)) => self.handle_get(req, fwd).await,
            Err(e) => Err(e),
        };
        self.node.core.admission.record(started.elapsed());
        let reply = results.get().init_reply();
        match answer {
            Ok(g) => rpc::write_get_reply(reply, &g),
            Err(e) => rpc::write_failure(reply.init_failure(), &e),
        }
        Ok(())
    }

    async fn put(
        self: Rc<Self>,
        params: dynamo::PutParams,
        mut results: dynamo::PutResults,
    ) -> Result<(), capnp::Error> {
        let _in = self.node.core.request_started();
        let started = Instant::now();
        let answer = match rpc::read_put_params(params.get()?) {
            Ok((req, fwd)) => self.handle_put(req, fwd).await,
            Err(e) => Err(e),
        };
        self.node.core.admission.record(started.elapsed());
        rpc::answer_put(results.get().init_reply(), &answer);
        Ok(())
    }

    async fn delete(
        self: Rc<Self>,
        params: dynamo::DeleteParams,
        mut results: dynamo::DeleteResults,
    ) -> Result<(), capnp::Error> {
        let _in = self.node.core.request_started();
        let started = Instant::now();
        let answer = match rpc::read_delete_params(params.get()?) {
            Ok((req, fwd)) => self.handle_put(req, fwd).await,
            Err(e) => Err(e),
        };
        self.node.core.admission.record(started.elapsed());
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
        let mut b = results.get().init_reply();
        b.set_ring_json(view.ring().to_json().as_str());
        let members = member_statuses(&self.node);
        let mut ms = b.reborrow().init_members(members.len() as u32);
        for (i, m) in members.iter().enumerate() {
            rpc::write_member(ms.reborrow().get(i as u32), m);
        }
        let stores = store_summaries(core);
        let mut ss = b.init_stores(stores.len() as u32);
        for (i, s) in stores.iter().enumerate() {
            rpc::write_store(ss.reborrow().get(i as u32), s);
        }
        Ok(())
    }

    async fn status(
        self: Rc<Self>,
        _: dynamo::StatusParams,
        mut results: dynamo::StatusResults,
    ) -> Result<(), capnp::Error> {
        let _in = self.node.core.request_started();
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
        let _in = self.node.core.request_started();
        let p = params.get()?;
        let answer = async {
            self.check_open()?;
            let text = rpc::text(p.get_request())?;
            let request: crate::admin::AdminRequest = serde_json::from_str(&text).map_err(|e| {
                DynamoError::new(ErrorKind::BadRequest, format!("not an admin request: {e}"))
            })?;
            let reply = super::admin::handle(&self.node, request).await?;
            serde_json::to_string(&reply)
                .map_err(|e| DynamoError::new(ErrorKind::Internal, format!("encoding: {e}")))
        }
        .await;
        match answer {
            Ok(json) => results.get().set_reply(json.as_str()),
            Err(e) => rpc::write_failure(results.get().init_failure(), &e),
        }
        Ok(())
    }

    async fn internode(
        self: Rc<Self>,
        _: dynamo::InternodeParams,
        mut results: dynamo::InternodeResults,
    ) -> Result<(), capnp::Error> {
        results.get().set_node(self.internode.clone());
        Ok(())
    }
}

impl InternodeServer {
    /// Fault injection: a slow replica for one key.
    async fn maybe_slow(&self, key: capnp::Result<capnp::data::Reader<'_>>) {
        let f = &self.node.core.config.faults;
        if let (Some(slow), Ok(key)) = (&f.slow_key, key) {
            if slow.as_bytes() == key {
                tokio::time::sleep(Duration::from_millis(f.slow_ms)).await;
            }
        }
    }

    fn store(
        &self,
        p: capnp::Result<capnp::text::Reader<'_>>,
    ) -> Result<Arc<VersionedStore>, DynamoError> {
        if let Some(why) = self.node.core.storage_fault() {
            return Err(DynamoError::new(ErrorKind::Unavailable, why));
        }
        let name = rpc::text(p)?;
        Ok(self.node.core.store(&name)?.clone())
    }
}

impl InternodeServer {
    /// Merges versions from a peer into this replica; with `hint_for` non-empty this
    /// node is a stand-in and records the hint in the same atomic batch. With `durable`
    /// the engine is synced before the answer (a delivered hint: the stand-in drops its
    /// copy once this node acknowledged).
    async fn merge_in(
        &self,
        store: capnp::Result<capnp::text::Reader<'_>>,
        key: capnp::Result<capnp::data::Reader<'_>>,
        versions: capnp::Result<capnp::data_list::Reader<'_>>,
        hint_for: Result<String, DynamoError>,
        reaped: Option<crate::context::Context>,
        durable: bool,
    ) -> Result<(), DynamoError> {
        let st = self.store(store)?;
        let key = rpc::data(key)?;
        let max = st.config().max_value_size;
        let versions = rpc::decode_versions(versions, max as u64).map_err(|e| {
            DynamoError::new(
                e.kind,
                format!(
                    "refused versions for key {} in store {}: {} (this node's max_value_size is {max})",
                    crate::store::printable_key(&key),
                    st.name(),
                    e.message
                ),
            )
        })?;
        let hint_for = hint_for?;
        let core = self.node.core.clone();
        let name = st.name().to_owned();
        let k = key.clone();
        self.node
            .engine(&name, &key, move || {
                let hint_for = (!hint_for.is_empty()).then_some(hint_for.as_str());
                core.hints
                    .merge_with_reaped(&st, &k, versions, reaped.as_ref(), hint_for)?;
                if durable {
                    st.sync()?;
                }
                Ok(())
            })
            .await
    }
}

impl internode::Server for InternodeServer {
    async fn read(
        self: Rc<Self>,
        params: internode::ReadParams,
        mut results: internode::ReadResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        self.maybe_slow(p.get_key()).await;
        let as_owner = p.get_as_owner();
        let answer = async {
            let st = self.store(p.get_store())?;
            let key = rpc::data(p.get_key())?;
            let name = st.name().to_owned();
            let k = key.clone();
            let rebuilding = self.node.core.rebuilding(&st, &key);
            let read = self
                .node
                .engine(&name, &key, move || Ok(st.get(&k)?))
                .await?;
            if as_owner && read.siblings.is_empty() {
                self.node.core.check_owner(&name, &key)?;
            }
            let reaped = rpc::encode_context(read.reaped.as_ref());
            Ok((
                rpc::encode_versions(read.siblings.versions()),
                rebuilding,
                reaped,
            ))
        }
        .await;
        match answer {
            Ok((encoded, rebuilding, reaped)) => {
                let mut r = results.get();
                r.set_ring_version(self.node.core.view().map_or(0, |v| v.version()));
                r.set_rebuilding(rebuilding);
                if !reaped.is_empty() {
                    r.set_reaped(&reaped);
                }
                rpc::set_versions(r.init_versions(encoded.len() as u32), &encoded)
            }
            Err(e) => rpc::write_failure(results.get().init_failure(), &e),
        }
        Ok(())
    }

    async fn write(
        self: Rc<Self>,
        params: internode::WriteParams,
        mut results: internode::WriteResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        self.maybe_slow(p.get_key()).await;
        let hint_for = rpc::text(p.get_hint_for());
        let step = rpc::text(p.get_step()).unwrap_or_default();
        let differs = !step.is_empty()
            && self.node.core.view().is_some_and(|v| {
                v.step_key() != step
                    && ((v.next_step().is_some() && !v.next_receivers().is_empty())
                        || !rpc::text(p.get_store()).is_ok_and(|s| {
                            rpc::data(p.get_key())
                                .is_ok_and(|k| self.node.core.is_owner(&v, &s, &k))
                        }))
            });
        let answer = match rpc::decode_context(p.get_reaped()) {
            Ok(reaped) => {
                self.merge_in(
                    p.get_store(),
                    p.get_key(),
                    p.get_versions(),
                    hint_for,
                    reaped,
                    false,
                )
                .await
            }
            Err(e) => Err(e),
        };
        match answer {
            Ok(()) => results.get().set_view_differs(differs),
            Err(e) => rpc::write_failure(results.get().init_failure(), &e),
        }
        Ok(())
    }

    async fn deliver_hint(
        self: Rc<Self>,
        params: internode::DeliverHintParams,
        mut results: internode::DeliverHintResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        // The sender names itself in `from`; a delivered hint is a plain merge here.
        let answer = self
            .merge_in(
                p.get_store(),
                p.get_key(),
                p.get_versions(),
                Ok(String::new()),
                None,
                true,
            )
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
            let st = self.store(p.get_store())?;
            let partition = existing_partition(&st, p.get_partition())?;
            let after = rpc::data(p.get_after())?;
            // At most 10,000 keys a page, so one reply stays far below any message limit.
            let limit = p.get_limit().clamp(1, MAX_KEYS_PER_PAGE) as usize;
            self.node
                .engine_any("listing keys", move || {
                    Ok(st.keys_after(partition, &after, limit)?)
                })
                .await
        }
        .await;
        match answer {
            Ok((keys, more)) => {
                let mut r = results.get();
                let mut list = r.reborrow().init_keys(keys.len() as u32);
                for (i, k) in keys.iter().enumerate() {
                    list.set(i as u32, k);
                }
                r.set_more(more);
            }
            Err(e) => rpc::write_failure(results.get().init_failure(), &e),
        }
        Ok(())
    }

    async fn partition_records(
        self: Rc<Self>,
        params: internode::PartitionRecordsParams,
        mut results: internode::PartitionRecordsResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let answer = async {
            let st = self.store(p.get_store())?;
            let partition = existing_partition(&st, p.get_partition())?;
            let after = rpc::data(p.get_after())?;
            let limit = p.get_limit().clamp(1, MAX_KEYS_PER_PAGE) as usize;
            // A page stays far below the message limit whatever the caller asked.
            let max_bytes = (p.get_max_bytes() as usize).clamp(1, self.node.core.max_message / 4);
            // Read before the page: a rebuild that ends meanwhile only makes the flag
            // err on the careful side.
            let rebuilding = self.node.core.rebuild.is_rebuilding(st.name(), partition);
            let graveyard = p.get_graveyard();
            self.node
                .engine_any("reading a partition for a transfer", move || {
                    let (records, more) = match graveyard {
                        true => st.reaped_after(partition, &after, limit)?,
                        false => st.records_after(partition, &after, limit, max_bytes)?,
                    };
                    Ok((records, more, rebuilding))
                })
                .await
        }
        .await;
        match answer {
            Ok((records, more, rebuilding)) => {
                let mut r = results.get();
                crate::rpc::anti_entropy::write_key_states(
                    r.reborrow().init_records(records.len() as u32),
                    &records,
                );
                r.set_more(more);
                r.set_rebuilding(rebuilding);
            }
            Err(e) => rpc::write_failure(results.get().init_failure(), &e),
        }
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
            let from = rpc::text(p.get_from())?;
            let digest = rpc::data(p.get_digest())?;
            let history = rpc::text(p.get_history())?;
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
            Ok::<_, DynamoError>((my_digest, reply))
        }
        .await;
        match answer {
            Ok((digest, history)) => {
                let mut r = results.get();
                r.set_digest(&digest);
                r.set_history(history.as_deref().unwrap_or(""));
            }
            Err(e) => rpc::write_failure(results.get().init_failure(), &e),
        }
        Ok(())
    }

    async fn aae_roots(
        self: Rc<Self>,
        params: internode::AaeRootsParams,
        mut results: internode::AaeRootsResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let answer = (|| {
            let st = self.store(p.get_store())?;
            let parts = p
                .get_partitions()
                .map_err(|e| rpc::protocol(format!("reading partitions: {e}")))?;
            let mut out = Vec::with_capacity(parts.len() as usize);
            for part in parts.iter() {
                let part = anti_entropy::check_partition(&st, part)?;
                let rebuilding = self.node.core.rebuild.is_rebuilding(st.name(), part);
                out.push(st.tree_root(part).filter(|_| !rebuilding));
            }
            Ok::<_, DynamoError>(out)
        })();
        match answer {
            Ok(roots) => {
                let mut r = results.get();
                let mut rl = r.reborrow().init_roots(roots.len() as u32);
                for (i, x) in roots.iter().enumerate() {
                    rl.set(i as u32, x.unwrap_or(0));
                }
                let mut ready = r.init_ready(roots.len() as u32);
                for (i, x) in roots.iter().enumerate() {
                    ready.set(i as u32, x.is_some());
                }
            }
            Err(e) => rpc::write_failure(results.get().init_failure(), &e),
        }
        Ok(())
    }

    async fn aae_tree(
        self: Rc<Self>,
        params: internode::AaeTreeParams,
        mut results: internode::AaeTreeResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let answer = (|| {
            let st = self.store(p.get_store())?;
            let part = anti_entropy::check_partition(&st, p.get_partition())?;
            let branches: Vec<u16> = p
                .get_branches()
                .map_err(|e| rpc::protocol(format!("reading branches: {e}")))?
                .iter()
                .take(crate::store::tree::BRANCHES)
                .collect();
            if self.node.core.rebuild.is_rebuilding(st.name(), part) {
                return Ok(None);
            }
            Ok::<_, DynamoError>(if branches.is_empty() {
                st.tree_branches(part)
            } else {
                st.tree_leaves(part, &branches)
            })
        })();
        match answer {
            Ok(hashes) => {
                let mut r = results.get();
                r.set_ready(hashes.is_some());
                let hashes = hashes.unwrap_or_default();
                let mut l = r.init_hashes(hashes.len() as u32);
                for (i, h) in hashes.iter().enumerate() {
                    l.set(i as u32, *h);
                }
            }
            Err(e) => rpc::write_failure(results.get().init_failure(), &e),
        }
        Ok(())
    }

    async fn aae_segments(
        self: Rc<Self>,
        params: internode::AaeSegmentsParams,
        mut results: internode::AaeSegmentsResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let answer = async {
            let st = self.store(p.get_store())?;
            let part = anti_entropy::check_partition(&st, p.get_partition())?;
            let segments: Vec<u8> = p
                .get_segments()
                .map_err(|e| rpc::protocol(format!("reading segments: {e}")))?
                .iter()
                .take(crate::store::tree::SEGMENTS)
                .map(|s| s.min(255) as u8)
                .collect();
            let limit = p.get_limit().clamp(1, MAX_KEYS_PER_PAGE) as usize;
            let budget = self.node.core.max_message / 4;
            self.node
                .engine_any("listing segments", move || {
                    let mut all: Vec<crate::store::KeyHash> = Vec::new();
                    let mut bytes = 0usize;
                    let mut more = false;
                    let mut listed: u16 = 0;
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
                    Ok((all, more, listed))
                })
                .await
        }
        .await;
        match answer {
            Ok((keys, more, listed)) => {
                let mut r = results.get();
                let mut kl = r.reborrow().init_keys(keys.len() as u32);
                for (i, (k, _)) in keys.iter().enumerate() {
                    kl.set(i as u32, k);
                }
                let mut hl = r.reborrow().init_hashes(keys.len() as u32);
                for (i, (_, h)) in keys.iter().enumerate() {
                    hl.set(i as u32, *h);
                }
                r.set_more(more);
                r.set_listed(listed);
            }
            Err(e) => rpc::write_failure(results.get().init_failure(), &e),
        }
        Ok(())
    }

    async fn fetch(
        self: Rc<Self>,
        params: internode::FetchParams,
        mut results: internode::FetchResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let answer = async {
            let st = self.store(p.get_store())?;
            let list = p
                .get_keys()
                .map_err(|e| rpc::protocol(format!("reading keys: {e}")))?;
            if list.len() as usize > crate::rpc::anti_entropy::MAX_RECORDS_PER_CALL {
                return Err(rpc::protocol(format!(
                    "{} keys in one fetch; at most {}",
                    list.len(),
                    crate::rpc::anti_entropy::MAX_RECORDS_PER_CALL
                )));
            }
            let mut keys = Vec::with_capacity(list.len() as usize);
            for k in list.iter() {
                let k = k.map_err(|e| rpc::protocol(format!("reading a key: {e}")))?;
                st.check_key(k)?;
                keys.push(k.to_vec());
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
        match answer {
            Ok(states) => crate::rpc::anti_entropy::write_key_states(
                results.get().init_records(states.len() as u32),
                &states,
            ),
            Err(e) => rpc::write_failure(results.get().init_failure(), &e),
        }
        Ok(())
    }

    async fn merge_records(
        self: Rc<Self>,
        params: internode::MergeRecordsParams,
        mut results: internode::MergeRecordsResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let answer = async {
            let st = self.store(p.get_store())?;
            // Sizes are checked per record by the merge (a value over this store's
            // limit refuses that record only, and is no protocol error).
            let records =
                crate::rpc::anti_entropy::read_key_states(p.get_records(), u64::from(u32::MAX))?;
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
        if let Err(e) = answer {
            rpc::write_failure(results.get().init_failure(), &e);
        }
        Ok(())
    }

    async fn reap_check(
        self: Rc<Self>,
        params: internode::ReapCheckParams,
        mut results: internode::ReapCheckResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let answer = async {
            let st = self.store(p.get_store())?;
            let records =
                crate::rpc::anti_entropy::read_key_states(p.get_records(), u64::from(u32::MAX))?;
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
        match answer {
            Ok((states, moving)) => {
                let mut r = results.get();
                r.set_moving(moving);
                let mut l = r.init_states(states.len() as u32);
                for (i, x) in states.iter().enumerate() {
                    l.set(i as u32, *x);
                }
            }
            Err(e) => rpc::write_failure(results.get().init_failure(), &e),
        }
        Ok(())
    }

    async fn reap(
        self: Rc<Self>,
        params: internode::ReapParams,
        mut results: internode::ReapResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let answer = async {
            let st = self.store(p.get_store())?;
            let records =
                crate::rpc::anti_entropy::read_key_states(p.get_records(), u64::from(u32::MAX))?;
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
        match answer {
            Ok(reaped) => {
                let mut l = results.get().init_reaped(reaped.len() as u32);
                for (i, x) in reaped.iter().enumerate() {
                    l.set(i as u32, *x);
                }
            }
            Err(e) => rpc::write_failure(results.get().init_failure(), &e),
        }
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
        let mut r = results.get();
        r.set_name(self.node.name());
        r.set_node_id(self.node.core.identity.node_id.as_str());
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
pub async fn serve_until(
    core: Arc<NodeCore>,
    listener: std::net::TcpListener,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    let node = LocalNode::new(core.clone());
    let listen = core.config.node.listen.clone();
    let listener = TcpListener::from_std(listener)
        .map_err(|e| NodeError::Io(format!("listening on {listen} (node.listen): {e}")))?;
    let stopping = Rc::new(Cell::new(false));
    let internode: internode::Client =
        capnp_rpc::new_client(InternodeServer { node: node.clone() });
    let bootstrap: dynamo::Client = capnp_rpc::new_client(DynamoServer {
        node: node.clone(),
        internode,
        stopping: stopping.clone(),
    });
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
            "{}: listening on {listen} ({} members, {} partitions, ring version {}, stores: {})",
            core.name(),
            v.ring().members().len(),
            v.ring().partition_count(),
            v.version(),
            core.stores.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
        None => eprintln!(
            "{}: listening on {listen}; learning the cluster from seeds {}",
            core.name(),
            core.config.cluster.seeds.join(", ")
        ),
    }
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => rpc::serve_stream(stream, bootstrap.clone(), core.max_message),
                Err(e) => eprintln!("{}: accept failed: {e}", core.name()),
            },
            _ = &mut stop => break,
        }
    }
    eprintln!("{}: shutting down", core.name());
    stopping.set(true);
    drop(listener);
    ping.abort();
    gossip_task.abort();
    transfer_task.abort();
    drop_task.abort();
    handoff_task.abort();
    ae_task.abort();
    rebuild_task.abort();
    admission_task.abort();
    let start = Instant::now();
    while core.in_flight.load(Ordering::SeqCst) > 0 && start.elapsed() < DRAIN {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
