//! The routing layout: the ring, member addresses and store settings a node reported,
//! fetched once and refreshed every 10 s, after an error or when a reply reports a newer
//! ring; the walk of a key, and which nodes are avoided after a failure.

use super::*;

/// Member names in the order a key's requests try them: its preference list (the
/// first N), then the stand-ins.
pub(super) type Walk = Vec<String>;

pub(super) struct Layout {
    pub(super) info: RingInfo,
    pub(super) addresses: HashMap<String, String>,
    pub(super) stores: HashMap<String, StoreSummary>,
    pub(super) fetched: Instant,
    pub(super) walks: RefCell<HashMap<(u8, u32), Rc<Walk>>>,
}

impl Layout {
    /// The walk of `key` in `store` (cached per replication factor and partition).
    pub(super) fn walk(&self, store: &StoreSummary, key: &[u8]) -> Rc<Walk> {
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
    pub(super) fn store(&self, store: &str) -> Result<StoreSummary, DynamoError> {
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
    pub(super) fn address_of(&self, name: &str) -> Result<String, DynamoError> {
        self.addresses.get(name).cloned().ok_or_else(|| {
            DynamoError::new(
                ErrorKind::Internal,
                format!("member {name} has no address in the ring the client holds"),
            )
        })
    }
}

/// The pause before retry round `round` (1, 2, ...): 50 ms, doubling, at most 3.2 s.
pub(super) fn retry_pause(round: u32) -> Duration {
    Duration::from_millis(50u64 << (round.saturating_sub(1)).min(6))
}

/// How long a node that failed a call is avoided.
pub(super) const AVOID: Duration = Duration::from_secs(1);

impl State {
    pub(super) async fn ring_of(&self, address: &str) -> Result<Layout, DynamoError> {
        let conn = self.conn(address).await?;
        let info = self
            .timed(address, rpc::call_ring(&conn.dynamo, address))
            .await?;
        Ok(Layout {
            addresses: info
                .members
                .iter()
                .map(|m| (m.name.clone(), m.address.clone()))
                .collect(),
            stores: info
                .stores
                .iter()
                .map(|s| (s.name.clone(), s.clone()))
                .collect(),
            info,
            fetched: Instant::now(),
            walks: RefCell::default(),
        })
    }

    /// Fetches the layout from the seeds (then known members) and caches it.
    pub(super) async fn fetch_layout(&self) -> Result<Rc<Layout>, DynamoError> {
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
            self.forget_departed(&l);
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

    /// Drops the connections and failure marks of addresses that are neither members
    /// of `layout` nor seeds: nodes that left, so the maps stay as small as the
    /// cluster.
    fn forget_departed(&self, layout: &Layout) {
        let keep = |a: &String| {
            layout.addresses.values().any(|m| m == a) || self.seeds.iter().any(|s| s == a)
        };
        let gone: Vec<String> = self
            .conns
            .borrow()
            .keys()
            .filter(|a| !keep(a))
            .cloned()
            .collect();
        for a in gone {
            if let Some(c) = self.conns.borrow_mut().remove(&a) {
                c.close();
            }
        }
        self.internodes.borrow_mut().retain(|a, _| keep(a));
        self.failed.borrow_mut().retain(|a, _| keep(a));
        // A departed node's waiters keep their bound (they hold an `Rc` of it).
        self.in_flight.borrow_mut().retain(|a, _| keep(a));
    }

    /// The cached layout; refreshed in the background when old or after an error,
    /// fetched (waiting) only when there is none yet.
    pub(super) async fn layout(self: &Rc<Self>) -> Result<Rc<Layout>, DynamoError> {
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
    pub(super) fn note_failure(&self, address: &str) {
        self.failed
            .borrow_mut()
            .insert(address.to_owned(), Instant::now());
        self.stale.set(true);
    }

    pub(super) fn avoided(&self, address: &str) -> bool {
        match self.failed.borrow().get(address) {
            Some(t) => t.elapsed() < AVOID,
            None => false,
        }
    }

    /// The addresses to try for a request, best first.
    pub(super) fn route(&self, layout: &Layout, store: &StoreSummary, key: &[u8]) -> Vec<String> {
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
    pub(super) async fn layout_with_retries(self: &Rc<Self>) -> Result<Rc<Layout>, DynamoError> {
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

    /// Remembers the highest serving ring version a node reported.
    pub(super) fn note_ring_version(&self, v: u64) {
        if v > self.known_version.get() {
            self.known_version.set(v);
        }
    }
}
