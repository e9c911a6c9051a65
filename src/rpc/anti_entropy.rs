//! The anti-entropy calls of the internode interface (`aaeRoots`, `aaeTree`,
//! `aaeSegments`, `fetch`, `mergeRecords`, `reapCheck`, `reap`) and the conversions of
//! their key records.

use crate::error::DynamoError;
use crate::store::KeyState;

use super::dynamo_capnp::key_versions;
use super::{
    decode_context, decode_versions, encode_context, encode_versions, from_capnp, internode,
    protocol, read_failure, set_versions,
};

/// Most keys one `fetch`, `mergeRecords`, `reapCheck` or `reap` carries.
pub const MAX_RECORDS_PER_CALL: usize = 1_000;

/// What `aaeSegments` answered: the keys of the first `listed` segments asked for, with
/// their state hashes; `more` when a segment had more keys than it listed.
#[derive(Debug)]
pub struct SegmentsPage {
    /// (key, state hash), in segment then key order.
    pub keys: Vec<(Vec<u8>, u64)>,
    /// A segment had more keys than it listed.
    pub more: bool,
    /// How many of the segments asked for are listed (at least one).
    pub listed: usize,
}

/// Fills a `List(KeyVersions)` from key states.
pub fn write_key_states(
    mut list: capnp::struct_list::Builder<'_, key_versions::Owned>,
    states: &[KeyState],
) {
    for (i, s) in states.iter().enumerate() {
        let mut item = list.reborrow().get(i as u32);
        item.set_key(&s.key);
        let encoded = encode_versions(&s.versions);
        set_versions(
            item.reborrow().init_versions(encoded.len() as u32),
            &encoded,
        );
        let reaped = encode_context(s.reaped.as_ref());
        if !reaped.is_empty() {
            item.set_reaped(&reaped);
        }
    }
}

/// Reads a `List(KeyVersions)`, refusing more than [`MAX_RECORDS_PER_CALL`] and values
/// over `max_value` bytes.
pub fn read_key_states(
    r: capnp::Result<capnp::struct_list::Reader<'_, key_versions::Owned>>,
    max_value: u64,
) -> Result<Vec<KeyState>, DynamoError> {
    let list = r.map_err(|e| protocol(format!("reading key records: {e}")))?;
    if list.len() as usize > MAX_RECORDS_PER_CALL {
        return Err(protocol(format!(
            "{} key records in one call; at most {MAX_RECORDS_PER_CALL}",
            list.len()
        )));
    }
    let mut out = Vec::with_capacity(list.len() as usize);
    for item in list.iter() {
        out.push(KeyState {
            key: super::data(item.get_key())?,
            versions: decode_versions(item.get_versions(), max_value)?,
            reaped: decode_context(item.get_reaped())?,
        });
    }
    Ok(out)
}

