//! Client-coordinated reads (paper section 6.4): the client asks the key's replicas
//! itself under the shared sloppy-quorum rules of [`crate::quorum`], and repairs stale
//! replicas after answering.

use super::in_flight::Urgency;
use super::*;
use crate::version::Siblings;

impl State {
    /// The versions of `key` at the replica at `address`, timed.
    pub(super) async fn replica_read(
        &self,
        address: &str,
        store: &str,
        key: &[u8],
        answered: &Cell<bool>,
    ) -> Result<crate::quorum::ReplicaReply, DynamoError> {
        let _place = self.place(address, Urgency::Starting).await?;
        // A read that waited in this client's queue until the get had its answer
        // would only feed read repair, with a reply older than what the others are
        // told to take by then: under load that is work to shed, not to send.
        if answered.get() {
            return Err(DynamoError::new(
                ErrorKind::Overloaded,
                format!("read of {address} not sent: the get was answered while it waited"),
            ));
        }
        let node = self.internode(address).await?;
        // The replica drops the read once this call has timed out here.
        let deadline = Deadline::after(self.options.timeout);
        let (reply, ring_version) = self
            .timed(
                address,
                rpc::call_replica_read(&node, address, store, key, false, Some(&deadline)),
            )
            .await?;
        self.note_ring_version(ring_version);
        Ok(reply)
    }

    /// Client-driven get (paper section 6.4): reads the key's replicas directly, with
    /// the sloppy-quorum rules a coordinating node uses ([`crate::quorum`]), merges,
    /// answers, then repairs the stale replicas it saw. Replicas that failed a call in
    /// the last second are treated as down: stand-ins past the top N are asked instead.
    pub(super) async fn coordinate_get(
        self: &Rc<Self>,
        layout: &Rc<Layout>,
        store: &StoreSummary,
        key: &[u8],
        r: Option<u8>,
    ) -> Result<GetResponse, DynamoError> {
        let n = usize::from(store.n);
        let r = crate::quorum::quorum_size(&store.name, "r", r, usize::from(store.r), n)?;
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
        let owners: Vec<String> = walk.iter().take(n).cloned().collect();
        let mut targets: Vec<Target> = owners.iter().map(|m| Target::owner(m.as_str())).collect();
        let down_owners: Vec<String> = owners.iter().filter(|m| down(m)).cloned().collect();
        let (stand_ins, _) =
            crate::quorum::stand_ins_for(&walk, n, &down_owners, &owners, |m| !down(m));
        targets.extend(stand_ins);
        let key_rc = Rc::new(key.to_vec());
        let answered = Rc::new(Cell::new(false));
        let read: ReadFn = {
            let (st, layout, store_name, key, answered) = (
                self.clone(),
                layout.clone(),
                store.name.clone(),
                key_rc.clone(),
                answered.clone(),
            );
            Rc::new(move |t: Target| {
                let (st, layout, store_name, key, answered) = (
                    st.clone(),
                    layout.clone(),
                    store_name.clone(),
                    key.clone(),
                    answered.clone(),
                );
                Box::pin(async move {
                    let address = layout.address_of(&t.name)?;
                    st.replica_read(&address, &store_name, &key, &answered)
                        .await
                })
            })
        };
        let mut q = QuorumRead::start(r, policy, targets, read);
        let ok = q
            .wait(|used| crate::quorum::next_stand_in(&walk, n, used, |m| !down(m)))
            .await;
        answered.set(true);
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
            // Nobody answered and every read was refused untouched (busy nodes, or this
            // client's own queue): the get is overloaded, to retry after a pause.
            if q.replies.is_empty()
                && !q.errors.is_empty()
                && q.errors.iter().all(|e| e.kind == ErrorKind::Overloaded)
            {
                return Err(DynamoError::new(
                    ErrorKind::Overloaded,
                    format!(
                        "every replica read of key {} in store {} was refused as overloaded: {}",
                        crate::store::printable_key(key),
                        store.name,
                        q.failed.join("; ")
                    ),
                ));
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
        // Read repair after the answer, late replies included. When every reply is
        // in already (one replica, or all answered together), the check runs here and
        // a task starts only if some replica is stale.
        let (st, layout, store_name) = (self.clone(), layout.clone(), store.name.clone());
        let mut repairs = self.repairs.borrow_mut();
        while repairs.try_join_next().is_some() {}
        if q.is_done() {
            let (merged, replies, reaped) = q.into_results();
            let stale = stale_targets(&merged, replies, &reaped, policy);
            if !stale.is_empty() {
                repairs.spawn_local(write_repairs(
                    st, layout, store_name, key_rc, merged, stale, reaped,
                ));
            }
        } else {
            repairs.spawn_local(async move {
                let (merged, replies, reaped) = q.finish().await;
                let stale = stale_targets(&merged, replies, &reaped, policy);
                if !stale.is_empty() {
                    write_repairs(st, layout, store_name, key_rc, merged, stale, reaped).await;
                }
            });
        }
        Ok(answer)
    }
}

/// The replicas a read's replies show to be stale: holding what `reaped` covers, or
/// lacking something of `merged`.
fn stale_targets(
    merged: &Siblings,
    replies: Vec<(Target, Vec<Version>)>,
    reaped: &crate::context::Context,
    policy: ConflictPolicy,
) -> Vec<Target> {
    let mut stale = crate::quorum::holding_reaped(&replies, reaped);
    for t in stale_replicas(merged, replies, policy) {
        if !stale.contains(&t) {
            stale.push(t);
        }
    }
    stale
}

/// Sends `merged` (and the reaped context) to each stale replica, best effort.
async fn write_repairs(
    st: Rc<State>,
    layout: Rc<Layout>,
    store_name: String,
    key: Rc<Vec<u8>>,
    merged: Siblings,
    stale: Vec<Target>,
    reaped: crate::context::Context,
) {
    let reaped = (!reaped.is_empty()).then_some(reaped);
    let encoded = rpc::encode_versions(merged.versions());
    for t in stale {
        let Ok(address) = layout.address_of(&t.name) else {
            continue;
        };
        // Best effort: a repair that would queue behind this client's own requests
        // is dropped (the next read or anti-entropy repairs it).
        let Some(_place) = st.place_if_free(&address) else {
            continue;
        };
        let Ok(node) = st.internode(&address).await else {
            continue;
        };
        let repair = rpc::ReplicaWrite {
            store: &store_name,
            key: &key,
            encoded: &encoded,
            hint_for: t.hint_for.as_deref(),
            step: "",
            reaped: reaped.as_ref(),
            deadline: None,
        };
        let write = rpc::call_replica_write(&node, &address, &repair);
        // A failed repair is retried by the next read (or anti-entropy).
        let _ = st.timed(&address, write).await;
    }
}
