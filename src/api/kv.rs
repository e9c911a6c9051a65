//! The answers of key-value requests: gets (siblings and their context), puts and
//! deletes, and pages of a key listing.

use crate::version::Siblings;

/// The most keys one `keys` reply (a page of a key listing, a transfer page, a segment
/// listing) carries, whatever the caller asked for.
pub const MAX_KEYS_PER_PAGE: u32 = 10_000;

/// A get as a node receives it: the store, the key and an R for this read only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetRequest {
    /// The store.
    pub store: String,
    /// The key.
    pub key: Vec<u8>,
    /// R for this read (`None`: the store's R).
    pub r: Option<u8>,
    /// When the caller stops waiting (`None`: the receiving node's default).
    pub deadline: Option<super::Deadline>,
}

/// A put (a value) or a delete (`value` `None`) as a node receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutRequest {
    /// The store.
    pub store: String,
    /// The key.
    pub key: Vec<u8>,
    /// The value; `None` deletes.
    pub value: Option<Vec<u8>>,
    /// The context token of the read this write follows (`None`: a blind write).
    pub context: Option<String>,
    /// W for this write (`None`: the store's W).
    pub w: Option<u8>,
    /// The client's id for this write, the same on every retry (`None`: no id).
    pub request_id: Option<u64>,
    /// An earlier attempt of this request may have been applied somewhere.
    pub retry: bool,
    /// When the caller stops waiting (`None`: the receiving node's default).
    pub deadline: Option<super::Deadline>,
}

/// One sibling of a key. `value` is `None` for a delete that conflicts with a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sibling {
    /// The value, or `None` for a tombstone.
    pub value: Option<Vec<u8>>,
}

impl Sibling {
    /// Is this a tombstone?
    pub fn deleted(&self) -> bool {
        self.value.is_none()
    }
}

/// The answer to a get. `siblings` is empty when the key has no live versions;
/// `context` covers exactly the versions read (pass it to the next put or delete).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetResponse {
    /// The concurrent versions (tombstones among them only when they conflict with
    /// live values).
    pub siblings: Vec<Sibling>,
    /// Context token.
    pub context: String,
    /// The node that coordinated the read.
    pub coordinator: String,
    /// Replicas (member names) whose answer lacked some of these siblings: read repair
    /// brings them up to date after the read. Filled by client-driven reads from the
    /// replies in hand when the answer was given (with R = N, every owner); empty for
    /// server-driven reads, whose coordinator repairs without telling.
    pub stale_replicas: Vec<String>,
    /// The serving ring version of the node that answered (0: not known). A client
    /// that sees one above its own ring's fetches the ring before its next request.
    pub ring_version: u64,
}

impl GetResponse {
    /// The answer for a merged sibling set: a set of tombstones only reads as no
    /// siblings (the key is deleted); otherwise every sibling, tombstones included.
    pub fn from_siblings(merged: &Siblings, context: String, coordinator: String) -> Self {
        let siblings = if merged.all_tombstones() {
            Vec::new()
        } else {
            merged
                .versions()
                .iter()
                .map(|v| Sibling {
                    value: v.value.clone(),
                })
                .collect()
        };
        Self {
            siblings,
            context,
            coordinator,
            stale_replicas: Vec::new(),
            ring_version: 0,
        }
    }

    /// The live values.
    pub fn values(&self) -> Vec<&[u8]> {
        self.siblings
            .iter()
            .filter_map(|s| s.value.as_deref())
            .collect()
    }
}

/// The answer to a put or delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutResponse {
    /// Context covering the write and what the request's context covered.
    pub context: String,
    /// The node that coordinated the write.
    pub coordinator: String,
    /// The serving ring version of the node that answered (see
    /// [`GetResponse::ring_version`]).
    pub ring_version: u64,
}

/// One page of a store's keys (see `Client::list_keys`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPage {
    /// The keys, in (partition, key) order.
    pub keys: Vec<Vec<u8>>,
    /// The cursor of the next page; `None` when the listing is complete.
    pub next: Option<String>,
    /// Owners (member names) of partitions this page covers that failed to answer: keys
    /// only they hold are missing from it. Empty when every owner answered.
    pub unanswered: Vec<String>,
}