fn failed(has: bool, f: capnp::Result<super::failure::Reader<'_>>) -> Result<(), DynamoError> {
    match read_failure(has, f) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The roots of `partitions` of `store` at the replica at `address`: `None` for a
/// tree that is not ready there.
pub async fn call_roots(
    node: &internode::Client,
    address: &str,
    store: &str,
    partitions: &[u32],
) -> Result<Vec<Option<u64>>, DynamoError> {
    let mut req = node.aae_roots_request();
    {
        let mut p = req.get();
        p.set_store(store);
        let mut list = p.init_partitions(partitions.len() as u32);
        for (i, x) in partitions.iter().enumerate() {
            list.set(i as u32, *x);
        }
    }
    let resp = req
        .send()
        .promise
        .await
        .map_err(|e| from_capnp(address, e))?;
    let r = resp.get().map_err(|e| from_capnp(address, e))?;
    failed(r.has_failure(), r.get_failure())?;
    let roots = r.get_roots().map_err(|e| from_capnp(address, e))?;
    let ready = r.get_ready().map_err(|e| from_capnp(address, e))?;
    if roots.len() as usize != partitions.len() || ready.len() != roots.len() {
        return Err(protocol(format!(
            "{address} answered {} roots for {} partitions",
            roots.len(),
            partitions.len()
        )));
    }
    Ok((0..roots.len())
        .map(|i| ready.get(i).then(|| roots.get(i)))
        .collect())
}

/// The branch hashes (with `branches` empty) or the leaf hashes under `branches` of
/// partition `p`'s tree at `address`; `None` when the tree is not ready there.
pub async fn call_tree(
    node: &internode::Client,
    address: &str,
    store: &str,
    p: u32,
    branches: &[u16],
) -> Result<Option<Vec<u64>>, DynamoError> {
    let mut req = node.aae_tree_request();
    {
        let mut b = req.get();
        b.set_store(store);
        b.set_partition(p);
        let mut list = b.init_branches(branches.len() as u32);
        for (i, x) in branches.iter().enumerate() {
            list.set(i as u32, *x);
        }
    }
    let resp = req
        .send()
        .promise
        .await
        .map_err(|e| from_capnp(address, e))?;
    let r = resp.get().map_err(|e| from_capnp(address, e))?;
    failed(r.has_failure(), r.get_failure())?;
    if !r.get_ready() {
        return Ok(None);
    }
    let list = r.get_hashes().map_err(|e| from_capnp(address, e))?;
    Ok(Some(list.iter().collect()))
}

/// The keys of `segments` of partition `p` at `address` with their state hashes (at
/// most `limit` per segment), and whether a segment had more.
pub async fn call_segments(
    node: &internode::Client,
    address: &str,
    store: &str,
    p: u32,
    segments: &[u16],
    limit: u32,
) -> Result<SegmentsPage, DynamoError> {
    let mut req = node.aae_segments_request();
    {
        let mut b = req.get();
        b.set_store(store);
        b.set_partition(p);
        b.set_limit(limit);
        let mut list = b.init_segments(segments.len() as u32);
        for (i, x) in segments.iter().enumerate() {
            list.set(i as u32, *x);
        }
    }
    let resp = req
        .send()
        .promise
        .await
        .map_err(|e| from_capnp(address, e))?;
    let r = resp.get().map_err(|e| from_capnp(address, e))?;
    failed(r.has_failure(), r.get_failure())?;
    let keys = r.get_keys().map_err(|e| from_capnp(address, e))?;
    let hashes = r.get_hashes().map_err(|e| from_capnp(address, e))?;
    if keys.len() != hashes.len() {
        return Err(protocol(format!(
            "{address} answered {} keys and {} hashes",
            keys.len(),
            hashes.len()
        )));
    }
    let mut out = Vec::with_capacity(keys.len() as usize);
    for i in 0..keys.len() {
        let k = keys.get(i).map_err(|e| from_capnp(address, e))?;
        out.push((k.to_vec(), hashes.get(i)));
    }
    // 0 is what a node from before `listed` existed sends: it listed them all.
    let listed = match usize::from(r.get_listed()) {
        0 => segments.len(),
        n => n,
    };
    if listed == 0 || listed > segments.len() {
        return Err(protocol(format!(
            "{address} listed {listed} of {} segment(s)",
            segments.len()
        )));
    }
    Ok(SegmentsPage {
        keys: out,
        more: r.get_more(),
        listed,
    })
}

/// Every version and the reaped context of the first of `keys` at `address` (a prefix,
/// at least one key: as many as fit in a reply).
pub async fn call_fetch(
    node: &internode::Client,
    address: &str,
    store: &str,
    keys: &[Vec<u8>],
) -> Result<Vec<KeyState>, DynamoError> {
    let mut req = node.fetch_request();
    {
        let mut b = req.get();
        b.set_store(store);
        let mut list = b.init_keys(keys.len() as u32);
        for (i, k) in keys.iter().enumerate() {
            list.set(i as u32, k);
        }
    }
    let resp = req
        .send()
        .promise
        .await
        .map_err(|e| from_capnp(address, e))?;
    let r = resp.get().map_err(|e| from_capnp(address, e))?;
    failed(r.has_failure(), r.get_failure())?;
    let states = read_key_states(r.get_records(), u64::from(u32::MAX))?;
    if states.is_empty() && !keys.is_empty() {
        return Err(protocol(format!(
            "{address} answered a fetch of {} key(s) with none",
            keys.len()
        )));
    }
    for (asked, got) in keys.iter().zip(&states) {
        if *asked != got.key {
            return Err(protocol(format!(
                "{address} answered a fetch with keys out of order"
            )));
        }
    }
    if states.len() > keys.len() {
        return Err(protocol(format!(
            "{address} answered a fetch of {} key(s) with {}",
            keys.len(),
            states.len()
        )));
    }
    Ok(states)
}

/// Merges `records` into the replica at `address`.
pub async fn call_merge_records(
    node: &internode::Client,
    address: &str,
    store: &str,
    records: &[KeyState],
) -> Result<(), DynamoError> {
    let mut req = node.merge_records_request();
    {
        let mut b = req.get();
        b.set_store(store);
        write_key_states(b.init_records(records.len() as u32), records);
    }
    let resp = req
        .send()
        .promise
        .await
        .map_err(|e| from_capnp(address, e))?;
    let r = resp.get().map_err(|e| from_capnp(address, e))?;
    failed(r.has_failure(), r.get_failure())
}

/// What `address` holds of each record's key before a reap (see `Internode.reapCheck`),
/// and whether a membership change is pending in its view.
pub async fn call_reap_check(
    node: &internode::Client,
    address: &str,
    store: &str,
    records: &[KeyState],
) -> Result<(Vec<u8>, bool), DynamoError> {
    let mut req = node.reap_check_request();
    {
        let mut b = req.get();
        b.set_store(store);
        write_key_states(b.init_records(records.len() as u32), records);
    }
    let resp = req
        .send()
        .promise
        .await
        .map_err(|e| from_capnp(address, e))?;
    let r = resp.get().map_err(|e| from_capnp(address, e))?;
    failed(r.has_failure(), r.get_failure())?;
    let states: Vec<u8> = r
        .get_states()
        .map_err(|e| from_capnp(address, e))?
        .iter()
        .collect();
    if states.len() != records.len() {
        return Err(protocol(format!(
            "{address} answered {} reap states for {} keys",
            states.len(),
            records.len()
        )));
    }
    Ok((states, r.get_moving()))
}

/// Reaps each record's key at `address` if it still holds exactly those versions.
pub async fn call_reap(
    node: &internode::Client,
    address: &str,
    store: &str,
    records: &[KeyState],
) -> Result<Vec<bool>, DynamoError> {
    let mut req = node.reap_request();
    {
        let mut b = req.get();
        b.set_store(store);
        write_key_states(b.init_records(records.len() as u32), records);
    }
    let resp = req
        .send()
        .promise
        .await
        .map_err(|e| from_capnp(address, e))?;
    let r = resp.get().map_err(|e| from_capnp(address, e))?;
    failed(r.has_failure(), r.get_failure())?;
    Ok(r.get_reaped()
        .map_err(|e| from_capnp(address, e))?
        .iter()
        .collect())
}

// The serving side: what a replica reads from these calls and how it answers.

/// Fills a reply's `failure`, or the rest with `ok`.
macro_rules! answer {
    ($results:expr, $answer:expr, |$r:ident, $v:ident| $ok:block) => {{
        #[allow(unused_mut)]
        let mut $r = $results;
        match $answer {
            Ok($v) => $ok,
            Err(e) => super::write_failure($r.init_failure(), e),
        }
    }};
}

/// The request of an `aaeRoots` call: the store and the partitions asked for.
pub fn read_roots_params(
    p: internode::aae_roots_params::Reader<'_>,
) -> Result<(String, Vec<u32>), DynamoError> {
    let parts = p
        .get_partitions()
        .map_err(|e| protocol(format!("reading partitions: {e}")))?;
    Ok((super::text(p.get_store())?, parts.iter().collect()))
}

/// Fills an `aaeRoots` reply: per partition its root, `None` when its tree is not ready.
pub fn write_roots_reply(
    results: internode::aae_roots_results::Builder<'_>,
    answer: &Result<Vec<Option<u64>>, DynamoError>,
) {
    answer!(results, answer, |r, roots| {
        let mut rl = r.reborrow().init_roots(roots.len() as u32);
        for (i, x) in roots.iter().enumerate() {
            rl.set(i as u32, x.unwrap_or(0));
        }
        let mut ready = r.init_ready(roots.len() as u32);
        for (i, x) in roots.iter().enumerate() {
            ready.set(i as u32, x.is_some());
        }
    })
}

/// The request of an `aaeTree` call: store, partition and branches (empty: the branch
/// hashes themselves), at most [`crate::store::tree::BRANCHES`] of them.
pub fn read_tree_params(
    p: internode::aae_tree_params::Reader<'_>,
) -> Result<(String, u32, Vec<u16>), DynamoError> {
    let branches = p
        .get_branches()
        .map_err(|e| protocol(format!("reading branches: {e}")))?
        .iter()
        .take(crate::store::tree::BRANCHES)
        .collect();
    Ok((super::text(p.get_store())?, p.get_partition(), branches))
}

/// Fills an `aaeTree` reply: the hashes, or not `ready` (`None`).
pub fn write_tree_reply(
    results: internode::aae_tree_results::Builder<'_>,
    answer: &Result<Option<Vec<u64>>, DynamoError>,
) {
    answer!(results, answer, |r, hashes| {
        r.set_ready(hashes.is_some());
        let hashes = hashes.as_deref().unwrap_or_default();
        let mut l = r.init_hashes(hashes.len() as u32);
        for (i, h) in hashes.iter().enumerate() {
            l.set(i as u32, *h);
        }
    })
}

/// The request of an `aaeSegments` call.
#[derive(Debug)]
pub struct SegmentsRequest {
    /// The store.
    pub store: String,
    /// The partition.
    pub partition: u32,
    /// The segments asked for, at most [`crate::store::tree::SEGMENTS`].
    pub segments: Vec<u8>,
    /// Keys per segment at most, 1 to [`crate::api::MAX_KEYS_PER_PAGE`].
    pub limit: usize,
}

/// Reads an `aaeSegments` request.
pub fn read_segments_params(
    p: internode::aae_segments_params::Reader<'_>,
) -> Result<SegmentsRequest, DynamoError> {
    let segments = p
        .get_segments()
        .map_err(|e| protocol(format!("reading segments: {e}")))?
        .iter()
        .take(crate::store::tree::SEGMENTS)
        .map(|s| s.min(255) as u8)
        .collect();
    Ok(SegmentsRequest {
        store: super::text(p.get_store())?,
        partition: p.get_partition(),
        segments,
        limit: p.get_limit().clamp(1, crate::api::MAX_KEYS_PER_PAGE) as usize,
    })
}

/// Fills an `aaeSegments` reply from a [`SegmentsPage`].
pub fn write_segments_reply(
    results: internode::aae_segments_results::Builder<'_>,
    answer: &Result<SegmentsPage, DynamoError>,
) {
    answer!(results, answer, |r, page| {
        let mut kl = r.reborrow().init_keys(page.keys.len() as u32);
        for (i, (k, _)) in page.keys.iter().enumerate() {
            kl.set(i as u32, k);
        }
        let mut hl = r.reborrow().init_hashes(page.keys.len() as u32);
        for (i, (_, h)) in page.keys.iter().enumerate() {
            hl.set(i as u32, *h);
        }
        r.set_more(page.more);
        r.set_listed(u16::try_from(page.listed).unwrap_or(u16::MAX));
    })
}

/// The request of a `fetch` call: the store and at most [`MAX_RECORDS_PER_CALL`] keys.
pub fn read_fetch_params(
    p: internode::fetch_params::Reader<'_>,
) -> Result<(String, Vec<Vec<u8>>), DynamoError> {
    let list = p
        .get_keys()
        .map_err(|e| protocol(format!("reading keys: {e}")))?;
    if list.len() as usize > MAX_RECORDS_PER_CALL {
        return Err(protocol(format!(
            "{} keys in one fetch; at most {MAX_RECORDS_PER_CALL}",
            list.len()
        )));
    }
    let mut keys = Vec::with_capacity(list.len() as usize);
    for k in list.iter() {
        let k = k.map_err(|e| protocol(format!("reading a key: {e}")))?;
        keys.push(k.to_vec());
    }
    Ok((super::text(p.get_store())?, keys))
}

/// Fills a `fetch` reply with the key records read.
pub fn write_fetch_reply(
    results: internode::fetch_results::Builder<'_>,
    answer: &Result<Vec<KeyState>, DynamoError>,
) {
    answer!(results, answer, |r, states| {
        write_key_states(r.init_records(states.len() as u32), states)
    })
}

/// The store and key records of a `mergeRecords`, `reapCheck` or `reap` call.
macro_rules! read_records {
    ($p:expr) => {{
        let p = $p;
        // Sizes are checked per record where they are used (a value over the store's
        // limit refuses that record only, and is no protocol error).
        Ok((
            super::text(p.get_store())?,
            read_key_states(p.get_records(), u64::from(u32::MAX))?,
        ))
    }};
}

/// The request of a `mergeRecords` call.
pub fn read_merge_records_params(
    p: internode::merge_records_params::Reader<'_>,
) -> Result<(String, Vec<KeyState>), DynamoError> {
    read_records!(p)
}

/// Fills a `mergeRecords` reply (a failure, or nothing).
pub fn write_merge_records_reply(
    results: internode::merge_records_results::Builder<'_>,
    answer: &Result<(), DynamoError>,
) {
    answer!(results, answer, |r, _done| {})
}

/// The request of a `reapCheck` call.
pub fn read_reap_check_params(
    p: internode::reap_check_params::Reader<'_>,
) -> Result<(String, Vec<KeyState>), DynamoError> {
    read_records!(p)
}

/// Fills a `reapCheck` reply: a state per record, and whether membership is `moving`.
pub fn write_reap_check_reply(
    results: internode::reap_check_results::Builder<'_>,
    answer: &Result<(Vec<u8>, bool), DynamoError>,
) {
    answer!(results, answer, |r, found| {
        let (states, moving) = found;
        r.set_moving(*moving);
        let mut l = r.init_states(states.len() as u32);
        for (i, x) in states.iter().enumerate() {
            l.set(i as u32, *x);
        }
    })
}

/// The request of a `reap` call.
pub fn read_reap_params(
    p: internode::reap_params::Reader<'_>,
) -> Result<(String, Vec<KeyState>), DynamoError> {
    read_records!(p)
}

/// Fills a `reap` reply: per record, whether it was reaped.
pub fn write_reap_reply(
    results: internode::reap_results::Builder<'_>,
    answer: &Result<Vec<bool>, DynamoError>,
) {
    answer!(results, answer, |r, reaped| {
        let mut l = r.init_reaped(reaped.len() as u32);
        for (i, x) in reaped.iter().enumerate() {
            l.set(i as u32, *x);
        }
    })
}
